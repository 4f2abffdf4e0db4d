"""Attaching and detaching one device: ``attach-device --config``/``--live`` and ``detach-device --config``.

Offline (``--config``) libvirt inserts the device into a copy of the persistent definition and
re-runs the *whole* post-parse on it (qemuDomainAttachDeviceConfig → virDomainDefPostParse), so
both assignment passes run again and controllers are auto-added by the define-time rules; whole
domain validation does not run again, only the new device's own.  Detach likewise removes the
matching device and re-runs post-parse; nothing libvirt added earlier is taken away.

Live, libvirt uses the address set it kept when the guest started (pass 2's table: explicit
addresses plus the chipset's fixed ones, no placeholder, no spare): it never grows, so no
controller is ever added, and the device must land in a hotpluggable slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pytest_pcie.reference.addresses import AddressSet
from pytest_pcie.reference.assign import assign_addresses, build_set, fixed_chipset_slots, write_addresses
from pytest_pcie.reference.chardev import (
    CHR_KINDS,
    check_chr_attach,
    check_persistent_copy,
    check_port,
    chr_source,
    find_chr,
)
from pytest_pcie.reference.defaults import add_defaults, inherit_scsi_model
from pytest_pcie.reference.define import format_domain
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.flags import PCI_FLAGS, PCIE_FLAGS, connect_flags, fill_flags
from pytest_pcie.reference.machine import Chipset
from pytest_pcie.reference.model import Device, child, insert_device, parse_xml, write_pci_address
from pytest_pcie.reference.parse import (
    Domain,
    devices_of_kind,
    disk_index,
    insert_controller,
    insert_disk,
    load_domain,
    read_device,
    remove_device,
)
from pytest_pcie.reference.profiles import current_rules
from pytest_pcie.reference.tables import Connect
from pytest_pcie.reference.validate import check_disk_targets, validate_device
from pytest_pcie.reference.virtio_serial import live_channel

# Device elements libvirt can parse as a device for attach/detach (virDomainDeviceType names).
DEVICE_TAGS = frozenset(
    {
        "disk", "controller", "lease", "filesystem", "interface", "input", "sound", "video", "hostdev",
        "watchdog", "graphics", "hub", "redirdev", "smartcard", "channel", "console", "serial", "parallel",
        "memballoon", "nvram", "rng", "shmem", "tpm", "panic", "memory", "iommu", "vsock", "audio",
    }
)
# Kinds libvirt cannot add to a persistent definition, and cannot hotplug.
NO_PERSISTENT_ATTACH = frozenset(
    {"video", "graphics", "hub", "smartcard", "memballoon", "nvram", "tpm", "panic", "iommu", "audio"}
)
NO_LIVE_ATTACH = frozenset(
    {"sound", "video", "graphics", "hub", "smartcard", "memballoon", "nvram", "tpm", "panic", "iommu", "audio"}
)
NO_PERSISTENT_DETACH = NO_PERSISTENT_ATTACH
# <chr> devices share one libvirt device type.
DEVICE_TYPE_NAMES: dict[str, str] = {"channel": "chr", "console": "chr", "serial": "chr", "parallel": "chr",
                                     "interface": "net", "filesystem": "fs"}


def attach(domain_xml: str, device_xml: str, *, live: bool) -> str:
    """See :func:`pytest_pcie.reference.attach`."""
    domain = load_domain(domain_xml)
    device = parse_device(device_xml)
    validate_device(device, domain, 0)
    if live:
        attach_live(domain, device)
    else:
        attach_config(domain, device)
    return format_domain(domain)


def detach(domain_xml: str, device_xml: str) -> str:
    """See :func:`pytest_pcie.reference.detach`."""
    domain = load_domain(domain_xml)
    wanted = parse_device(device_xml)
    check_persistent_copy(domain)
    if wanted.kind in NO_PERSISTENT_DETACH:
        raise LibvirtError(
            f"Operation not supported: persistent detach of device '{_type_name(wanted.kind)}' is not supported"
        )
    found = find_match(domain, wanted)
    if found is not None:
        remove_device(domain, found)
    add_defaults(domain)
    assign_addresses(domain)
    return format_domain(domain)


def parse_device(device_xml: str) -> Device:
    """One device element as libvirt's device parser reads it (post-parse defaults applied)."""
    element = parse_xml(device_xml, "device XML")
    if element.tag not in DEVICE_TAGS:
        raise LibvirtError(f"unsupported configuration: unknown device type '{element.tag}'")
    device = read_device(element)
    check = PARSE_CHECKS.get(device.kind)
    if check is not None:
        check(device)
    return device


