"""Data tables of the reference assigner: connect flags, PCI controller models, device kinds.

Every PCI rule that is a property of a *model* (what a bus accepts, which slots it offers, what
a device needs to plug into, the ``<model name>`` libvirt writes) lives here as a row, so adding a
model is a one-line change plus a case pinning it.  The algorithm modules only read these tables.
Facts come from libvirt 9.0.0 (``domain_addr.c``, ``qemu_domain_address.c``) for QEMU 7.2 on x86_64
and were checked against a running libvirtd.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntFlag


class Connect(IntFlag):
    """What a device needs from the bus it plugs into, and what a bus offers (libvirt's
    ``VIR_PCI_CONNECT_*``).  A device fits a bus when their type bits overlap."""

    HOTPLUGGABLE = 1 << 0
    AUTOASSIGN = 1 << 1
    INTEGRATED = 1 << 2
    AGGREGATE_SLOT = 1 << 3
    PCI_DEVICE = 1 << 4
    PCIE_DEVICE = 1 << 5
    PCIE_ROOT_PORT = 1 << 6
    PCIE_SWITCH_UPSTREAM_PORT = 1 << 7
    PCIE_SWITCH_DOWNSTREAM_PORT = 1 << 8
    DMI_TO_PCI_BRIDGE = 1 << 9
    PCIE_EXPANDER_BUS = 1 << 10
    PCI_EXPANDER_BUS = 1 << 11
    PCI_BRIDGE = 1 << 12
    PCIE_TO_PCI_BRIDGE = 1 << 13


NONE = Connect(0)
ENDPOINT_TYPES = Connect.PCI_DEVICE | Connect.PCIE_DEVICE
TYPES_MASK = (
    Connect.PCI_DEVICE
    | Connect.PCIE_DEVICE
    | Connect.PCIE_ROOT_PORT
    | Connect.PCIE_SWITCH_UPSTREAM_PORT
    | Connect.PCIE_SWITCH_DOWNSTREAM_PORT
    | Connect.DMI_TO_PCI_BRIDGE
    | Connect.PCIE_EXPANDER_BUS
    | Connect.PCI_EXPANDER_BUS
    | Connect.PCI_BRIDGE
    | Connect.PCIE_TO_PCI_BRIDGE
)

# How libvirt names a device's connect type in "It requires a controller that accepts a %s."; the
# first row whose bit the device carries wins, so the order is libvirt's.
CONNECT_NAMES: tuple[tuple[Connect, str], ...] = (
    (Connect.PCI_DEVICE, "standard PCI device"),
    (Connect.PCIE_DEVICE, "PCI Express device"),
    (Connect.PCIE_ROOT_PORT, "pcie-root-port"),
    (Connect.PCIE_SWITCH_UPSTREAM_PORT, "pcie-switch-upstream-port"),
    (Connect.PCIE_SWITCH_DOWNSTREAM_PORT, "pcie-switch-downstream-port"),
    (Connect.DMI_TO_PCI_BRIDGE, "dmi-to-pci-bridge"),
    (Connect.PCIE_TO_PCI_BRIDGE, "pcie-to-pci-bridge"),
    (Connect.PCI_EXPANDER_BUS, "pci-expander-bus"),
    (Connect.PCIE_EXPANDER_BUS, "pcie-expander-bus"),
    (Connect.PCI_BRIDGE, "pci-bridge"),
)


class Link(Enum):
    """The kind of PCI link a device model needs, before the machine decides what it means.

    On a machine with ``pcie-root`` PCIE is a PCI Express endpoint and VIRTIO too (QEMU 7.2 has
    the non-transitional virtio devices); on ``pci-root`` both collapse to conventional PCI.
    """

    NONE = "none"
    PCI = "pci"
    PCIE = "pcie"
    VIRTIO = "virtio"


class Target(Enum):
    """Which ``<target>`` defaults libvirt fills in for an auto-configured PCI controller."""

    NONE = "none"
    CHASSIS_NR = "chassisNr"  # pci-bridge: chassisNr = index
    ROOT_PORT = "root-port"  # chassis = index, port = slot << 3 | function
    DOWNSTREAM = "downstream"  # chassis = index, port = slot
    BUS_NR = "busNr"  # expander buses: lowest busNr in use - 2


@dataclass(frozen=True)
class ControllerModel:
    """One PCI controller model: what it offers downstream (as a bus) and needs upstream (as a device).

    ``accepts`` and the slot range describe the bus it provides; ``hotplug`` whether its slots
    can be hotplugged (``hotplug='off'`` can still turn that off where ``hotplug_option``);
    ``needs`` is its own connect flags as a device; ``options`` the ``<target>``/``<model>``
    settings validation allows on it (anything else is "not valid").
    """

    model: str
    accepts: Connect
    min_slot: int
    max_slot: int
    hotplug: bool
    needs: Connect
    model_name: str | None
    target: Target
    options: frozenset[str]


_BRIDGE_ACCEPTS = Connect.AUTOASSIGN | Connect.PCI_DEVICE | Connect.PCI_BRIDGE
_PORT_ACCEPTS = (
    Connect.AUTOASSIGN | Connect.PCIE_DEVICE | Connect.PCIE_SWITCH_UPSTREAM_PORT | Connect.PCIE_TO_PCI_BRIDGE
)

CONTROLLER_MODELS: dict[str, ControllerModel] = {
    row.model: row
    for row in (
        ControllerModel(
            "pci-root", _BRIDGE_ACCEPTS | Connect.PCI_EXPANDER_BUS, 1, 31, True, NONE, None, Target.NONE,
            frozenset({"hotplug", "pcihole64"}),
        ),
        ControllerModel(
            "pcie-root",
            Connect.PCIE_DEVICE | Connect.PCIE_ROOT_PORT | Connect.DMI_TO_PCI_BRIDGE | Connect.PCIE_EXPANDER_BUS,
            1, 31, False, NONE, None, Target.NONE, frozenset({"pcihole64"}),
        ),
        ControllerModel(
            "pci-bridge", _BRIDGE_ACCEPTS, 1, 31, True, Connect.PCI_BRIDGE, "pci-bridge", Target.CHASSIS_NR,
            frozenset({"modelName", "chassisNr"}),
        ),
        ControllerModel(
            "dmi-to-pci-bridge", Connect.PCI_DEVICE | Connect.PCI_BRIDGE, 0, 31, False, Connect.DMI_TO_PCI_BRIDGE,
            "i82801b11-bridge", Target.NONE, frozenset({"modelName"}),
        ),
        ControllerModel(
            "pcie-to-pci-bridge", _BRIDGE_ACCEPTS, 1, 31, True, Connect.PCIE_TO_PCI_BRIDGE, "pcie-pci-bridge",
            Target.NONE, frozenset({"modelName"}),
        ),
        ControllerModel(
            "pcie-root-port", _PORT_ACCEPTS, 0, 0, True, Connect.PCIE_ROOT_PORT | Connect.AGGREGATE_SLOT,
            "pcie-root-port", Target.ROOT_PORT, frozenset({"modelName", "chassis", "port", "hotplug"}),
        ),
        ControllerModel(
            "pcie-switch-upstream-port", Connect.PCIE_SWITCH_DOWNSTREAM_PORT, 0, 31, False,
            Connect.PCIE_SWITCH_UPSTREAM_PORT, "x3130-upstream", Target.NONE, frozenset({"modelName"}),
        ),
        ControllerModel(
            "pcie-switch-downstream-port", _PORT_ACCEPTS, 0, 0, True, Connect.PCIE_SWITCH_DOWNSTREAM_PORT,
            "xio3130-downstream", Target.DOWNSTREAM, frozenset({"modelName", "chassis", "port", "hotplug"}),
        ),
        ControllerModel(
            "pci-expander-bus", _BRIDGE_ACCEPTS, 0, 31, True, Connect.PCI_EXPANDER_BUS, "pxb", Target.BUS_NR,
            frozenset({"modelName", "busNr", "numaNode"}),
        ),
        ControllerModel(
            "pcie-expander-bus", Connect.PCIE_ROOT_PORT | Connect.DMI_TO_PCI_BRIDGE, 0, 31, False,
            Connect.PCIE_EXPANDER_BUS, "pxb-pcie", Target.BUS_NR, frozenset({"modelName", "busNr", "numaNode"}),
        ),
    )
}

ROOT_MODELS = frozenset({"pci-root", "pcie-root"})

# The controller model libvirt picks for a bus it must add to provide a slot for a device with these
# connect flags (virDomainPCIControllerConnectTypeToModel): used to name it in the "cannot be
# automatically added" error.  First matching row wins.
CONNECT_TO_MODEL: tuple[tuple[Connect, str], ...] = (
    (Connect.PCIE_ROOT_PORT, "pcie-root-port"),
    (Connect.PCIE_SWITCH_UPSTREAM_PORT, "pcie-switch-upstream-port"),
    (Connect.PCIE_SWITCH_DOWNSTREAM_PORT, "pcie-switch-downstream-port"),
    (Connect.DMI_TO_PCI_BRIDGE, "dmi-to-pci-bridge"),
    (Connect.PCI_EXPANDER_BUS, "pci-expander-bus"),
    (Connect.PCIE_EXPANDER_BUS, "pcie-expander-bus"),
    (Connect.PCI_BRIDGE, "pci-bridge"),
)

# ``<model name>`` values libvirt knows (virDomainControllerPCIModelName); an unknown one is a parse error.
MODEL_NAMES = frozenset(
    {
        "pci-bridge", "i82801b11-bridge", "ioh3420", "x3130-upstream", "xio3130-downstream", "pxb", "pxb-pcie",
        "pcie-root-port", "spapr-pci-host-bridge", "pcie-pci-bridge",
    }
)


# Model names libvirt's parser knows, per controller type; any other is refused at parse time
# ("Unknown model type").  Types not listed take no model.
CONTROLLER_TYPE_MODELS: dict[str, frozenset[str]] = {
    "pci": frozenset(CONTROLLER_MODELS),
    "usb": frozenset({"piix3-uhci", "piix4-uhci", "ehci", "ich9-ehci1", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3",
                      "vt82c686b-uhci", "pci-ohci", "nec-xhci", "qusb1", "qusb2", "qemu-xhci", "none"}),
    "scsi": frozenset({"auto", "buslogic", "lsilogic", "lsisas1068", "vmpvscsi", "ibmvscsi", "virtio-scsi",
                       "lsisas1078", "virtio-transitional", "virtio-non-transitional", "ncr53c90", "dc390",
                       "am53c974"}),
    "virtio-serial": frozenset({"virtio", "virtio-transitional", "virtio-non-transitional"}),
    "ide": frozenset({"piix3", "piix4", "ich6"}),
}

# NIC models libvirt knows (virDomainNetModel); any other string is kept as written but counts as
# "unknown", which libvirt places as a PCI Express device.
NET_MODELS = frozenset(
    {
        "netfront", "rtl8139", "virtio", "e1000", "e1000e", "virtio-transitional", "virtio-non-transitional",
        "usb-net", "spapr-vlan", "lan9118", "scm91c111", "vlance", "vmxnet", "vmxnet2", "vmxnet3", "Am79C970A",
        "Am79C973", "82540EM", "82545EM", "82543GC",
    }
)


# ---------------------------------------------------------------------------------------------
# Device kinds: which link each device model needs.  Keyed by (kind, model); "*" is the kind's
# fallback row.  The model is what libvirt stores after its post-parse defaults (see defaults.py).

_VIRTIO_FAMILY = {
    "virtio": Link.VIRTIO,
    "virtio-non-transitional": Link.VIRTIO,
    "virtio-transitional": Link.PCI,
}

DEVICE_LINKS: dict[tuple[str, str], Link] = {
    **{("interface", model): link for model, link in _VIRTIO_FAMILY.items()},
    ("interface", "e1000e"): Link.PCIE,
    ("interface", "unknown"): Link.PCIE,
    ("interface", "usb-net"): Link.NONE,
    ("interface", "*"): Link.PCI,
    **{("disk", model): link for model, link in _VIRTIO_FAMILY.items()},
    ("disk", "*"): Link.VIRTIO,
    **{("filesystem", model): link for model, link in _VIRTIO_FAMILY.items()},
    ("filesystem", "none"): Link.NONE,  # loop/nbd/ploop (host side) and mtp (a USB device)
    ("filesystem", "*"): Link.VIRTIO,
    **{("memballoon", model): link for model, link in _VIRTIO_FAMILY.items()},
    ("memballoon", "*"): Link.NONE,
    **{("rng", model): link for model, link in _VIRTIO_FAMILY.items()},
    ("rng", "*"): Link.NONE,
    **{("vsock", model): link for model, link in _VIRTIO_FAMILY.items()},
    ("vsock", "*"): Link.VIRTIO,
    **{("input", model): link for model, link in _VIRTIO_FAMILY.items()},
    ("input", "none"): Link.NONE,
    ("input", "*"): Link.VIRTIO,
    ("sound", "ich6"): Link.PCI,
    ("sound", "ich9"): Link.PCI,
    ("sound", "ac97"): Link.PCI,
    ("sound", "es1370"): Link.PCI,
    ("sound", "virtio"): Link.VIRTIO,
    ("sound", "*"): Link.NONE,
    ("watchdog", "i6300esb"): Link.PCI,
    ("watchdog", "*"): Link.NONE,
    ("video", "virtio"): Link.VIRTIO,
    ("video", "bochs"): Link.PCIE,
    ("video", "none"): Link.NONE,
    ("video", "ramfb"): Link.NONE,
    ("video", "*"): Link.PCI,
    ("shmem", "*"): Link.PCI,
    ("serial", "pci-serial"): Link.PCI,
    ("serial", "*"): Link.NONE,
    ("iommu", "virtio"): Link.VIRTIO,
    ("iommu", "*"): Link.NONE,
    ("memory", "virtio-pmem"): Link.VIRTIO,
    ("memory", "virtio-mem"): Link.VIRTIO,
    ("memory", "*"): Link.NONE,
    ("hostdev", "scsi_host"): Link.VIRTIO,
    ("hostdev", "scsi_host:virtio-transitional"): Link.PCI,
    ("hostdev", "mdev"): Link.PCIE,
    ("hostdev", "pci:conventional"): Link.PCI,
    ("hostdev", "pci"): Link.PCIE,
    ("hostdev", "*"): Link.NONE,
    # controllers other than type='pci': keyed "controller:<type>"
    ("controller:usb", "qemu-xhci"): Link.PCIE,
    ("controller:usb", "nec-xhci"): Link.PCIE,
    ("controller:usb", "none"): Link.NONE,
    ("controller:usb", "qusb1"): Link.NONE,
    ("controller:usb", "qusb2"): Link.NONE,
    ("controller:usb", "*"): Link.PCI,
    **{("controller:scsi", model): link for model, link in _VIRTIO_FAMILY.items()},
    ("controller:scsi", "virtio-scsi"): Link.VIRTIO,
    ("controller:scsi", "ncr53c90"): Link.NONE,
    ("controller:scsi", "ibmvscsi"): Link.NONE,  # a pSeries VIO device: no PCI address, on x86 too
    ("controller:scsi", "*"): Link.PCI,
    **{("controller:virtio-serial", model): link for model, link in _VIRTIO_FAMILY.items()},
    ("controller:virtio-serial", "*"): Link.VIRTIO,
    ("controller:sata", "*"): Link.PCI,
    ("controller:ide", "*"): Link.PCI,
    ("controller:*", "*"): Link.NONE,
}


def device_link(kind: str, model: str) -> Link:
    """The link a device of ``kind`` (``interface``, ``controller:usb``…) and ``model`` needs."""
    for key in ((kind, model), (kind, "*")):
        link = DEVICE_LINKS.get(key)
        if link is not None:
            return link
    if kind.startswith("controller:"):
        return DEVICE_LINKS[("controller:*", "*")]
    return Link.NONE


# The ordered classes of qemuDomainAssignDevicePCISlots: a device's class decides when, relative
# to others, it gets an automatic address.  Definition order is kept within a class.
CLASS_ORDER: tuple[str, ...] = (
    "pci-controller",
    "filesystem",
    "interface",
    "sound",
    "controller",
    "disk",
    "hostdev",
    "memballoon",
    "rng",
    "watchdog",
    "video",
    "shmem",
    "input",
    "serial",
    "iommu",
    "vsock",
    "memory",
)
CLASS_RANK: dict[str, int] = {name: rank for rank, name in enumerate(CLASS_ORDER)}

# The order in which libvirt walks devices when it collects explicit addresses and sets
# multifunction (virDomainDeviceInfoIterate); it decides which of two clashing devices is blamed.
ITERATE_ORDER: tuple[str, ...] = (
    "disk", "interface", "sound", "hostdev", "video", "controller", "smartcard", "serial", "parallel",
    "channel", "console", "input", "filesystem", "watchdog", "memballoon", "rng", "nvram", "hub", "shmem",
    "tpm", "panic", "memory", "redirdev", "iommu", "vsock",
)

# Element order of <devices> as libvirt formats it; used to place devices we add.
FORMAT_ORDER: tuple[str, ...] = (
    "emulator", "disk", "controller", "lease", "filesystem", "interface", "smartcard", "serial", "parallel",
    "console", "channel", "input", "tpm", "graphics", "sound", "audio", "video", "hostdev", "redirdev",
    "redirfilter", "hub", "watchdog", "memballoon", "rng", "nvram", "panic", "shmem", "memory", "iommu", "vsock",
)

# USB2 controllers that share one slot (same index), with the function each takes.
USB2_FUNCTIONS: dict[str, int] = {"ich9-ehci1": 7, "ich9-uhci1": 0, "ich9-uhci2": 1, "ich9-uhci3": 2}

# Companions libvirt adds with a default USB2 controller (virDomainDefAddUSBController).
USB2_COMPANIONS: tuple[str, ...] = ("ich9-uhci1", "ich9-uhci2", "ich9-uhci3")
