"""Connect flags per device: what bus a device needs, on this domain's machine.

The model -> link mapping is data (:data:`tables.DEVICE_LINKS`); this module only decides what a
link means for the domain (PCIe exists only with a ``pcie-root``) and handles the two device kinds
whose link is not a function of their model: PCI controllers and VFIO host devices.
"""

from __future__ import annotations

from functools import lru_cache

from pytest_pcie.reference.hostpci import is_pci_express
from pytest_pcie.reference.model import Device, parse_int
from pytest_pcie.reference.parse import Domain
from pytest_pcie.reference.policy import current_policy
from pytest_pcie.reference.tables import CONTROLLER_MODELS, NET_MODELS, NONE, Connect, Link, device_link

PCI_FLAGS = Connect.PCI_DEVICE | Connect.AUTOASSIGN
PCIE_FLAGS = Connect.PCIE_DEVICE | Connect.AUTOASSIGN


def device_class(device: Device) -> str:
    """The class of qemuDomainAssignDevicePCISlots a device is addressed in (tables.CLASS_ORDER)."""
    if device.kind == "controller":
        return "pci-controller" if device.ctype == "pci" else "controller"
    if device.kind == "interface" and device.model == "hostdev":
        return "hostdev"
    return device.kind


def fill_flags(domain: Domain) -> None:
    """Set ``flags`` on every device of ``domain`` (libvirt's qemuDomainFillAllPCIConnectFlags)."""
    pcie = PCIE_FLAGS if domain.has_pcie_root else PCI_FLAGS
    # (kind, controller type, model) -> flags for the devices whose flags follow from those alone
    # (all but host devices): a large domain has hundreds of devices of a few models
    known: dict[tuple[str, str | None, str], Connect] = {}
    for device in domain.all_devices():
        key = (device.kind, device.ctype, device.model)
        flags = known.get(key)
        if flags is None:
            flags = connect_flags(device, pcie)
            if device_class(device) != "hostdev":
                known[key] = flags
        device.flags = flags


def connect_flags(device: Device, pcie: Connect) -> Connect:
    """Connect flags of one device, given what a PCIe endpoint means on this machine."""
    if device.kind == "controller" and device.ctype == "pci":
        return _pci_controller_flags(device.model, current_policy().pack_root_ports)
    if device_class(device) == "hostdev":
        return _hostdev_flags(device, pcie)
    kind = f"controller:{device.ctype}" if device.kind == "controller" else device.kind
    return _model_flags(kind, device.model, pcie)


@lru_cache(maxsize=64)
def _pci_controller_flags(model: str, pack_root_ports: bool) -> Connect:
    """What a PCI controller of ``model`` needs to plug into (worked out once per model: the
    assigner adds root ports by the hundred)."""
    row = CONTROLLER_MODELS.get(model)
    if row is None:
        return NONE
    return row.needs if pack_root_ports else row.needs & ~Connect.AGGREGATE_SLOT


@lru_cache(maxsize=1024)
def _model_flags(kind: str, model: str, pcie: Connect) -> Connect:
    """Connect flags of every device of ``kind`` and ``model`` (worked out once per pair: a large
    domain has hundreds of devices of a few models)."""
    link = device_link(kind, model if kind != "interface" or model in NET_MODELS else "unknown")
    flags = NONE if link is Link.NONE else PCI_FLAGS if link is Link.PCI else pcie
    if kind == "iommu" and flags:
        flags |= Connect.INTEGRATED
    return flags


def _hostdev_flags(device: Device, pcie: Connect) -> Connect:
    link = device_link("hostdev", device.model if device.kind == "hostdev" else "pci")
    if link is Link.NONE:
        return NONE
    if pcie == PCI_FLAGS:
        return PCI_FLAGS
    if device.has_pci_address or device.model == "mdev":
        return pcie
    if link is Link.PCI:
        return PCI_FLAGS
    if device.model.startswith("scsi_host"):
        return pcie
    source = device.element.find("source/address")
    if source is None:
        return pcie
    parts = [parse_int(source.get(name), f"hostdev source address {name}") or 0 for name in
             ("domain", "bus", "slot", "function")]
    return pcie if is_pci_express(*parts) else PCI_FLAGS
