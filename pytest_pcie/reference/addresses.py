"""The PCI address table: one bus per PCI controller index, slots, reservations, next-free search.

This is libvirt's ``virDomainPCIAddressSet`` seen from outside: a bus offers connect flags and a
slot range; reserving an address checks it against the bus with libvirt's exact messages; the
next-free search walks buses and slots in libvirt's order; in a *dry run* the table grows instead
of failing, adding the buses the device needs (root port, pci-bridge, or root port + pcie-to-pci-bridge).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.model import PciAddress
from pytest_pcie.reference.profiles import current_rules
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
_NO_FUNCTIONS = (0,) * (MAX_SLOT + 1)

# Plain-int copies of the flags the next-free search tests for every bus: enum arithmetic is an
# order of magnitude slower, and the search runs once per device.
_INTEGRATED = int(Connect.INTEGRATED)
_AUTOASSIGN = int(Connect.AUTOASSIGN)
_HOTPLUGGABLE = int(Connect.HOTPLUGGABLE)
_AGGREGATE = int(Connect.AGGREGATE_SLOT)
_TYPES = int(TYPES_MASK)
_ENDPOINTS = int(ENDPOINT_TYPES)
_PCI_BRIDGE = int(Connect.PCI_BRIDGE)
_PCI_DEVICE = int(Connect.PCI_DEVICE)
_NEEDS_ROOT_PORT = int(Connect.PCIE_DEVICE | Connect.PCIE_SWITCH_UPSTREAM_PORT)
_PCIE_TO_PCI_BRIDGE = int(Connect.PCIE_TO_PCI_BRIDGE)

# (controller model, hotplug wanted) -> (bus flags as int, first slot, last slot): the bus a model
# provides, from tables.CONTROLLER_MODELS, worked out once instead of once per bus.
_BUS_SHAPES: dict[tuple[str, bool], tuple[int, int, int]] = {
    (name, hotplug): (
        int(row.accepts | (Connect.HOTPLUGGABLE if hotplug and row.hotplug else NONE)), row.min_slot, row.max_slot
    )
    for name, row in CONTROLLER_MODELS.items()
    for hotplug in (False, True)
}


# The bus a grown root port provides, as Bus's first four fields.
_ROOT_PORT_SHAPE: tuple[str, int, int, int] = ("pcie-root-port", *_BUS_SHAPES["pcie-root-port", True])


@dataclass(slots=True)
class Bus:
    """One bus: what it accepts and its slots.

    ``functions[slot]`` has bit n set when function n of the slot is reserved; bit ``slot`` of
    ``aggregate`` is set when the slot's first occupant was a root port (more may share it).
    """

    model: str | None = None
    flags: int = 0  # Connect bits, as a plain int (see _fits)
    min_slot: int = 0
    max_slot: int = MAX_SLOT
    functions: list[int] = field(default_factory=partial(list, _NO_FUNCTIONS))  # C-level copy, no lambda frame
    aggregate: int = 0

    @classmethod
    def of_model(cls, model: str, hotplug: bool = True) -> Bus:
        """A new bus of ``model``: the flags and slot range its controller provides."""
        return cls(model, *_BUS_SHAPES[model, hotplug])

    def fully_reserved(self) -> bool:
        return all(self.functions[self.min_slot : self.max_slot + 1])

    def empty(self) -> bool:
        return not any(self.functions[self.min_slot : self.max_slot + 1])


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


def _fits(bus_flags: int, device_flags: int, bus_number: int, from_config: bool = False) -> bool:
    """flags_compatible without building messages (the hot path: once per bus searched)."""
    if device_flags & _INTEGRATED:
        if bus_number != 0:
            return False
        bus_flags |= _AUTOASSIGN
    if from_config:
        if bus_flags & _ENDPOINTS:
            bus_flags |= _ENDPOINTS
        if device_flags & _PCI_BRIDGE:
            device_flags |= _PCI_DEVICE
    elif device_flags & _AUTOASSIGN and not bus_flags & _AUTOASSIGN:
        return False
    if device_flags & _HOTPLUGGABLE and not bus_flags & _HOTPLUGGABLE:
        return False
    return bool(device_flags & bus_flags & _TYPES)


class AddressSet:
    """The buses of a domain and what is reserved on them.

    ``dry_run`` is libvirt's first pass: instead of failing for lack of room, the set grows; the
    caller turns every bus appended that way (``buses[n].model``) into a controller.
    """

    def __init__(self, buses: list[Bus], dry_run: bool) -> None:
        self.buses = buses
        self.dry_run = dry_run
        # (flags, function) -> the next-free search for such devices, paused where it last found
        # one (see _search)
        self._searches: dict[tuple[int, int | None], Iterator[PciAddress | None]] = {}

    @property
    def count(self) -> int:
        return len(self.buses)

    # -- checks -------------------------------------------------------------------------------

    def validate(self, address: PciAddress, flags: Connect, from_config: bool, shown: PciAddress | None = None) -> None:
        """Raise libvirt's error if ``address`` is out of range or the bus does not fit the device.

        ``shown`` is the address messages name, when it differs (libvirt formats the address before
        growth bumps it)."""
        buses = self.buses
        if (
            buses
            and address.domain == 0
            and address.bus < len(buses)
            and _fits(buses[address.bus].flags, int(flags), address.bus, from_config)
            and buses[address.bus].min_slot <= address.slot <= buses[address.bus].max_slot
        ):
            return  # the common case, without formatting any message
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
        problem = flags_compatible(address, Connect(bus.flags), flags, from_config, text)
        if problem is not None:
            raise LibvirtError(f"{category}: {problem}")
        if bus.min_slot and address.slot < bus.min_slot:
            raise LibvirtError(f"{category}: Invalid PCI address {text}. slot must be >= {bus.min_slot}")
        if address.slot > bus.max_slot:
            raise LibvirtError(f"{category}: Invalid PCI address {text}. slot must be <= {bus.max_slot}")

    def in_use(self, address: PciAddress) -> bool:
        return bool(self.buses[address.bus].functions[address.slot])

    # -- reservations -------------------------------------------------------------------------

    def reserve(self, address: PciAddress, flags: Connect, from_config: bool = True) -> PciAddress:
        """Reserve one function (libvirt's virDomainPCIAddressReserveAddrInternal).

        Returns the address reserved: in a dry run, growing by a root port + pcie-to-pci-bridge pair
        moves the address one bus up (libvirt bumps even a user-written address this way)."""
        requested = address
        if self.dry_run and address.bus >= len(self.buses):
            address = self.grow(address, flags)
        self.validate(address, flags, from_config, requested)
        if self.buses[address.bus].functions[address.slot] & (1 << address.function):
            category = "XML error" if from_config else "internal error"
            raise LibvirtError(f"{category}: Attempted double use of PCI Address {requested}")
        _take(self.buses[address.bus], address, int(flags))
        return address

    def reserve_next(self, flags: Connect, function: int | None = None) -> PciAddress:
        """Find and reserve the next free address for a device with ``flags`` (function None = any).

        libvirt's search: buses from 0, slots from the bus's first; a slot is free when no function
        is used, or (for root ports) when it aggregates root ports and has a free function.  An
        address found on an existing bus already passed every check ``reserve`` makes (the bus fits
        the device, the slot is in range and the function free), so it is taken directly; only an
        address on a bus the dry run grows for it goes through ``reserve``."""
        buses = self.buses
        if not buses:
            raise LibvirtError("XML error: No PCI buses available")
        wanted = int(flags)
        key = (wanted, function)
        search = self._searches.get(key)
        if search is None:
            search = self._searches[key] = _search(buses, wanted, function)
        found = next(search)
        if found is not None:
            return found
        if not self.dry_run:
            raise LibvirtError("internal error: No more available PCI slots")
        want = 0 if function is None else function
        if wanted & _NEEDS_ROOT_PORT and not wanted & _PCI_DEVICE:
            # what _append does for a PCIe device, inline: a large domain grows once per device
            number = len(buses)
            grown = Bus(*_ROOT_PORT_SHAPE)
            buses.append(grown)
        else:
            number = self._append(len(buses), wanted, flags)
            grown = buses[number]
        address = _address((0, number, grown.min_slot, want))
        if not _fits(grown.flags, wanted, number):
            return self.reserve(address, flags, from_config=False)  # fails, with libvirt's message
        _take(grown, address, wanted)  # a new bus: the slot is in range and free
        return address

    # -- growth (dry run only) ----------------------------------------------------------------

    def grow(self, address: PciAddress, flags: Connect) -> PciAddress:
        """Append buses until ``address.bus`` exists, choosing what the device needs
        (libvirt's virDomainPCIAddressSetGrow).  Returns the address, whose bus may be bumped by one
        when a root port + pcie-to-pci-bridge pair is needed."""
        if address.bus < len(self.buses):
            return address
        number = self._append(address.bus, int(flags), flags)
        if number == address.bus:
            return address
        return PciAddress(address.domain, number, address.slot, address.function)

    def _append(self, number: int, wanted: int, flags: Connect) -> int:
        """Append buses up to bus ``number`` (at least one) for a device with ``wanted`` flags (the
        plain-int ``flags``); returns the bus the device goes on: ``number``, or ``number + 1`` when
        a root port + pcie-to-pci-bridge pair had to come first."""
        buses = self.buses
        add = number - len(buses) + 1
        if wanted & _PCI_DEVICE:
            model = "pci-bridge"
            pair = not any(bus.flags & _PCI_BRIDGE for bus in buses)
            if pair and add == 1:
                add += 1
                number += 1
        elif wanted & _NEEDS_ROOT_PORT or (
            wanted & _PCIE_TO_PCI_BRIDGE and current_rules().pcie_to_pci_bridge_gets_port
        ):
            model, pair = "pcie-root-port", False
        else:
            existing = next((name for bit, name in CONNECT_TO_MODEL if flags & bit), None)
            if existing is not None:
                raise LibvirtError(
                    f"internal error: a {current_rules().slot_needed_word} slot is needed to connect a PCI "
                    f"controller model='{existing}', "
                    "but none is available, and it cannot be automatically added"
                )
            raise LibvirtError(
                f"internal error: Cannot automatically add a new PCI bus for a device with connect flags "
                f"{wanted:02x}"
            )
        if pair:
            port = Bus.of_model("pcie-root-port")
            port.flags = _PCIE_TO_PCI_BRIDGE
            buses += (port, Bus.of_model("pcie-to-pci-bridge"))
            add -= 2
        for _ in range(add):  # most often one bus: no list to build
            buses.append(Bus.of_model(model))
        return number


def _take(bus: Bus, address: PciAddress, flags: int) -> None:
    """Mark one checked, free function of ``bus`` as used (and its slot as aggregating root ports).
    Module-level functions taking plain ints: the search calls these once per device, and a method
    call with an ``int(Connect)`` inside measured a visible share of it."""
    slot = address.slot
    used = bus.functions[slot]
    if not used and flags & _AGGREGATE:
        bus.aggregate |= 1 << slot
    bus.functions[slot] = used | 1 << address.function


# A PciAddress from its four parts, made by tuple.__new__ itself: the named tuple's own constructor
# is a Python-level function, and the search makes one address per device placed (half the cost).
_address: Callable[[tuple[int, int, int, int]], PciAddress] = partial(tuple.__new__, PciAddress)


def _search(buses: list[Bus], flags: int, function: int | None) -> Iterator[PciAddress | None]:
    """libvirt's next-free search for devices with ``flags`` (and ``function``, None = any), as a
    generator that takes each address it yields, and yields None when no bus has room.

    Slots only ever fill up while addresses are assigned, so a slot that had no room for such a
    device never has room again: the search can stay paused where it last found one instead of
    starting again from bus 0 (the same answers as libvirt's full scan).  A generator, because its
    resumption is several times cheaper than the calls and remembered hints it replaced, and a
    large domain runs the search once per device.  Buses the dry run appends after a None are
    looked at when the search resumes."""
    want = 0 if function is None else function
    aggregating = flags & _AGGREGATE
    number = 0
    while True:
        while number < len(buses):
            bus = buses[number]
            if _fits(bus.flags, flags, number):
                functions = bus.functions
                slot, last = bus.min_slot, bus.max_slot
                while slot <= last:
                    used = functions[slot]
                    if not used:
                        if aggregating:
                            bus.aggregate |= 1 << slot
                        functions[slot] = 1 << want
                        yield _address((0, number, slot, want))
                        continue  # the same slot again: root ports may share it
                    if aggregating and bus.aggregate >> slot & 1:
                        # a slot of root ports: the wanted function, or with none wanted the lowest free one
                        lowest_free = ~used & (used + 1) if function is None else 1 << want & ~used
                        if 0 < lowest_free <= 1 << MAX_FUNCTION:
                            functions[slot] = used | lowest_free
                            yield _address((0, number, slot, lowest_free.bit_length() - 1))
                            continue
                    slot += 1
            number += 1
        yield None
