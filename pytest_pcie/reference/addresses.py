"""The PCI address table: one bus per PCI controller index, slots, reservations, next-free search.

This is libvirt's ``virDomainPCIAddressSet`` seen from outside: a bus offers connect flags and a
slot range; reserving an address checks it against the bus with libvirt's exact messages; the
next-free search walks buses and slots in libvirt's order; in a *dry run* the table grows instead
of failing, adding the buses the device needs (root port, pci-bridge, or root port + pcie-to-pci-bridge).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.model import PciAddress
from pytest_pcie.reference.tables import (
    CONNECT_NAMES,
    CONNECT_TO_MODEL,
    CONTROLLER_MODELS,
    ENDPOINT_TYPES,
    NONE,
    TYPES_MASK,
    Connect,
)

MAX_SLOT = 31
MAX_FUNCTION = 7


@dataclass
class Slot:
    functions: int = 0  # bit n set: function n reserved
    aggregate: bool = False  # first occupant was a root port: more may share the slot


@dataclass
class Bus:
    """One bus: what it accepts and its slots."""

    model: str | None = None
    flags: Connect = NONE
    min_slot: int = 0
    max_slot: int = MAX_SLOT
    slots: list[Slot] = field(default_factory=lambda: [Slot() for _ in range(MAX_SLOT + 1)])

    def set_model(self, model: str, hotplug: bool) -> None:
        row = CONTROLLER_MODELS[model]
        self.model = model
        self.flags = row.accepts | (Connect.HOTPLUGGABLE if hotplug and row.hotplug else NONE)
        self.min_slot = row.min_slot
        self.max_slot = row.max_slot

    def fully_reserved(self) -> bool:
        return all(self.slots[slot].functions for slot in range(self.min_slot, self.max_slot + 1))

    def empty(self) -> bool:
        return not any(self.slots[slot].functions for slot in range(self.min_slot, self.max_slot + 1))


def flags_compatible(
    address: PciAddress, bus_flags: Connect, dev_flags: Connect, from_config: bool, text: str | None = None
) -> str | None:
    """None when a device with ``dev_flags`` may sit at ``address`` on a bus offering ``bus_flags``;
    otherwise libvirt's message (naming ``text``, default the address) without its category prefix."""
    shown = text or str(address)
    if dev_flags & Connect.INTEGRATED:
        if address.bus != 0:
            return f"The device at PCI address {shown} needs to be an integrated device (bus=0)"
        bus_flags |= Connect.AUTOASSIGN
    if from_config:
        if bus_flags & ENDPOINT_TYPES:
            bus_flags |= ENDPOINT_TYPES
        if dev_flags & Connect.PCI_BRIDGE:
            dev_flags |= Connect.PCI_DEVICE
    elif dev_flags & Connect.AUTOASSIGN and not bus_flags & Connect.AUTOASSIGN:
        return (
            f"The device at PCI address {shown} was auto-assigned this address, but the PCI controller "
            f"with index='{address.bus}' doesn't allow auto-assignment"
        )
    if dev_flags & Connect.HOTPLUGGABLE and not bus_flags & Connect.HOTPLUGGABLE:
        return (
            f"The device at PCI address {shown} requires hotplug capability, but the PCI controller "
            f"with index='{address.bus}' doesn't support hotplug"
        )
    if not dev_flags & bus_flags & TYPES_MASK:
        needed = next((name for bit, name in CONNECT_NAMES if dev_flags & bit), None)
        if needed is None:
            return f"The device at PCI address {shown} has unrecognized connection type flags 0x{int(dev_flags):02x}"
        return (
            f"The device at PCI address {shown} cannot be plugged into the PCI controller with "
            f"index='{address.bus}'. It requires a controller that accepts a {needed}."
        )
    return None


