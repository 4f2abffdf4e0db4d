"""Layers of goldens (the shipped corpus and overlays): resolution version by version, updates into
the top layer only, and the corpus checks, as plain unit tests and hypothesis invariants."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from pytest_pcie import corpus, golden
from pytest_pcie.versions import Version

V9, V11, V12 = Version.parse("9.0.0"), Version.parse("11.3.0"), Version.parse("12.8.0")
VERSIONS = (V9, V11, V12)


def document(answer: int) -> etree._Element:
    return etree.fromstring(f'<outcome machine="q35"><devices><x answer="{answer}"/></devices></outcome>')


def write(root: Path, version: Version, answer: int) -> Path:
    path = golden.golden_path(root, "c", "q35", version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(golden.render(document(answer)))
    return path


def answer_of(roots: list[Path], version: Version) -> int | None:
    found = golden.resolve_golden(roots, "c", "q35", version)
    return None if found is None else int(golden.read_golden(found[1]).find("devices/x").get("answer"))  # type: ignore[union-attr, arg-type]


def test_an_overlay_file_replaces_only_its_own_version(tmp_path: Path) -> None:
    shipped, overlay = tmp_path / "shipped", tmp_path / "overlay"
    write(shipped, V9, 1)
    write(shipped, V11, 2)
    write(overlay, V9, 3)
    roots = [shipped, overlay]
    assert [answer_of(roots, v) for v in VERSIONS] == [3, 2, 2]
    write(overlay, V12, 4)
    assert [answer_of(roots, v) for v in VERSIONS] == [3, 2, 4]
    assert golden.resolve_golden(shipped, "c", "q35", V9) == (V9, shipped / "c" / "q35.xml")


def test_an_update_into_the_overlay_shadows_a_lower_file_of_the_same_version(tmp_path: Path) -> None:
    shipped, overlay = tmp_path / "shipped", tmp_path / "overlay"
    write(shipped, V9, 1)
    write(shipped, V11, 2)
    write(overlay, V9, 1 + 10)
    # 11.3.0 gives what the overlay's 9.0.0 golden says, but without a file of its own it would get
    # the shipped 11.3.0 override: the update must write one.
    status, path = golden.update_versioned_golden(overlay, "c", "q35", V11, document(11), below=[shipped])
    assert (status, path) == (golden.UpdateStatus.CREATED, overlay / "c" / "q35@11.3.0.xml")
    assert answer_of([shipped, overlay], V11) == 11


def test_an_update_equal_to_the_shipped_golden_writes_nothing(tmp_path: Path) -> None:
    shipped, overlay = tmp_path / "shipped", tmp_path / "overlay"
    write(shipped, V9, 1)
    status, path = golden.update_versioned_golden(overlay, "c", "q35", V9, document(1), below=[shipped])
    assert status is golden.UpdateStatus.UNCHANGED and not path.exists()


ANSWERS = st.one_of(st.none(), st.integers(1, 3))
LAYER = st.tuples(ANSWERS, ANSWERS, ANSWERS)  # an answer (or no file) per version, one layer


def lay_out(root: Path, layer: tuple[int | None, ...]) -> None:
    for version, answer in zip(VERSIONS, layer, strict=True):
        if answer is not None:
            write(root, version, answer)


def files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*.xml")}


@settings(max_examples=150, deadline=None)
@given(lower=st.lists(LAYER, min_size=0, max_size=2), top=LAYER, version=st.sampled_from(VERSIONS),
       answer=st.integers(1, 3))
def test_after_an_update_the_version_resolves_to_what_was_written_and_below_is_untouched(
    lower: list[tuple[int | None, ...]], top: tuple[int | None, ...], version: Version, answer: int
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        roots = [Path(scratch) / f"layer{n}" for n in range(len(lower) + 1)]
        for root, layer in zip(roots, [*lower, top], strict=True):
            lay_out(root, layer)
        before = [files(root) for root in roots[:-1]]
        others = {v: answer_of(roots, v) for v in VERSIONS if v != version}
        golden.update_versioned_golden(roots[-1], "c", "q35", version, document(answer), below=roots[:-1])
        assert answer_of(roots, version) == answer
        assert [files(root) for root in roots[:-1]] == before
        # Only versions that inherited from this one's file may change, and only to the new answer.
        for other, was in others.items():
            now = answer_of(roots, other)
            assert now == was or (other > version and now == answer)


@settings(max_examples=150, deadline=None)
@given(lower=st.lists(LAYER, min_size=0, max_size=2), top=LAYER)
def test_dropping_redundant_overrides_changes_no_resolution(
    lower: list[tuple[int | None, ...]], top: tuple[int | None, ...]
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        roots = [Path(scratch) / f"layer{n}" for n in range(len(lower) + 1)]
        for root, layer in zip(roots, [*lower, top], strict=True):
            lay_out(root, layer)
        before = [answer_of(roots, v) for v in VERSIONS]
        removed = golden.drop_redundant_overrides(roots[-1], "c", "q35", below=roots[:-1])
        assert [answer_of(roots, v) for v in VERSIONS] == before
        assert all(path.is_relative_to(roots[-1]) for path in removed)
        # What is left in the top layer says something the layers below it do not.
        for path in golden.find_goldens(roots[-1]):
            name = path.name.removesuffix(".xml")
            version = Version.parse(name.split("@", 1)[1]) if "@" in name else V9
            path_text = path.read_text()
            path.unlink()
            changed = answer_of(roots, version) != int(path_text.split('answer="', 1)[1].split('"', 1)[0])
            path.write_text(path_text)
            assert changed


# --- the corpus checks ---------------------------------------------------------------------------------


def make_case(cases: Path, case_id: str) -> None:
    folder = cases / case_id
    folder.mkdir(parents=True)
    (folder / "case.toml").write_text('description = "x"\nmachines = ["q35"]\noperation = "define"\n')
    (folder / "input.xml").write_text("<domain/>")


def test_the_overrides_of_a_layer_are_its_files_a_lower_layer_also_has(tmp_path: Path) -> None:
    base = corpus.Layer("base", tmp_path / "b/cases", tmp_path / "b/golden")
    (tmp_path / "o").mkdir()
    overlay = corpus.overlay_layer(tmp_path / "o", "o", updating=True)
    make_case(base.cases, "c")
    write(base.goldens, V9, 1)
    write(overlay.goldens, V9, 2)
    write(overlay.goldens, V11, 3)
    built = corpus.build_corpus(base, [overlay])
    assert built.overrides(overlay) == [overlay.goldens / "c" / "q35.xml"]
    assert built.golden_layer(overlay.goldens / "c" / "q35.xml") == overlay
    assert built.case_layer(base.cases / "c" / "case.toml") == base


def test_a_case_id_in_two_overlays_is_refused(tmp_path: Path) -> None:
    base = corpus.Layer("base", tmp_path / "b/cases", tmp_path / "b/golden")
    make_case(base.cases, "c")
    make_case(tmp_path / "one/cases", "mine")
    make_case(tmp_path / "two/cases", "mine")
    layers = [corpus.overlay_layer(tmp_path / name, name) for name in ("one", "two")]
    with pytest.raises(corpus.CorpusError, match=r"case 'mine' is also in overlay .*one"):
        corpus.build_corpus(base, layers)


def test_the_shipped_corpus_of_a_checkout_is_its_own_folders() -> None:
    shipped = corpus.builtin_layer()
    here = Path(__file__).resolve().parent.parent
    if shipped.installed:  # run from an installed wheel: the data sits in the package
        assert shipped.cases == corpus.PACKAGED / "cases"
    else:
        assert (shipped.cases, shipped.goldens) == (here / "cases", here / "golden")
        assert shipped.divergences == here / "known-divergences.toml"


def test_site_packages_is_recognised_as_installed() -> None:
    assert corpus.in_site_packages(Path(pytest.__file__).parent)
    assert not corpus.in_site_packages(Path(tempfile.gettempdir()))
