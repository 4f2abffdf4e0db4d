"""Golden files: canonical text, atomic updates, and the words a mismatch is explained in."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from lxml import etree

from pytest_pcie import golden
from pytest_pcie.normalise import normalise
from pytest_pcie.outcome import Failure, Outcome

DATA = Path(__file__).parent / "data" / "dumpxml"


@pytest.fixture
def q35() -> etree._Element:
    return normalise(Outcome((DATA / "q35-defined.xml").read_text()), "q35")


def test_canonical_text_ignores_attribute_order_blank_text_and_comments() -> None:
    one = etree.fromstring('<outcome machine="q35"><devices><a x="1" y="2"/></devices></outcome>')
    two = etree.fromstring(
        '<outcome   machine="q35">\n  <!-- hi -->\n  <devices>\n <a y="2" x="1"/></devices></outcome>'
    )
    assert golden.canonical_text(one) == golden.canonical_text(two)
    three = etree.fromstring('<outcome machine="q35"><devices><a x="1" y="3"/></devices></outcome>')
    assert golden.canonical_text(one) != golden.canonical_text(three)


def test_update_creates_then_leaves_unchanged_then_changes(tmp_path: Path, q35: etree._Element) -> None:
    path = golden.golden_path(tmp_path, "q35/a", "q35")
    assert path == tmp_path / "q35" / "a" / "q35.xml"
    assert golden.update_golden(path, q35) is golden.UpdateStatus.CREATED
    assert golden.canonical_text(golden.read_golden(path)) == golden.canonical_text(q35)
    assert golden.update_golden(path, copy.deepcopy(q35)) is golden.UpdateStatus.UNCHANGED
    changed = copy.deepcopy(q35)
    changed.set("machine", "pc")
    assert golden.update_golden(path, changed) is golden.UpdateStatus.CHANGED
    assert 'machine="pc"' in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["q35.xml"]


def test_an_interrupted_write_leaves_the_old_golden_and_no_temporary(
    tmp_path: Path, q35: etree._Element, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "q35.xml"
    path.write_text("<outcome machine='pc'/>\n")

    def interrupted(source: str, target: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        golden.update_golden(path, q35)
    assert path.read_text() == "<outcome machine='pc'/>\n"
    assert [p.name for p in tmp_path.iterdir()] == ["q35.xml"]


def test_a_damaged_golden_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "q35.xml"
    path.write_text("<outcome")
    with pytest.raises(golden.GoldenError, match=r"q35.xml: not well-formed XML .*--pcie-update-goldens$"):
        golden.read_golden(path)


def test_find_goldens_lists_xml_files_in_order(tmp_path: Path) -> None:
    for name in ("b/q35.xml", "a/pc.xml", "a/q35.xml", "a/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("<outcome/>")
    assert [p.relative_to(tmp_path).as_posix() for p in golden.find_goldens(tmp_path)] == [
        "a/pc.xml", "a/q35.xml", "b/q35.xml",
    ]  # fmt: skip
    assert list(golden.find_goldens(tmp_path / "missing")) == []


def test_explain_pairs_devices_and_names_each_difference(q35: etree._Element) -> None:
    actual = copy.deepcopy(q35)
    devices = actual.find("devices")
    assert devices is not None
    devices.remove(devices.find("controller[@index='6']"))  # type: ignore[arg-type]
    interface = devices.findall("interface")[1]
    interface.find("address").set("bus", "0x02")  # type: ignore[union-attr]
    devices.find("controller[@index='2']/target").set("port", "0x19")  # type: ignore[union-attr]
    devices.find("controller[@index='3']/model").attrib.pop("name")  # type: ignore[union-attr]
    extra = etree.SubElement(devices, "rng", model="virtio")
    etree.SubElement(extra, "address", type="pci", domain="0x0000", bus="0x08", slot="0x00", function="0x0")
    assert golden.explain(q35, actual) == [
        "controller pci index=2 (pcie-root-port): target port 0x11 expected, got 0x19",
        'controller pci index=3 (pcie-to-pci-bridge): <model name="pcie-pci-bridge"/> expected, got <model/>',
        "controller pci index=6 (pcie-root-port): missing",
        "interface #2: bus 0x03 expected, got 0x02",
        "rng #2: unexpected",
    ]


def test_explain_failure_and_machine_side_by_side(q35: etree._Element) -> None:
    failed = normalise(Outcome(None, Failure(0, "define", "XML error: nope")), "pc")
    assert golden.explain(q35, failed) == [
        "machine: q35 expected, got pc",
        "devices: a defined domain expected, got none (define failed)",
        "failure differs:",
        "  expected: no failure",
        "  got:      step 0 (define): XML error: nope",
    ]
    assert golden.explain(q35, copy.deepcopy(q35)) == []


def test_a_long_mismatch_report_is_clipped() -> None:
    nics = "".join(
        f"<interface type='user'><address type='pci' bus='0' slot='{slot}' function='{fn}'/></interface>"
        for slot in range(1, 11)
        for fn in range(5)
    )
    expected = normalise(Outcome(f"<domain><os><type machine='pc'/></os><devices>{nics}</devices></domain>"), "pc")
    actual = normalise(Outcome("<domain><os><type machine='pc'/></os><devices/></domain>"), "pc")
    lines = golden.describe_mismatch(expected, actual)
    assert lines[:2] == ["  interface #1: missing", "  interface #2: missing"]
    assert lines[40] == "  ... 10 more line(s)"
    assert lines[41] == "expected topology:"
    assert lines[-3:] == ["  ... 11 more line(s)", "actual topology:", "  (no PCI controllers or devices)"]
