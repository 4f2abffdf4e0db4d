"""define() of the reference assigner: addresses and controllers, each checked against libvirtd 9.0.0.

Every expectation below was produced by real libvirt (virsh define + dumpxml on Debian 12,
QEMU 7.2) for the same input; the tables only list the entries a case is about.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reference_support import MIN, addresses, controller, domain, nic, pci, targets

from pytest_pcie.reference import LibvirtError, define
from pytest_pcie.reference.profiles import using_profile


@pytest.fixture(autouse=True)
def _libvirt_9_0_0() -> Iterator[None]:
    """These tests pin libvirt 9.0.0's rules, as measured on its daemon; what later releases
    changed is pinned rule by rule in test_reference_profiles.py."""
    with using_profile("9.0.0"):
        yield

SCSI_DISK = "<disk type='file' device='disk'><source file='/tmp/a'/><target dev='sda' bus='scsi'/></disk>"
VIRTIO_DISK = "<disk type='file' device='disk'><source file='/tmp/a'/><target dev='vda' bus='virtio'/></disk>"


def video(model: str, extra: str = "") -> str:
    return f"<video><model type='{model}'{extra}/></video>"


# (id, machine, devices, expected addresses: a subset of addresses(define(...)))
PLACEMENTS: list[tuple[str, str, str, dict[str, str]]] = [
    ("pc-defaults", "pc", "", {"usb0": "00:01.2", "memballoon#0": "00:02.0"}),
    (
        "q35-defaults-spare-port",
        "q35",
        "",
        {"sata0": "00:1f.2", "pci1": "00:01.0+m", "pci2": "00:01.1", "pci3": "00:01.2", "usb0": "01:00.0",
         "memballoon#0": "02:00.0"},
    ),
    (
        "q35-ten-nics-ports-packed-8-per-slot",
        "q35",
        MIN + nic() * 10,
        {"pci1": "00:01.0+m", "pci8": "00:01.7", "pci9": "00:02.0+m", "pci11": "00:02.2", "interface#0": "01:00.0",
         "interface#9": "0a:00.0"},
    ),
    ("pc-29-nics-no-bridge", "pc", MIN + nic() * 29, {"interface#0": "00:02.0", "interface#28": "00:1e.0"}),
    (
        "pc-30-nics-bridge-first",
        "pc",
        MIN + nic() * 30,
        {"pci1": "00:02.0", "interface#0": "00:03.0", "interface#28": "00:1f.0", "interface#29": "01:01.0"},
    ),
    (
        "q35-e1000-root-port-bridge-and-spare",
        "q35",
        MIN + nic("e1000"),
        {"pci1": "00:01.0+m", "pci2": "01:00.0", "pci3": "00:01.1", "interface#0": "02:01.0"},
    ),
    (
        "q35-nic-without-model-is-rtl8139-behind-bridge",
        "q35",
        MIN + nic(None),
        {"pci2": "01:00.0", "interface#0": "02:01.0"},
    ),
    (
        "q35-pass-two-places-bridge-in-first-port",
        "q35",
        "<interface type='user'><model type='virtio'/></interface>"
        "<disk type='file' device='disk' model='virtio-transitional'><source file='/tmp/a'/>"
        "<target dev='vda' bus='virtio'/></disk><memballoon model='virtio-transitional'/>",
        {"pci4": "01:00.0", "interface#0": "02:00.0", "usb0": "03:00.0", "disk#0": "04:01.0",
         "memballoon#0": "04:02.0"},
    ),
    (
        "q35-user-port-no-spare",
        "q35",
        MIN + controller("pcie-root-port", 1) + nic() * 3,
        {"pci1": "00:01.0+m", "pci2": "00:01.1", "pci3": "00:01.2", "interface#2": "03:00.0"},
    ),
    (
        "q35-explicit-missing-bus-adds-ports",
        "q35",
        MIN + nic(address=pci(5, 0)),
        {"pci1": "00:01.0+m", "pci5": "00:01.4", "interface#0": "05:00.0"},
    ),
    ("pc-explicit-missing-bus-adds-bridges", "pc", MIN + nic(address=pci(3, 1)),
     {"pci1": "00:02.0", "pci2": "00:03.0", "pci3": "00:04.0"}),
    (
        "q35-explicit-address-bumped-by-bridge-pair",
        "q35",
        MIN + f"<controller type='sata' index='1'>{pci(1, 4, 1)}</controller>",
        {"pci1": "00:01.0+m", "pci2": "01:00.0", "sata1": "02:04.1"},
    ),
    ("q35-user-port-3-fills-gaps", "q35", MIN + controller("pcie-root-port", 3),
     {"pci3": "00:01.0+m", "pci1": "00:01.1", "pci2": "00:01.2"}),
    ("q35-primary-video-slot-1", "q35", MIN + video("vga"), {"video#0": "00:01.0"}),
    ("pc-primary-video-slot-2", "pc", MIN + nic() + video("vga"), {"video#0": "00:02.0", "interface#0": "00:03.0"}),
    (
        "q35-ich9-usb2-sets-on-1d-and-1a",
        "q35",
        "".join(
            f"<controller type='usb' index='{index}' model='{model}'/>"
            for index in (0, 1)
            for model in ("ich9-ehci1", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3")
        ),
        {"usb0-ich9-uhci1": "00:1d.0+m", "usb0-ich9-ehci1": "00:1d.7", "usb1-ich9-uhci1": "00:1a.0+m",
         "usb1-ich9-uhci3": "00:1a.2"},
    ),
    (
        "q35-fixed-chipset-slots",
        "q35",
        MIN + "<sound model='ich9'/>" + controller("dmi-to-pci-bridge", 1) + controller("pci-bridge", 2)
        + nic("e1000") + nic(),
        {"sound#0": "00:1b.0", "pci1": "00:1e.0", "pci2": "01:00.0", "interface#0": "02:01.0",
         "pci3": "00:01.0", "interface#1": "03:00.0"},
    ),
    (
        "q35-class-order",
        "q35",
        "<controller type='usb' model='none'/>"
        "<filesystem type='mount' accessmode='passthrough'><source dir='/tmp'/><target dir='t'/></filesystem>"
        + nic() + "<sound model='ich9'/><controller type='scsi' model='virtio-scsi'/>"
        "<controller type='virtio-serial'/>" + VIRTIO_DISK + "<memballoon model='virtio'/>"
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
        "<input type='keyboard' bus='virtio'/><vsock model='virtio'><cid auto='yes'/></vsock>",
        {"filesystem#0": "01:00.0", "interface#0": "02:00.0", "scsi0": "03:00.0", "virtio-serial0": "04:00.0",
         "disk#0": "05:00.0", "memballoon#0": "06:00.0", "rng#0": "07:00.0", "input#0": "08:00.0",
         "vsock#0": "09:00.0", "sound#0": "00:1b.0"},
    ),
    ("q35-virtio-iommu-integrated-on-bus-0", "q35", MIN + "<iommu model='virtio'/>" + nic(),
     {"pci1": "00:01.0+m", "interface#0": "01:00.0", "iommu#0": "00:02.0"}),
    ("q35-implicit-lsilogic-for-scsi-disk", "q35", MIN + SCSI_DISK, {"pci2": "01:00.0", "scsi0": "02:01.0"}),
    ("pc-function-1-gets-multifunction-on-0", "pc", MIN + nic(address=pci(0, 5)) + nic(address=pci(0, 5, 1)),
     {"interface#0": "00:05.0+m", "interface#1": "00:05.1"}),
    ("pc-zero-address-means-auto", "pc", MIN + nic(address=pci(0, 0, 1)), {"interface#0": "00:02.0"}),
    (
        "q35-switch-ports",
        "q35",
        MIN + controller("pcie-root-port", 1) + controller("pcie-switch-upstream-port", 2)
        + controller("pcie-switch-downstream-port", 3) + controller("pcie-switch-downstream-port", 4) + nic() * 3,
        {"pci2": "01:00.0", "pci3": "02:00.0", "pci4": "02:01.0", "interface#0": "03:00.0",
         "interface#2": "05:00.0", "pci5": "00:01.1"},
    ),
    (
        "pc-disks-addressed-in-target-order",
        "pc",
        MIN + "".join(
            f"<disk type='file' device='disk'><source file='/tmp/{name}'/><target dev='{name}' bus='virtio'/></disk>"
            for name in ("vdc", "vda", "vdb")
        ),
        {"disk#0": "00:02.0", "disk#1": "00:03.0", "disk#2": "00:04.0"},
    ),
    (
        "pc-expander-buses-bus-0-first",
        "pc",
        MIN + controller("pci-expander-bus", 1, "<target><node>0</node></target>")
        + controller("pci-expander-bus", 2, "<target><node>1</node></target>") + nic(address=pci(1, 0)) + nic(),
        {"pci1": "00:02.0", "pci2": "00:03.0", "interface#0": "01:00.0", "interface#1": "00:04.0"},
    ),
]

NUMA = (
    "<vcpu>2</vcpu><cpu><numa><cell id='0' cpus='0' memory='65536' unit='KiB'/>"
    "<cell id='1' cpus='1' memory='65536' unit='KiB'/></numa></cpu>"
)


@pytest.mark.parametrize(("machine", "devices", "expected"), [case[1:] for case in PLACEMENTS],
                         ids=[case[0] for case in PLACEMENTS])
def test_define_places_devices_as_libvirt_does(machine: str, devices: str, expected: dict[str, str]) -> None:
    extra = NUMA if "expander" in devices else ""
    placed = addresses(define(domain(machine, devices, extra)))
    assert {key: placed.get(key) for key in expected} == expected


def test_define_adds_exactly_the_spare_port_on_q35_defaults() -> None:
    placed = addresses(define(domain("q35")))
    assert sorted(key for key in placed if key.startswith("pci")) == ["pci1", "pci2", "pci3"]


def test_root_port_targets_and_model_names() -> None:
    found = targets(define(domain("q35", MIN + nic() * 10)))
    assert found["pci1"] == {"model": "pcie-root-port", "name": "pcie-root-port", "chassis": "1", "port": "0x8"}
    assert found["pci11"]["port"] == "0x12"


def test_bridge_and_expander_targets() -> None:
    assert targets(define(domain("pc", MIN + nic() * 30)))["pci1"] == {
        "model": "pci-bridge", "name": "pci-bridge", "chassisNr": "1"}
    expanders = targets(define(domain(
        "pc",
        MIN + controller("pci-expander-bus", 1, "<target><node>0</node></target>")
        + controller("pci-expander-bus", 2, "<target><node>1</node></target>"),
        NUMA,
    )))
    assert (expanders["pci1"]["busNr"], expanders["pci2"]["busNr"]) == ("254", "252")


def test_nic_without_model_is_written_rtl8139() -> None:
    assert "<model type=\"rtl8139\"/>" in define(domain("pc", MIN + nic(None)))


def test_define_is_a_fixed_point_on_its_own_output() -> None:
    once = define(domain("q35", MIN + nic() * 3 + nic("e1000") + "<sound model='ich9'/>"))
    assert addresses(define(once)) == addresses(once)
    assert targets(define(once)) == targets(once)


# (id, machine, devices, libvirt's exact message)
REJECTIONS: list[tuple[str, str, str, str]] = [
    ("double-use", "pc", MIN + nic(address=pci(0, 3)) * 2,
     "XML error: Attempted double use of PCI Address 0000:00:03.0"),
    ("slot-too-high", "pc", MIN + nic(address="<address type='pci' domain='0' bus='0' slot='0x20' function='0'/>"),
     "XML error: Invalid PCI address slot='0x20', must be <= 0x1F"),
    ("function-too-high", "pc", MIN + nic(address="<address type='pci' domain='0' bus='0' slot='3' function='8'/>"),
     "XML error: Invalid PCI address function=0x8, must be <= 7"),
    ("other-pci-domain", "pc", MIN + nic(address="<address type='pci' domain='1' bus='0' slot='3' function='0'/>"),
     "XML error: Invalid PCI address 0001:00:03.0. Only PCI domain 0 is available"),
    ("slot-on-root-port", "q35", MIN + controller("pcie-root-port", 1) + nic(address=pci(1, 1)),
     "XML error: Invalid PCI address 0000:01:01.0. slot must be <= 0"),
    ("virtio-on-upstream-port", "q35",
     MIN + controller("pcie-root-port", 1) + controller("pcie-switch-upstream-port", 2) + nic(address=pci(2, 0)),
     "XML error: The device at PCI address 0000:02:00.0 cannot be plugged into the PCI controller with "
     "index='2'. It requires a controller that accepts a PCI Express device."),
    ("root-port-on-pc", "pc", MIN + controller("pcie-root-port", 1),
     "internal error: a PCI slot is needed to connect a PCI controller model='pcie-root-port', but none is "
     "available, and it cannot be automatically added"),
    ("pcie-root-on-pc", "pc", MIN + controller("pcie-root", 0),
     "XML error: The PCI controller with index='0' must be model='pci-root' for this machine type, but "
     "model='pcie-root' was found instead"),
    ("pci-root-on-q35", "q35", MIN + controller("pci-root", 0),
     "XML error: The PCI controller with index='0' must be model='pcie-root' for this machine type, but "
     "model='pci-root' was found instead"),
    ("duplicate-index", "q35", MIN + controller("pcie-root-port", 1) * 2,
     "XML error: Multiple 'pci' controllers with index '1'"),
    ("ide-elsewhere", "pc", MIN + f"<controller type='ide' index='0'>{pci(0, 5)}</controller>",
     "internal error: Primary IDE controller must have PCI address 0:0:1.1"),
    ("sata-elsewhere", "q35", MIN + f"<controller type='sata' index='0'>{pci(0, 5)}</controller>",
     "internal error: Primary SATA controller must have PCI address 0:0:1f.2"),
    ("hotplug-on-bridge", "pc", MIN + controller("pci-bridge", 1, "<target hotplug='off'/>"),
     "unsupported configuration: Option 'hotplug' is not valid for PCI controller with index '1', model "
     "'pci-bridge' and modelName 'pci-bridge'"),
    ("iommu-on-pc", "pc", MIN + "<iommu model='virtio'/>",
     "unsupported configuration: IOMMU device: 'virtio' is only supported with Q35 and ARM Virt machines"),
    ("secondary-vga", "q35", MIN + video("qxl") + video("vga"),
     "unsupported configuration: video type 'vga' is only valid as primary video device"),
    ("usb-companions-only", "pc", "<controller type='usb' index='0' model='ich9-uhci1'/>",
     "No master USB controller specified"),
    ("two-usb-hosts-one-index", "pc", "<controller type='usb' index='0' model='piix3-uhci'/>"
     "<controller type='usb' index='0' model='qemu-xhci'/>", "XML error: Duplicate USB controllers with index 0"),
    ("second-ide-disk-controller", "pc", MIN + "<disk type='file' device='cdrom'><target dev='hde' bus='ide'/></disk>",
     "internal error: Only 1 IDE controller is supported"),
    ("ide-on-q35", "q35", MIN + "<disk type='file' device='cdrom'><target dev='hda' bus='ide'/></disk>",
     "unsupported configuration: IDE controllers are unsupported for this QEMU binary or machine type"),
    ("duplicate-disk-target", "pc", MIN + VIRTIO_DISK * 2,
     "XML error: target 'vda' duplicated for disk sources '/tmp/a' and '/tmp/a'"),
    ("second-usb-with-none", "q35", MIN + "<controller type='usb' index='1' model='qemu-xhci'/>",
     "Can't add another USB controller: USB is disabled for this domain"),
]


@pytest.mark.parametrize(("machine", "devices", "message"), [case[1:] for case in REJECTIONS],
                         ids=[case[0] for case in REJECTIONS])
def test_define_rejects_with_libvirts_message(machine: str, devices: str, message: str) -> None:
    with pytest.raises(LibvirtError) as caught:
        define(domain(machine, devices))
    assert caught.value.message == message


def test_bridge_index_must_exceed_its_bus() -> None:
    devices = MIN + controller("pci-bridge", 1) + controller("pci-bridge", 2, pci(1, 1)).replace("index='2'",
                                                                                                   "index='1'")
    with pytest.raises(LibvirtError, match="Multiple 'pci' controllers"):
        define(domain("pc", devices))
    devices = MIN + controller("pci-bridge", 2) + controller("pci-bridge", 1, pci(2, 1))
    with pytest.raises(LibvirtError) as caught:
        define(domain("pc", devices))
    assert caught.value.message == (
        "unsupported configuration: PCI controller at index 1 (0x01) has bus='0x02', but index must be larger "
        "than bus"
    )


@pytest.mark.parametrize(("machine", "count", "model"), [("pc", 60, "pci-bridge"), ("q35", 240, "pcie-root-port")])
def test_too_many_devices(machine: str, count: int, model: str) -> None:
    """pc with 60 NICs fills pci-root and the bridge's slots exactly when another bridge is needed
    (61 fit again: the second bridge then has room); q35 runs out of bus-0 slots for root ports."""
    with pytest.raises(LibvirtError) as caught:
        define(domain(machine, MIN + nic() * count))
    assert caught.value.message == (
        f"internal error: a PCI slot is needed to connect a PCI controller model='{model}', but none is "
        "available, and it cannot be automatically added"
    )


def test_pc_with_sixty_one_nics_fits() -> None:
    assert len(addresses(define(domain("pc", MIN + nic() * 61)))) == 61 + 2


def test_unknown_machine_with_pci_devices_has_no_pci_buses() -> None:
    text = domain("pc").replace("machine=\"pc\"", "machine=\"foo\"")
    with pytest.raises(LibvirtError) as caught:
        define(text)
    assert caught.value.message == "XML error: No PCI buses available"


def test_malformed_xml_is_a_libvirt_error_not_a_traceback() -> None:
    with pytest.raises(LibvirtError, match="not well-formed"):
        define("<domain><devices>")
