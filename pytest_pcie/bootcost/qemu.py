"""Turning a laid-out topology into QEMU ``-device`` arguments, from a table of device kinds.

Why a table of our own rather than ``virsh domxml-to-native``: a golden already holds every PCI
address libvirt chose, so what remains is spelling each device for QEMU, and libvirt's command
line cannot be run as it is (it names tap fds, monitor sockets, key files and disk images of a
defined guest, and starts paused).  The spelling follows libvirt 9.0.0's: the same QEMU device
models, bus names (``pcie.0``/``pci.0`` for the root, ``pci.N`` for controller index N), ``addr``,
``multifunction``, ``chassis``, ``port``, ``chassis_nr`` and ``bus_nr``.

A device that needs something on the host gets a stand-in with no host side: NICs a ``hubport``
netdev, disks a ``null-co`` block node that reads zeroes, sound the ``none`` audio driver, PCI
serial ports a ``null`` chardev, shared memory a RAM backend, filesystems a 9p export of an
empty folder.  Devices that cannot be stood in for are dropped and reported (see DROPPED); each
leaves its slot empty, which changes what is measured, so reports list them.

Each row also names the guest kernel modules that drive the device, which the guest's init loads
(in dependency order, see :mod:`pytest_pcie.bootcost.guest`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from pytest_pcie.bootcost.topology import Topology
from pytest_pcie.machines import MACHINE_FAMILIES


@dataclass(frozen=True)
class Row:
    """How QEMU gets one kind of libvirt device, and which guest drivers take it.

    ``backend`` names the host-side stand-in the device needs (a key of BACKENDS).  ``secondary``
    is the driver for a second video device of the kind (QEMU's qxl/virtio-gpu without VGA).
    """

    driver: str
    modules: tuple[str, ...] = ()
    backend: str | None = None
    secondary: str | None = None


VIRTIO = ("virtio_pci",)

# Identity (see identity()) -> row.  libvirt's transitional/non-transitional models map to QEMU's
# "-transitional"/"-non-transitional" drivers of the same row (VARIANTS).
DEVICES: dict[str, Row] = {
    "controller/pci/pcie-root-port": Row("pcie-root-port"),
    "controller/pci/pcie-switch-upstream-port": Row("x3130-upstream"),
    "controller/pci/pcie-switch-downstream-port": Row("xio3130-downstream"),
    "controller/pci/pci-bridge": Row("pci-bridge"),
    "controller/pci/pcie-to-pci-bridge": Row("pcie-pci-bridge"),
    "controller/pci/dmi-to-pci-bridge": Row("i82801b11-bridge"),
    "controller/pci/pci-expander-bus": Row("pxb"),
    "controller/pci/pcie-expander-bus": Row("pxb-pcie"),
    "controller/sata": Row("ich9-ahci", ("ahci",)),
    "controller/ide": Row("piix3-ide", ("ata_piix",)),
    "controller/usb/piix3-uhci": Row("piix3-usb-uhci", ("uhci_hcd",)),
    "controller/usb/ich9-ehci1": Row("ich9-usb-ehci1", ("ehci_pci",)),
    "controller/usb/ich9-uhci1": Row("ich9-usb-uhci1", ("uhci_hcd",)),
    "controller/usb/ich9-uhci2": Row("ich9-usb-uhci2", ("uhci_hcd",)),
    "controller/usb/ich9-uhci3": Row("ich9-usb-uhci3", ("uhci_hcd",)),
    "controller/usb/qemu-xhci": Row("qemu-xhci", ("xhci_pci",)),
    "controller/usb/nec-xhci": Row("nec-usb-xhci", ("xhci_pci",)),
    "controller/scsi/virtio-scsi": Row("virtio-scsi-pci", (*VIRTIO, "virtio_scsi")),
    "controller/scsi/lsilogic": Row("lsi53c895a", ("sym53c8xx",)),
    "controller/scsi/lsisas1068": Row("mptsas1068", ("mptsas",)),
    "controller/scsi/am53c974": Row("am53c974", ("am53c974",)),
    "controller/virtio-serial/virtio": Row("virtio-serial-pci", (*VIRTIO, "virtio_console")),
    "interface/virtio": Row("virtio-net-pci", (*VIRTIO, "virtio_net"), "netdev"),
    "interface/e1000": Row("e1000", ("e1000",), "netdev"),
    "interface/e1000e": Row("e1000e", ("e1000e",), "netdev"),
    "interface/rtl8139": Row("rtl8139", ("8139cp",), "netdev"),
    "disk/virtio": Row("virtio-blk-pci", (*VIRTIO, "virtio_blk"), "blockdev"),
    "filesystem/mount": Row("virtio-9p-pci", (*VIRTIO, "9pnet_virtio"), "fsdev"),
    "memballoon/virtio": Row("virtio-balloon-pci", (*VIRTIO, "virtio_balloon")),
    "rng/virtio": Row("virtio-rng-pci", (*VIRTIO, "virtio_rng")),
    "watchdog/i6300esb": Row("i6300esb", ("i6300esb",)),
    "sound/ich6": Row("intel-hda", ("snd_hda_intel", "snd_hda_codec_generic"), "codec"),
    "sound/ich9": Row("ich9-intel-hda", ("snd_hda_intel", "snd_hda_codec_generic"), "codec"),
    "sound/ac97": Row("AC97", ("snd_intel8x0",), "audiodev"),
    "video/vga": Row("VGA", ("bochs",)),
    "video/cirrus": Row("cirrus-vga", ("cirrus",)),
    "video/bochs": Row("bochs-display", ("bochs",)),
    "video/qxl": Row("qxl-vga", ("qxl",), secondary="qxl"),
    "video/virtio": Row("virtio-vga", (*VIRTIO, "virtio_gpu"), secondary="virtio-gpu-pci"),
    "input/tablet/virtio": Row("virtio-tablet-pci", (*VIRTIO, "virtio_input")),
    "input/mouse/virtio": Row("virtio-mouse-pci", (*VIRTIO, "virtio_input")),
    "input/keyboard/virtio": Row("virtio-keyboard-pci", (*VIRTIO, "virtio_input")),
    "serial/pci-serial": Row("pci-serial", (), "chardev"),
    "shmem/ivshmem-plain": Row("ivshmem-plain", (), "memdev"),
    "iommu/virtio": Row("virtio-iommu-pci", ("virtio_iommu",)),
    "crypto/virtio": Row("virtio-crypto-pci", (*VIRTIO, "virtio_crypto"), "cryptodev"),
}

# What cannot be given to QEMU without something on the host that a benchmark should not touch.
DROPPED: dict[str, str] = {
    "hostdev/pci": "needs a host PCI device assigned with VFIO",
    "vsock/virtio": "needs /dev/vhost-vsock and a guest CID unique on the host",
    "shmem/ivshmem-doorbell": "needs a running ivshmem server",
}

VARIANTS: dict[str, str] = {"virtio-transitional": "-transitional", "virtio-non-transitional": "-non-transitional"}

# Devices the machine type itself has: libvirt lists them but passes no -device for them.
MACHINE_BUILTINS: dict[tuple[str, str], tuple[int, int, int]] = {
    ("q35", "controller/sata"): (0, 0x1F, 2),  # ICH9 AHCI
    ("pc", "controller/ide"): (0, 0x01, 1),  # PIIX3 IDE
}

# Normalised <target> attribute -> QEMU property of PCI controllers, with how to convert the value.
TARGET_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("chassis", "chassis"),
    ("port", "port"),
    ("chassisNr", "chassis_nr"),
    ("busNr", "bus_nr"),
)

ROOT_BUS = {"pcie-root": "pcie.0", "pci-root": "pci.0"}
NULL_DISK_BYTES = 1 << 30
SHMEM_BYTES = 4 << 20  # libvirt's default <shmem> size
AUDIODEV = "audio0"


@dataclass(frozen=True)
class Dropped:
    """A device of the topology that the guest does not get, and why."""

    label: str
    reason: str


@dataclass
class Layout:
    """The topology's part of a QEMU command line, and what the guest should load for it."""

    arguments: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)  # drivers, in device order, without duplicates
    dropped: list[Dropped] = field(default_factory=list)
    builtin: list[str] = field(default_factory=list)  # devices the machine has by itself
    numa_nodes: int = 0  # > 0 when an expander bus names a NUMA node: the guest needs this many nodes
    devices: int = 0  # -device arguments written


