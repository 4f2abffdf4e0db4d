"""pytest hooks and options: collect case folders, run each on a backend, compare with its golden.

The plugin stays dormant unless asked (a ``--pcie-*`` option on the command line, or the ini key
``pcie_cases``), so installing pytest-pcie never changes an unrelated project's test run.  All the
knowledge lives elsewhere: :mod:`pytest_pcie.cases` reads folders, the backend runs them,
:mod:`pytest_pcie.normalise` and :mod:`pytest_pcie.golden` judge and explain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from pytest_pcie import diffdir, golden
from pytest_pcie.backends import (
    DEFAULT_BACKEND,
    DEFAULT_LIBVIRT_URI,
    Backend,
    BackendSettings,
    BackendUnavailable,
    backend_names,
    create_backend,
)
from pytest_pcie.cases import CASE_FILE, INPUT_FILE, Case, CaseError, load_case
from pytest_pcie.divergences import Divergence, DivergenceError, load_divergences
from pytest_pcie.normalise import normalise

OPTION_DESTS = ("pcie_backend", "pcie_update_goldens", "pcie_prune_goldens", "pcie_libvirt_uri", "pcie_diff_dir")
WORKER_OUTPUT_KEY = "pcie"
INCOMPLETE_RUN = (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR)
WRITTEN = (golden.UpdateStatus.CREATED, golden.UpdateStatus.CHANGED)
TRUSTED_BACKEND = "libvirt"  # a golden is the truth only once real libvirt agrees with it


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pcie", "pytest-pcie: PCI topology conformance cases")
    group.addoption(
        "--pcie-backend",
        dest="pcie_backend",
        default=None,
        metavar="NAME",
        help=f"backend that runs the cases: reference (default) or libvirt; default {DEFAULT_BACKEND}",
    )
    group.addoption(
        "--pcie-update-goldens",
        dest="pcie_update_goldens",
        action="store_true",
        help="write goldens from what the backend produced (only changed ones), then review `git diff golden/`",
    )
    group.addoption(
        "--pcie-prune-goldens",
        dest="pcie_prune_goldens",
        action="store_true",
        help="on a full run, delete goldens that no case produces",
    )
    group.addoption(
        "--pcie-libvirt-uri",
        dest="pcie_libvirt_uri",
        default=None,
        metavar="URI",
        help=f"libvirt connection the libvirt backend uses; default {DEFAULT_LIBVIRT_URI}",
    )
    group.addoption(
        "--pcie-diff-dir",
        dest="pcie_diff_dir",
        default=None,
        metavar="DIR",
        help="for each failing case write DIR/<case id>/<machine>.expected.svg, .actual.svg and .html",
    )
    parser.addini("pcie_cases", "folder of case folders, relative to the rootdir (setting it enables pytest-pcie)")
    parser.addini("pcie_goldens", "folder of goldens, relative to the rootdir", default="golden")
    parser.addini("pcie_known_divergences", "TOML file listing known backend divergences, relative to the rootdir")


@dataclass(frozen=True)
class Settings:
    """The plugin's configuration, read once from options and ini keys."""

    enabled: bool
    cases_root: Path
    goldens_root: Path
    divergences_file: Path | None
    backend_name: str
    libvirt_uri: str
    update: bool
    prune: bool
    diff_dir: Path | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        cases = str(config.getini("pcie_cases") or "")
        asked = any(config.getoption(dest) not in (None, False) for dest in OPTION_DESTS)
        divergences = str(config.getini("pcie_known_divergences") or "")
        root = config.rootpath
        diff_dir = config.getoption("pcie_diff_dir")
        return cls(
            enabled=asked or bool(cases),
            cases_root=(root / (cases or "cases")).resolve(),
            goldens_root=(root / str(config.getini("pcie_goldens") or "golden")).resolve(),
            divergences_file=(root / divergences).resolve() if divergences else None,
            backend_name=config.getoption("pcie_backend") or DEFAULT_BACKEND,
            libvirt_uri=config.getoption("pcie_libvirt_uri") or DEFAULT_LIBVIRT_URI,
            update=bool(config.getoption("pcie_update_goldens")),
            prune=bool(config.getoption("pcie_prune_goldens")),
            diff_dir=(config.invocation_params.dir / diff_dir).resolve() if diff_dir else None,
        )


