"""Checks libvirt makes after address assignment (qemu_validate.c) that a PCI case can trip.

Domain-level checks come first (the machine must exist), then each device in libvirt's iteration
order, so the first message libvirt would print is the one raised.  Device rules are rows of
(kind, test, message) so a newly found rejection is one more row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pytest_pcie.reference.assign import iterate_devices
from pytest_pcie.reference.controllers import validate_controller
from pytest_pcie.reference.defaults import disk_controller
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.machine import Chipset, unsupported_on
from pytest_pcie.reference.model import Device
from pytest_pcie.reference.parse import USB_COMPANION_MODELS, Domain
from pytest_pcie.reference.profiles import current_rules

# Video models that may also be secondary (non-primary) video devices.
SECONDARY_VIDEO_MODELS = frozenset({"qxl", "virtio"})


@dataclass(frozen=True)
class Rule:
    """A rejection: devices of ``kind`` for which ``refused(device, domain, position)`` holds get
    ``message(device, domain)``; ``position`` is the device's place among those of its kind."""

    kind: str
    refused: Callable[[Device, Domain, int], bool]
    message: Callable[[Device, Domain], str]


def _ide_controller_refused(device: Device, domain: Domain, position: int) -> bool:
    return device.ctype == "ide" and not (device.index == 0 and domain.chipset is Chipset.I440FX)


def _ide_controller_message(device: Device, domain: Domain) -> str:
    return "unsupported configuration: " + (
        "Only a single IDE controller is supported for this machine type" if domain.chipset is Chipset.I440FX
        else "IDE controllers are unsupported for this QEMU binary or machine type"
    )


def has_shared_memory(domain: Domain) -> bool:
    """Whether guest RAM is shared, as vhost-user devices need (virtiofs): ``<memoryBacking><access
    mode='shared'/>``, unless a NUMA cell overrides it; with NUMA cells, every cell must end up shared
    (its own ``memAccess``, or the domain-wide mode when it sets none)."""
    access = domain.root.find("memoryBacking/access")
    shared = access is not None and access.get("mode") == "shared"
    cells = domain.root.findall("cpu/numa/cell")
    if not cells:
        return shared
    return all((cell.get("memAccess") or ("shared" if shared else "default")) == "shared" for cell in cells)


def _virtiofs_refused(device: Device, domain: Domain, position: int) -> bool:
    driver = device.element.find("driver")
    return driver is not None and driver.get("type") == "virtiofs" and not has_shared_memory(domain)


# (chipset, arch) pairs each IOMMU model is allowed on ("ARM Virt" is the aarch64 virt machine).
IOMMU_MACHINES: dict[str | None, frozenset[tuple[Chipset, str]]] = {
    "intel": frozenset({(Chipset.Q35, "x86_64")}),
    "virtio": frozenset({(Chipset.Q35, "x86_64"), (Chipset.VIRT, "aarch64")}),
}

RULES: tuple[Rule, ...] = (
    Rule(
        "video",
        lambda device, domain, position: position > 0 and device.model not in SECONDARY_VIDEO_MODELS,
        lambda device, domain: f"unsupported configuration: video type '{device.model}' is only valid as primary "
        "video device",
    ),
    Rule(
        "input",
        lambda device, domain, position: device.model in ("virtio-transitional", "virtio-non-transitional"),
        lambda device, domain: "unsupported configuration: virtio (non-)transitional models are not supported for "
        f"input type={device.element.get('type')}",
    ),
    Rule(
        "iommu",
        lambda device, domain, position: device.model in ("virtio", "intel")
        and (domain.chipset, domain.arch) not in IOMMU_MACHINES[device.model],
        lambda device, domain: f"unsupported configuration: IOMMU device: '{device.model}' is only supported with Q35 "
        "and ARM Virt machines" if device.model == "virtio" else
        f"unsupported configuration: IOMMU device: '{device.model}' is only supported with Q35 machines",
    ),
    Rule(
        "iommu",
        lambda device, domain, position: device.model == "virtio" and not domain.acpi,
        lambda device, domain: "unsupported configuration: IOMMU device: 'virtio' requires ACPI",
    ),
    Rule(
        "disk",
        lambda device, domain, position: device.extra.get("bus") == "ide" and disk_controller(device) != 0,
        lambda device, domain: "internal error: Only 1 IDE controller is supported",
    ),
    Rule("controller", _ide_controller_refused, _ide_controller_message),
    Rule(
        "watchdog",
        lambda device, domain, position: (domain.chipset.value, device.model) in current_rules().refused_watchdogs,
        lambda device, domain: f"unsupported configuration: {device.model} model of watchdog cannot be used with "
        "this machine type",
    ),
    Rule(
        "filesystem",
        _virtiofs_refused,
        lambda device, domain: "unsupported configuration: 'virtiofs' requires shared memory",
    ),
)