# -- offline ------------------------------------------------------------------------------------


def attach_config(domain: Domain, device: Device) -> None:
    """Insert ``device`` into the persistent definition and re-run post-parse (both passes)."""
    check_persistent_copy(domain)
    if device.kind in NO_PERSISTENT_ATTACH:
        raise LibvirtError(
            f"Operation not supported: persistent attach of device '{_type_name(device.kind)}' is not supported"
        )
    check = CONFIG_CHECKS.get(device.kind)
    if check is not None:
        check(domain, device)
    insert(domain, device)
    check_persistent_copy(domain)  # post-parse checks the ISA serials again, the new one included
    add_defaults(domain)
    assign_addresses(domain)


# SCSI controller model -> (highest unit, reserved unit) a disk may not use (virDomainSCSIDriveAddressIsUsed:
# limits taken from QEMU's adapters; None where libvirt sets none).
SCSI_UNIT_LIMITS: dict[str, tuple[int | None, int | None]] = {
    "virtio-scsi": (16383, None), "virtio-transitional": (16383, None), "virtio-non-transitional": (16383, None),
    "ibmvscsi": (31, 7), "lsisas1068": (1, None), "lsisas1078": (255, None), "lsilogic": (None, 7),
    "vmpvscsi": (None, 7), "buslogic": (None, 7), "ncr53c90": (6, None), "dc390": (6, None), "am53c974": (6, None),
}


def _check_disk(domain: Domain, device: Device) -> None:
    target = device.extra.get("dev")
    if any(other.kind == "disk" and other.extra.get("dev") == target for other in domain.devices):
        raise LibvirtError(f"Requested operation is not valid: target {target} already exists")
    if device.extra.get("bus") == "scsi" and _scsi_address_used(domain, device):
        raise LibvirtError("Requested operation is not valid: Domain already contains a disk with that address")


def _scsi_address_used(domain: Domain, disk: Device) -> bool:
    """Whether a scsi disk's drive address is taken: by another scsi disk, or because its unit is
    beyond (or reserved by) the model of the controller it names (qemuCheckDiskConfigAgainstDomain)."""
    address = scsi_drive_address(disk)
    controller = domain.controller("scsi", address[0])
    if controller is not None:
        highest, reserved = SCSI_UNIT_LIMITS.get(controller.model, (None, None))
        if (highest is not None and address[3] > highest) or address[3] == reserved:
            return True
    return any(
        other.kind == "disk" and other.extra.get("bus") == "scsi" and scsi_drive_address(other) == address
        for other in domain.devices
    )