class PcieFailure(Exception):
    """A case did not give what its golden or its expect-error says; ``str()`` is the whole report."""


_SESSION_KEY = pytest.StashKey["PcieSession"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pcie: a pytest-pcie conformance case (added to every case item)")
    session = PcieSession(config, Settings.from_config(config))
    config.stash[_SESSION_KEY] = session
    config.pluginmanager.register(session, "pcie-session")
    # xdist's hooks exist only when xdist is installed; pluggy refuses a plugin implementing an
    # unknown hook, so they live in their own object, registered only beside xdist.
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(session), "pcie-xdist")


class XdistHooks:
    """xdist's controller-side hooks, kept apart so the plugin loads without xdist installed."""

    def __init__(self, session: PcieSession) -> None:
        self.session = session

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
        if output:
            self.session.merge_worker_output(output)


@pytest.fixture(scope="session")
def pcie_backend(pytestconfig: pytest.Config) -> Backend:
    """The session's backend, for tests that want to run their own cases or steps through it."""
    return pytestconfig.stash[_SESSION_KEY].get_backend()


@dataclass(eq=False)  # registered as a plugin, so it must stay hashable
class PcieSession:
    """Per-session state: the backend, the known divergences, and what updating wrote."""

    config: pytest.Config
    settings: Settings
    backend: Backend | None = None
    unavailable: str | None = None
    header: str = ""  # the backend's header line, kept after close() for the xdist controller
    divergences: list[Divergence] = field(default_factory=list)
    updates: dict[str, str] = field(default_factory=dict)  # golden path -> UpdateStatus value
    expected_goldens: set[str] = field(default_factory=set)
    collect_errors: int = 0
    orphans: list[str] = field(default_factory=list)
    prune_refused: bool = False  # --pcie-prune-goldens on a run that does not see every case
    worker_headers: set[str] = field(default_factory=set)  # on the xdist controller: what workers ran

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    @property
    def is_controller(self) -> bool:
        return not self.is_worker and self.config.pluginmanager.hasplugin("dsession")

    # --- backend lifetime -------------------------------------------------------------------------

    def get_backend(self) -> Backend:
        """The backend, created on first use; unavailable backends fail with their one line."""
        if self.backend is None and self.unavailable is None:
            try:
                settings = BackendSettings(libvirt_uri=self.settings.libvirt_uri)
                self.backend = create_backend(self.settings.backend_name, settings)
                self.header = self.backend.header()
            except BackendUnavailable as exc:
                self.unavailable = f"pcie backend {self.settings.backend_name!r} is unavailable: {exc}"
        if self.backend is None:
            raise PcieFailure(self.unavailable)
        return self.backend

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.settings.enabled:
            return
        if self.settings.divergences_file is not None:
            try:
                known = backend_names()
                self.divergences = load_divergences(self.settings.divergences_file, self.settings.cases_root, known)
            except DivergenceError as exc:
                raise pytest.UsageError(str(exc)) from None
        if self.is_controller:
            return
        try:
            self.get_backend()
        except PcieFailure as exc:
            if not self.is_worker:
                raise pytest.UsageError(str(exc)) from None
            # An xdist worker cannot stop the run from here; its first case fails with the line and
            # sets shouldstop, which xdist passes to the controller ("Interrupted: ...").

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        try:
            if exitstatus not in INCOMPLETE_RUN:
                self._finish_goldens()
        finally:
            self.close_backend()
        if self.is_worker:
            output: dict[str, Any] = self.config.workeroutput  # type: ignore[attr-defined]
            output[WORKER_OUTPUT_KEY] = {
                "updates": self.updates,
                "expected": sorted(self.expected_goldens),
                "header": self.header,
            }

    def pytest_unconfigure(self) -> None:
        self.close_backend()  # a run that never reached sessionfinish (internal error) still closes

    def close_backend(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.close()

    # --- header ------------------------------------------------------------------------------------

    def pytest_report_header(self) -> list[str]:
        if not self.settings.enabled:
            return []
        line = self.header or f"pcie backend: {self.settings.backend_name} (one per xdist worker)"
        lines = [line, f"pcie cases: {self.settings.cases_root}, goldens: {self.settings.goldens_root}"]
        if self.known_divergences:
            lines.append(f"pcie known divergences for {self.settings.backend_name}: {len(self.known_divergences)}")
        return lines

    @property
    def known_divergences(self) -> dict[tuple[str, str], Divergence]:
        """The divergences that apply to this run's backend, by (case id, machine)."""
        mine = [d for d in self.divergences if d.backend == self.settings.backend_name]
        return {(d.case_id, d.machine): d for d in mine}

    # --- collection ----------------------------------------------------------------------------------

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if not self.settings.enabled or file_path.name not in (CASE_FILE, INPUT_FILE):
            return None
        if not file_path.resolve().is_relative_to(self.settings.cases_root):
            return None
        if file_path.name == INPUT_FILE and (file_path.parent / CASE_FILE).exists():
            return None  # the case is collected through its case.toml
        return CaseFile.from_parent(parent, path=file_path, pcie=self)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors += 1

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        known = self.known_divergences
        for item in items:
            if not isinstance(item, CaseItem):
                continue
            self.expected_goldens.add(item.golden_key)
            item.divergence = known.get((item.case.case_id, item.machine))
            if item.divergence is not None:
                reason = f"known divergence: {item.divergence.reason}"
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))

    def merge_worker_output(self, output: dict[str, Any]) -> None:
        """On the xdist controller: take in what one worker updated, produced and ran."""
        self.updates.update(output["updates"])
        self.expected_goldens.update(output["expected"])
        if output["header"]:
            self.worker_headers.add(output["header"])

    # --- goldens at the end ----------------------------------------------------------------------------

    def _finish_goldens(self) -> None:
        """Find (and on request delete) orphan goldens, on a full run of a non-worker only."""
        if self.is_worker or not self.settings.enabled:
            return
        if not self._is_full_run():
            self.prune_refused = self.settings.prune
            return
        root = self.settings.goldens_root
        produced = self.expected_goldens
        self.orphans = [str(path) for path in golden.find_goldens(root) if _golden_key(root, path) not in produced]
        if self.settings.prune:
            for orphan in self.orphans:
                Path(orphan).unlink()

    def _is_full_run(self) -> bool:
        """True when every case was collected: the run covers the cases folder and selects nothing."""
        option = self.config.option
        selecting = ("keyword", "markexpr", "lf", "deselect", "ignore", "ignore_glob", "stepwise")
        if self.collect_errors or any(getattr(option, name, None) for name in selecting):
            return False
        cases_root = self.settings.cases_root
        covers = False
        for argument in self.config.args:
            path = (self.config.invocation_params.dir / argument.split("::", 1)[0]).resolve()
            if "::" in argument or (path != cases_root and path.is_relative_to(cases_root)):
                return False
            covers = covers or cases_root.is_relative_to(path)
        return covers

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.settings.enabled or self.is_worker:
            return
        write = terminalreporter.write_line
        for header in sorted(self.worker_headers):
            write(f"xdist workers ran {header}")
        known = self.known_divergences
        if known:
            write(
                f"pcie: {len(known)} known divergence(s) for backend {self.settings.backend_name} (xfail, not passes)"
            )
        if self.settings.update:
            by_status = {
                status: sorted(p for p, s in self.updates.items() if s == status.value)
                for status in golden.UpdateStatus
            }
            counts = ", ".join(f"{len(paths)} {status.value}" for status, paths in by_status.items())
            terminalreporter.section("pcie goldens updated")
            write(f"goldens: {counts}")
            written = [(status, path) for status in WRITTEN for path in by_status[status]]
            for status, path in written:
                write(f"  {status.value}: {self.shown(path)}")
            if written:
                write(f"review them before committing: git diff {self.shown(str(self.settings.goldens_root))}/")
            if written and self.settings.backend_name != TRUSTED_BACKEND:
                write(
                    f"written by backend {self.settings.backend_name!r}: confirm with --pcie-backend={TRUSTED_BACKEND}"
                )
        if self.orphans:
            verb = "deleted" if self.settings.prune else "no case produces"
            terminalreporter.section("pcie orphan goldens")
            for orphan in self.orphans:
                write(f"  {verb}: {self.shown(orphan)}")
            if not self.settings.prune:
                write("delete them with --pcie-prune-goldens (on a full run)")
        if self.prune_refused:
            write("pcie: --pcie-prune-goldens deleted nothing: only a full run (no path, -k, -m or --lf selection) may")

    def shown(self, path: str) -> str:
        """``path`` relative to the rootdir when it lies inside it, as people type it."""
        try:
            return str(Path(path).relative_to(self.config.rootpath))
        except ValueError:
            return path