def identity(device: etree._Element) -> str:
    """The table key of a normalised device: ``controller/pci/pcie-root-port``, ``interface/virtio``…"""
    tag = device.tag
    model = device.find("model")
    if tag == "controller":
        kind = device.get("type", "")
        name = _base_model(device.get("model") or "")
        if kind == "virtio-serial" or (kind == "scsi" and name == "virtio"):
            name = {"virtio-serial": "virtio", "scsi": "virtio-scsi"}[kind]
        return f"controller/{kind}/{name}" if name else f"controller/{kind}"
    if tag == "interface":
        return f"interface/{_base_model(model.get('type', '') if model is not None else '')}"
    if tag == "disk":
        target = device.find("target")
        return f"disk/{target.get('bus', '') if target is not None else ''}"
    if tag == "input":
        return f"input/{device.get('type', '')}/{device.get('bus', '')}"
    if tag == "serial":
        target = device.find("target")
        return f"serial/{target.get('type', '') if target is not None else ''}"
    if tag in ("video", "shmem"):
        return f"{tag}/{model.get('type', '') if model is not None else ''}"
    if tag in ("hostdev", "filesystem"):
        return f"{tag}/{device.get('type', '')}"
    return f"{tag}/{_base_model(device.get('model') or '')}"


def variant(device: etree._Element) -> str:
    """The QEMU driver suffix for libvirt's virtio-(non-)transitional models, else ''."""
    model = device.find("model")
    for value in (device.get("model"), model.get("type") if model is not None else None):
        if value in VARIANTS:
            return VARIANTS[value]
    return ""


