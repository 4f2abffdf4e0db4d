"""The devices libvirt adds to a definition before it assigns addresses.

Mirrors, for QEMU 7.2 on x86_64 (and on aarch64 / riscv64 ``virt``, through the per-chipset and
per-arch rows below), the post-parse steps that create devices: controller indexes for
controllers written without one, the machine's default USB controller, q35's SATA controller,
the PCI root, the default memballoon, the duplicate-index check, implicit disk / virtio-serial /
scsi-hostdev controllers and the video implied by ``<graphics>``.  Each added device is appended
where libvirt appends it, because the order of controllers decides the order they get addresses.
"""

from __future__ import annotations

from lxml import etree

from pytest_pcie.reference.arches import arch_default_model
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.machine import Chipset
from pytest_pcie.reference.model import UNBUILT, Device, insert_device
from pytest_pcie.reference.parse import DISK_UNITS_PER_CONTROLLER, Domain, disk_index, insert_controller, read_device
from pytest_pcie.reference.policy import current_policy
from pytest_pcie.reference.profiles import current_rules
from pytest_pcie.reference.tables import USB2_COMPANIONS, USB2_FUNCTIONS

# Default USB controller model at index 0 per chipset: the Policy field that holds it (None: no USB).
# virt gets no USB controller unless the XML asks for one.
DEFAULT_USB: dict[Chipset, str | None] = {
    Chipset.I440FX: "default_usb_pc", Chipset.Q35: "default_usb_q35", Chipset.VIRT: None, Chipset.NONE: None,
}
ROOT_MODEL: dict[Chipset, str | None] = {
    Chipset.I440FX: "pci-root", Chipset.Q35: "pcie-root", Chipset.VIRT: "pcie-root", Chipset.NONE: None,
}
# Chipsets with an i8042 controller, whose PS/2 mouse and keyboard libvirt adds.
PS2_CHIPSETS = frozenset({Chipset.I440FX, Chipset.Q35})


def add_defaults(domain: Domain) -> None:
    """Run libvirt's device-adding post-parse steps on ``domain``, in libvirt's order."""
    assign_controller_indexes(domain)
    _add_implicit_inputs(domain)
    _add_default_usb(domain)
    if domain.chipset is Chipset.Q35:
        maybe_add_controller(domain, "sata", 0, None)
    _add_pci_root(domain)
    _add_memballoon(domain)
    _check_pci_root_indexes(domain)
    _reject_duplicate_controllers(domain)
    _add_implicit_controllers(domain)
    _add_implicit_video(domain)


def assign_controller_indexes(domain: Domain) -> None:
    """A controller without index gets the lowest unused index of its type (USB2 companions follow
    the USB2 controller just before them)."""
    controllers = domain.controllers
    for position, controller in enumerate(controllers):
        if controller.index is not None:
            continue
        if position > 0 and controller.model in USB2_FUNCTIONS:
            previous = next(
                (other for other in reversed(controllers[:position]) if other.ctype == "usb"), None
            )
            if previous is not None and previous.model in USB2_FUNCTIONS and not any(
                other.ctype == "usb" and other.index == previous.index and other.model == controller.model
                for other in controllers
            ):
                _set_index(controller, previous.index)
                continue
        used = {other.index for other in controllers if other.ctype == controller.ctype}
        _set_index(controller, next(index for index in range(len(controllers) + 1) if index not in used))


def _set_index(controller: Device, index: int | None) -> None:
    assert index is not None
    controller.index = index
    controller.element.set("index", str(index))


def new_controller(domain: Domain, ctype: str, index: int, model: str | None) -> Device:
    """Add a controller libvirt creates itself: at the end of the controller list, or among those of
    its type where the profile says so (``added_controllers_inserted``)."""
    attributes = {"type": ctype, "index": str(index)}
    if model is not None:
        attributes["model"] = model
    element = domain.devices_element.makeelement("controller", attributes)
    if ctype == "pci" and model is not None:
        device = Device(element, "controller", model, ctype, index, implicit=True)  # nothing else to read
    else:
        device = read_device(element)
        device.implicit = True
    _place_controller_element(domain, element)
    if current_rules().added_controllers_inserted:
        insert_controller(domain.controllers, device)
    else:
        domain.controllers.append(device)
    return device