def _golden_key(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


class CaseFile(pytest.File):
    """One case folder (collected through its case.toml, or its input.xml when case.toml is missing)."""

    def __init__(self, *, pcie: PcieSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pcie = pcie

    def collect(self) -> Iterator[pytest.Item]:
        settings = self.pcie.settings
        try:
            case = load_case(self.path.parent, settings.cases_root)
        except CaseError as exc:
            raise self.CollectError(str(exc)) from None
        for machine in case.machines:
            name = f"{case.case_id}[{machine}]"
            yield CaseItem.from_parent(self, name=name, case=case, machine=machine)


class CaseItem(pytest.Item):
    """One case on one machine: run it, check expect-error, compare (or update) the golden."""

    def __init__(self, *, case: Case, machine: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.machine = machine
        self.divergence: Divergence | None = None  # set at collection from the known-divergences file
        self.add_marker("pcie")

    @property
    def pcie(self) -> PcieSession:
        return self.config.stash[_SESSION_KEY]

    @property
    def golden_file(self) -> Path:
        return golden.golden_path(self.pcie.settings.goldens_root, self.case.case_id, self.machine)

    @property
    def golden_key(self) -> str:
        return _golden_key(self.pcie.settings.goldens_root, self.golden_file)

    def runtest(self) -> None:
        try:
            backend = self.pcie.get_backend()
        except PcieFailure:
            self.session.shouldstop = self.pcie.unavailable or True
            raise
        outcome = backend.run(self.case, self.machine)
        document = normalise(outcome, self.machine)
        problems = self._expect_error_problems(outcome.failure.message if outcome.failure else None)
        if self.pcie.settings.update and self.divergence is None:
            status = golden.update_golden(self.golden_file, document)
            self.pcie.updates[str(self.golden_file)] = status.value
        else:
            problems += self._golden_problems(document)
        if problems:
            raise PcieFailure("\n".join(problems + self._write_diff(document, problems)))

    def _write_diff(self, actual: etree._Element, problems: list[str]) -> list[str]:
        """Pictures for --pcie-diff-dir; a known divergence (xfail) needs no attention, so gets none.

        Returns a line for the report when the pictures cannot be written: the verdict stands either way.
        """
        diff_dir = self.pcie.settings.diff_dir
        if diff_dir is None or self.divergence is not None:
            return []
        try:
            expected = golden.read_golden(self.golden_file) if self.golden_file.is_file() else None
        except golden.GoldenError:
            expected = None
        backend = self.pcie.settings.backend_name
        try:
            diffdir.write_diff(diff_dir, self.case.case_id, self.machine, expected, actual, problems, backend)
        except OSError as exc:
            return [f"--pcie-diff-dir: cannot write to {diff_dir} ({exc.strerror}); pass a writable folder"]
        return []

    def _expect_error_problems(self, message: str | None) -> list[str]:
        wanted = self.case.expect_error
        if wanted is None or (message is not None and wanted in message):
            return []
        got = "the run succeeded" if message is None else f"it failed with: {message}"
        return [f"case.toml says expect-error = {wanted!r}, but {got}"]

    def _golden_problems(self, actual: etree._Element) -> list[str]:
        path = self.golden_file
        shown = self.pcie.shown(str(path))
        if not path.is_file():
            return [
                f"no golden {shown}; create it from real libvirt with "
                f"pytest --pcie-backend=libvirt --pcie-update-goldens {self.pcie.shown(str(self.case.folder))}"
            ]
        try:
            expected = golden.read_golden(path)
        except golden.GoldenError as exc:
            return [str(exc)]
        if golden.canonical_text(expected) == golden.canonical_text(actual):
            return []
        lines = [
            f"{self.case.case_id} on {self.machine} differs from {shown}:",
            *golden.describe_mismatch(expected, actual),
        ]
        lines.append(
            "if real libvirt agrees with the actual result: "
            f"pytest --pcie-backend=libvirt --pcie-update-goldens {self.pcie.shown(str(self.case.folder))}"
        )
        return lines

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | Any:
        if isinstance(excinfo.value, PcieFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name