# RULES by device kind, in their order: a device is checked against its kind's rules only.
_RULES_BY_KIND: dict[str, tuple[Rule, ...]] = {
    kind: tuple(rule for rule in RULES if rule.kind == kind) for kind in dict.fromkeys(rule.kind for rule in RULES)
}


def validate_domain(domain: Domain) -> None:
    """Raise libvirt's error for a domain it would refuse at validation."""
    message = unsupported_on(domain.machine, domain.arch)
    if message is not None:
        raise LibvirtError(message)
    positions: dict[str, int] = {}
    for device in iterate_devices(domain):
        position = positions.get(device.kind, 0)
        positions[device.kind] = position + 1
        validate_device(device, domain, position)
    videos = [device for device in domain.devices if device.kind == "video"]
    if len(videos) > 1 and any(video.model == "none" for video in videos):
        raise LibvirtError(
            "unsupported configuration: a 'none' video type must be the only video device defined for the domain"
        )
    check_watchdog_actions(domain)
    disks = [device for device in domain.devices if device.kind == "disk"]
    for number, disk in enumerate(disks):
        for other in disks[number + 1 :]:
            check_disk_targets(disk, other)
    sources = [_host_source(device) for device in domain.devices if device.kind == "hostdev"]
    if len([source for source in sources if source is not None]) != len({s for s in sources if s is not None}):
        raise LibvirtError("XML error: Hostdev already exists in the domain configuration")


def check_watchdog_actions(domain: Domain) -> None:
    """Where a domain may hold several watchdogs, QEMU takes one action for all of them."""
    actions = {device.element.get("action") or "reset" for device in domain.of_kind("watchdog")}
    if len(actions) > 1 and current_rules().watchdog_actions_must_agree:
        raise LibvirtError(
            "unsupported configuration: watchdogs with different actions are not supported with this QEMU binary"
        )


def validate_start(domain: Domain) -> None:
    """The refusals libvirt makes only when it builds QEMU's command line to start the guest: a USB
    companion (ich9-uhci1/2/3, or any controller with ``<master>``) needs a master USB controller of
    its own index (qemuBuildUSBControllerDevProps)."""
    usb = [device for device in domain.controllers if device.ctype == "usb" and device.model != "none"]
    for companion in (device for device in usb if _is_usb_companion(device)):
        if not any(device.index == companion.index and not _is_usb_companion(device) for device in usb):
            raise LibvirtError("internal error: masterbus not found")


def _is_usb_companion(controller: Device) -> bool:
    return controller.model in USB_COMPANION_MODELS or controller.element.find("master") is not None


def check_disk_targets(first: Device, second: Device) -> None:
    """Two disks may not share a target name (virDomainDiskDefCheckDuplicateInfo)."""
    target = first.extra.get("dev")
    if target == second.extra.get("dev"):
        raise LibvirtError(
            f"XML error: target '{target}' duplicated for disk sources '{_disk_source(first)}' and "
            f"'{_disk_source(second)}'"
        )


def _disk_source(disk: Device) -> str:
    source = disk.element.find("source")
    if source is None:
        return "<null>"
    for attribute in ("file", "dev", "dir", "name", "volume"):
        value = source.get(attribute)
        if value is not None:
            return value
    return "<null>"


def _host_source(device: Device) -> tuple[int, ...] | None:
    """The host address a PCI hostdev passes through (None when it has none)."""
    source = device.element.find("source/address")
    if source is None or device.model != "pci":
        return None
    return tuple(int(source.get(name) or "0", 0) for name in ("domain", "bus", "slot", "function"))


def validate_device(device: Device, domain: Domain, position: int) -> None:
    """The validation of one device; ``position`` is its place among devices of its kind."""
    if device.is_pci_controller:
        if not device.implicit:  # the ones libvirt adds carry exactly the settings their model needs
            validate_controller(device)
        return
    for rule in _RULES_BY_KIND.get(device.kind, ()):
        if rule.refused(device, domain, position):
            raise LibvirtError(rule.message(device, domain))
