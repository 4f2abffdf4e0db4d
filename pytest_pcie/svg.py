"""Drawing a normalised topology as a plain SVG picture, for docs, ``pcie-assign --svg`` and diffs.

The picture is the text tree of :mod:`pytest_pcie.tree` drawn with boxes: one row per node,
indented by depth, with elbow connectors from each bus to what hangs on it.  Controllers are
filled in a colour per model (a table, so a new model is one row), devices are white leaves with
their address, free hotpluggable slots are dashed boxes, and a refused step is a red banner on
top.  A summary line and a legend of the colours used close the picture.

No layout engine (graphviz) is needed: a tree drawn row by row never crosses lines, stays readable
at 40 rows, and gives the same bytes for the same document, which lets the docs gallery be
checked for staleness.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from lxml import etree

from pytest_pcie.normalise import FAILURE_TAG
from pytest_pcie.tree import EMPTY, NO_DOMAIN, Kind, Node, build_topology, summarise, walk

SVG_NS = "http://www.w3.org/2000/svg"

# Fill colour per PCI controller model: roots grey-blue, ports green, switches amber, PCI bridges
# violet, expander buses blue.  Unknown models fall back to DEFAULT_CONTROLLER_FILL.
CONTROLLER_FILL: dict[str, str] = {
    "pci-root": "#d5dbe8",
    "pcie-root": "#d5dbe8",
    "pcie-root-port": "#cdeacd",
    "pcie-switch-upstream-port": "#f5d9a8",
    "pcie-switch-downstream-port": "#fbe8c6",
    "pci-bridge": "#e4d2ee",
    "pcie-to-pci-bridge": "#e4d2ee",
    "dmi-to-pci-bridge": "#efd0d6",
    "pci-expander-bus": "#cfe2f5",
    "pcie-expander-bus": "#cfe2f5",
}
DEFAULT_CONTROLLER_FILL = "#e0e0e0"


@dataclass(frozen=True)
class Style:
    """How one kind of node is drawn."""

    fill: str
    stroke: str = "#555555"
    dashed: bool = False


NODE_STYLE: dict[Kind, Style] = {
    Kind.DEVICE: Style("#ffffff"),
    Kind.FREE: Style("none", stroke="#2e7d32", dashed=True),
    Kind.ORPHANS: Style("#ffd6d6", stroke="#b00020"),
}
DASH = "5 3"
BANNER_FILL = "#b00020"
BANNER_TEXT = "#ffffff"
FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
FONT_SIZE = 12
CHAR_WIDTH = 7.6  # of FONT at FONT_SIZE; widths are estimated, as SVG cannot measure text for us
ROW = 28
BOX_HEIGHT = 20
INDENT = 26
MARGIN = 12
PADDING = 6
BANNER_WRAP = 96
LEGEND_WIDTH = 600


def render_svg(document: etree._Element, title: str | None = None) -> str:
    """The SVG text of a normalised document; ``title`` (a case id, say) heads the picture."""
    canvas = _Canvas()
    heading = f"{title} on {document.get('machine')}" if title else f"machine {document.get('machine')}"
    canvas.text(MARGIN, canvas.y + 14, heading, weight="bold")
    canvas.y += ROW
    failure = document.find(FAILURE_TAG)
    if failure is not None:
        _banner(canvas, failure)
    roots = build_topology(document)
    if roots is None or not roots:
        canvas.text(MARGIN, canvas.y + 14, NO_DOMAIN if roots is None else EMPTY)
        canvas.y += ROW
    else:
        for root in roots:
            _draw(canvas, root, 0)
    summary = summarise(document)
    if summary is not None:
        canvas.text(MARGIN, canvas.y + 14, summary.line())
        canvas.y += ROW
    _legend(canvas, roots or [])
    return canvas.finish()


class _Canvas:
    """Elements in drawing order plus the extent they cover, so the viewBox fits them."""

    def __init__(self) -> None:
        self.elements: list[etree._Element] = []
        self.y = float(MARGIN)
        self.width = 0.0

    def add(self, tag: str, right: float, **attributes: str | float) -> etree._Element:
        element = etree.Element(f"{{{SVG_NS}}}{tag}")
        for name, value in attributes.items():
            element.set(name.replace("_", "-"), _number(value) if isinstance(value, float | int) else value)
        self.elements.append(element)
        self.width = max(self.width, right)
        return element

    def text(self, x: float, y: float, content: str, weight: str = "normal", fill: str = "#000000") -> None:
        element = self.add("text", x + _text_width(content), x=x, y=y, font_weight=weight, fill=fill)
        element.text = content

    def box(self, x: float, y: float, width: float, style: Style, css_class: str) -> None:
        attributes: dict[str, str | float] = {"fill": style.fill, "stroke": style.stroke}
        if style.dashed:
            attributes["stroke_dasharray"] = DASH
        self.add("rect", x + width, x=x, y=y, width=width, height=BOX_HEIGHT, rx=4, **attributes)
        self.elements[-1].set("class", css_class)

    def finish(self) -> str:
        width, height = self.width + MARGIN, self.y + MARGIN
        root = etree.fromstring(f'<svg xmlns="{SVG_NS}"/>')  # SVG as the default namespace, no prefix
        root.set("width", _number(width))
        root.set("height", _number(height))
        root.set("viewBox", f"0 0 {_number(width)} {_number(height)}")
        root.set("font-family", FONT)
        root.set("font-size", str(FONT_SIZE))
        root.extend(self.elements)
        return etree.tostring(root, pretty_print=True, encoding="unicode")


def _draw(canvas: _Canvas, node: Node, depth: int) -> float:
    """Draw ``node`` and its subtree from ``canvas.y`` on; return the y of the node's middle."""
    x = MARGIN + depth * INDENT
    top = canvas.y
    middle = top + BOX_HEIGHT / 2
    width = _text_width(node.text) + 2 * PADDING
    style = NODE_STYLE.get(node.kind) or Style(CONTROLLER_FILL.get(node.model, DEFAULT_CONTROLLER_FILL))
    canvas.box(x, top, width, style, node.kind.value)
    canvas.text(x + PADDING, top + 14, node.text)
    canvas.y += ROW
    child_middles = [_draw(canvas, child, depth + 1) for child in node.children]
    if child_middles:
        spine = x + INDENT / 2
        canvas.add("line", spine, x1=spine, y1=top + BOX_HEIGHT, x2=spine, y2=child_middles[-1], stroke="#888888")
        for child_middle in child_middles:
            canvas.add("line", x + INDENT, x1=spine, y1=child_middle, x2=x + INDENT, y2=child_middle, stroke="#888888")
    return middle