class AddressSet:
    """The buses of a domain and what is reserved on them.

    ``dry_run`` is libvirt's first pass: instead of failing for lack of room, the set grows.
    ``grown`` lists the models of the buses appended by growth, so the caller can add controllers.
    """

    def __init__(self, buses: list[Bus], dry_run: bool) -> None:
        self.buses = buses
        self.dry_run = dry_run

    @property
    def count(self) -> int:
        return len(self.buses)

    # -- checks -------------------------------------------------------------------------------

    def validate(self, address: PciAddress, flags: Connect, from_config: bool, shown: PciAddress | None = None) -> None:
        """Raise libvirt's error if ``address`` is out of range or the bus does not fit the device.

        ``shown`` is the address messages name, when it differs (libvirt formats the address before
        growth bumps it)."""
        text = str(shown or address)
        category = "XML error" if from_config else "internal error"
        if not self.buses:
            raise LibvirtError(f"{category}: No PCI buses available")
        if address.domain != 0:
            raise LibvirtError(f"{category}: Invalid PCI address {text}. Only PCI domain 0 is available")
        if address.bus >= len(self.buses):
            raise LibvirtError(
                f"{category}: Invalid PCI address {text}. Only PCI buses up to {len(self.buses) - 1} are available"
            )
        bus = self.buses[address.bus]
        problem = flags_compatible(address, bus.flags, flags, from_config, text)
        if problem is not None:
            raise LibvirtError(f"{category}: {problem}")
        if bus.min_slot and address.slot < bus.min_slot:
            raise LibvirtError(f"{category}: Invalid PCI address {text}. slot must be >= {bus.min_slot}")
        if address.slot > bus.max_slot:
            raise LibvirtError(f"{category}: Invalid PCI address {text}. slot must be <= {bus.max_slot}")

    def in_use(self, address: PciAddress) -> bool:
        return bool(self.buses[address.bus].slots[address.slot].functions)

    # -- reservations -------------------------------------------------------------------------

    def reserve(self, address: PciAddress, flags: Connect, from_config: bool = True) -> PciAddress:
        """Reserve one function (libvirt's virDomainPCIAddressReserveAddrInternal).

        Returns the address reserved: in a dry run, growing by a root port + pcie-to-pci-bridge pair
        moves the address one bus up (libvirt bumps even a user-written address this way)."""
        requested = address
        if self.dry_run:
            address = self.grow(address, flags)
        self.validate(address, flags, from_config, requested)
        slot = self.buses[address.bus].slots[address.slot]
        if slot.functions & (1 << address.function):
            category = "XML error" if from_config else "internal error"
            raise LibvirtError(f"{category}: Attempted double use of PCI Address {requested}")
        if not slot.functions and flags & Connect.AGGREGATE_SLOT:
            slot.aggregate = True
        slot.functions |= 1 << address.function
        return address

    def release(self, address: PciAddress) -> None:
        self.buses[address.bus].slots[address.slot].functions &= ~(1 << address.function)

    def reserve_next(self, flags: Connect, function: int | None = None) -> PciAddress:
        """Find and reserve the next free address for a device with ``flags`` (function None = any)."""
        return self.reserve(self.next_free(flags, function), flags, from_config=False)

    def next_free(self, flags: Connect, function: int | None = None) -> PciAddress:
        """libvirt's search: buses from 0, slots from the bus's first; a slot is free when no function
        is used, or (for root ports) when it aggregates root ports and has a free function."""
        if not self.buses:
            raise LibvirtError("XML error: No PCI buses available")
        want = 0 if function is None else function
        for number, bus in enumerate(self.buses):
            probe = PciAddress(0, number, bus.min_slot, want)
            if flags_compatible(probe, bus.flags, flags, False) is not None:
                continue
            found = self._free_on_bus(bus, number, flags, function)
            if found is not None:
                return found
        if self.dry_run:
            target = PciAddress(0, len(self.buses), 0, want)
            target = self.grow(target, flags)
            return PciAddress(0, target.bus, self.buses[target.bus].min_slot, want)
        raise LibvirtError("internal error: No more available PCI slots")

    @staticmethod
    def _free_on_bus(bus: Bus, number: int, flags: Connect, function: int | None) -> PciAddress | None:
        want = 0 if function is None else function
        for slot_number in range(bus.min_slot, bus.max_slot + 1):
            slot = bus.slots[slot_number]
            if not slot.functions:
                return PciAddress(0, number, slot_number, want)
            if flags & Connect.AGGREGATE_SLOT and slot.aggregate:
                if not slot.functions & (1 << want):
                    return PciAddress(0, number, slot_number, want)
                if function is None:
                    for candidate in range(MAX_FUNCTION + 1):
                        if not slot.functions & (1 << candidate):
                            return PciAddress(0, number, slot_number, candidate)
        return None

    # -- growth (dry run only) ----------------------------------------------------------------

    def grow(self, address: PciAddress, flags: Connect) -> PciAddress:
        """Append buses until ``address.bus`` exists, choosing what the device needs
        (libvirt's virDomainPCIAddressSetGrow).  Returns the address, whose bus may be bumped by one
        when a root port + pcie-to-pci-bridge pair is needed."""
        add = address.bus - len(self.buses) + 1
        if add <= 0:
            return address
        pair = False
        if flags & Connect.PCI_DEVICE:
            model = "pci-bridge"
            pair = not any(bus.flags & Connect.PCI_BRIDGE for bus in self.buses)
            if pair and add == 1:
                add += 1
                address = PciAddress(address.domain, address.bus + 1, address.slot, address.function)
        elif flags & (Connect.PCIE_DEVICE | Connect.PCIE_SWITCH_UPSTREAM_PORT):
            model = "pcie-root-port"
        else:
            existing = next((name for bit, name in CONNECT_TO_MODEL if flags & bit), None)
            if existing is not None:
                raise LibvirtError(
                    f"internal error: a PCI slot is needed to connect a PCI controller model='{existing}', "
                    "but none is available, and it cannot be automatically added"
                )
            raise LibvirtError(
                f"internal error: Cannot automatically add a new PCI bus for a device with connect flags "
                f"{int(flags):02x}"
            )
        new = [Bus() for _ in range(add)]
        first = 0
        if pair:
            new[0].set_model("pcie-root-port", True)
            new[0].flags = Connect.PCIE_TO_PCI_BRIDGE
            new[1].set_model("pcie-to-pci-bridge", True)
            first = 2
        for bus in new[first:]:
            bus.set_model(model, True)
        self.buses.extend(new)
        return address
