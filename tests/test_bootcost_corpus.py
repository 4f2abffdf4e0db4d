"""The corpus summary: which kind each golden is, the host-time table, and two runs compared."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_pcie.bootcost import corpus

ROOT = Path(__file__).resolve().parent.parent


def report(topology: str, machine: str, host_s: float, kernel_ms: float = 600.0) -> str:
    phases = {"firmware": 48.0, "kernel to init": kernel_ms, "driver probe": None}
    return json.dumps({"topology": topology, "machine": machine, "host_wall_s": [host_s], "phases_ms": phases})


def test_each_golden_gets_the_first_kind_that_matches() -> None:
    cases = {
        "golden/libguestfs/appliance-untweaked/q35.xml": "USB controller",
        "golden/exhaustion/q35-32-e1000-chain-pci-bridge/q35.xml": "e1000 NIC",
        "golden/controllers/pc-pci-bridge-no-index/pc.xml": "pc, other",
        "golden/addresses/bus-only/q35.xml": "q35, other",
    }
    for path, name in cases.items():
        machine = "pc" if path.endswith("pc.xml") else "q35"
        (found,) = corpus.load(report(path, machine, 1.0))
        assert corpus.kind_of(found, ROOT).name == name, path


def test_table_counts_each_kind_and_the_bound(tmp_path: Path) -> None:
    (tmp_path / "usb.xml").write_text("<outcome machine='pc'><devices><controller type='usb'/></devices></outcome>")
    (tmp_path / "none.xml").write_text(
        "<outcome machine='pc'><devices><controller type='usb' model='none'/></devices></outcome>"
    )
    lines = [report("usb.xml", "pc", 12.0), report("none.xml", "pc", 3.0), report("none.xml", "pc", 5.0)]
    text = corpus.table(corpus.load("\n".join(lines)), tmp_path)
    assert "| USB controller | SeaBIOS's USB port waits" in text and "| 1 | 12.0 | 12.0 | 12.0 | 0 (0 %) |" in text
    assert "| 2 | 4.0 | 5.0 | 5.0 | 2 (100 %) |" in text  # pc, other: model none is no controller
    assert "| all |  | 3 | 5.0 | 12.0 | 12.0 | 2 (67 %) |" in text
    assert "e1000" not in text  # a kind with no golden has no row


def test_two_runs_differ_only_where_a_guest_number_moved() -> None:
    first = corpus.load("\n".join([report("a.xml", "pc", 3.0), report("b.xml", "pc", 3.0)]))
    second = corpus.load("\n".join([report("a.xml", "pc", 9.0, 600.05), report("b.xml", "pc", 3.0, 612.0)]))
    assert [str(difference) for difference in corpus.differences(first, second)] == [
        "b.xml: kernel to init 600.0 -> 612.0 ms"
    ]
