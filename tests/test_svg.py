"""SVG pictures of committed goldens: well-formed, complete, free slots dashed, failures as a banner."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from pytest_pcie import golden
from pytest_pcie.normalise import normalise
from pytest_pcie.outcome import Failure, Outcome
from pytest_pcie.svg import CONTROLLER_FILL, DASH, DEFAULT_CONTROLLER_FILL, SVG_NS, render_svg
from pytest_pcie.tree import render_tree

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = ROOT / "golden"
NS = {"s": SVG_NS}
# A spread of shapes: switch + refusal, bridges on pc, legacy bridge + spare port, packed ports, hotplug off.
SAMPLES = (
    "attach-live/downstream-port/q35",
    "controllers/pc-bridges-chained/pc",
    "attach-live/virtio-prefers-root-port/q35",
    "policy/q35-ports-packed-eight-per-slot/q35",
    "attach-live/hotplug-off-and-bridge/q35",
    "defaults/empty-domain/pc",
)


def read(sample: str) -> etree._Element:
    return golden.read_golden(GOLDENS / f"{sample}.xml")


def picture(document: etree._Element, title: str | None = None) -> etree._Element:
    return etree.fromstring(render_svg(document, title).encode("utf-8"))


def texts(svg: etree._Element) -> list[str]:
    return [str(text.text) for text in svg.iterfind(".//s:text", NS)]


def rects(svg: etree._Element, css_class: str) -> list[etree._Element]:
    return svg.findall(f".//s:rect[@class='{css_class}']", NS)


def address_of(element: etree._Element) -> str | None:
    address = element.find("address")
    if address is None:
        return None
    bus, slot, function = (int(address.get(part, "0"), 0) for part in ("bus", "slot", "function"))
    return f"{bus:02x}:{slot:02x}.{function:x}"


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_controller_and_device_is_drawn_with_its_address(sample: str) -> None:
    document = read(sample)
    svg = picture(document, sample)
    assert svg.tag == f"{{{SVG_NS}}}svg"
    lines = texts(svg)
    devices = list(document.iterfind("devices/*"))
    assert devices
    for element in devices:
        address = address_of(element)
        if address is None:
            if element.get("type") == "pci":  # the root bus: drawn by model, without an address
                assert any(line.startswith(element.get("model", "?")) for line in lines)
            continue
        drawn = [line for line in lines if line.startswith(f"{address} ")]
        assert len(drawn) == 1, f"{sample}: {address} drawn {len(drawn)} times"
        name = element.get("model") if element.get("type") == "pci" else element.tag
        assert f" {name}" in drawn[0]


@pytest.mark.parametrize("sample", SAMPLES)
def test_free_slots_are_the_dashed_boxes_of_the_text_tree(sample: str) -> None:
    document = read(sample)
    svg = picture(document)
    free_lines = [line.split("── ", 1)[1] for line in render_tree(document) if "free hotplug slot" in line]
    boxes = rects(svg, "free")
    assert len(boxes) == len(free_lines)
    assert all(box.get("stroke-dasharray") == DASH for box in boxes)
    assert not [box for box in rects(svg, "controller") + rects(svg, "device") if box.get("stroke-dasharray")]
    assert all(line in texts(svg) for line in free_lines)


def test_controller_fill_comes_from_the_table() -> None:
    document = read("attach-live/downstream-port/q35")
    svg = picture(document)
    fills = {box.get("fill") for box in rects(svg, "controller")}
    assert fills == {CONTROLLER_FILL[model] for model in ("pcie-root", "pcie-root-port")} | {
        CONTROLLER_FILL["pcie-switch-upstream-port"],
        CONTROLLER_FILL["pcie-switch-downstream-port"],
    }
    unknown = etree.fromstring(
        '<outcome machine="q35"><devices><controller type="pci" index="0" model="x"/></devices></outcome>'
    )
    assert [box.get("fill") for box in rects(picture(unknown), "controller")] == [DEFAULT_CONTROLLER_FILL]


def test_a_refused_step_is_a_banner_above_the_topology() -> None:
    document = read("attach-live/spare-port-then-no-slot/q35")
    svg = picture(document)
    (banner,) = rects(svg, "failure")
    lines = texts(svg)
    message = "step 2 (attach nic.xml) refused: internal error: No more available PCI slots"
    assert message in lines
    assert lines.index(message) < lines.index("pcie-root (bus 0x00)")
    assert float(banner.get("y", "0")) < min(float(box.get("y", "0")) for box in rects(svg, "controller"))
    assert not rects(picture(read("defaults/empty-domain/q35")), "failure")


def test_a_failed_define_draws_the_banner_and_no_topology() -> None:
    document = normalise(Outcome(None, Failure(0, "define", "XML error: <b> & more")), "pc")
    svg = picture(document)
    assert len(rects(svg, "failure")) == 1
    assert "step 0 (define) refused: XML error: <b> & more" in texts(svg)
    assert "(no domain: define failed)" in texts(svg)
    assert not rects(svg, "controller") and not rects(svg, "device")


def test_the_summary_line_closes_the_picture_and_output_is_stable() -> None:
    document = read("defaults/empty-domain/q35")
    text = render_svg(document, "defaults/empty-domain")
    assert "4 PCI controllers, 3 devices, 1 free hotplug slot (1 on PCIe ports, 0 on PCI buses)" in texts(
        etree.fromstring(text.encode("utf-8"))
    )
    assert render_svg(read("defaults/empty-domain/q35"), "defaults/empty-domain") == text


def test_the_picture_is_wide_enough_for_its_longest_line() -> None:
    document = read("policy/q35-ports-packed-eight-per-slot/q35")
    svg = picture(document)
    longest = max(len(line) for line in texts(svg))
    assert float(svg.get("width", "0")) >= longest * 7
    assert svg.get("viewBox") == f"0 0 {svg.get('width')} {svg.get('height')}"
