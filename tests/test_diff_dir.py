"""--pcie-diff-dir through pytester: a failing case leaves two pictures and a page; a passing run nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from test_plugin import Project, domain

SVG_TEXT = "{http://www.w3.org/2000/svg}text"


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


def svg_texts(path: Path) -> list[str]:
    return [str(text.text) for text in etree.parse(str(path)).getroot().iter(SVG_TEXT)]


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_mismatch_writes_both_pictures_and_a_page(project: Project) -> None:
    folder = project.case("q35/a")
    project.case("q35/fine")
    project.run("--pcie-update-goldens")
    (folder / "fake-output.xml").write_text(domain(nic_bus=2, extra_port=False))
    result = project.run("--pcie-diff-dir", "diffs")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(  # the report's trees open with their summary lines
        [
            "expected topology:",
            "  3 PCI controllers, 1 device, 1 free hotplug slot (1 on PCIe ports, 0 on PCI buses)",
            "actual topology:",
            "  2 PCI controllers, 1 device, 1 free hotplug slot (1 on PCIe ports, 0 on PCI buses)",
        ]
    )
    diffs = project.root / "diffs"
    assert files(diffs) == ["q35/a/q35.actual.svg", "q35/a/q35.expected.svg", "q35/a/q35.html"]
    expected, actual = svg_texts(diffs / "q35/a/q35.expected.svg"), svg_texts(diffs / "q35/a/q35.actual.svg")
    assert "01:00.0 interface user virtio" in expected and "02:00.0 interface user virtio" not in expected
    assert "02:00.0 interface user virtio" in actual and "(devices on buses that do not exist)" in actual
    page = (diffs / "q35/a/q35.html").read_text()
    assert "<title>q35/a on q35</title>" in page
    assert "interface #1: bus 0x01 expected, got 0x02" in page
    assert "controller pci index=2 (pcie-root-port): missing" in page
    assert page.count("<svg ") == 2 and "(backend fake)" in page
    sides = '<div class="sides">' + page.split('<div class="sides">', 1)[1].rsplit("</body>", 1)[0]
    assert len(etree.fromstring(sides.encode()).findall(".//{http://www.w3.org/2000/svg}svg")) == 2  # well-formed


def test_a_passing_run_writes_nothing(project: Project) -> None:
    project.case("q35/a")
    project.case("policy/both", machines=("pc", "q35"))
    project.run("--pcie-update-goldens")
    result = project.run("--pcie-diff-dir", "diffs")
    result.assert_outcomes(passed=3)
    assert not (project.root / "diffs").exists()


def test_a_missing_golden_and_a_refusal_still_get_pictures(project: Project) -> None:
    folder = project.case("q35/refused", toml_extra='expect-error = "No more available PCI slots"\n')
    (folder / "fake-failure.txt").write_text("1|attach nic.xml|internal error: no such thing")
    result = project.run("--pcie-diff-dir", str(project.root / "out"))
    result.assert_outcomes(failed=1)
    out = project.root / "out" / "q35" / "refused"
    assert "no readable golden for q35: see the explanation" in svg_texts(out / "q35.expected.svg")
    assert "step 1 (attach nic.xml) refused: internal error: no such thing" in svg_texts(out / "q35.actual.svg")
    assert "expect-error = &#x27;No more available PCI slots&#x27;" in (out / "q35.html").read_text()


def test_known_divergences_get_no_pictures(project: Project) -> None:
    folder = project.case("q35/a")
    project.run("--pcie-update-goldens")
    (folder / "fake-output.xml").write_text(domain(nic_bus=2, extra_port=False))
    (project.root / "divergences.toml").write_text(
        '[[divergence]]\ncase = "q35/a"\nmachine = "q35"\nbackend = "fake"\nreason = "the fake is wrong"\n'
    )
    project.ini(pcie_cases="cases", pcie_known_divergences="divergences.toml")
    result = project.run("--pcie-diff-dir", "diffs")
    result.assert_outcomes(xfailed=1)
    assert not (project.root / "diffs").exists()


def test_an_unwritable_diff_dir_is_one_line_and_keeps_the_verdict(project: Project) -> None:
    folder = project.case("q35/a")
    project.run("--pcie-update-goldens")
    (folder / "fake-output.xml").write_text(domain(nic_bus=2))
    (project.root / "blocked").write_text("a file, not a folder")
    result = project.run("--pcie-diff-dir", "blocked")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["  interface #1: bus 0x01 expected, got 0x02", "--pcie-diff-dir: cannot write to *blocked (*)*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_xdist_workers_write_the_pictures(project: Project) -> None:
    first, second = project.case("q35/a"), project.case("q35/b")
    project.run("--pcie-update-goldens")
    for folder in (first, second):
        (folder / "fake-output.xml").write_text(domain(nic_bus=2))
    project.run("-n", "2", "--pcie-diff-dir", "diffs").assert_outcomes(failed=2)
    assert len(files(project.root / "diffs")) == 6
