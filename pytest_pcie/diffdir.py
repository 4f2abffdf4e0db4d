"""Pictures of a failing case for ``--pcie-diff-dir``: expected and actual SVG, and an HTML page with both.

A text explanation says *what* differs; two pictures side by side show *where*, which is what a
reviewer of a libvirt change needs first.  Files are named after the golden they contradict
(``DIR/<case id>/<machine>.expected.svg``, ``.actual.svg``, ``.html``) so they sort next to each
other, and the HTML page inlines both pictures so it can be attached to a CI run on its own.
"""

from __future__ import annotations

import html
from pathlib import Path

from lxml import etree

from pytest_pcie.svg import FONT, SVG_NS, render_svg

SUFFIXES = (".expected.svg", ".actual.svg", ".html")
NO_GOLDEN = "no readable golden"
PLACEHOLDER_WIDTH = 460

PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.sides {{ display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap; }}
.side {{ border: 1px solid #ccc; padding: 0.5em; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; }}
</style>
</head>
<body>
<h1>{title}</h1>
<h2>What differs</h2>
<pre>{explanation}</pre>
<div class="sides">
<div class="side"><h2><a href="{expected_file}">expected</a> (golden)</h2>
{expected}</div>
<div class="side"><h2><a href="{actual_file}">actual</a> (backend {backend})</h2>
{actual}</div>
</div>
</body>
</html>
"""


def diff_paths(diff_dir: Path, case_id: str, machine: str) -> tuple[Path, Path, Path]:
    """The expected SVG, actual SVG and HTML page of one case on one machine."""
    stem = diff_dir / case_id / machine
    expected, actual, page = (stem.with_name(stem.name + suffix) for suffix in SUFFIXES)
    return expected, actual, page


def write_diff(
    diff_dir: Path,
    case_id: str,
    machine: str,
    expected: etree._Element | None,
    actual: etree._Element,
    explanation: list[str],
    backend: str,
) -> tuple[Path, Path, Path]:
    """Write the three files of a failing case; ``expected`` is None when its golden is missing or damaged."""
    paths = diff_paths(diff_dir, case_id, machine)
    expected_path, actual_path, page_path = paths
    page_path.parent.mkdir(parents=True, exist_ok=True)
    expected_svg = render_svg(expected, f"{case_id} expected") if expected is not None else _placeholder(machine)
    actual_svg = render_svg(actual, f"{case_id} actual")
    expected_path.write_text(expected_svg, encoding="utf-8")
    actual_path.write_text(actual_svg, encoding="utf-8")
    page = PAGE.format(
        title=html.escape(f"{case_id} on {machine}"),
        explanation=html.escape("\n".join(explanation)),
        expected_file=html.escape(expected_path.name),
        actual_file=html.escape(actual_path.name),
        backend=html.escape(backend),
        expected=expected_svg,
        actual=actual_svg,
    )
    page_path.write_text(page, encoding="utf-8")
    return paths


def _placeholder(machine: str) -> str:
    """An expected picture saying there is nothing to draw, so the page keeps its two sides."""
    return (
        f'<svg xmlns="{SVG_NS}" width="{PLACEHOLDER_WIDTH}" height="40" font-family="{FONT}" font-size="12">\n'
        f'  <text x="12" y="24">{NO_GOLDEN} for {html.escape(machine)}: see the explanation</text>\n'
        "</svg>\n"
    )
