"""attach() and detach() of the reference assigner, each expectation checked against libvirtd 9.0.0
(define, then ``attach-device --config``/``--live`` on a transient guest started with no OS, or
``detach-device --config``)."""

from __future__ import annotations

import pytest
from reference_support import MIN, addresses, controller, domain, nic, pci

from pytest_pcie.reference import LibvirtError, attach, define, detach

BRIDGE = controller("pci-bridge", 1, "<model name='pci-bridge'/><target chassisNr='1'/>")
MAC = "52:54:00:00:00:0{}"

# (id, machine, base devices, live?, devices attached in order, expected addresses (subset),
#  expected (failing step, message) or None)
SEQUENCES: list[tuple[str, str, str, bool, list[str], dict[str, str], tuple[int, str] | None]] = [
    ("live-q35-spare-port-then-full", "q35", "", True, [nic(), nic()], {"interface#0": "03:00.0"},
     (2, "internal error: No more available PCI slots")),
    ("live-q35-e1000-needs-legacy-bridge", "q35", "", True, [nic("e1000")], {},
     (1, "internal error: No more available PCI slots")),
    ("live-q35-pcie-root-not-hotpluggable", "q35", "", True, [nic(address=pci(0, 5))], {},
     (1, "XML error: The device at PCI address 0000:00:05.0 requires hotplug capability, but the PCI "
         "controller with index='0' doesn't support hotplug")),
    ("live-function-1", "q35", "", True, [nic(address=pci(3, 0, 1))], {},
     (1, "internal error: Only PCI device addresses with function=0 are supported")),
    ("live-double-use", "q35", "", True, [nic(address=pci(1, 0))], {},
     (1, "XML error: Attempted double use of PCI Address 0000:01:00.0")),
    ("live-missing-bus", "q35", "", True, [nic(address=pci(9, 0))], {},
     (1, "XML error: Invalid PCI address 0000:09:00.0. Only PCI buses up to 3 are available")),
    ("live-root-port-slot-1", "q35", "", True, [nic(address=pci(3, 1))], {},
     (1, "XML error: Invalid PCI address 0000:03:01.0. slot must be <= 0")),
    ("live-pci-bridge-refused", "pc", "", True, [BRIDGE], {},
     (1, "Operation not supported: 'pci' controller cannot be hot plugged.")),
    ("live-bare-root-port-refused", "q35", "", True, [controller("pcie-root-port")], {},
     (1, "internal error: Required option 'modelName' is not set for PCI controller with index '-1', model "
         "'pcie-root-port' and modelName 'none'")),
    ("live-pc-next-free-slot", "pc", MIN + nic(address=pci(0, 2)), True, [nic(), nic("e1000e")],
     {"interface#1": "00:03.0", "interface#2": "00:04.0"}, None),
    ("live-pc-bridge-slots", "pc", MIN + BRIDGE + "".join(nic(address=pci(0, slot)) for slot in range(3, 32)), True,
     [nic()], {"pci1": "00:02.0", "interface#29": "01:01.0"}, None),
    ("offline-q35-spare-then-new-ports", "q35", "", False, [nic(), nic(), nic("e1000")],
     {"interface#0": "03:00.0", "pci4": "00:01.3", "interface#1": "04:00.0", "pci5": "00:01.4",
      "pci6": "05:00.0", "interface#2": "06:01.0"}, None),
    ("offline-explicit-far-bus-adds-ports", "q35", "", False, [nic(address=pci(0x1F, 0))],
     {"pci7": "00:01.6", "pci31": "00:04.6", "interface#0": "1f:00.0"}, None),
    ("offline-double-use", "q35", "", False, [nic(address=pci(1, 0))], {},
     (1, "XML error: Attempted double use of PCI Address 0000:01:00.0")),
    ("offline-controller-index-taken", "q35", "", False,
     [controller("pcie-root-port", 1, "<model name='pcie-root-port'/><target chassis='1' port='0x20'/>")], {},
     (1, "Requested operation is not valid: controller index='1' already exists")),
]


def _run(machine: str, base: str, live: bool, steps: list[str]) -> tuple[str, tuple[int, str] | None]:
    xml = define(domain(machine, base))
    for number, device in enumerate(steps, start=1):
        try:
            xml = attach(xml, device, live=live)
        except LibvirtError as exc:
            return xml, (number, exc.message)
    return xml, None


@pytest.mark.parametrize(("machine", "base", "live", "steps", "expected", "failure"),
                         [case[1:] for case in SEQUENCES], ids=[case[0] for case in SEQUENCES])
def test_attach_sequences(machine: str, base: str, live: bool, steps: list[str], expected: dict[str, str],
                          failure: tuple[int, str] | None) -> None:
    xml, failed = _run(machine, base, live, steps)
    assert failed == failure
    placed = addresses(xml)
    assert {key: placed.get(key) for key in expected} == expected


def test_live_attach_never_adds_controllers() -> None:
    before = define(domain("q35", nic() * 2))
    after = attach(before, nic(), live=True)
    controllers = {key for key in addresses(before) if key.startswith("pci")}
    assert {key for key in addresses(after) if key.startswith("pci")} == controllers


def test_pc_without_acpi_cannot_hotplug_into_pci_root() -> None:
    xml = define(domain("pc", MIN).replace("<acpi/>", ""))
    with pytest.raises(LibvirtError) as caught:
        attach(xml, nic(), live=True)
    assert caught.value.message == (
        "internal error: unable to execute QEMU command 'device_add': Bus 'pci.0' does not support hotplugging"
    )


def test_detach_keeps_added_controllers_and_frees_the_slot() -> None:
    xml = define(domain("q35", MIN + nic(mac=MAC.format(1)) + nic(mac=MAC.format(2))))
    detached = detach(xml, nic(mac=MAC.format(1)))
    assert {key for key in addresses(detached) if key.startswith("pci")} == {
        key for key in addresses(xml) if key.startswith("pci")}
    assert addresses(detached)["interface#0"] == "02:00.0"
    reattached = attach(detached, nic(mac=MAC.format(3)), live=False)
    assert addresses(reattached)["interface#1"] == "01:00.0"


def test_detach_of_an_absent_nic_names_its_mac() -> None:
    xml = define(domain("pc", MIN + nic(mac=MAC.format(1))))
    with pytest.raises(LibvirtError) as caught:
        detach(xml, nic(mac=MAC.format(9)))
    assert caught.value.message == (
        "device not found: no device found at address '(<null>)' matching MAC address '52:54:00:00:00:09' "
        "and alias '(<null>)'"
    )
