"""Reading a domain XML document into the reference's :class:`Domain`.

Only what shapes the PCI topology is read; the rest of the document is carried along untouched.
Per-device model defaults that libvirt writes into the XML at post-parse (a NIC without a model
becomes rtl8139, a USB controller without a model piix3-uhci…) are applied here, while reading,
because libvirt applies them before anything looks at addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache

from lxml import etree

from pytest_pcie.reference.arches import X86_64, arch_default_model, current_arch
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.machine import Chipset, canonical_on, chipset_on
from pytest_pcie.reference.model import AddedBlock, Device, Element, child, parse_int, parse_xml, read_pci_address
from pytest_pcie.reference.profiles import current_rules
from pytest_pcie.reference.tables import CONTROLLER_TYPE_MODELS

# The device elements the reference tracks, in the order libvirt's parser reads them
# (virDomainDefParseXML): a parse-time error in a kind earlier here is the one reported, whatever the
# order of the elements in the document.  Everything else in <devices> is carried along untouched.
PARSE_ORDER: tuple[str, ...] = (
    "disk", "controller", "filesystem", "interface", "smartcard", "serial", "console", "channel", "input",
    "graphics", "sound", "video", "hostdev", "watchdog", "memballoon", "rng", "hub", "redirdev", "shmem",
    "memory", "iommu", "vsock",
)

# Model libvirt stores for a device written without one (post-parse defaults for QEMU 7.2 x86_64).
# Keyed by kind, or "controller:<type>" for controllers.
DEFAULT_MODELS: dict[str, str] = {
    "interface": "rtl8139",
    "video": "cirrus",
    "vsock": "virtio",
    "controller:usb": "piix3-uhci",
    "controller:scsi": "lsilogic",
}


def default_model(key: str) -> str | None:
    """The model libvirt stores for a device of ``key`` written without one, on the current arch."""
    return arch_default_model(key) or DEFAULT_MODELS.get(key)


# <serial><target type> -> the <model name> libvirt writes inside the target.
SERIAL_MODEL_NAMES: dict[str, str] = {"pci-serial": "pci-serial", "usb-serial": "usb-serial"}

# USB controller models libvirt always treats as companions of a master controller.
USB_COMPANION_MODELS = frozenset({"ich9-uhci1", "ich9-uhci2", "ich9-uhci3"})

# Disk target name prefix -> bus, when <target bus> is absent (virDomainDiskDefParseXML).
DISK_PREFIX_BUS: tuple[tuple[str, str], ...] = (("hd", "ide"), ("sd", "scsi"), ("vd", "virtio"), ("xvd", "xen"))

# How many disks one controller of a bus takes when libvirt assigns drive addresses itself.
DISK_UNITS_PER_CONTROLLER: dict[str, int] = {"scsi": 7, "ide": 4, "sata": 6, "fdc": 2}


@dataclass
class Domain:
    """The parsed domain: the XML tree plus typed views of the devices that matter for PCI."""

    root: Element
    devices_element: Element
    machine: str
    chipset: Chipset
    acpi: bool
    numa_cells: int
    arch: str = X86_64
    devices: list[Device] = field(default_factory=list)
    controllers: list[Device] = field(default_factory=list)
    # added PCI controllers whose text formatting splices in (model.place_added_block)
    added_block: AddedBlock | None = None

    def of_kind(self, kind: str) -> Iterator[Device]:
        """Devices of one element kind, in libvirt's list order (controllers: in-memory order)."""
        if kind == "controller":
            yield from self.controllers
            return
        yield from (device for device in self.devices if device.kind == kind)

    def pci_controllers(self) -> Iterator[Device]:
        yield from (device for device in self.controllers if device.ctype == "pci")

    def controller(self, ctype: str, index: int) -> Device | None:
        for device in self.controllers:
            if device.ctype == ctype and device.index == index:
                return device
        return None

    def all_devices(self) -> Iterator[Device]:
        yield from self.controllers
        yield from self.devices

    @property
    def has_pcie_root(self) -> bool:
        return any(device.model == "pcie-root" for device in self.pci_controllers())

    @property
    def has_pci_root(self) -> bool:
        return any(device.model == "pci-root" for device in self.pci_controllers())


