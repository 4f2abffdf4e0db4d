"""Overlays and the shipped corpus, through pytester: a fork's own folder of cases and goldens
stacked on the corpus (cases add, goldens override file by file, updates go only into the
overlay), where each golden came from, and the one-line errors for bad overlays.

The fake backend is test_plugin's: it answers with the case folder's ``fake-output.xml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_plugin import QUIET, Project, domain

from pytest_pcie import corpus


class Fork:
    """An overlay folder ``fork/`` beside the project's own corpus, laid out like it."""

    def __init__(self, project: Project, name: str = "fork") -> None:
        self.project = project
        self.root = project.root / name
        self.name = name

    def case(self, case_id: str, output: str | None = None, machines: tuple[str, ...] = ("q35",)) -> Path:
        folder = self.root / "cases" / case_id
        folder.mkdir(parents=True)
        listed = ", ".join(f'"{m}"' for m in machines)
        (folder / "case.toml").write_text(f'description = "{case_id}"\nmachines = [{listed}]\noperation = "define"\n')
        (folder / "input.xml").write_text("<domain><devices/></domain>\n")
        (folder / "fake-output.xml").write_text(output if output is not None else domain())
        return folder

    def golden(self, case_id: str, text: str, name: str = "q35.xml") -> Path:
        path = self.root / "golden" / case_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def goldens(self) -> list[str]:
        root = self.root / "golden"
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.xml"))

    def run(self, *args: str) -> pytest.RunResult:
        return self.project.run(f"--pcie-overlay={self.name}", *args)


def golden_of(project: Project, output: str, case_id: str = "q35/a") -> Path:
    """Record ``output`` as the base corpus's golden of ``case_id`` through an update run."""
    folder = project.root / "cases" / case_id
    (folder / "fake-output.xml").write_text(output)
    project.run("--pcie-update-goldens", f"cases/{case_id}").assert_outcomes(passed=1)
    return project.root / "golden" / case_id / "q35.xml"


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


@pytest.fixture
def fork(project: Project) -> Fork:
    return Fork(project)


# --- cases add, goldens override ---------------------------------------------------------------------


