"""PCI address assignment for a whole definition: libvirt's two passes.

Pass 1 is a dry run on a growable table: it learns how many buses the devices need (and which
controller model each must be), including pc's placeholder slot for a future bridge and q35's one
spare root port; the buses it adds become ``<controller type='pci'>`` elements.  Pass 2 builds a
fresh table from all controllers (it never grows) and places every device for real, in class
order.  Pass 2's placement is not pass 1's plan: controllers are placed first, so e.g. a
pcie-to-pci-bridge added for a legacy device lands in the first free root port.
"""

from __future__ import annotations

from pytest_pcie.reference.addresses import AddressSet, Bus
from pytest_pcie.reference.chardev import is_serial_console
from pytest_pcie.reference.defaults import new_pci_controllers
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.flags import PCI_FLAGS, PCIE_FLAGS, connect_flags, device_class, fill_flags
from pytest_pcie.reference.machine import Chipset
from pytest_pcie.reference.model import (
    UNBUILT,
    Device,
    PciAddress,
    build_added_block,
    build_added_controllers,
    child,
    place_added_block,
    write_pci_addresses,
)
from pytest_pcie.reference.parse import Domain
from pytest_pcie.reference.policy import current_policy
from pytest_pcie.reference.tables import CLASS_ORDER, ITERATE_ORDER, NONE, ROOT_MODELS, USB2_FUNCTIONS, Connect
from pytest_pcie.reference.virtio_serial import assign_virtio_serial_ports

# Addresses a chipset always occupies with devices that are not in the XML.
CHIPSET_RESERVED: dict[Chipset, tuple[PciAddress, ...]] = {
    Chipset.I440FX: (PciAddress(0, 0, 1, 0), PciAddress(0, 0, 1, 3)),
    Chipset.Q35: (PciAddress(0, 0, 0x1F, 0), PciAddress(0, 0, 0x1F, 3)),
    Chipset.VIRT: (),
    Chipset.NONE: (),
}
# Where the primary video goes when free, per chipset (virt has no such slot: video is placed like
# any other device).
PRIMARY_VIDEO_SLOT: dict[Chipset, int] = {Chipset.I440FX: 2, Chipset.Q35: 1}
# Controllers fixed on the i440fx PIIX3 (type, model or None for any) -> function on 00:01.
PIIX3_FIXED: dict[str, int] = {"ide": 1, "usb": 2}
PIIX3_MESSAGES: dict[str, str] = {
    "ide": "internal error: Primary IDE controller must have PCI address 0:0:1.1",
    "usb": "internal error: PIIX3 USB controller at index 0 must have PCI address 0:0:1.2",
}
# Address types a virtio disk may carry instead of a PCI address (other transports).
_DISK_OTHER_BUSES = frozenset({"ccw", "virtio-mmio"})
# Devices of a class that never get a PCI address although they appear in it.
SKIPPED_MODELS: dict[str, frozenset[str]] = {
    "sound": frozenset({"sb16", "pcspk", "usb"}),
    "video": frozenset({"none", "ramfb"}),
}


def assign_addresses(domain: Domain) -> None:
    """Give every device that needs one a PCI address, adding the PCI controllers required."""
    assign_virtio_serial_ports(domain)  # first, as libvirt: it may add a virtio-serial controller
    indexes = [device.index for device in domain.pci_controllers() if device.index is not None]
    max_index = max(indexes, default=-1)
    fill_flags(domain)
    buses = max_index + 1
    if buses > 0:
        buses = _plan(domain, buses, max_index)
    addresses = build_set(domain, buses, dry_run=False)
    fixed_chipset_slots(domain, addresses)
    _assign_classes(domain, addresses)
    set_multifunction(domain)
    fill_controller_defaults(domain)
    write_addresses(domain)
    check_usb_devices(domain)
    check_usb_indexes(domain)


def check_usb_devices(domain: Domain) -> None:
    """USB devices need a USB controller; with ``model='none'`` they are refused (USB port assignment)."""
    if any(controller.ctype == "usb" and controller.model != "none" for controller in domain.controllers):
        return
    devices = [*domain.controllers, *domain.devices]
    # the kind test first, inline: most devices of a large domain are of no USB kind at all
    if any(device.kind in USB_DEVICE_SIGNS and _is_usb_device(device) for device in devices):
        raise LibvirtError(
            "unsupported configuration: USB is disabled for this domain, but USB devices are present in the domain XML"
        )