def load_domain(text: str) -> Domain:
    """Parse a domain document, as libvirt's parser and per-device post-parse would."""
    root = parse_xml(text, "domain XML")
    if root.tag != "domain":
        raise LibvirtError(f"XML error: unexpected root element <{root.tag}>, expecting <domain>")
    os_type = root.find("os/type")
    arch = (os_type.get("arch") if os_type is not None else None) or X86_64
    current_arch.set(arch)
    machine = canonical_on((os_type.get("machine") if os_type is not None else None) or "pc", arch)
    if os_type is not None:
        os_type.set("machine", machine)
    devices_element = root.find("devices")
    if devices_element is None:
        devices_element = etree.SubElement(root, "devices")
    numa = root.findall("cpu/numa/cell")
    domain = Domain(
        root, devices_element, machine, chipset_on(machine, arch), root.find("features/acpi") is not None, len(numa),
        arch,
    )
    read = _read_devices(devices_element)
    for element in devices_element:
        device = read.get(element)
        if device is None:
            continue
        if device.kind == "controller":
            insert_controller(domain.controllers, device)
        elif device.kind == "disk":
            insert_disk(domain.devices, device)
        else:
            domain.devices.append(device)
    _primary_video_first(domain)
    return domain


def _read_devices(devices_element: Element) -> dict[Element, Device]:
    """Read every tracked device kind by kind in libvirt's parse order, with the parse-time checks
    where libvirt makes them, so a domain with several problems fails with the one libvirt names."""
    read: dict[Element, Device] = {}
    by_kind: dict[str, list[Element]] = {}
    single_messages = current_rules().single_device_messages
    unknown = unknown_values()
    for element in devices_element:
        by_kind.setdefault(str(element.tag), []).append(element)
    for kind in PARSE_ORDER:
        elements = by_kind.get(kind, [])
        if len(elements) > 1 and kind in single_messages:
            raise LibvirtError(single_messages[kind])
        devices: list[Device] = []
        for element in elements:
            device = read_device(element, unknown)
            if kind == "controller":
                _check_usb_none(devices, device)
            devices.append(device)
            read[element] = device
        if kind == "controller":
            _check_usb_master(devices)
    return read


def _check_usb_master(controllers: list[Device]) -> None:
    """ich9-uhci1/2/3 are always companions; USB controllers without any master are refused."""
    usb = [device for device in controllers if device.ctype == "usb" and device.model != "none"]
    if usb and all(device.model in USB_COMPANION_MODELS for device in usb):
        raise LibvirtError("No master USB controller specified")


def _check_usb_none(earlier: list[Device], new: Device) -> None:
    """``model='none'`` disables USB: the parser refuses a USB controller read after a 'none' one,
    and a 'none' read after any other USB controller, as soon as it reads it."""
    if new.ctype != "usb":
        return
    usb = [device for device in earlier if device.ctype == "usb"]
    if usb and (new.model == "none" or any(device.model == "none" for device in usb)):
        raise LibvirtError("Can't add another USB controller: USB is disabled for this domain")


def read_device(element: Element, unknown: UnknownValues | None = None) -> Device:
    """The typed view of one device element (model defaults applied to the element too).

    ``unknown`` is :func:`unknown_values` of the current rules, when the caller reads many devices."""
    kind = str(element.tag)
    reader = _MODEL_READERS.get(kind, _model_attribute)
    device = Device(element, kind, "")
    if kind == "controller":
        device.ctype = element.get("type")
        if device.ctype is None:
            raise LibvirtError("XML error: missing controller type")
        device.index = parse_int(element.get("index"), "controller index")
        written = element.get("model")
        if written is not None:
            device.extra["model-written"] = written  # a default model is not one a later rule may copy
        known = CONTROLLER_TYPE_MODELS.get(device.ctype)
        if written is not None and known is not None and written not in known:
            raise LibvirtError(f"unsupported configuration: Unknown model type '{written}'")
    checks = (unknown_values() if unknown is None else unknown).get(kind)
    if checks:
        _check_known_values(device, checks)
    device.model = reader(device)
    if device.kind == "memballoon" and device.model == "none":
        address = element.find("address")
        if address is not None:
            element.remove(address)  # a disabled balloon has no device, so no address
    _read_address(device)
    return device