def test_overlay_cases_add_to_the_corpus(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    fork.case("fork/mine")
    result = fork.run("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["cases/q35/a/case.toml::q35/a[[]q35[]]", "fork/cases/fork/mine/case.toml::fork/mine[[]q35[]]", "2 tests*"]
    )


def test_overlay_golden_replaces_the_corpus_golden_of_the_same_case(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    golden_of(project, domain(nic_bus=1))
    (project.root / "cases/q35/a/fake-output.xml").write_text(domain(nic_bus=2))
    project.run().assert_outcomes(failed=1)  # the corpus's golden says bus 1
    fork.root.mkdir()
    fork.run("--pcie-update-goldens").assert_outcomes(passed=1)
    assert fork.goldens() == ["q35/a/q35.xml"]
    fork.run().assert_outcomes(passed=1)
    project.run().assert_outcomes(failed=1)  # the corpus's own golden is untouched


def test_failure_names_the_overlay_golden_and_the_one_it_stands_in_for(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    golden_of(project, domain(nic_bus=1))
    (project.root / "cases/q35/a/fake-output.xml").write_text(domain(nic_bus=2))
    fork.root.mkdir()
    fork.run("--pcie-update-goldens").assert_outcomes(passed=1)
    (project.root / "cases/q35/a/fake-output.xml").write_text(domain(nic_bus=3))
    result = fork.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "q35/a on q35 with libvirt 9.0.0 differs from fork/golden/q35/a/q35.xml (from overlay */fork, "
            "in place of golden/q35/a/q35.xml of the corpus):",
            "  interface #1: bus 0x02 expected, got 0x03",
            "if real libvirt 9.0.0 agrees with the actual result: pytest --pcie-overlay=fork --pcie-backend=libvirt "
            "--pcie-update-goldens -k 'q35/a'",
        ]
    )


def test_a_corpus_golden_keeps_saying_where_it_came_from_beside_an_overlay(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    golden_of(project, domain(nic_bus=1))
    fork.case("fork/mine")
    (project.root / "cases/q35/a/fake-output.xml").write_text(domain(nic_bus=2))
    result = fork.run("-k", "q35/a")
    result.stdout.fnmatch_lines(
        ["q35/a on q35 with libvirt 9.0.0 differs from golden/q35/a/q35.xml (from the corpus):"]
    )


def test_header_names_each_layer_and_the_goldens_an_overlay_overrides(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    golden_of(project, domain(nic_bus=1))
    fork.case("fork/mine")
    fork.golden("q35/a", domain(nic_bus=2))
    result = fork.run("--collect-only", "--pcie-update-goldens")
    result.stdout.fnmatch_lines(
        [
            "pcie corpus: the corpus: 1 case(s), 1 golden(s)",
            "pcie corpus: overlay */fork: 1 case(s), 1 golden(s), 1 in place of a lower layer's (q35/a/q35.xml); "
            "golden updates go here",
        ]
    )


def test_a_run_without_overlays_keeps_its_one_header_line(project: Project) -> None:
    project.case("q35/a")
    result = project.run("--collect-only")
    result.stdout.fnmatch_lines(["pcie cases: */cases, goldens: */golden"])
    assert "pcie corpus:" not in result.stdout.str()


def test_overlays_from_the_ini_key_stack_in_order_last_on_top(project: Project) -> None:
    project.case("q35/a")
    bus1, bus2 = golden_of_text(project, domain(nic_bus=1)), golden_of_text(project, domain(nic_bus=2))
    project.pytester.makepyprojecttoml(
        '[tool.pytest.ini_options]\npcie_cases = "cases"\npcie_overlays = ["one", "two"]\n'
    )
    one, two = Fork(project, "one"), Fork(project, "two")
    one.golden("q35/a", bus1)
    two.golden("q35/a", bus2)
    project.run().assert_outcomes(passed=1)  # two's golden wins over one's
    (two.root / "golden/q35/a/q35.xml").unlink()
    project.run().assert_outcomes(failed=1)


def golden_of_text(project: Project, output: str) -> str:
    """What an update run writes for ``output`` of case q35/a, read back (so no golden is hand-written);
    the update goes into a scratch overlay, removed again."""
    scratch = project.root / "scratch"
    scratch.mkdir()
    (project.root / "cases/q35/a/fake-output.xml").write_text(output)
    project.run("--pcie-update-goldens", "--pcie-overlay=scratch", "cases/q35/a").assert_outcomes(passed=1)
    text = (scratch / "golden/q35/a/q35.xml").read_text()
    shutil.rmtree(scratch)
    return text


# --- updates go only into the overlay --------------------------------------------------------------------


def test_update_writes_an_overlay_golden_only_where_it_differs_from_the_corpus(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    project.case("q35/b")
    golden_of(project, domain(nic_bus=1), "q35/a")
    golden_of(project, domain(nic_bus=1), "q35/b")
    base = {p: p.read_text() for p in (project.root / "golden").rglob("*.xml")}
    (project.root / "cases/q35/b/fake-output.xml").write_text(domain(nic_bus=2))
    fork.case("fork/mine")
    result = fork.run("--pcie-update-goldens")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "goldens: 2 created, 0 changed, 1 unchanged, 0 removed",
            "  created: fork/golden/fork/mine/q35.xml",
            "  created: fork/golden/q35/b/q35.xml",
            "review them before committing: git diff fork/golden/",
        ]
    )
    assert fork.goldens() == ["fork/mine/q35.xml", "q35/b/q35.xml"]
    assert {p: p.read_text() for p in (project.root / "golden").rglob("*.xml")} == base


def test_update_removes_an_overlay_golden_that_says_what_the_corpus_says(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    golden_of(project, domain(nic_bus=1))
    (project.root / "cases/q35/a/fake-output.xml").write_text(domain(nic_bus=2))
    fork.root.mkdir()
    fork.run("--pcie-update-goldens").assert_outcomes(passed=1)
    assert fork.goldens() == ["q35/a/q35.xml"]
    (project.root / "cases/q35/a/fake-output.xml").write_text(domain(nic_bus=1))
    result = fork.run("--pcie-update-goldens")
    result.stdout.fnmatch_lines(["goldens: 0 created, 0 changed, 0 unchanged, 1 removed"])
    assert fork.goldens() == []


def test_update_never_writes_into_an_installed_corpus(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    installed = tmp_path / "site-packages" / "pytest_pcie" / "builtin"
    (installed / "cases").mkdir(parents=True)
    (installed / "golden").mkdir()
    monkeypatch.setattr(corpus, "PACKAGED", installed)
    project.pytester.makepyprojecttoml("")
    result = project.run("--pcie-corpus=builtin", "--pcie-update-goldens")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: --pcie-update-goldens would write into the installed package at {installed / 'golden'}; "
            "give your own folder with --pcie-overlay=DIR and the goldens are written there"
        ]
    )
    pruning = project.run("--pcie-corpus=builtin", "--pcie-prune-goldens")
    pruning.stderr.fnmatch_lines(["ERROR: --pcie-prune-goldens would write into the installed package at *"])


def test_an_overlay_on_an_installed_corpus_takes_the_updates(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    installed = tmp_path / "site-packages" / "pytest_pcie" / "builtin"
    (installed / "cases/q35/a").mkdir(parents=True)
    (installed / "golden").mkdir()
    (installed / "cases/q35/a/case.toml").write_text('description = "a"\nmachines = ["q35"]\noperation = "define"\n')
    (installed / "cases/q35/a/input.xml").write_text("<domain><devices/></domain>\n")
    (installed / "cases/q35/a/fake-output.xml").write_text(domain())
    monkeypatch.setattr(corpus, "PACKAGED", installed)
    project.pytester.makepyprojecttoml("")
    fork = Fork(project)
    fork.root.mkdir()
    result = fork.run("--pcie-corpus=builtin", "--pcie-update-goldens")
    result.assert_outcomes(passed=1)
    assert fork.goldens() == ["q35/a/q35.xml"]
    assert not list((installed / "golden").rglob("*"))
    fork.run("--pcie-corpus=builtin").assert_outcomes(passed=1)


# --- known divergences, orphans ----------------------------------------------------------------------


def test_overlay_known_divergences_add_to_the_corpus_ones(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    project.case("q35/b")
    golden_of(project, domain(nic_bus=1), "q35/a")
    golden_of(project, domain(nic_bus=1), "q35/b")
    for case_id in ("q35/a", "q35/b"):
        (project.root / "cases" / case_id / "fake-output.xml").write_text(domain(nic_bus=2))
    entry = 'case = "{}"\nmachine = "q35"\nbackend = "fake"\nreason = "{}"\n'
    (project.root / "known-divergences.toml").write_text("[[divergence]]\n" + entry.format("q35/a", "the corpus's"))
    project.pytester.makepyprojecttoml(
        '[tool.pytest.ini_options]\npcie_cases = "cases"\npcie_known_divergences = "known-divergences.toml"\n'
    )
    fork.root.mkdir()
    (fork.root / "known-divergences.toml").write_text("[[divergence]]\n" + entry.format("q35/b", "the fork's"))
    result = fork.run("-rx")
    result.assert_outcomes(xfailed=2)
    result.stdout.fnmatch_lines(["*q35/b* - known divergence: the fork's"])
    project.run().assert_outcomes(xfailed=1, failed=1)


def test_overlay_divergence_naming_no_case_is_one_clear_error(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    fork.root.mkdir()
    path = fork.root / "known-divergences.toml"
    path.write_text('[[divergence]]\ncase = "q35/gone"\nmachine = "q35"\nbackend = "fake"\nreason = "r"\n')
    result = fork.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {path}: divergence #1: case 'q35/gone' does not exist under *; remove*"])


def test_orphan_goldens_of_an_overlay_are_reported_on_a_full_run(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    golden_of(project, domain())
    orphan = fork.golden("q35/a", domain(), name="pc.xml")
    result = fork.run()
    result.stdout.fnmatch_lines(["*pcie orphan goldens*", "  no case produces: fork/golden/q35/a/pc.xml"])
    fork.run("--pcie-prune-goldens")
    assert not orphan.exists()
    assert (project.root / "golden/q35/a/q35.xml").exists()


# --- bad input: one line before any case runs -----------------------------------------------------------


def _usage_error(result: pytest.RunResult, line: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {line}"])
    assert "passed" not in result.stdout.str() and "Traceback" not in result.stderr.str()


def test_an_overlay_that_does_not_exist_is_one_clear_error(project: Project) -> None:
    project.case("q35/a")
    result = project.run("--pcie-overlay=nowhere")
    _usage_error(result, "overlay 'nowhere' (*/nowhere) does not exist; give a folder holding cases/ and/or golden/")


def test_an_overlay_that_is_a_file_or_empty_is_one_clear_error(project: Project) -> None:
    project.case("q35/a")
    (project.root / "afile").write_text("")
    _usage_error(project.run("--pcie-overlay=afile"), "overlay 'afile' (*) is not a folder; give a folder *")
    (project.root / "empty").mkdir()
    _usage_error(
        project.run("--pcie-overlay=empty"),
        "overlay 'empty' (*) holds none of cases/, golden/ or known-divergences.toml; lay it out like *",
    )


def test_an_overlay_case_with_the_id_of_a_corpus_case_is_one_clear_error(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    fork.case("q35/a")
    _usage_error(
        fork.run(),
        "*/fork/cases/q35/a: case 'q35/a' is also in the corpus (*/cases); an overlay adds cases and overrides "
        "goldens, so rename its folder (or drop it and keep only the golden override)",
    )


def test_an_overlay_golden_for_no_case_is_one_clear_error(project: Project, fork: Fork) -> None:
    project.case("q35/a")
    fork.golden("q35/typo", domain())
    _usage_error(
        fork.run(),
        "*/fork/golden/q35/typo: these goldens of overlay */fork override no case (no layer has a case "
        "'q35/typo'); fix the folder name or delete it",
    )


def test_an_overlay_inside_the_corpus_is_one_clear_error(project: Project) -> None:
    project.case("q35/a")
    (project.root / "cases/inner/cases").mkdir(parents=True)
    result = project.run("--pcie-overlay=cases/inner")
    _usage_error(result, "overlay */cases/inner: its cases/ and the one of *overlap*")


def test_an_unknown_corpus_is_one_clear_error(project: Project) -> None:
    project.case("q35/a")
    _usage_error(
        project.run("--pcie-corpus=mine"),
        "--pcie-corpus='mine': unknown corpus; the shipped one is 'builtin', and folders of your own go in "
        "--pcie-overlay=DIR",
    )


def test_own_cases_beside_the_shipped_corpus_must_be_an_overlay(project: Project) -> None:
    project.case("q35/a")
    _usage_error(
        project.run("--pcie-corpus=builtin"),
        "the ini key pcie_cases names */cases, and --pcie-corpus=builtin the shipped corpus; put your own cases in "
        "an overlay (pcie_overlays or --pcie-overlay) instead",
    )


def test_a_missing_shipped_corpus_is_one_clear_error(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(corpus, "PACKAGED", tmp_path / "none")
    monkeypatch.setattr(corpus, "CHECKOUT", tmp_path / "none")
    project.pytester.makepyprojecttoml("")
    _usage_error(
        project.run("--pcie-corpus=builtin"),
        "--pcie-corpus=builtin: this installation of pytest-pcie carries no corpus (no */none); install pytest-pcie "
        "from its wheel, or run in a checkout of its repository",
    )


# --- the shipped corpus ----------------------------------------------------------------------------------


def test_the_shipped_corpus_is_collected_from_an_empty_folder(pytester: pytest.Pytester) -> None:
    shipped = corpus.builtin_layer()
    count = sum(1 for _ in corpus.case_ids(shipped))
    result = pytester.runpytest(*QUIET, "--pcie-corpus=builtin", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["addresses/*/case.toml::addresses/*", "* tests collected*"])
    ids = {line.split("::", 1)[1].split("[", 1)[0] for line in result.stdout.lines if "::" in line}
    assert len(ids) == count > 100


def test_given_paths_are_left_alone_with_the_shipped_corpus(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    result = pytester.runpytest(*QUIET, "--pcie-corpus=builtin", "test_own.py")
    result.assert_outcomes(passed=1)


def test_overlays_work_under_xdist_and_updates_from_workers_land_in_the_overlay(project: Project, fork: Fork) -> None:
    for case_id in ("q35/a", "q35/b", "q35/c"):
        project.case(case_id)
        golden_of(project, domain(nic_bus=1), case_id)
        (project.root / "cases" / case_id / "fake-output.xml").write_text(domain(nic_bus=2))
    fork.case("fork/mine")
    result = fork.run("-n", "2", "--pcie-update-goldens")
    result.assert_outcomes(passed=4)
    assert fork.goldens() == ["fork/mine/q35.xml", "q35/a/q35.xml", "q35/b/q35.xml", "q35/c/q35.xml"]
    fork.run("-n", "2").assert_outcomes(passed=4)
