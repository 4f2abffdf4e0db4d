"""Text trees of normalised topologies, from real libvirt dumpxml output."""

from __future__ import annotations

from pathlib import Path

from pytest_pcie.normalise import normalise
from pytest_pcie.outcome import Failure, Outcome
from pytest_pcie.tree import render_tree

DATA = Path(__file__).parent / "data" / "dumpxml"


def tree(name: str) -> list[str]:
    return render_tree(normalise(Outcome((DATA / name).read_text()), "q35"))


def test_q35_root_ports_bridge_and_free_slots() -> None:
    lines = tree("q35-defined.xml")
    assert lines[:7] == [
        "pcie-root (bus 0x00)",
        "├── 00:01.0 video virtio",
        "├── 00:02.0 pcie-root-port index=1 chassis=1 port=0x10 (bus 0x01)",
        "│   └── 01:00.0 pcie-to-pci-bridge index=3 (bus 0x03)",
        "│       ├── 03:01.0 interface user e1000",
        "│       ├── 03:02.0 watchdog i6300esb",
        "│       └── free hotplug slots 0x03-0x1f",
    ]
    assert lines[-4:] == [
        "├── 00:02.6 pcie-root-port index=8 chassis=8 port=0x16 (bus 0x08)",
        "│   └── free hotplug slot 0x00",
        "├── 00:1b.0 sound ich9",
        "└── 00:1f.2 controller sata 0",
    ]
    assert sum("free hotplug slot 0x00" in line for line in lines) == 1  # exactly one spare root port


def test_hotplug_off_port_and_non_hotplug_buses_offer_no_free_slot() -> None:
    lines = tree("q35-many.xml")
    port = lines.index("├── 00:03.0 pcie-root-port index=2 chassis=2 port=0x18 hotplug=off (bus 0x02)")
    assert lines[port + 1] == "│   └── 02:00.0 pcie-to-pci-bridge index=4 (bus 0x04)"
    assert "│       └── free hotplug slots 0x05-0x1f" in lines  # the bridge behind it still takes hotplug
    expander = lines.index("├── 00:02.0 pcie-expander-bus index=1 busNr=180 (bus 0x01)")
    assert lines[expander + 1].startswith("├── 00:03.0")  # nothing (and no free slot) under the expander
    assert [line for line in lines if "free" in line] == ["│       └── free hotplug slots 0x05-0x1f"]


def test_pc_bridge_free_slots_and_full_pci_root() -> None:
    lines = tree("pc-bridge.xml")
    assert lines[:6] == [
        "pci-root (bus 0x00)",
        "├── 00:01.2 controller usb 0 piix3-uhci",
        "├── 00:02.0 pci-bridge index=1 chassisNr=1 (bus 0x01)",
        "│   ├── 01:01.0 interface user e1000",
        "│   ├── 01:02.0 memballoon virtio",
        "│   └── free hotplug slots 0x03-0x1f",
    ]
    assert lines[-1] == "└── 00:1f.0 interface user e1000"  # pci-root is full: no free line


def test_pci_root_lists_free_ranges() -> None:
    lines = tree("pc-defined.xml")
    assert lines[-1] == "└── free hotplug slots 0x0a-0x1f"


def test_define_failure_has_no_tree() -> None:
    assert render_tree(normalise(Outcome(None, Failure(0, "define", "x")), "pc")) == ["(no domain: define failed)"]