def insert_controller(controllers: list[Device], new: Device) -> None:
    """Place a parsed controller as libvirt's parser does: after the others of its type, sorted by index."""
    insert_at = -1
    for position in range(len(controllers) - 1, -1, -1):
        current = controllers[position]
        if current.ctype != new.ctype:
            continue
        if new.index is None:
            insert_at = position + 1
            break
        current_index = -1 if current.index is None else current.index
        if current_index > new.index:
            insert_at = position
        elif current_index == new.index and _is_companion(current) and not _is_companion(new):
            insert_at = position  # a master USB controller goes before its companions
        elif insert_at == -1:
            insert_at = position + 1
    if insert_at == -1:
        controllers.append(new)
    else:
        controllers.insert(insert_at, new)


def _is_companion(controller: Device) -> bool:
    return controller.ctype == "usb" and controller.model in USB_COMPANION_MODELS


def insert_disk(devices: list[Device], new: Device) -> None:
    """Disks are kept sorted by target within a bus (virDomainDiskInsert)."""
    insert_at = -1
    mine = disk_index(new.extra.get("dev", ""))
    for position in range(len(devices) - 1, -1, -1):
        current = devices[position]
        if current.kind != "disk" or current.extra.get("bus") != new.extra.get("bus"):
            continue
        if disk_index(current.extra.get("dev", "")) > mine:
            insert_at = position
        elif insert_at == -1:
            insert_at = position + 1
    if insert_at == -1:
        devices.append(new)
    else:
        devices.insert(insert_at, new)


def disk_index(name: str) -> int:
    """libvirt's virDiskNameToIndex: ``vda`` -> 0, ``vdz`` -> 25, ``vdaa`` -> 26."""
    prefix = next((prefix for prefix in ("xvd", "hd", "sd", "vd", "fd", "ubd") if name.startswith(prefix)), "")
    index = 0
    for letter in name[len(prefix):]:
        if not "a" <= letter <= "z":
            break
        index = index * 26 + (ord(letter) - ord("a") + 1)
    return index - 1


def _read_address(device: Device) -> None:
    address = child(device.element, "address")
    if address is None:
        return
    device.has_address_element = True
    device.address_type = address.get("type")
    if device.address_type == "pci":
        device.address, device.multifunction = read_pci_address(address)
    elif device.address_type == "drive":
        device.extra["drive-controller"] = address.get("controller", "0")


def _model_attribute(device: Device) -> str:
    return device.element.get("model") or "default"


def _model_child(device: Device) -> str:
    model = child(device.element, "model")
    return (model.get("type") if model is not None else None) or "default"


def _with_default(device: Device, key: str, read: Callable[[Device], str], write: Callable[[str], None]) -> str:
    model = read(device)
    default = default_model(key) if model == "default" else None
    if default is not None:
        model = default
        write(model)
    return model


def _interface_model(device: Device) -> str:
    if device.element.get("type") == "hostdev":
        device.extra["hostdev"] = "pci"
        return "hostdev"
    model = child(device.element, "model")
    written = model.get("type") if model is not None else None
    if written and written != "default":
        return written  # the common case: a model written, no default to fill in

    def write(model: str) -> None:
        element = device.element.find("model")
        if element is None:
            element = device.element.makeelement("model", {})
            mac = device.element.find("mac")
            source = device.element.find("source")
            anchor = source if source is not None else mac
            if anchor is not None:
                anchor.addnext(element)
            else:
                device.element.append(element)
        element.set("type", model)

    return _with_default(device, "interface", _model_child, write)


def _video_model(device: Device) -> str:
    def write(model: str) -> None:
        element = device.element.find("model")
        if element is None:
            element = etree.SubElement(device.element, "model")
        element.set("type", model)

    return _with_default(device, "video", _model_child, write)


def _controller_model(device: Device) -> str:
    key = f"controller:{device.ctype}"
    return _with_default(device, key, _model_attribute, lambda model: device.element.set("model", model))


def _vsock_model(device: Device) -> str:
    return _with_default(device, "vsock", _model_attribute, lambda model: device.element.set("model", model))


def _disk_model(device: Device) -> str:
    target = device.element.find("target")
    bus = target.get("bus") if target is not None else None
    dev = (target.get("dev") if target is not None else None) or ""
    if bus is None:
        if device.element.get("device") == "floppy":
            bus = "fdc"
        else:
            bus = next((name for prefix, name in DISK_PREFIX_BUS if dev.startswith(prefix)), "ide")
    device.extra["bus"] = bus
    device.extra["dev"] = dev
    return device.element.get("model") or "default"


# Element kind -> (tag, attribute, value) its parser does not know yet (profiles.Rules.unknown_values).
UnknownValues = Mapping[str, tuple[tuple[str, str, str], ...]]