# Element kind -> (attribute, or "" for the model; value) of the devices of that kind that sit on a USB port.
USB_DEVICE_SIGNS: dict[str, tuple[str, str]] = {
    "hub": ("type", "usb"), "hostdev": ("type", "usb"), "disk": ("bus", "usb"), "controller": ("type", "ccid"),
    "input": ("bus", "usb"), "serial": ("", "usb-serial"), "sound": ("", "usb"), "redirdev": ("bus", "usb"),
}


def _is_usb_device(device: Device) -> bool:
    sign = USB_DEVICE_SIGNS.get(device.kind)
    if sign is None:
        return False
    attribute, value = sign
    if device.kind == "controller":
        return device.ctype == value  # the type attribute, read at parse
    if device.kind == "disk":
        return device.extra.get("bus") == value  # the bus implied by the target name counts too
    return (device.element.get(attribute) if attribute else device.model) == value


def check_usb_indexes(domain: Domain) -> None:
    """USB port assignment (after PCI) refuses two USB host controllers with one index; the
    ich9-uhci companions share their EHCI's index and do not count."""
    seen: set[int | None] = set()
    for controller in domain.controllers:
        if controller.ctype != "usb" or controller.model in USB_WITHOUT_PORTS:
            continue
        if controller.index in seen:
            raise LibvirtError(f"XML error: Duplicate USB controllers with index {controller.index}")
        seen.add(controller.index)