def scsi_drive_address(disk: Device) -> tuple[int, int, int, int]:
    """(controller, bus, target, unit) of a scsi disk: the written drive address, or the one libvirt
    derives from the target name on QEMU's narrow bus (7 units a controller)."""
    address = disk.element.find("address")
    if address is not None and address.get("type") == "drive":
        return (
            int(address.get("controller") or "0", 0), int(address.get("bus") or "0", 0),
            int(address.get("target") or "0", 0), int(address.get("unit") or "0", 0),
        )
    index = max(disk_index(disk.extra.get("dev", "")), 0)
    return (index // 7, 0, 0, index % 7)


def _check_controller(domain: Domain, device: Device) -> None:
    if device.index is not None and domain.controller(device.ctype or "", device.index) is not None:
        raise LibvirtError(f"Requested operation is not valid: controller index='{device.index}' already exists")


def _check_single(domain: Domain, device: Device) -> None:
    """A second device of a kind the profile allows once (``single_attach_messages``), or one equal
    to a device already there in the attributes the profile compares (``duplicate_attach_attributes``)."""
    rules = current_rules()
    message = rules.single_attach_messages.get(device.kind)
    if message is not None and any(other.kind == device.kind for other in domain.devices):
        raise LibvirtError(message)
    compared = rules.duplicate_attach_attributes.get(device.kind)
    if compared is not None and any(
        other.kind == device.kind and _same_attributes(other, device, compared) for other in domain.devices
    ):
        raise LibvirtError("Requested operation is not valid: device is already in the domain configuration")


def _check_watchdog(domain: Domain, device: Device) -> None:
    """A second watchdog: refused outright, or (where several are allowed) when it repeats one or
    its action differs, which validation of the new definition refuses."""
    _check_single(domain, device)
    if not current_rules().watchdog_actions_must_agree:
        return
    if any(not _same_attributes(other, device, ("action",)) for other in domain.of_kind("watchdog")):
        raise LibvirtError(
            "unsupported configuration: watchdogs with different actions are not supported with this QEMU binary"
        )


# Attribute values libvirt fills in when the XML leaves them out, for the comparisons above.
ATTRIBUTE_DEFAULTS: dict[tuple[str, str], str] = {("watchdog", "action"): "reset"}


def _same_attributes(first: Device, second: Device, attributes: tuple[str, ...]) -> bool:
    def value(device: Device, attribute: str) -> str | None:
        return device.element.get(attribute) or ATTRIBUTE_DEFAULTS.get((device.kind, attribute))

    return all(value(first, attribute) == value(second, attribute) for attribute in attributes)


def _check_rng(domain: Domain, device: Device) -> None:
    if device.has_pci_address and any(other.address == device.address for other in domain.all_devices()):
        raise LibvirtError("unsupported configuration: a device with the same address already exists ")


CONFIG_CHECKS: dict[str, Callable[[Domain, Device], None]] = {
    # character devices: defined with detach's matching further down
    **dict.fromkeys(
        ("serial", "parallel", "console", "channel"), lambda domain, device: check_chr_attach(domain, device)
    ),
    "rng": _check_rng,
    "disk": _check_disk,
    "controller": _check_controller,
    "watchdog": _check_watchdog,
    "vsock": _check_single,
}


def insert(domain: Domain, device: Device) -> None:
    """Add ``device`` where libvirt's insert functions put it (disks sorted by target, controllers
    after their type, everything else at the end of its kind)."""
    if device.kind == "controller":
        insert_controller(domain.controllers, device)
        insert_device(domain.devices_element, device.element)
        return
    if device.kind == "disk":
        insert_disk(domain.devices, device)
    else:
        domain.devices.append(device)
    insert_device(domain.devices_element, device.element)


# -- live ---------------------------------------------------------------------------------------


def attach_live(domain: Domain, device: Device) -> None:
    """Hotplug ``device`` into the running guest described by ``domain``."""
    if device.kind in NO_LIVE_ATTACH:
        name = _type_name(device.kind)
        raise LibvirtError(f"Operation not supported: live attach of device '{name}' is not supported")
    hook = LIVE_CHECKS.get(device.kind)
    if hook is not None:
        hook(domain, device)
    flags = connect_flags(device, PCIE_FLAGS if domain.has_pcie_root else PCI_FLAGS)
    if flags:
        addresses = live_address_set(domain)
        ensure_address(addresses, device, flags)
        _check_qemu_hotplug(domain, device)
    _check_qemu_device_name(device)
    insert(domain, device)


def live_address_set(domain: Domain) -> AddressSet:
    """The table libvirt kept when the guest started: every address in use, chipset slots reserved."""
    count = max((device.index or 0 for device in domain.pci_controllers()), default=-1) + 1
    fill_flags(domain)
    addresses = build_set(domain, count, dry_run=False)
    fixed_chipset_slots(domain, addresses)
    write_addresses(domain)  # any chipset-fixed address it had to fill in
    return addresses


def ensure_address(addresses: AddressSet, device: Device, flags: Connect) -> None:
    """libvirt's virDomainPCIAddressEnsureAddr: the slot must be hotpluggable; a given address must be function 0."""
    flags |= Connect.HOTPLUGGABLE
    if device.has_pci_address:
        assert device.address is not None
        if device.address.function != 0:
            raise LibvirtError("internal error: Only PCI device addresses with function=0 are supported")
        addresses.validate(device.address, flags, True)
        addresses.reserve(device.address, flags, from_config=True)
        write_pci_address(device)
        return
    device.address = addresses.reserve_next(flags)
    write_pci_address(device)


# Controller models whose bus QEMU 7.2 cannot hotplug into although libvirt lets the address through.
QEMU_NO_HOTPLUG_MODELS = frozenset({"pci-expander-bus"})


def _check_qemu_hotplug(domain: Domain, device: Device) -> None:
    """QEMU's own refusals, after libvirt accepted the address: pci.0 without ACPI PCI hotplug
    (no ACPI, or pci-root hotplug='off'), and the bus of a pci-expander-bus (checked on libvirtd)."""
    address = device.address
    if address is None:
        return
    bus = domain.controller("pci", address.bus)
    refused = bus is not None and bus.model in QEMU_NO_HOTPLUG_MODELS
    if domain.chipset is Chipset.I440FX and address.bus == 0:
        target = bus.element.find("target") if bus is not None else None
        refused = (target is not None and target.get("hotplug") == "off") or not domain.acpi
    if refused:
        raise LibvirtError(
            f"internal error: unable to execute QEMU command 'device_add': Bus 'pci.{address.bus}' does not "
            "support hotplugging"
        )


# Controller models libvirt 9.0.0 asks QEMU for under a device name QEMU 7.2 does not have
# (qemuControllerModelSCSITypeToString says 'dc-390'; QEMU calls it 'dc390').
QEMU_UNKNOWN_DEVICE_NAMES: dict[tuple[str, str], str] = {("scsi", "dc390"): "dc-390"}


def _check_qemu_device_name(device: Device) -> None:
    """QEMU's refusal of a device_add naming a device model it does not have (checked on libvirtd)."""
    name = QEMU_UNKNOWN_DEVICE_NAMES.get((device.ctype or "", device.model))
    if device.kind == "controller" and name is not None:
        raise LibvirtError(
            f"internal error: unable to execute QEMU command 'device_add': '{name}' is not a valid device model name"
        )


def _live_controller(domain: Domain, device: Device) -> None:
    if device.ctype not in current_rules().hotpluggable_controllers:
        raise LibvirtError(f"Operation not supported: '{device.ctype}' controller cannot be hot plugged.")
    if device.index is None:
        used = {other.index for other in domain.controllers if other.ctype == device.ctype}
        device.index = next(index for index in range(len(used) + 1) if index not in used)
        device.element.set("index", str(device.index))
    elif domain.controller(device.ctype, device.index) is not None:
        raise LibvirtError(f"operation failed: target {device.ctype}:{device.index} already exists")
    if current_rules().scsi_model_from_first_written:
        inherit_scsi_model(domain, device)


def _live_watchdog(domain: Domain, device: Device) -> None:
    if any(other.kind == "watchdog" for other in domain.devices):
        raise LibvirtError("Requested operation is not valid: domain already has a watchdog")
    if device.model != "i6300esb":
        raise LibvirtError(f"Operation not supported: hotplug of watchdog of model {device.model} is not supported")


def _live_vsock(domain: Domain, device: Device) -> None:
    if any(other.kind == "vsock" for other in domain.devices):
        raise LibvirtError("Requested operation is not valid: the domain already has a vsock device")


def _live_input(domain: Domain, device: Device) -> None:
    bus = device.element.get("bus") or "ps2"
    if bus not in ("virtio", "usb"):
        raise LibvirtError(f"Operation not supported: input device on bus '{bus}' cannot be hot plugged.")


# Disk type -> the <source> attribute naming what the disk opens.
DISK_SOURCE_ATTRIBUTES: dict[str, str] = {"file": "file", "block": "dev"}


def _live_disk(domain: Domain, device: Device) -> None:
    for other in domain.devices:
        if other.kind == "disk":
            check_disk_targets(other, device)
    bus = device.extra.get("bus")
    if bus in current_rules().unhotpluggable_disk_buses:
        raise LibvirtError(f"Operation not supported: disk bus '{bus}' cannot be hotplugged.")
    if device.element.get("device") == "cdrom" and _empty_source(device):
        # libvirt builds the new drive's backend for QEMU before it looks at the bus or the
        # controller, and an empty medium has no file name to give (checked on libvirtd for sata,
        # scsi and usb CD-ROMs of type file and block).
        raise LibvirtError("internal error: argument key 'filename' must not have null value")


def _empty_source(disk: Device) -> bool:
    attribute = DISK_SOURCE_ATTRIBUTES.get(disk.element.get("type") or "file")
    if attribute is None:
        return False
    source = disk.element.find("source")
    return source is None or not source.get(attribute)


def _live_filesystem(domain: Domain, device: Device) -> None:
    driver = device.element.find("driver")
    if driver is None or driver.get("type") != "virtiofs":
        raise LibvirtError("Operation not supported: only virtiofs filesystems can be hotplugged")


LIVE_CHECKS: dict[str, Callable[[Domain, Device], None]] = {
    "filesystem": _live_filesystem,
    "disk": _live_disk,
    "controller": _live_controller,
    "watchdog": _live_watchdog,
    "vsock": _live_vsock,
    "input": _live_input,
    "channel": live_channel,
}


# -- detach -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matcher:
    """How libvirt finds the device to detach for one kind, and what it says when none matches."""

    matches: Callable[[Device, Device], bool]
    missing: Callable[[Device], str]


def _same_address_if_given(candidate: Device, wanted: Device) -> bool:
    return not wanted.has_pci_address or candidate.address == wanted.address


def _attribute(path: str, name: str) -> Callable[[Device], str | None]:
    def read(device: Device) -> str | None:
        element = device.element.find(path) if path else device.element
        return element.get(name) if element is not None else None

    return read


_mac = _attribute("mac", "address")
_target_dir = _attribute("target", "dir")


def _net_matches(candidate: Device, wanted: Device) -> bool:
    mac = _mac(wanted)
    if mac is not None and (_mac(candidate) or "").lower() != mac.lower():
        return False
    return _same_address_if_given(candidate, wanted)


def _net_missing(wanted: Device) -> str:
    address = str(wanted.address) if wanted.has_pci_address else "(<null>)"
    return (
        f"device not found: no device found at address '{address}' matching MAC address "
        f"'{_mac(wanted) or '(<null>)'}' and alias '(<null>)'"
    )


def _hostdev_source(device: Device) -> tuple[str | None, ...]:
    source = device.element.find("source/address")
    if source is None:
        return (None,)
    return tuple(source.get(name) for name in ("domain", "bus", "slot", "function"))


def _redirdev_bus(device: Device) -> str:
    return device.element.get("bus") or "usb"


def _check_redirdev(wanted: Device) -> None:
    if wanted.element.get("type") is None:
        raise LibvirtError("internal error: missing type in redirdev")


def _same_info_if_given(candidate: Device, wanted: Device) -> bool:
    """An address written on the device to detach must equal the stored one (any address type),
    and so must a user alias."""
    address = child(wanted.element, "address")
    if address is not None:
        stored = child(candidate.element, "address")
        if stored is None or dict(stored.items()) != dict(address.items()):
            return False
    alias = child(wanted.element, "alias")
    if alias is not None:
        stored = child(candidate.element, "alias")
        return stored is not None and stored.get("name") == alias.get("name")
    return True


def _lease_key(device: Device) -> tuple[str, str]:
    return (device.element.findtext("lockspace") or "", device.element.findtext("key") or "")


def _check_lease(wanted: Device) -> None:
    """virDomainLeaseDefParseXML's refusals; a lease without a lockspace fails with no message at all."""
    element = wanted.element
    if not element.findtext("key"):
        raise LibvirtError("XML error: Missing 'key' element for lease")
    if not element.findtext("lockspace"):
        raise LibvirtError("An error occurred, but the cause is unknown")
    target = element.find("target")
    if target is None:
        raise LibvirtError("XML error: Missing 'target' element for lease")
    if target.get("path") is None:
        raise LibvirtError("XML error: Missing 'path' attribute to 'target' element for lease")


MATCHERS: dict[str, Matcher] = {
    "disk": Matcher(
        lambda candidate, wanted: candidate.extra.get("dev") == wanted.extra.get("dev"),
        lambda wanted: f"device not found: no target device {wanted.extra.get('dev')}",
    ),
    "interface": Matcher(_net_matches, _net_missing),
    "controller": Matcher(
        lambda candidate, wanted: candidate.ctype == wanted.ctype and candidate.index == wanted.index,
        lambda wanted: "device not found: device not present in domain configuration",
    ),
    "sound": Matcher(
        lambda candidate, wanted: candidate.model == wanted.model and _same_address_if_given(candidate, wanted),
        lambda wanted: "device not found: device not present in domain configuration",
    ),
    "hostdev": Matcher(
        lambda candidate, wanted: _hostdev_source(candidate) == _hostdev_source(wanted),
        lambda wanted: "device not found: device not present in domain configuration",
    ),
    "filesystem": Matcher(
        lambda candidate, wanted: _target_dir(candidate) == _target_dir(wanted),
        lambda wanted: "device not found: no matching filesystem device was found",
    ),
    "rng": Matcher(
        lambda candidate, wanted: candidate.model == wanted.model and _same_address_if_given(candidate, wanted),
        lambda wanted: "device not found: no matching RNG device was found",
    ),
    "shmem": Matcher(
        lambda candidate, wanted: candidate.element.get("name") == wanted.element.get("name"),
        lambda wanted: "device not found: matching shmem device was not found",
    ),
    "watchdog": Matcher(lambda candidate, wanted: True, lambda wanted: "device not found: domain has no watchdog"),
    "input": Matcher(
        lambda candidate, wanted: candidate.element.get("type") == wanted.element.get("type")
        and candidate.element.get("bus") == wanted.element.get("bus")
        and _same_address_if_given(candidate, wanted),
        lambda wanted: "device not found: matching input device not found",
    ),
    "vsock": Matcher(
        lambda candidate, wanted: candidate.model == wanted.model,
        lambda wanted: "operation failed: matching vsock device not found",
    ),
    "memory": Matcher(
        lambda candidate, wanted: candidate.model == wanted.model and _same_address_if_given(candidate, wanted),
        lambda wanted: "device not found: matching memory device was not found",
    ),
    # virDomainRedirdevDefFind: bus, the chardev source, and the address and alias when given.
    "redirdev": Matcher(
        lambda candidate, wanted: _redirdev_bus(candidate) == _redirdev_bus(wanted)
        and chr_source(candidate, redirdev=True) == chr_source(wanted, redirdev=True)
        and _same_info_if_given(candidate, wanted),
        lambda wanted: "device not found: no matching redirdev was not found",
    ),
    # virDomainLeaseIndex: lockspace and key; the target path plays no part.
    "lease": Matcher(
        lambda candidate, wanted: _lease_key(candidate) == _lease_key(wanted),
        lambda wanted: "device not found: Lease {1} in lockspace {0} does not exist".format(*_lease_key(wanted)),
    ),
}

# libvirt's refusals while parsing one device element (attach or detach), before it looks at the domain.
PARSE_CHECKS: dict[str, Callable[[Device], None]] = {
    "serial": check_port,
    "parallel": check_port,
    "console": check_port,
    "redirdev": _check_redirdev,
    "lease": _check_lease,
}
def find_match(domain: Domain, wanted: Device) -> Device | None:
    """The one device ``wanted`` names, matched the way libvirt matches it for detach.

    None when libvirt's match is a device the reference does not write: the stub ``<console>`` that
    libvirt keeps as the alias of serial 0 (removing it changes nothing the reference holds)."""
    if wanted.kind in CHR_KINDS:
        return find_chr(domain, wanted)
    matcher = MATCHERS.get(wanted.kind)
    if matcher is None:
        raise LibvirtError(
            f"Operation not supported: persistent detach of device '{_type_name(wanted.kind)}' is not supported"
        )
    candidates = [device for device in devices_of_kind(domain, wanted.kind) if matcher.matches(device, wanted)]
    if wanted.kind == "interface" and len(candidates) > 1:
        mac = _mac(wanted)
        if mac is not None:
            raise LibvirtError(f"operation failed: multiple devices matching MAC address {mac} found")
        raise LibvirtError("operation failed: multiple matching devices found")
    if not candidates:
        raise LibvirtError(matcher.missing(wanted))
    return candidates[0]


def _type_name(kind: str) -> str:
    return DEVICE_TYPE_NAMES.get(kind, kind)
