"""Virtio-serial ports and the console alias in the reference; each expectation was measured on
libvirtd 9.0.0, 11.3.0 and 12.8.0 (define, ``attach-device --config``, ``--live`` on a guest
started with no OS) unless the test says otherwise."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from reference_support import MIN, addresses, domain, nic, pci

from pytest_pcie.reference import LibvirtError, attach, define
from pytest_pcie.reference.virtio_serial import DEFAULT_PORTS


def serial_controller(index: int, ports: int | None = None) -> str:
    ports_attribute = f" ports='{ports}'" if ports is not None else ""
    return f"<controller type='virtio-serial' index='{index}'{ports_attribute}/>"


def channel(name: str, address: str = "") -> str:
    return f"<channel type='pty'><target type='virtio' name='org.test.{name}'/>{address}</channel>"


def channels(count: int) -> str:
    return "".join(channel(str(number)) for number in range(count))


def port(controller: int, number: int | None = None) -> str:
    port_attribute = f" port='{number}'" if number is not None else ""
    return f"<address type='virtio-serial' controller='{controller}' bus='0'{port_attribute}/>"


def channel_ports(xml: str) -> dict[str, tuple[int, int]]:
    """Each channel's ``(controller, port)``, keyed by the last part of its target name."""
    result: dict[str, tuple[int, int]] = {}
    for element in etree.fromstring(xml.encode()).iterfind("devices/channel"):
        target, address = element.find("target"), element.find("address")
        assert target is not None and address is not None
        assert address.get("type") == "virtio-serial"
        name = (target.get("name") or "").rsplit(".", 1)[-1]
        result[name] = (int(address.get("controller") or "0"), int(address.get("port") or "0"))
    return result


def serial_controllers(xml: str) -> list[str]:
    """The virtio-serial controllers' indexes in document order."""
    root = etree.fromstring(xml.encode())
    return [element.get("index") or "" for element in root.iterfind("devices/controller[@type='virtio-serial']")]


def test_a_fourth_channel_on_four_ports_adds_a_controller() -> None:
    xml = define(domain("pc", MIN + serial_controller(0, 4) + channels(4)))
    assert channel_ports(xml) == {"0": (0, 1), "1": (0, 2), "2": (0, 3), "3": (1, 1)}
    assert addresses(xml) == {"virtio-serial0": "00:02.0", "virtio-serial1": "00:03.0"}


def test_three_channels_on_four_ports_add_nothing() -> None:
    xml = define(domain("q35", MIN + serial_controller(0, 4) + channels(3)))
    assert serial_controllers(xml) == ["0"]


def test_the_implicit_controller_has_thirty_channel_ports() -> None:
    assert serial_controllers(define(domain("pc", MIN + channels(DEFAULT_PORTS - 1)))) == ["0"]
    xml = define(domain("pc", MIN + channels(DEFAULT_PORTS)))
    assert channel_ports(xml)[str(DEFAULT_PORTS - 1)] == (1, 1)


def test_written_controllers_fill_in_index_order_before_one_is_added() -> None:
    xml = define(domain("pc", MIN + serial_controller(0, 2) + serial_controller(1, 2) + channels(3)))
    assert channel_ports(xml) == {"0": (0, 1), "1": (1, 1), "2": (2, 1)}


@pytest.mark.parametrize(
    ("profile", "slots"),
    [("9.0.0", {"virtio-serial0": "00:02.0", "virtio-serial2": "00:03.0", "virtio-serial1": "00:04.0"}),
     ("11.3.0", {"virtio-serial0": "00:02.0", "virtio-serial1": "00:03.0", "virtio-serial2": "00:04.0"})],
)
def test_the_added_controller_fills_the_index_gap(profile: str, slots: dict[str, str]) -> None:
    xml = define(domain("pc", MIN + serial_controller(0, 2) + serial_controller(2, 2) + channels(3)), profile=profile)
    assert channel_ports(xml) == {"0": (0, 1), "1": (2, 1), "2": (1, 1)}
    assert addresses(xml) == slots


def test_virtio_consoles_use_up_no_channel_port() -> None:
    consoles = "<console type='pty'><target type='virtio'/></console>" * 2
    xml = define(domain("pc", MIN + serial_controller(0, 3) + consoles + channels(2)))
    assert channel_ports(xml) == {"0": (0, 1), "1": (0, 2)}