def new_pci_controllers(domain: Domain, wanted: list[tuple[int, str]]) -> list[Device]:
    """Add the PCI controllers the assigner adds, ``(index, model)`` each, in that order.

    The assigner adds them by the hundred in a large domain, so they get no element yet (their
    element is :data:`model.UNBUILT`): :func:`model.build_added_controllers` builds each in full,
    settings and address included, once placement is over."""
    added = [Device(UNBUILT, "controller", model, "pci", index, implicit=True) for index, model in wanted]
    if not added:
        return []
    domain.controllers.extend(added)
    if current_rules().added_controllers_inserted:
        _order_pci_controllers_by_index(domain, added[0].index or 0)
    return added


def _order_pci_controllers_by_index(domain: Domain, first_new: int) -> None:
    """Move the added PCI controllers to where libvirt's controller insert puts them: before the
    first of their type with a higher index (so after a named controller whose index was only
    assigned later, as it sits at the end).  Only needed when a named one has a higher index than
    an added one, i.e. when an index gap was filled; otherwise appending is the same."""
    pci = [controller for controller in domain.controllers if controller.ctype == "pci"]
    if not any((controller.index or 0) > first_new for controller in pci if not controller.implicit):
        return
    added = [controller for controller in pci if controller.implicit and (controller.index or 0) >= first_new]
    moved = {id(controller) for controller in added}
    domain.controllers[:] = [controller for controller in domain.controllers if id(controller) not in moved]
    for controller in added:
        insert_controller(domain.controllers, controller)


def _place_controller_element(domain: Domain, element: etree._Element) -> None:
    last = domain.controllers[-1].element if domain.controllers else None
    if last is not None and last.getparent() is domain.devices_element:
        last.addnext(element)
    else:
        insert_device(domain.devices_element, element)


def maybe_add_controller(domain: Domain, ctype: str, index: int, model: str | None) -> Device | None:
    if domain.controller(ctype, index) is not None:
        return None
    return new_controller(domain, ctype, index, model)


# PS/2 inputs the i8042 controller of pc and q35 always provides (virDomainDefMaybeAddInput).
IMPLICIT_INPUTS: tuple[str, ...] = ("mouse", "keyboard")


def _add_implicit_inputs(domain: Domain) -> None:
    """The PS/2 mouse and keyboard of x86 machines; they matter here only because they come first
    among inputs added later (an attached virtio tablet follows them)."""
    if domain.chipset not in PS2_CHIPSETS:
        return
    present = {
        device.element.get("type")
        for device in domain.devices
        if device.kind == "input" and device.element.get("bus") == "ps2"
    }
    for kind in IMPLICIT_INPUTS:
        if kind in present:
            continue
        element = domain.devices_element.makeelement("input", {"type": kind, "bus": "ps2"})
        insert_device(domain.devices_element, element)
        device = read_device(element)
        device.implicit = True
        domain.devices.append(device)


def _add_default_usb(domain: Domain) -> None:
    parameter = DEFAULT_USB[domain.chipset]
    if parameter is None or domain.controller("usb", 0) is not None:
        return
    model: str = getattr(current_policy(), parameter)
    new_controller(domain, "usb", 0, model)
    if model == "ich9-ehci1":
        for companion in USB2_COMPANIONS:
            new_controller(domain, "usb", 0, companion)


def _add_pci_root(domain: Domain) -> None:
    wanted = ROOT_MODEL[domain.chipset]
    if wanted is None:
        return
    existing = domain.controller("pci", 0)
    if existing is None:
        new_controller(domain, "pci", 0, wanted)
    elif existing.model != wanted:
        raise LibvirtError(
            f"XML error: The PCI controller with index='0' must be model='{wanted}' for this machine type, "
            f"but model='{'(null)' if existing.model == 'default' else existing.model}' was found instead"
        )


def _add_memballoon(domain: Domain) -> None:
    if domain.arch in current_rules().no_default_memballoon_arches or any(
        device.kind == "memballoon" for device in domain.devices
    ):
        return
    element = domain.devices_element.makeelement("memballoon", {"model": "virtio"})
    insert_device(domain.devices_element, element)
    device = read_device(element)
    device.implicit = True
    domain.devices.append(device)


def _check_pci_root_indexes(domain: Domain) -> None:
    for controller in domain.pci_controllers():
        if controller.model in ("pci-root", "pcie-root") and controller.index != 0:
            raise LibvirtError("XML error: pci-root and pcie-root controllers should have index 0")
        if controller.model == "pci-expander-bus" and domain.chipset is not Chipset.I440FX:
            raise LibvirtError(
                "unsupported configuration: pci-expander-bus controllers are only supported on 440fx-based "
                "machinetypes"
            )
        if controller.model == "pcie-expander-bus" and domain.chipset is not Chipset.Q35:
            raise LibvirtError(
                "unsupported configuration: pcie-expander-bus controllers are not supported with this machine type"
            )
        _check_numa_node(domain, controller)