# USB controller models that own no USB ports (companions, or USB disabled).
USB_WITHOUT_PORTS = frozenset({"none", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3"})


def _plan(domain: Domain, buses: int, max_index: int) -> int:
    """Pass 1: grow a dry-run table and add a controller for every bus it had to add."""
    addresses = build_set(domain, buses, dry_run=True)
    fixed_chipset_slots(domain, addresses)
    policy = current_policy()
    if domain.has_pci_root and not all(bus.fully_reserved() for bus in addresses.buses):
        for _ in range(policy.pc_free_slots):
            addresses.reserve_next(PCI_FLAGS)  # placeholder: keep a slot for a future bridge
    _assign_classes(domain, addresses)
    if max_index <= 0 and addresses.count > max_index + 1 and domain.has_pcie_root:
        for _ in range(policy.spare_root_ports):
            addresses.reserve_next(PCIE_FLAGS)  # the spare root port(s) for hotplug
    existing = {controller.index for controller in domain.pci_controllers()}
    index = 1
    while index < addresses.count:
        # Placing a new controller can grow the table again (a bridge needs a root port): the
        # buses added meanwhile get their controllers in the next round, in index order.
        wanted = [
            (number, model)
            for number, model in ((number, addresses.buses[number].model) for number in range(index, addresses.count))
            if number not in existing and model is not None
        ]
        index = addresses.count
        flags_of: dict[str, Connect] = {}  # per model: the controllers added are mostly of one
        for controller in new_pci_controllers(domain, wanted):
            flags = flags_of.get(controller.model)
            if flags is None:
                flags = flags_of[controller.model] = connect_flags(controller, NONE)
            controller.flags = flags
            if controller.model not in ROOT_MODELS:
                addresses.reserve_next(flags)
    return addresses.count


def build_set(domain: Domain, count: int, dry_run: bool) -> AddressSet:
    """The address table for ``domain``: one bus per index below ``count``, explicit addresses reserved."""
    models: list[Bus | None] = [None] * count
    for controller in domain.pci_controllers():
        assert controller.index is not None
        if controller.index >= count:
            raise LibvirtError(
                f"internal error: Inappropriate new pci controller index {controller.index} exceeds addrs array length"
            )
        if controller.model not in _KNOWN_BUS_MODELS:
            raise LibvirtError("internal error: PCI controller model was not set correctly")
        models[controller.index] = Bus.of_model(controller.model, _hotplug(controller))
    if models and (models[0] is None or models[0].model == "pci-root"):
        models[0] = Bus.of_model("pci-root")  # libvirt ignores hotplug='off' on pci-root here
    default = "pcie-root-port" if domain.has_pcie_root else "pci-bridge"
    buses = [Bus.of_model(default) if bus is None else bus for bus in models]
    addresses = AddressSet(buses, dry_run)
    for device in iterate_devices(domain):
        # address_type first: most devices have none, and has_pci_address is two property calls
        if device.address_type != "pci" or not device.has_pci_address:
            continue
        assert device.address is not None
        if _is_piix3_integrated(device):
            if not addresses.buses[0].flags & int(Connect.PCI_DEVICE):
                raise LibvirtError("internal error: Bus 0 must be PCI for integrated PIIX3 USB or IDE controllers")
            continue
        reserved = addresses.reserve(device.address, device.flags or Connect.PCI_DEVICE)
        if reserved != device.address:
            _commit(device, reserved, device.multifunction)
    return addresses


def _hotplug(controller: Device) -> bool:
    """Whether a PCI controller's bus offers hotplug (``<target hotplug='off'>`` turns it off).
    Controllers the assigner added have no ``<target>`` yet: no need to look."""
    if controller.implicit:
        return True
    target = child(controller.element, "target")
    return target is None or target.get("hotplug") != "off"


_ITERATE_RANK: dict[str, int] = {kind: number for number, kind in enumerate(ITERATE_ORDER)}


def iterate_devices(domain: Domain) -> list[Device]:
    """All devices in libvirt's iteration order (virDomainDeviceInfoIterate).  A list, not a
    generator: its callers walk hundreds of devices, and resuming a generator per device costs more."""
    by_kind: dict[int, list[Device]] = {}
    unranked = len(ITERATE_ORDER)
    for device in domain.devices:
        by_kind.setdefault(_ITERATE_RANK.get(device.kind, unranked), []).append(device)
    by_kind.setdefault(_ITERATE_RANK["controller"], []).extend(domain.controllers)
    consoles = by_kind.get(_ITERATE_RANK["console"])
    if consoles and is_serial_console(consoles[0]):
        del consoles[0]  # the alias of serial 0: libvirt's iteration skips it (virDomainSkipBackcompatConsole)
    return [device for number in sorted(by_kind) for device in by_kind[number]]


_KNOWN_BUS_MODELS = frozenset(
    {
        "pci-root", "pcie-root", "pci-bridge", "dmi-to-pci-bridge", "pcie-to-pci-bridge", "pcie-root-port",
        "pcie-switch-upstream-port", "pcie-switch-downstream-port", "pci-expander-bus", "pcie-expander-bus",
    }
)


def _is_piix3_integrated(device: Device) -> bool:
    address = device.address
    if device.kind != "controller" or address is None or (address.domain, address.bus, address.slot) != (0, 0, 1):
        return False
    if device.ctype == "ide":
        return device.index == 0 and address.function == 1
    if device.ctype == "usb":
        return device.index == 0 and device.model == "piix3-uhci" and address.function == 2
    return False


# -- chipset-fixed placements ------------------------------------------------------------------


def fixed_chipset_slots(domain: Domain, addresses: AddressSet) -> None:
    if domain.chipset is Chipset.I440FX:
        _fixed_piix3(domain, addresses)
    elif domain.chipset is Chipset.Q35:
        _fixed_q35(domain, addresses)


def _fixed_piix3(domain: Domain, addresses: AddressSet) -> None:
    for controller in domain.controllers:
        ctype = controller.ctype or ""
        if ctype not in PIIX3_FIXED or controller.index != 0:
            continue
        if ctype == "usb" and controller.model != "piix3-uhci":
            continue
        fixed = PciAddress(0, 0, 1, PIIX3_FIXED[ctype])
        if controller.has_pci_address:
            if controller.address != fixed:
                raise LibvirtError(PIIX3_MESSAGES[ctype])
        else:
            _commit(controller, fixed, None)
        if addresses.count:
            addresses.reserve(fixed, PCI_FLAGS)
    _reserve_chipset(domain, addresses)
    _place_primary_video(domain, addresses, PCI_FLAGS)


def _fixed_q35(domain: Domain, addresses: AddressSet) -> None:
    for controller in domain.controllers:
        if controller.ctype == "sata" and controller.index == 0:
            fixed = PciAddress(0, 0, 0x1F, 2)
            if controller.has_pci_address:
                if controller.address != fixed:
                    raise LibvirtError("internal error: Primary SATA controller must have PCI address 0:0:1f.2")
            else:
                _commit(controller, fixed, None)
        elif controller.ctype == "usb" and controller.model == "ich9-uhci1" and controller.address_type is None:
            for slot in (0x1D, 0x1A):
                candidate = PciAddress(0, 0, slot, 0)
                if not addresses.in_use(candidate):
                    addresses.reserve(candidate, Connect.PCIE_DEVICE)
                    _commit(controller, candidate, "on")
                    break
        elif controller.model == "dmi-to-pci-bridge" and controller.address_type is None:
            candidate = PciAddress(0, 0, 0x1E, 0)
            if not addresses.in_use(candidate):
                addresses.reserve(candidate, Connect.PCIE_DEVICE)
                _commit(controller, candidate, None)
    _reserve_chipset(domain, addresses)
    _place_primary_video(domain, addresses, Connect.PCIE_DEVICE)
    sound_slot = PciAddress(0, 0, 0x1B, 0)
    if not addresses.in_use(sound_slot):
        for sound in domain.of_kind("sound"):
            if sound.model == "ich9" and sound.wants_pci_address:
                addresses.reserve(sound_slot, Connect.PCIE_DEVICE)
                _commit(sound, sound_slot, None)
                break


def _reserve_chipset(domain: Domain, addresses: AddressSet) -> None:
    if not addresses.count:
        return
    flags = PCI_FLAGS if domain.chipset is Chipset.I440FX else Connect.PCIE_DEVICE
    for address in CHIPSET_RESERVED[domain.chipset]:
        addresses.reserve(address, flags)


def _place_primary_video(domain: Domain, addresses: AddressSet, flags: Connect) -> None:
    videos = list(domain.of_kind("video"))
    if not videos or videos[0].model in SKIPPED_MODELS["video"] or not videos[0].wants_pci_address:
        return
    primary = videos[0]
    fixed = PciAddress(0, 0, PRIMARY_VIDEO_SLOT[domain.chipset], 0)
    addresses.validate(fixed, flags, True)
    if addresses.in_use(fixed):
        _reserve_next(addresses, primary)
    else:
        addresses.reserve(fixed, flags)
        _commit(primary, fixed, None)


# -- ordered assignment ------------------------------------------------------------------------


def _assign_classes(domain: Domain, addresses: AddressSet) -> None:
    """Give each device wanting an address the next free one, class by class (tables.CLASS_ORDER)."""
    members = _class_members(domain)
    commit = not addresses.dry_run
    reserve_next = addresses.reserve_next
    for klass in CLASS_ORDER:
        for device in members.get(klass, ()):
            # most devices have no <address> at all: that alone means they want one, without the
            # two property calls wants_pci_address makes (this loop runs once per device, twice)
            if device.address_type is not None and not device.wants_pci_address:
                if klass == "disk" and not device.has_pci_address and device.address_type not in _DISK_OTHER_BUSES:
                    raise LibvirtError(
                        f"unsupported configuration: virtio disk cannot have an address of type '{device.address_type}'"
                    )
                continue
            if klass == "controller" and device.model in USB2_FUNCTIONS and device.ctype == "usb":
                _assign_usb2(domain, device, addresses)
                continue
            address = reserve_next(device.flags)
            if commit:  # _commit, inline: once per device
                device.address = address
                device.address_type = "pci"
                device.written = False


def _class_members(domain: Domain) -> dict[str, list[Device]]:
    """The devices of each class that take part in the ordered assignment, in list order."""
    members: dict[str, list[Device]] = {}
    for controller in domain.controllers:
        if _controller_wants_slot(controller):
            members.setdefault(device_class(controller), []).append(controller)
    for device in domain.devices:
        klass = device_class(device)
        skipped = SKIPPED_MODELS.get(klass)
        if skipped is not None and device.model in skipped:
            continue
        if klass == "disk" and device.extra.get("bus") != "virtio":
            continue
        if not device.flags and klass in _FLAGLESS_SKIPPED:
            continue
        members.setdefault(klass, []).append(device)
    return members


# Classes whose devices libvirt only addresses when they are PCI models at all (others are
# skipped by a model test in libvirt's loop rather than failing).
_FLAGLESS_SKIPPED = frozenset(
    {"hostdev", "memballoon", "watchdog", "input", "serial", "iommu", "memory", "filesystem", "interface", "rng"}
)
# Non-PCI controllers libvirt never gives a PCI address in the ordered pass.
_CONTROLLERS_WITHOUT_SLOT: frozenset[tuple[str, str | None]] = frozenset(
    {("usb", "none"), ("fdc", None), ("ccid", None), ("scsi", "ncr53c90"), ("scsi", "ibmvscsi")}
)


def _controller_wants_slot(controller: Device) -> bool:
    if controller.ctype == "pci":
        return controller.model not in ROOT_MODELS
    keys = ((controller.ctype or "", controller.model), (controller.ctype or "", None))
    if any(key in _CONTROLLERS_WITHOUT_SLOT for key in keys):
        return False
    return not (controller.ctype == "ide" and controller.index == 0)


def _assign_usb2(domain: Domain, controller: Device, addresses: AddressSet) -> None:
    """USB2 companions of one index share a slot, each at its fixed function."""
    function = USB2_FUNCTIONS[controller.model]
    multi = "on" if function == 0 else None
    sibling = next(
        (
            other
            for other in domain.controllers
            if other.ctype == "usb" and other.model in USB2_FUNCTIONS and other.index == controller.index
            and other.has_pci_address
        ),
        None,
    )
    if sibling is not None and sibling.address is not None:
        address = PciAddress(0, sibling.address.bus, sibling.address.slot, function)
        if sibling.address.domain:
            address = PciAddress(sibling.address.domain, sibling.address.bus, sibling.address.slot, function)
        addresses.reserve(address, controller.flags)
        _commit(controller, address, multi)
        return
    address = addresses.reserve_next(controller.flags, function)
    if not addresses.dry_run:
        _commit(controller, address, multi)


def _reserve_next(addresses: AddressSet, device: Device) -> None:
    address = addresses.reserve_next(device.flags)
    if not addresses.dry_run:
        _commit(device, address, device.multifunction)


def _commit(device: Device, address: PciAddress, multifunction: str | None) -> None:
    """Give ``device`` its address; :func:`write_addresses` writes it into the XML afterwards."""
    device.address = address
    device.multifunction = multifunction
    device.address_type = "pci"
    device.written = False


def write_addresses(domain: Domain) -> None:
    """Write every PCI address not yet in libvirt's full spelling: the ones placed, and the partial
    ones users wrote (libvirt stores those in full)."""
    if domain.added_block is not None:  # placed by an earlier write: elements again, before more are added
        build_added_block(domain.added_block)
        domain.added_block = None
    unbuilt = [controller for controller in domain.controllers if controller.element is UNBUILT]
    if unbuilt:
        after = next(
            (
                controller.element
                for controller in reversed(domain.controllers)
                if controller.element is not UNBUILT and controller.element.getparent() is domain.devices_element
            ),
            None,
        )
        positions = [number for number, controller in enumerate(domain.controllers) if controller.element is UNBUILT]
        if positions[-1] - positions[0] + 1 == len(positions):
            # one run in the controller list: formatting splices their text in as one block
            domain.added_block = place_added_block(unbuilt, domain.devices_element, after)
        else:
            build_added_controllers(unbuilt, domain.devices_element, after)
    write_pci_addresses(
        [
            device
            for devices in (domain.controllers, domain.devices)  # all_devices, without a generator
            for device in devices
            if not device.written and device.address_type == "pci" and device.address is not None
        ]
    )


# -- after placement ---------------------------------------------------------------------------


def set_multifunction(domain: Domain) -> None:
    """``multifunction='on'`` for the function-0 device of every slot another device shares.

    Only one device can hold function 0 of a slot, so the order devices are looked at in does not
    matter: the lists are walked as they are, without libvirt's iteration order."""
    shared: set[tuple[int, int, int]] = set()
    first_functions: list[Device] = []
    for devices in (domain.controllers, domain.devices):
        for device in devices:
            address = device.address
            if address is None or device.address_type != "pci":
                continue
            if address.function:
                shared.add((address.domain, address.bus, address.slot))
            else:
                first_functions.append(device)
    if not shared:
        return
    seen: set[tuple[int, int, int]] = set()
    for device in first_functions:
        address = device.address
        assert address is not None
        slot = (address.domain, address.bus, address.slot)
        if slot in seen:
            continue  # a slot's first function-0 device only (two cannot be placed, but keep libvirt's rule)
        seen.add(slot)
        if slot in shared and device.multifunction is None:
            device.multifunction = "on"
            device.written = False


def fill_controller_defaults(domain: Domain) -> None:
    """Model names and ``<target>`` defaults for PCI controllers, and the bridge index check."""
    from pytest_pcie.reference.controllers import apply_defaults

    apply_defaults(domain)