def describe(device: etree._Element) -> str:
    """A short name for reports: ``interface virtio at 01:00.0``."""
    address = device.find("address")
    where = ""
    if address is not None:
        where = f" at {_int(address.get('bus')):02x}:{_int(address.get('slot')):02x}.{_int(address.get('function'))}"
    index = f" {device.get('index')}" if device.tag == "controller" else ""
    return f"{identity(device).replace('/', ' ')}{index}{where}"


def layout(topology: Topology, scratch: Path) -> Layout:
    """The -device arguments (and stand-ins) for every device of ``topology``.

    ``scratch`` is a folder the 9p stand-ins export; nothing is written to it here.
    """
    result = Layout()
    family = MACHINE_FAMILIES[topology.machine]
    counters: dict[str, int] = {}
    videos = 0
    for device in topology.devices:
        key = identity(device)
        address = device.find("address")
        if device.tag == "controller" and address is None:
            continue  # the root bus itself, or a controller that is not on PCI (usb model='none')
        if key in DROPPED:
            result.dropped.append(Dropped(describe(device), DROPPED[key]))
            continue
        row = DEVICES.get(key)
        if row is None:
            result.dropped.append(Dropped(describe(device), f"pcie-bootcost has no QEMU spelling for {key}"))
            continue
        _add_modules(result, row.modules)
        if address is not None and MACHINE_BUILTINS.get((topology.machine, key)) == _position(address):
            result.builtin.append(describe(device))
            continue
        number = counters.get(device.tag, 0)
        counters[device.tag] = number + 1
        driver = row.driver
        if device.tag == "video":
            driver = row.secondary if videos and row.secondary else driver
            videos += 1
        properties: dict[str, object] = {"driver": driver + variant(device)}
        if device.tag == "controller" and device.get("type") == "pci":
            properties["driver"] = _model_name(device) or driver
            properties["id"] = f"pci.{device.get('index')}"
            properties.update(_target_properties(device, result))
        else:
            properties["id"] = f"{device.tag}{number}"
        if address is not None:
            properties.update(_address_properties(address, family.root_model))
        after = _add_backend(result, row.backend, properties, scratch) if row.backend is not None else []
        result.arguments += ["-device", json.dumps(properties, separators=(",", ":")), *after]
        result.devices += 1
    return result