def _banner(canvas: _Canvas, failure: etree._Element) -> None:
    message = f"step {failure.get('step')} ({failure.get('label')}) refused: {failure.text or ''}"
    lines = textwrap.wrap(message, BANNER_WRAP) or [message]
    height = len(lines) * 16 + 8
    width = max(_text_width(line) for line in lines) + 2 * PADDING
    canvas.add("rect", MARGIN + width, x=MARGIN, y=canvas.y, width=width, height=height, fill=BANNER_FILL)
    canvas.elements[-1].set("class", "failure")
    for number, line in enumerate(lines):
        canvas.text(MARGIN + PADDING, canvas.y + 16 * (number + 1), line, weight="bold", fill=BANNER_TEXT)
    canvas.y += height + ROW - BOX_HEIGHT


def _legend(canvas: _Canvas, roots: list[Node]) -> None:
    """One swatch per controller model drawn (table order, then unknown ones), and the free slot if any."""
    nodes = walk(roots)
    drawn = {node.model for node in nodes if node.kind is Kind.CONTROLLER}
    models = [model for model in CONTROLLER_FILL if model in drawn] + sorted(drawn - CONTROLLER_FILL.keys())
    entries = [(model, Style(CONTROLLER_FILL.get(model, DEFAULT_CONTROLLER_FILL))) for model in models]
    if any(node.kind is Kind.FREE for node in nodes):
        entries.append(("free hotplug slot", NODE_STYLE[Kind.FREE]))
    limit = max(canvas.width, LEGEND_WIDTH)  # wrap rather than widen the picture for the legend
    x = float(MARGIN)
    for label, style in entries:
        width = 24 + _text_width(label) + 16
        if x > MARGIN and x + width > limit:
            x, canvas.y = float(MARGIN), canvas.y + ROW
        canvas.box(x, canvas.y, 18, style, "legend")
        canvas.text(x + 24, canvas.y + 14, label)
        x += width
    if entries:
        canvas.y += ROW


def _text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


def _number(value: float) -> str:
    """Coordinates with at most one decimal, so output is stable and short."""
    return f"{value:.1f}".removesuffix(".0")
