"""The sweep's picture: what empty root ports add to each phase of a q35 boot, as a plain SVG line chart.

Drawn by hand like :mod:`pytest_pcie.svg` (no plotting library): one polyline per phase, the
x axis the number of empty ports, the y axis the milliseconds the phase takes beyond its value
with no port.  The same rows always give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

from pytest_pcie.bootcost.sweep import Row

WIDTH, HEIGHT = 640, 360
TITLE = "Added guest time per phase vs. empty pcie-root-ports (q35, -icount)"
LEFT, RIGHT, TOP, BOTTOM = 60, 170, 30, 50
# (phase, colour): the phases that empty ports change; "loading drivers" and "total" are left out
# because libata's fixed link-down wait in them absorbs the ports' cost (docs/bootcost.md).
SERIES: tuple[tuple[str, str], ...] = (
    ("kernel to init", "#1f77b4"),
    ("driver probe", "#2ca02c"),
    ("PCI enumeration", "#ff7f0e"),
    ("firmware", "#9467bd"),
)


def _nice_step(span: float) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500):
        if span / step <= 8:
            return float(step)
    return 1000.0


def render(rows: Sequence[Row]) -> str:
    """The chart of the empty-port series in ``rows`` (points named q35-ports-N)."""
    ports = sorted((row for row in rows if row.ports >= 0), key=lambda row: row.ports)
    if not ports or ports[0].ports != 0:
        raise ValueError("the sweep has no q35-ports-0 point to measure the ports against")
    base = ports[0].phases_ms
    lines: list[tuple[str, str, list[tuple[int, float]]]] = []
    for name, colour in SERIES:
        points = [
            (row.ports, value - reference)
            for row in ports
            if (value := row.phases_ms.get(name)) is not None and (reference := base.get(name)) is not None
        ]
        lines.append((name, colour, points))
    values = [y for _, _, points in lines for _, y in points] or [0.0]
    low, high = min(0.0, min(values)), max(values)
    step = _nice_step(high - low or 1.0)
    low, high = step * (low // step), step * (-(-high // step))
    most = max(row.ports for row in ports) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(count: int) -> float:
        return LEFT + plot_w * count / most

    def y(value: float) -> float:
        return TOP + plot_h * (high - value) / ((high - low) or 1.0)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
        f'font-size="12" viewBox="0 0 {WIDTH} {HEIGHT}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="13">{TITLE}</text>',
    ]
    tick = low
    while tick <= high + step / 2:
        out.append(f'<line x1="{LEFT}" y1="{y(tick):.1f}" x2="{LEFT + plot_w}" y2="{y(tick):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
        tick += step
    for row in ports:
        out.append(f'<text x="{x(row.ports):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{row.ports}</text>')
    out.append(f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="black"/>')
    out.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="black"/>')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle">empty root ports</text>')
    out.append(
        f'<text x="16" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2:.1f})">ms more than with no port</text>'
    )
    for index, (name, colour, points) in enumerate(lines):
        path = " ".join(f"{x(count):.1f},{y(value):.1f}" for count, value in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.extend(
            f'<circle cx="{x(count):.1f}" cy="{y(value):.1f}" r="2.5" fill="{colour}"/>' for count, value in points
        )
        legend_y = TOP + 10 + 20 * index
        out.append(f'<line x1="{WIDTH - RIGHT + 15}" y1="{legend_y}" x2="{WIDTH - RIGHT + 35}" y2="{legend_y}" '
                   f'stroke="{colour}" stroke-width="2"/>')  # fmt: skip
        out.append(f'<text x="{WIDTH - RIGHT + 40}" y="{legend_y + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