@pytest.mark.parametrize(
    ("profile", "placed"),
    [("9.0.0", {"0": (1, 1), "1": (2, 1)}), ("11.3.0", {"0": (1, 1), "1": (2, 1)}),
     ("12.8.0", {"0": (0, 1), "1": (1, 1)})],
)
def test_a_console_with_a_portless_address_takes_a_port_of_controller_0(
    profile: str, placed: dict[str, tuple[int, int]]
) -> None:
    named = "<console type='pty'><target type='virtio'/><address type='virtio-serial' controller='1'/></console>"
    devices = MIN + serial_controller(0, 2) + serial_controller(1, 2) + named + channels(2)
    assert channel_ports(define(domain("pc", devices), profile=profile)) == placed


def test_a_written_port_is_held_before_earlier_channels_are_placed() -> None:
    xml = define(domain("pc", MIN + serial_controller(0, 2) + channel("first") + channel("written", port(0, 1))))
    assert channel_ports(xml) == {"first": (1, 1), "written": (0, 1)}


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        (serial_controller(0, 2) + channels(1) + channel("named", port(0)),
         "XML error: Unable to find a free port on virtio-serial controller 0"),
        (serial_controller(0, 4) + channel("a", port(0, 2)) + channel("b", port(0, 2)),
         "XML error: virtio serial port 2 on controller 0 is already occupied"),
        (serial_controller(0, 4) + channel("a", port(0, 4)),
         "XML error: virtio serial controller 0 does not have port 4"),
    ],
    ids=["named-controller-full", "port-occupied", "port-beyond-ports"],
)
def test_refusals(devices: str, message: str) -> None:
    with pytest.raises(LibvirtError, match=f"^{re.escape(message)}$"):
        define(domain("pc", MIN + devices))


def test_offline_attach_when_full_adds_a_controller_and_fills_it() -> None:
    xml = define(domain("q35", MIN + serial_controller(0, 2) + channels(1)))
    xml = attach(xml, channel("5"), live=False)
    xml = attach(xml, channel("6"), live=False)
    assert channel_ports(xml) == {"0": (0, 1), "5": (1, 1), "6": (1, 2)}
    assert addresses(xml)["virtio-serial1"] == "02:00.0"


def test_live_attach_takes_the_next_port() -> None:  # measured on 9.0.0
    xml = define(domain("pc", MIN + serial_controller(0, 4) + channels(1)))
    assert channel_ports(attach(xml, channel("5"), live=True))["5"] == (0, 2)


@pytest.mark.parametrize(("profile", "end"), [("9.0.0", " "), ("11.3.0", ""), ("12.8.0", "")])
def test_live_attach_when_full_fails_on_the_missing_alias(profile: str, end: str) -> None:
    xml = define(domain("pc", MIN + serial_controller(0, 2) + channels(1)), profile=profile)
    message = f"internal error: Device alias was not set for virtio-serial controller with index 1{end}"
    with pytest.raises(LibvirtError) as raised:
        attach(xml, channel("5"), live=True, profile=profile)
    assert str(raised.value) == message


@settings(max_examples=40, deadline=None)
@given(ports=st.integers(min_value=2, max_value=8), count=st.integers(min_value=0, max_value=40))
def test_every_channel_gets_its_own_port_and_controllers_are_added_only_when_full(ports: int, count: int) -> None:
    xml = define(domain("pc", MIN + serial_controller(0, ports) + channels(count)))
    placed = channel_ports(xml)
    assert len(set(placed.values())) == count
    first = ports - 1  # port 0 is for consoles
    extra = max(0, count - first)
    assert len(serial_controllers(xml)) == 1 + -(-extra // (DEFAULT_PORTS - 1))
    for controller, number in placed.values():
        assert 1 <= number < (ports if controller == 0 else DEFAULT_PORTS)


PCI_SERIAL = f"<serial type='dev'><source path='/dev/ttyS2'/><target type='pci-serial' port='0'/>{pci(0, 4)}</serial>"


def console(address: str, target: str = "serial", source: str = "/dev/ttyS2") -> str:
    return f"<console type='dev'><source path='{source}'/><target type='{target}' port='0'/>{address}</console>"


def test_the_serial_console_may_repeat_its_serials_address() -> None:
    assert addresses(define(domain("pc", MIN + PCI_SERIAL + console(pci(0, 4)))))["serial#0"] == "00:04.0"


def test_an_address_on_the_serial_console_reserves_nothing() -> None:
    xml = define(domain("pc", MIN + PCI_SERIAL + console(pci(0, 2)) + nic()))
    assert addresses(xml)["interface#0"] == "00:02.0"


def test_a_second_console_with_the_serials_address_is_a_double_use() -> None:
    devices = MIN + PCI_SERIAL + console(pci(0, 4)) + console(pci(0, 4), target="virtio", source="/dev/ttyS3")
    with pytest.raises(LibvirtError, match=re.escape("Attempted double use of PCI Address 0000:00:04.0")):
        define(domain("pc", devices))
