"""The documentation: the committed gallery is what scripts/gen-gallery draws, and the site builds strictly.

The gallery script runs as a subprocess, as a contributor or CI runs it.  The MkDocs build needs
mkdocs (the ``docs`` extra, installed by ``tox -e docs``) and is skipped without it; tox's docs
env runs the same build.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "scripts" / "gen-gallery"


def gen_gallery(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GALLERY), *args], capture_output=True, text=True, check=False)


def test_committed_gallery_is_up_to_date(tmp_path: Path) -> None:
    result = gen_gallery("--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = [Path("docs/gallery.md"), *sorted(p.relative_to(ROOT) for p in (ROOT / "docs/gallery").glob("*"))]
    assert fresh == sorted(committed)
    for path in fresh:
        assert (tmp_path / path).read_bytes() == (ROOT / path).read_bytes(), f"{path} is stale: run scripts/gen-gallery"


def test_gallery_has_one_picture_per_golden_family() -> None:
    families = sorted(p.name for p in (ROOT / "golden").iterdir() if p.is_dir())
    assert sorted(p.stem for p in (ROOT / "docs/gallery").glob("*.svg")) == families
    page = (ROOT / "docs/gallery.md").read_text()
    assert [line[3:] for line in page.splitlines() if line.startswith("## ")] == families


def test_check_finds_a_stale_picture_and_writes_nothing(tmp_path: Path) -> None:
    assert gen_gallery("--output", str(tmp_path)).returncode == 0
    picture = tmp_path / "docs/gallery/policy.svg"
    picture.write_text(picture.read_text().replace("pcie-root-port", "pcie-root-prot"))
    result = gen_gallery("--output", str(tmp_path), "--check")
    assert result.returncode == 1
    assert result.stderr.strip() == f"gen-gallery: {picture} is out of date; run scripts/gen-gallery"
    assert "pcie-root-prot" in picture.read_text()
    assert gen_gallery("--check").returncode == 0  # the committed one is current


def nav_pages(entries: object) -> list[str]:
    """The page files of an mkdocs nav: strings, or one-key mappings of title to a page or a list."""
    if isinstance(entries, list):
        return [page for entry in entries for page in nav_pages(entry)]
    if isinstance(entries, dict):
        return [page for value in entries.values() for page in nav_pages(value)]
    return [str(entries)]


def test_nav_names_every_page_and_only_existing_ones() -> None:
    yaml = pytest.importorskip("yaml", reason="pyyaml comes with mkdocs (tox -e docs)")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert sorted(nav_pages(config["nav"])) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed (tox -e docs has it)")
def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    result = _build_site(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    assert (tmp_path / "site" / "gallery" / "index.html").is_file()
    assert (tmp_path / "site" / "gallery" / "policy.svg").is_file()


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed (tox -e docs has it)")
def test_mkdocs_fails_strictly_on_a_link_the_site_cannot_resolve(tmp_path: Path) -> None:
    """mkdocs only logs such links as INFO unless mkdocs.yml's ``validation`` raises them to warnings:
    without it, a link into cases/ (outside docs/, so broken on the site) would build cleanly."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "index.md"
    page.write_text(page.read_text() + "\nSee [a case](../cases/policy/) and [a heading](#no-such-heading).\n")
    result = _build_site(tmp_path, tmp_path / "site")
    assert result.returncode != 0
    assert "'../cases/policy/'" in result.stderr
    assert "'#no-such-heading'" in result.stderr


def _build_site(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of the project in ``project`` into ``site``."""
    mkdocs = shutil.which("mkdocs") or "mkdocs"
    return subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(site)],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