def _check_numa_node(domain: Domain, controller: Device) -> None:
    node = controller.element.find("target/node")
    if node is None or node.text is None:
        return
    value = int(node.text.strip())
    if value >= domain.numa_cells:
        raise LibvirtError(
            f"XML error: {controller.model} with index {controller.index} is configured for a NUMA node ({value}) "
            f"not present in the domain's <cpu><numa> array ({domain.numa_cells})"
        )


def _reject_duplicate_controllers(domain: Domain) -> None:
    """Two controllers of one type may not share an index (USB excepted: companions share theirs)."""
    seen: set[tuple[str | None, int | None]] = set()
    for controller in domain.controllers:
        if controller.ctype == "usb":
            continue
        key = (controller.ctype, controller.index)
        if key in seen:
            raise LibvirtError(
                f"XML error: Multiple '{controller.ctype}' controllers with index '{controller.index}'"
            )
        seen.add(key)


def _add_implicit_controllers(domain: Domain) -> None:
    for ctype, bus in (("scsi", "scsi"), ("fdc", "fdc"), ("ide", "ide"), ("sata", "sata")):
        highest = -1
        for number, disk in enumerate(_disks_on(domain, bus)):
            highest = max(highest, _drive_controller(disk, number, bus))
        for index in range(highest + 1):
            maybe_add_controller(domain, ctype, index, None)
    for device in domain.devices:
        if device.kind in ("channel", "console") and device.model == "virtio":
            index = 0
            address = device.element.find("address")
            if address is not None and address.get("type") == "virtio-serial":
                index = int(address.get("controller", "0"))
            maybe_add_controller(domain, "virtio-serial", index, None)
    for device in domain.devices:
        if device.kind == "smartcard":
            maybe_add_controller(domain, "ccid", 0, None)
    scsi_hostdevs = [device for device in domain.devices if device.extra.get("scsi-hostdev")]
    highest = max((int(device.extra.get("drive-controller", "0")) for device in scsi_hostdevs), default=-1)
    for index in range(highest + 1):
        maybe_add_controller(domain, "scsi", index, None)
    if current_rules().scsi_model_from_first_written:
        for controller in domain.controllers:
            inherit_scsi_model(domain, controller)


def inherit_scsi_model(domain: Domain, controller: Device) -> None:
    """A SCSI controller whose XML names no model takes the model of the first SCSI controller, in
    index order, that names one (where the profile has ``scsi_model_from_first_written``), unless
    the arch has a SCSI default of its own (pcie-fuzz --seed 1612: aarch64 virt on 12.8.0)."""
    if controller.ctype != "scsi" or "model-written" in controller.extra:
        return
    if arch_default_model("controller:scsi") is not None:
        return  # an arch with its own SCSI default (virt: virtio-scsi) uses it, copying nothing
    named = sorted(
        (other for other in domain.controllers if other.ctype == "scsi" and "model-written" in other.extra),
        key=lambda other: other.index or 0,
    )
    if named:
        controller.model = named[0].model
        controller.element.set("model", controller.model)


def _disks_on(domain: Domain, bus: str) -> list[Device]:
    return [device for device in domain.devices if device.kind == "disk" and device.extra.get("bus") == bus]


def disk_controller(disk: Device) -> int:
    """The index of the controller a disk on a controller bus (scsi, ide, sata, fdc) is attached to."""
    bus = disk.extra.get("bus", "")
    return _drive_controller(disk, 0, bus)


def _drive_controller(disk: Device, number: int, bus: str) -> int:
    """The controller index a disk's drive address names (libvirt derives it from the target name)."""
    if "drive-controller" in disk.extra:
        return int(disk.extra["drive-controller"])
    if disk.address_type is not None:
        return -1
    return max(disk_index(disk.extra.get("dev", "")), 0) // DISK_UNITS_PER_CONTROLLER.get(bus, 1)


def _add_implicit_video(domain: Domain) -> None:
    has_graphics = any(device.kind == "graphics" for device in domain.devices)
    if not has_graphics or any(device.kind == "video" for device in domain.devices):
        return
    element = domain.devices_element.makeelement("video", {})
    model = etree.SubElement(element, "model")
    model.set("type", arch_default_model("video") or "cirrus")
    insert_device(domain.devices_element, element)
    device = read_device(element)
    device.implicit = True
    domain.devices.append(device)