def unknown_values() -> UnknownValues:
    """The values the current release's parser does not know, by element kind."""
    return _unknown_by_kind(current_rules().unknown_values)


@cache
def _unknown_by_kind(values: frozenset[tuple[str, str, str, str]]) -> UnknownValues:
    by_kind: dict[str, list[tuple[str, str, str]]] = {}
    for kind, tag, attribute, value in sorted(values):
        by_kind.setdefault(kind, []).append((tag, attribute, value))
    return {kind: tuple(checks) for kind, checks in by_kind.items()}


def _check_known_values(device: Device, checks: tuple[tuple[str, str, str], ...]) -> None:
    for tag, attribute, value in checks:
        element = device.element if tag == device.kind else device.element.find(tag)
        if element is not None and element.get(attribute) == value:
            raise LibvirtError(f"XML error: Invalid value for attribute '{attribute}' in element '{tag}': '{value}'.")


def _filesystem_model(device: Device) -> str:
    driver = device.element.find("driver")
    driver_type = driver.get("type") if driver is not None else None
    if driver_type == "virtiofs":
        return "virtio"
    if driver_type in ("loop", "nbd", "ploop", "mtp"):
        return "none"  # host-side drivers, or (mtp) a USB device: no PCI address
    return device.element.get("model") or "default"


def _hostdev_model(device: Device) -> str:
    element = device.element
    if (element.get("mode") or "subsystem") != "subsystem":
        return "none"
    subsys = element.get("type") or ""
    if subsys == "mdev":
        return "mdev" if element.get("model") == "vfio-pci" else "none"
    if subsys == "scsi_host":
        model = element.get("model")
        return "scsi_host:virtio-transitional" if model == "virtio-transitional" else "scsi_host"
    if subsys == "scsi":
        device.extra["scsi-hostdev"] = "yes"
        return "none"
    return subsys or "none"


def _input_model(device: Device) -> str:
    bus = device.element.get("bus")
    if bus != "virtio":
        return "none"
    return device.element.get("model") or "virtio"


def _serial_model(device: Device) -> str:
    target = device.element.find("target")
    kind = (target.get("type") if target is not None else None) or "isa-serial"
    if target is not None and kind in SERIAL_MODEL_NAMES and target.find("model") is None:
        etree.SubElement(target, "model").set("name", SERIAL_MODEL_NAMES[kind])
    return kind


def _chr_model(device: Device) -> str:
    target = device.element.find("target")
    return (target.get("type") if target is not None else None) or "none"


_MODEL_READERS: dict[str, Callable[[Device], str]] = {
    "interface": _interface_model,
    "video": _video_model,
    "controller": _controller_model,
    "vsock": _vsock_model,
    "disk": _disk_model,
    "filesystem": _filesystem_model,
    "hostdev": _hostdev_model,
    "input": _input_model,
    "serial": _serial_model,
    "channel": _chr_model,
    "console": _chr_model,
}


def _primary_video_first(domain: Domain) -> None:
    """libvirt moves the video marked primary to the front of the list (it becomes videos[0])."""
    videos = [device for device in domain.devices if device.kind == "video"]
    primary = next((video for video in videos if _is_primary(video)), None)
    if primary is None or primary is videos[0]:
        return
    domain.devices.remove(primary)
    domain.devices.insert(domain.devices.index(videos[0]), primary)
    videos[0].element.addprevious(primary.element)


def _is_primary(video: Device) -> bool:
    model = video.element.find("model")
    return model is not None and model.get("primary") == "yes"


# Kinds the domain parser does not track as devices; detach reads them from the document.
UNTRACKED_KINDS = frozenset({"parallel", "lease"})


def devices_of_kind(domain: Domain, kind: str) -> list[Device]:
    """The domain's devices of one kind; kinds the parser does not track (parallel, lease) are read
    from the document on demand."""
    if kind in UNTRACKED_KINDS:
        return [read_device(element) for element in domain.devices_element.iterfind(kind)]
    return list(domain.of_kind(kind))


def remove_device(domain: Domain, device: Device) -> None:
    """Take ``device`` out of the domain's lists and its element out of the document (detach)."""
    if device.kind == "controller":
        domain.controllers.remove(device)
    elif any(held is device for held in domain.devices):
        domain.devices.remove(device)
    parent = device.element.getparent()
    if parent is not None:
        parent.remove(device.element)
