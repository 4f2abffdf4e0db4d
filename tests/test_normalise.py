"""The normaliser on real libvirt 9.0.0 dumpxml output (captured with virsh into tests/data/dumpxml)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from pytest_pcie.golden import canonical_text
from pytest_pcie.normalise import normalise
from pytest_pcie.outcome import Failure, Outcome

DATA = Path(__file__).parent / "data" / "dumpxml"


def normalised(name: str, machine: str = "q35", failure: Failure | None = None) -> etree._Element:
    return normalise(Outcome((DATA / name).read_text(), failure), machine)


def text(element: etree._Element) -> str:
    return etree.tostring(element, encoding="unicode")


def test_noise_is_dropped_and_machine_is_the_family() -> None:
    document = normalised("q35-live-attached.xml")
    written = text(document)
    for noise in ("uuid", "52:54:00", "alias", "emulator", "pc-q35-7.2", "ps2", "audio", "vram", "backend", "<mac"):
        assert noise not in written
    assert document.get("machine") == "q35"
    assert normalised("pc-defined.xml", machine="q35").get("machine") == "pc"  # the XML wins over the run's name


def test_controllers_first_sorted_by_type_and_index_then_devices_in_class_order() -> None:
    devices = normalised("q35-defined.xml").find("devices")
    assert devices is not None
    controllers = [(c.get("type"), c.get("index")) for c in devices if c.tag == "controller"]
    assert controllers == [("pci", str(n)) for n in range(9)] + [("sata", "0"), ("usb", "0")]
    others = [d.tag for d in devices if d.tag != "controller"]
    assert others == ["disk", "interface", "interface", "sound", "video", "watchdog", "memballoon", "rng"]


def test_addresses_and_identity_are_kept_as_libvirt_writes_them() -> None:
    devices = normalised("q35-defined.xml").find("devices")
    assert devices is not None
    port = devices.find("controller[@index='1']")
    assert port is not None
    assert text(port) == (
        '<controller type="pci" index="1" model="pcie-root-port"><model name="pcie-root-port"/>'
        '<target chassis="1" port="0x10"/>'
        '<address type="pci" domain="0x0000" bus="0x00" slot="0x02" function="0x0" multifunction="on"/></controller>'
    )
    e1000 = devices.findall("interface")[1]
    assert text(e1000) == (
        '<interface type="user"><model type="e1000"/>'
        '<address type="pci" domain="0x0000" bus="0x03" slot="0x01" function="0x0"/></interface>'
    )
    disk = devices.find("disk")
    assert disk is not None
    assert text(disk).startswith('<disk device="disk"><target dev="vda" bus="virtio"/>')


def test_expander_bus_node_hotplug_off_and_less_common_devices() -> None:
    devices = normalised("q35-many.xml").find("devices")
    assert devices is not None
    expander = devices.find("controller[@model='pcie-expander-bus']")
    target = expander.find("target") if expander is not None else None
    assert target is not None and text(target) == '<target busNr="180"><node>0</node></target>'
    port = devices.find("controller[@model='pcie-root-port']/target")
    assert port is not None and port.get("hotplug") == "off"
    assert devices.find("controller[@type='virtio-serial']/address") is not None
    serial = devices.find("serial")
    assert serial is not None and text(serial).startswith(
        '<serial><target type="pci-serial"><model name="pci-serial"/></target>'
    )
    assert [d.tag for d in devices if d.tag != "controller"] == [
        "disk", "interface", "serial", "input", "video", "shmem", "vsock",
    ]  # fmt: skip
    disk = devices.find("disk")
    assert disk is not None and disk.get("model") == "virtio-transitional"
    assert devices.find("memballoon") is None  # model='none' has no PCI address


def test_live_and_persistent_xml_normalise_alike() -> None:
    defined = normalised("q35-defined.xml")
    live = normalised("q35-live-attached.xml")
    live_devices = live.find("devices")
    assert live_devices is not None
    hotplugged = live_devices.findall("interface")[2]
    live_devices.remove(hotplugged)
    assert canonical_text(defined) == canonical_text(live)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("bus='1' slot='2' function='0'", 'domain="0x0000" bus="0x01" slot="0x02" function="0x0"'),
        ("bus='0x1' slot='0x002' function='0x3'", 'domain="0x0000" bus="0x01" slot="0x02" function="0x3"'),
        ("domain='0' bus='08' slot='31' function='7'", 'domain="0x0000" bus="0x08" slot="0x1f" function="0x7"'),
    ],
)
def test_numbers_are_written_the_way_libvirt_writes_them(written: str, expected: str) -> None:
    domain = (
        "<domain><os><type machine='q35'>hvm</type></os><devices>"
        f"<controller type='pci' index='1' model='pcie-root-port'><target chassis='1' port='16'/></controller>"
        f"<interface type='user'><address type='pci' {written}/></interface></devices></domain>"
    )
    document = normalise(Outcome(domain), "q35")
    assert expected in text(document)
    assert '<target chassis="1" port="0x10"/>' in text(document)


def test_an_unknown_pci_device_keeps_tag_and_address() -> None:
    domain = (
        "<domain><os><type machine='pc'>hvm</type></os><devices>"
        "<gizmo kind='new'><address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></gizmo>"
        "<interface type='user'><address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/></interface>"
        "</devices></domain>"
    )
    devices = normalise(Outcome(domain), "pc").find("devices")
    assert devices is not None
    assert [d.tag for d in devices] == ["interface", "gizmo"]
    assert (
        text(devices[1]) == '<gizmo><address type="pci" domain="0x0000" bus="0x00" slot="0x05" function="0x0"/></gizmo>'
    )


def test_a_console_mirroring_a_pci_serial_is_dropped() -> None:
    raw = (DATA / "pc-pci-serial-console.xml").read_text()
    assert raw.count("slot='0x03'") == 2  # libvirt prints serial 0's address on the console too
    devices = normalised("pc-pci-serial-console.xml", machine="pc").find("devices")
    assert devices is not None
    assert devices.find("console") is None
    serial = devices.find("serial")
    assert serial is not None and serial.find("address[@slot='0x03']") is not None


def test_failure_is_recorded_with_the_topology_before_it() -> None:
    failure = Failure(2, "attach nic.xml", "internal error: No more available PCI slots")
    document = normalised("q35-defined.xml", failure=failure)
    recorded = document.find("failure")
    assert recorded is not None
    assert (recorded.get("step"), recorded.get("label"), recorded.text) == ("2", "attach nic.xml", failure.message)
    assert document.find("devices") is not None


def test_a_failed_define_has_no_devices_and_keeps_the_run_machine() -> None:
    document = normalise(Outcome(None, Failure(0, "define", "XML error: bad")), "pc")
    assert text(document) == '<outcome machine="pc"><failure step="0" label="define">XML error: bad</failure></outcome>'


WRITINGS: tuple[Callable[[int], str], ...] = (
    str,
    hex,
    lambda n: f"0x{n:04x}",
)  # how a person or a tool may write a number


@given(
    bus=st.integers(0, 255),
    slot=st.integers(0, 31),
    function=st.integers(0, 7),
    writing=st.sampled_from(WRITINGS),
)
def test_any_spelling_of_an_address_normalises_to_libvirts(
    bus: int, slot: int, function: int, writing: Callable[[int], str]
) -> None:
    parts = f"domain='{writing(0)}' bus='{writing(bus)}' slot='{writing(slot)}' function='{writing(function)}'"
    domain = (
        "<domain><os><type machine='pc'/></os><devices><interface type='user'>"
        f"<address type='pci' {parts}/></interface></devices></domain>"
    )
    address = normalise(Outcome(domain), "pc").find("devices/interface/address")
    assert address is not None
    expected = {"domain": "0x0000", "bus": f"0x{bus:02x}", "slot": f"0x{slot:02x}", "function": f"0x{function:x}"}
    assert {str(name): str(value) for name, value in address.attrib.items()} == {"type": "pci", **expected}