def _add_backend(result: Layout, kind: str, properties: dict[str, object], scratch: Path) -> list[str]:
    """Write the stand-in a device needs and point the device's properties at it.

    Returns what must follow the device itself: a codec plugs into its HDA controller's bus, which
    QEMU only has once the controller exists.
    """
    name = str(properties["id"])
    if kind == "netdev":
        result.arguments += ["-netdev", f"hubport,id=net-{name},hubid={result.devices}"]
        properties["netdev"] = f"net-{name}"
    elif kind == "blockdev":
        node = {"driver": "null-co", "node-name": f"disk-{name}", "size": NULL_DISK_BYTES, "read-zeroes": True}
        result.arguments += ["-blockdev", json.dumps(node, separators=(",", ":"))]
        properties["drive"] = f"disk-{name}"
    elif kind == "fsdev":
        result.arguments += ["-fsdev", f"local,id=fs-{name},path={scratch},security_model=none,readonly=on"]
        properties.update({"fsdev": f"fs-{name}", "mount_tag": name})
    elif kind == "chardev":
        result.arguments += ["-chardev", f"null,id=char-{name}"]
        properties["chardev"] = f"char-{name}"
    elif kind == "memdev":
        memory = {"qom-type": "memory-backend-ram", "id": f"mem-{name}", "size": SHMEM_BYTES, "share": True}
        result.arguments += ["-object", json.dumps(memory, separators=(",", ":"))]
        properties["memdev"] = f"mem-{name}"
    elif kind == "cryptodev":
        result.arguments += ["-object", json.dumps({"qom-type": "cryptodev-backend-builtin", "id": f"crypto-{name}"})]
        properties["cryptodev"] = f"crypto-{name}"
    elif kind in ("audiodev", "codec"):
        if f"id={AUDIODEV}" not in " ".join(result.arguments):
            result.arguments += ["-audiodev", f"none,id={AUDIODEV}"]
        if kind == "audiodev":
            properties["audiodev"] = AUDIODEV
        else:  # an HDA controller is silent without a codec; libvirt's default is hda-duplex
            codec = {"driver": "hda-duplex", "bus": f"{name}.0", "cad": 0, "audiodev": AUDIODEV}
            return ["-device", json.dumps(codec, separators=(",", ":"))]
    return []


def _target_properties(controller: etree._Element, result: Layout) -> dict[str, object]:
    target = controller.find("target")
    properties: dict[str, object] = {}
    if target is None:
        return properties
    for attribute, name in TARGET_PROPERTIES:
        if target.get(attribute) is not None:
            properties[name] = _int(target.get(attribute))
    if target.get("hotplug") == "off":
        properties["hotplug"] = False
    node = target.find("node")
    if node is not None and node.text:
        properties["numa_node"] = int(node.text)
        result.numa_nodes = max(result.numa_nodes, int(node.text) + 1)
    return properties


def _address_properties(address: etree._Element, root_model: str) -> dict[str, object]:
    bus, slot, function = _position(address)
    properties: dict[str, object] = {"bus": ROOT_BUS[root_model] if bus == 0 else f"pci.{bus}"}
    properties["addr"] = f"0x{slot:x}" if function == 0 else f"0x{slot:x}.0x{function:x}"
    if address.get("multifunction") == "on":
        properties["multifunction"] = True
    return properties


def _position(address: etree._Element) -> tuple[int, int, int]:
    return _int(address.get("bus")), _int(address.get("slot")), _int(address.get("function"))


def _model_name(controller: etree._Element) -> str | None:
    model = controller.find("model")
    return model.get("name") if model is not None else None


def _base_model(model: str) -> str:
    return "virtio" if model in VARIANTS else model


def _add_modules(result: Layout, modules: Iterable[str]) -> None:
    for module in modules:
        if module not in result.modules:
            result.modules.append(module)


def _int(value: str | None) -> int:
    return int(value or "0", 0)


def all_modules() -> list[str]:
    """Every driver the table can ask for: what the guest cache keeps of the kernel package."""
    found: list[str] = []
    for row in DEVICES.values():
        found += [module for module in row.modules if module not in found]
    return found
