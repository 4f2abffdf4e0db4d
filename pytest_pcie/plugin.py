"""pytest hooks and options: collect case folders, run each on a backend, compare with its golden.

The plugin stays dormant unless asked (a ``--pcie-*`` option on the command line, or the ini key
``pcie_cases``), so installing pytest-pcie never changes an unrelated project's test run.  All the
knowledge lives elsewhere: :mod:`pytest_pcie.cases` reads folders, the backend runs them,
:mod:`pytest_pcie.normalise` and :mod:`pytest_pcie.golden` judge and explain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

import pytest_pcie
from pytest_pcie import corpus as corpus_layers
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
from pytest_pcie.backends.base import backend_version
from pytest_pcie.cases import CASE_FILE, INPUT_FILE, Case, CaseError, load_case
from pytest_pcie.deviations import DeviationError, Deviations, applied, explain, load_deviations, load_rule_titles
from pytest_pcie.divergences import Divergence, DivergenceError, load_divergences
from pytest_pcie.normalise import normalise
from pytest_pcie.outcome import Outcome
from pytest_pcie.reference.profiles import (
    NEWEST_PROFILE,
    PROFILES,
    UnknownProfile,
    profile_for,
    profile_named,
    using_profile,
)
from pytest_pcie.upgrade import compare_stored
from pytest_pcie.versions import BASE_VERSION, Version

OPTION_DESTS = (
    "pcie_backend",
    "pcie_update_goldens",
    "pcie_prune_goldens",
    "pcie_libvirt_uri",
    "pcie_diff_dir",
    "pcie_upgrade",
    "pcie_profile",
    "pcie_deviations",
    "pcie_corpus",
    "pcie_overlay",
)
WORKER_OUTPUT_KEY = "pcie"
MAX_HEADER_OVERRIDES = 5  # overlay goldens named in the header; the rest are counted
INCOMPLETE_RUN = (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR)
WRITTEN = (golden.UpdateStatus.CREATED, golden.UpdateStatus.CHANGED, golden.UpdateStatus.REMOVED)
TRUSTED_BACKEND = "libvirt"  # a golden is the truth only once real libvirt agrees with it
REFERENCE_BACKEND = "reference"  # the one backend whose targets are profiles, not URIs
# What a known divergence names as its "backend" to expect an upgrade check (--pcie-upgrade) to fail.
UPGRADE_CHECK = "upgrade"


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
        action="append",
        default=None,
        metavar="URI",
        help=f"libvirt connection the libvirt backend uses; default {DEFAULT_LIBVIRT_URI}. Give it several "
        "times to run every case against each (test ids then end in @<libvirt version>)",
    )
    group.addoption(
        "--pcie-upgrade",
        dest="pcie_upgrade",
        default=None,
        metavar="FROM_URI",
        help="upgrade check instead of goldens: run each case on the libvirt at FROM_URI, define what it "
        "stored unchanged on each --pcie-libvirt-uri in turn, and fail if any device or controller moves",
    )
    group.addoption(
        "--pcie-profile",
        dest="pcie_profile",
        action="append",
        default=None,
        metavar="VERSION",
        help=f"libvirt release the reference backend models: {', '.join(PROFILES)} (default {NEWEST_PROFILE.name}), "
        "or 'all' to run every case under every profile (test ids then end in @<version>); repeatable",
    )
    group.addoption(
        "--pcie-diff-dir",
        dest="pcie_diff_dir",
        default=None,
        metavar="DIR",
        help="for each failing case write DIR/<case id>/<machine>.expected.svg, .actual.svg and .html",
    )
    group.addoption(
        "--pcie-deviations",
        dest="pcie_deviations",
        default=None,
        metavar="FILE",
        help="a fork's declared deviations (TOML, docs/forks.md): cases they change are judged against the "
        "reference's prediction for the fork, every other case against the shipped goldens",
    )
    group.addoption(
        "--pcie-deviation-goldens",
        dest="pcie_deviation_goldens",
        default=None,
        metavar="DIR",
        help="the fork's own goldens for the cases its deviations change: judged against when present, "
        "written there (never into the shipped goldens) by --pcie-update-goldens",
    )
    parser.addini("pcie_deviations", "a fork's declared deviations file, relative to the rootdir")
    parser.addini("pcie_deviation_goldens", "folder of the fork's goldens for deviating cases, relative to the rootdir")
    group.addoption(
        "--pcie-corpus",
        dest="pcie_corpus",
        default=None,
        metavar="NAME",
        help=f"run the corpus shipped inside pytest-pcie ({corpus_layers.BUILTIN}) instead of the folders the ini "
        "keys name; with no path given, its cases are collected wherever pytest runs",
    )
    group.addoption(
        "--pcie-overlay",
        dest="pcie_overlay",
        action="append",
        default=None,
        metavar="DIR",
        help="a folder of your own laid out like the corpus (cases/, golden/, known-divergences.toml), stacked on it: "
        "its cases add, its goldens override file by file, golden updates go into it. Repeatable, last on top",
    )
    parser.addini("pcie_cases", "folder of case folders, relative to the rootdir (setting it enables pytest-pcie)")
    parser.addini("pcie_corpus", f"{corpus_layers.BUILTIN}: run the corpus shipped inside pytest-pcie (enables it)")
    parser.addini(
        "pcie_overlays", "overlay folders stacked on the corpus, relative to the ini file (enables it)", type="paths"
    )
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
    libvirt_uris: tuple[str, ...]
    update: bool
    prune: bool
    diff_dir: Path | None = None
    upgrade_from: str | None = None
    profiles: tuple[str, ...] = ()  # reference profiles asked for; () means the newest
    deviations_file: Path | None = None
    deviation_goldens: Path | None = None

    @property
    def target_specs(self) -> tuple[str, ...]:
        """What each target is built from: reference profiles for the reference backend, libvirt
        URIs for every other backend."""
        if self.backend_name == REFERENCE_BACKEND:
            return self.profiles or (NEWEST_PROFILE.name,)
        return self.libvirt_uris
    corpus_name: str | None = None  # --pcie-corpus / pcie_corpus; None: the folders of the ini keys
    overlays: tuple[tuple[str, Path], ...] = ()  # (as given, resolved), bottom first
    cases_configured: bool = False  # the ini key pcie_cases is set

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        cases = str(config.getini("pcie_cases") or "")
        asked = any(config.getoption(dest) not in (None, False) for dest in OPTION_DESTS)
        divergences = str(config.getini("pcie_known_divergences") or "")
        root = config.rootpath
        diff_dir = config.getoption("pcie_diff_dir")
        backend_name = config.getoption("pcie_backend") or DEFAULT_BACKEND
        if config.getoption("pcie_profile") and backend_name != REFERENCE_BACKEND:
            raise pytest.UsageError(
                f"--pcie-profile chooses what the reference backend models; --pcie-backend={backend_name} "
                "runs a real libvirt, whose version picks the goldens (drop --pcie-profile)"
            )
        corpus_name = config.getoption("pcie_corpus") or str(config.getini("pcie_corpus") or "") or None
        overlays = [(str(path), Path(path).resolve()) for path in config.getini("pcie_overlays")]
        invoked = config.invocation_params.dir
        overlays += [(given, (invoked / given).resolve()) for given in config.getoption("pcie_overlay") or []]
        return cls(
            enabled=asked or bool(cases) or corpus_name is not None or bool(overlays),
            cases_root=(root / (cases or "cases")).resolve(),
            goldens_root=(root / str(config.getini("pcie_goldens") or "golden")).resolve(),
            divergences_file=(root / divergences).resolve() if divergences else None,
            backend_name=backend_name,
            libvirt_uris=tuple(dict.fromkeys(config.getoption("pcie_libvirt_uri") or [DEFAULT_LIBVIRT_URI])),
            update=bool(config.getoption("pcie_update_goldens")),
            prune=bool(config.getoption("pcie_prune_goldens")),
            diff_dir=(config.invocation_params.dir / diff_dir).resolve() if diff_dir else None,
            upgrade_from=config.getoption("pcie_upgrade"),
            profiles=_profiles(config.getoption("pcie_profile") or []),
            deviations_file=_path_setting(config, "pcie_deviations"),
            deviation_goldens=_path_setting(config, "pcie_deviation_goldens"),
            corpus_name=corpus_name,
            overlays=tuple({path: (given, path) for given, path in reversed(overlays)}.values())[::-1],
            cases_configured=bool(cases),
        )


def _profiles(asked: list[str]) -> tuple[str, ...]:
    """The profile names ``--pcie-profile`` asked for, oldest first ('all' is every one)."""
    names: list[str] = []
    for value in asked:
        for name in value.split(","):
            if name.strip() == "all":
                names.extend(PROFILES)
                continue
            try:
                names.append(profile_named(name.strip()).name)
            except UnknownProfile as exc:
                raise pytest.UsageError(f"--pcie-profile: {exc}") from None
    return tuple(sorted(dict.fromkeys(names), key=Version.parse))


def _path_setting(config: pytest.Config, name: str) -> Path | None:
    """A path given as option (relative to where pytest was started) or ini key (to the rootdir)."""
    option = config.getoption(name)
    if option:
        return (config.invocation_params.dir / str(option)).resolve()
    ini = str(config.getini(name) or "")
    return (config.rootpath / ini).resolve() if ini else None


class PcieFailure(Exception):
    """A case did not give what its golden or its expect-error says; ``str()`` is the whole report."""


@dataclass(frozen=True)
class Target:
    """One backend a run compares with goldens; ``label`` ends the test ids when there are several."""

    label: str
    backend: Backend

    @property
    def version(self) -> Version:
        return backend_version(self.backend)


def target_labels(versions: list[str]) -> list[str]:
    """Test-id labels for several targets: their libvirt versions, numbered where two are equal;
    none for a run with a single target, whose ids stay ``case[machine]``."""
    if len(versions) < 2:
        return [""] * len(versions)
    labels = []
    for position, version in enumerate(versions):
        repeat = versions[:position].count(version)
        labels.append(version if repeat == 0 else f"{version}#{repeat + 1}")
    return labels


_SESSION_KEY = pytest.StashKey["PcieSession"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pcie: a pytest-pcie conformance case (added to every case item)")
    session = PcieSession(config, Settings.from_config(config))
    if session.settings.enabled:
        try:
            session.corpus = corpus_from_settings(session.settings)
        except corpus_layers.CorpusError as exc:
            raise pytest.UsageError(str(exc)) from None
        collect_every_layer(config, session.corpus)
    config.stash[_SESSION_KEY] = session
    config.pluginmanager.register(session, "pcie-session")
    # xdist's hooks exist only when xdist is installed; pluggy refuses a plugin implementing an
    # unknown hook, so they live in their own object, registered only beside xdist.
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(session), "pcie-xdist")


def corpus_from_settings(settings: Settings) -> corpus_layers.Corpus:
    """The layers a run reads (the ini keys' folders, or the shipped corpus, then the overlays),
    checked; a :class:`~pytest_pcie.corpus.CorpusError` for anything ambiguous or not writable."""
    base = corpus_layers.Layer("the corpus", settings.cases_root, settings.goldens_root, settings.divergences_file)
    if settings.corpus_name == corpus_layers.BUILTIN:
        base = corpus_layers.builtin_layer()
        if settings.cases_configured and settings.cases_root != base.cases:
            raise corpus_layers.CorpusError(
                f"the ini key pcie_cases names {settings.cases_root}, and --pcie-corpus={corpus_layers.BUILTIN} "
                "the shipped corpus; put your own cases in an overlay (pcie_overlays or --pcie-overlay) instead"
            )
    elif settings.corpus_name is not None:
        raise corpus_layers.CorpusError(
            f"--pcie-corpus={settings.corpus_name!r}: unknown corpus; the shipped one is "
            f"{corpus_layers.BUILTIN!r}, and folders of your own go in --pcie-overlay=DIR"
        )
    overlays = [corpus_layers.overlay_layer(path, given, settings.update) for given, path in settings.overlays]
    corpus = corpus_layers.build_corpus(base, overlays)
    if settings.update or settings.prune:
        reason = corpus.writable_reason()
        if reason is not None:
            prune = reason.replace("--pcie-update-goldens", "--pcie-prune-goldens")
            raise corpus_layers.CorpusError(reason if settings.update else prune)
    return corpus


def collect_every_layer(config: pytest.Config, corpus: corpus_layers.Corpus) -> None:
    """Without paths on the command line, collect every layer's cases too, wherever they are (the
    shipped corpus lives in site-packages, an overlay anywhere); paths given are left alone."""
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        return
    invoked = config.invocation_params.dir
    covered = [(invoked / argument.split("::", 1)[0]).resolve() for argument in config.args]
    for root in corpus.cases_roots:
        if not any(root.is_relative_to(path) for path in covered):
            config.args.append(str(root))


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


def _create(name: str, spec: str) -> Backend:
    """The backend ``name`` for one target: ``spec`` is a reference profile or a libvirt URI."""
    if name == REFERENCE_BACKEND:
        return create_backend(name, BackendSettings(reference_profile=spec))
    return create_backend(name, BackendSettings(libvirt_uri=spec))


@dataclass(eq=False)  # registered as a plugin, so it must stay hashable
class PcieSession:
    """Per-session state: the backend, the known divergences, and what updating wrote."""

    config: pytest.Config
    settings: Settings
    corpus: corpus_layers.Corpus = field(default_factory=lambda: corpus_layers.Corpus(()))
    targets: list[Target] = field(default_factory=list)
    origin: Backend | None = None  # --pcie-upgrade: the older libvirt whose stored XML is upgraded
    unavailable: str | None = None
    headers: list[str] = field(default_factory=list)  # kept after close() for the xdist controller
    divergences: list[Divergence] = field(default_factory=list)
    updates: dict[str, str] = field(default_factory=dict)  # golden path -> UpdateStatus value
    expected_goldens: set[str] = field(default_factory=set)
    collect_errors: int = 0
    orphans: list[str] = field(default_factory=list)
    prune_refused: bool = False  # --pcie-prune-goldens on a run that does not see every case
    worker_headers: set[str] = field(default_factory=set)  # on the xdist controller: what workers ran
    upgrade_added: dict[str, list[str]] = field(default_factory=dict)  # test id -> devices an upgrade added
    deviations: Deviations | None = None  # --pcie-deviations: the fork's declared policy
    deviated: dict[str, str] = field(default_factory=dict)  # test id -> what it was judged against, and why
    rule_titles: dict[str, str] = field(default_factory=dict)  # rules.toml beside the cases folder

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    @property
    def is_controller(self) -> bool:
        return not self.is_worker and self.config.pluginmanager.hasplugin("dsession")

    # --- backend lifetime -------------------------------------------------------------------------

    def get_targets(self) -> list[Target]:
        """The backends, one per URI, created on first use; if any is unavailable, the run fails
        with its one line (and the others are closed again)."""
        if not self.targets and self.unavailable is None:
            try:
                self._create_targets()
            except BackendUnavailable as exc:
                self.close_backend()
                self.unavailable = f"pcie backend {self.settings.backend_name!r} is unavailable: {exc}"
        if not self.targets:
            raise PcieFailure(self.unavailable)
        return self.targets

    def _create_targets(self) -> None:
        name, settings = self.settings.backend_name, self.settings
        redefine_refused = BackendUnavailable(
            f"--pcie-upgrade needs a backend that defines a stored XML unchanged: use --pcie-backend={TRUSTED_BACKEND}"
        )
        if settings.upgrade_from is not None and name == REFERENCE_BACKEND:
            raise redefine_refused
        if settings.upgrade_from is not None:
            self.origin = _create(name, settings.upgrade_from)
            self.headers.append(f"upgrade from: {self.origin.header()}")
        for uri in settings.target_specs:
            # Each backend joins the targets at once, so close_backend reaches it if a later one fails.
            self.targets.append(Target("", _create(name, uri)))
            self.headers.append(self.targets[-1].backend.header())
            self._check_version(self.targets[-1], uri)
        if settings.upgrade_from is not None and not all(hasattr(t.backend, "redefine") for t in self.targets):
            raise redefine_refused
        labels = target_labels([str(target.version) for target in self.targets])
        self.targets = [replace(target, label=label) for target, label in zip(self.targets, labels, strict=True)]

    def _check_version(self, target: Target, uri: str) -> None:
        version = target.version
        if version < BASE_VERSION:
            raise BackendUnavailable(
                f"libvirt {version} at {uri} is older than every golden (the corpus starts at {BASE_VERSION})"
            )

    def target_labels(self) -> list[str]:
        """The test-id label of each target, before any backend exists if need be (an xdist worker
        whose backend is unavailable still collects: its first case then fails with the reason)."""
        if self.targets:
            return [target.label for target in self.targets]
        return target_labels(list(self.settings.target_specs))

    def upgrade_chain_label(self) -> str:
        """``9.0.0>11.3.0>12.8.0``: the versions an upgrade item passes through, for its test id."""
        if self.origin is None or not self.targets:
            return ">".join([str(self.settings.upgrade_from), *self.settings.libvirt_uris])
        return ">".join(str(v) for v in [backend_version(self.origin), *(t.version for t in self.targets)])

    def get_backend(self) -> Backend:
        """The first backend: what the ``pcie_backend`` fixture hands tests."""
        return self.get_targets()[0].backend

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.settings.enabled:
            return
        known = [*backend_names(), UPGRADE_CHECK]
        for divergences_file in self.corpus.divergence_files():
            try:  # an overlay's entries add to the ones below (and may name their cases)
                self.divergences += load_divergences(divergences_file, self.corpus.cases_roots, known)
            except DivergenceError as exc:
                raise pytest.UsageError(str(exc)) from None
        self._load_deviations()
        if self.is_controller:
            return
        try:
            self.get_targets()
        except PcieFailure as exc:
            if not self.is_worker:
                raise pytest.UsageError(str(exc)) from None
            # An xdist worker cannot stop the run from here; its first case fails with the line and
            # sets shouldstop, which xdist passes to the controller ("Interrupted: ...").

    def _load_deviations(self) -> None:
        """Read the deviations file (bad input stops the run with one line, before any case)."""
        settings = self.settings
        self.rule_titles = load_rule_titles(self.corpus.base.cases.parent / "rules.toml")
        if settings.deviation_goldens is not None and settings.deviations_file is None:
            raise pytest.UsageError(
                "--pcie-deviation-goldens (pcie_deviation_goldens) needs the deviations file it belongs to: "
                "add --pcie-deviations FILE"
            )
        if settings.deviation_goldens is not None and settings.deviation_goldens == settings.goldens_root:
            raise pytest.UsageError(
                f"{settings.deviation_goldens}: the deviation goldens must be a folder of the fork's own, "
                "not the shipped goldens; pass another --pcie-deviation-goldens"
            )
        if settings.deviations_file is not None:
            try:
                self.deviations = load_deviations(settings.deviations_file)
            except DeviationError as exc:
                raise pytest.UsageError(str(exc)) from None

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
                "headers": self.headers,
                "upgrade_added": self.upgrade_added,
                "deviated": self.deviated,
            }

    def pytest_unconfigure(self) -> None:
        self.close_backend()  # a run that never reached sessionfinish (internal error) still closes

    def close_backend(self) -> None:
        backends = [target.backend for target in self.targets] + ([self.origin] if self.origin else [])
        self.targets, self.origin = [], None
        for backend in backends:
            backend.close()

    # --- header ------------------------------------------------------------------------------------

    def pytest_report_header(self) -> list[str]:
        if not self.settings.enabled:
            return []
        lines = self.headers or [f"pcie backend: {self.settings.backend_name} (one per xdist worker)"]
        lines = [*lines, *self.corpus_header()]
        if self.known_divergences:
            lines.append(f"pcie known divergences for {self.divergence_subject}: {len(self.known_divergences)}")
        if self.deviations is not None:
            lines.append(f"pcie declared deviations: {self.deviations.summary()} ({self.deviations.path})")
        return lines

    def corpus_header(self) -> list[str]:
        """Where the cases and goldens come from: one line, or one per layer (bottom first) when the
        shipped corpus or an overlay is in play, with the goldens each overlay puts in place of a
        lower layer's."""
        corpus = self.corpus
        if not corpus.layered and not corpus.base.shipped:
            return [f"pcie cases: {corpus.base.cases}, goldens: {corpus.base.goldens}"]
        lines = []
        for layer in corpus.layers:
            cases = sum(1 for _ in corpus_layers.case_ids(layer))
            goldens = sum(1 for _ in golden.find_goldens(layer.goldens))
            line = f"pcie corpus: {layer.label}: {cases} case(s), {goldens} golden(s)"
            overrides = [path.relative_to(layer.goldens).as_posix() for path in corpus.overrides(layer)]
            if overrides:
                shown = ", ".join(overrides[:MAX_HEADER_OVERRIDES])
                more = len(overrides) - MAX_HEADER_OVERRIDES
                shown += f" and {more} more" if more > 0 else ""
                line += f", {len(overrides)} in place of a lower layer's ({shown})"
            if layer.shipped:
                line += f" (pytest-pcie {pytest_pcie.__version__}) at {layer.cases.parent}"
            if layer is corpus.top and self.settings.update:
                line += "; golden updates go here"
            lines.append(line)
        return lines

    @property
    def divergence_subject(self) -> str:
        """What this run's known divergences name: the backend, or the upgrade check."""
        return UPGRADE_CHECK if self.settings.upgrade_from is not None else self.settings.backend_name

    @property
    def known_divergences(self) -> dict[tuple[str, str], Divergence]:
        """The divergences that apply to this run's backend (or upgrade check), by (case id, machine)."""
        mine = [d for d in self.divergences if d.backend == self.divergence_subject]
        return {(d.case_id, d.machine): d for d in mine}

    # --- collection ----------------------------------------------------------------------------------

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if not self.settings.enabled or file_path.name not in (CASE_FILE, INPUT_FILE):
            return None
        if self.corpus.case_layer(file_path) is None:
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
            if not isinstance(item, _CaseOnMachine):
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
        self.worker_headers.update(output["headers"])
        self.upgrade_added.update(output["upgrade_added"])
        self.deviated.update(output.get("deviated", {}))

    # --- goldens at the end ----------------------------------------------------------------------------

    def _finish_goldens(self) -> None:
        """Find (and on request delete) orphan goldens, on a full run of a non-worker only."""
        if self.is_worker or not self.settings.enabled:
            return
        if self.settings.update:
            self._drop_redundant_overrides()
        if not self._is_full_run():
            self.prune_refused = self.settings.prune
            return
        produced = self.expected_goldens
        for layer in self.corpus.layers:
            if layer.installed or corpus_layers.in_site_packages(layer.goldens):
                continue  # an installed corpus is never pruned (nor judged: it is not the user's to fix)
            found = golden.find_goldens(layer.goldens)
            orphans = [str(path) for path in found if golden.golden_key(layer.goldens, path) not in produced]
            self.orphans += orphans
            if self.settings.prune:
                for orphan in orphans:
                    Path(orphan).unlink()

    def _drop_redundant_overrides(self) -> None:
        """After an update: each (case, machine) it wrote keeps each version difference once."""
        roots = [(self.corpus.top.goldens, self.corpus.golden_roots[:-1])]
        if self.settings.deviation_goldens is not None:
            roots.append((self.settings.deviation_goldens, ()))
        for root, below in roots:
            written = [Path(path) for path in self.updates if Path(path).is_relative_to(root)]
            for key in sorted({Path(golden.golden_key(root, path)) for path in written}):
                for path in golden.drop_redundant_overrides(root, key.parent.as_posix(), key.stem, below=below):
                    self.updates[str(path)] = golden.UpdateStatus.REMOVED.value

    def _is_full_run(self) -> bool:
        """True when every case was collected: the run covers every layer's cases folder and selects nothing."""
        option = self.config.option
        selecting = ("keyword", "markexpr", "lf", "deselect", "ignore", "ignore_glob", "stepwise")
        if self.collect_errors or any(getattr(option, name, None) for name in selecting):
            return False
        roots = self.corpus.cases_roots
        covered: set[Path] = set()
        for argument in self.config.args:
            path = (self.config.invocation_params.dir / argument.split("::", 1)[0]).resolve()
            if "::" in argument or any(path != root and path.is_relative_to(root) for root in roots):
                return False
            covered.update(root for root in roots if root.is_relative_to(path))
        return bool(roots) and covered == set(roots)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.settings.enabled or self.is_worker:
            return
        write = terminalreporter.write_line
        for header in sorted(self.worker_headers):
            write(f"xdist workers ran {header}")
        known = self.known_divergences
        if known:
            write(
                f"pcie: {len(known)} known divergence(s) for {self.divergence_subject} (xfail, not passes)"
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
                write(f"review them before committing: git diff {self.shown(str(self.corpus.top.goldens))}/")
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
        if self.upgrade_added:
            terminalreporter.section("pcie upgrade: devices a newer libvirt added (allowed, in free slots)")
            for test_id, added in sorted(self.upgrade_added.items()):
                write(f"  {test_id}: {'; '.join(added)}")
        if self.deviations is not None:
            terminalreporter.section("pcie declared deviations")
            write(
                f"{self.shown(str(self.deviations.path))}: {self.deviations.summary()}: {len(self.deviated)} item(s) "
                "judged against the fork's expectation, every other one against the shipped goldens"
            )
            for test_id, source in sorted(self.deviated.items()):
                write(f"  {test_id}: {source}")
        if self.prune_refused:
            write("pcie: --pcie-prune-goldens deleted nothing: only a full run (no path, -k, -m or --lf selection) may")

    def shown(self, path: str) -> str:
        """``path`` relative to the rootdir when it lies inside it, as people type it."""
        try:
            return str(Path(path).relative_to(self.config.rootpath))
        except ValueError:
            return path


class CaseFile(pytest.File):
    """One case folder (collected through its case.toml, or its input.xml when case.toml is missing)."""

    def __init__(self, *, pcie: PcieSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pcie = pcie

    def collect(self) -> Iterator[pytest.Item]:
        settings = self.pcie.settings
        layer = self.pcie.corpus.case_layer(self.path)
        assert layer is not None  # pytest_collect_file collects only what some layer holds
        try:
            case = load_case(self.path.parent, layer.cases)
        except CaseError as exc:
            raise self.CollectError(str(exc)) from None
        labels = self.pcie.target_labels()
        for machine in case.machines:
            if settings.upgrade_from is not None:
                name = f"{case.case_id}[{machine} upgrade {self.pcie.upgrade_chain_label()}]"
                yield UpgradeItem.from_parent(self, name=name, case=case, machine=machine)
                continue
            for position, label in enumerate(labels):
                name = f"{case.case_id}[{machine}{'@' + label if label else ''}]"
                yield CaseItem.from_parent(self, name=name, case=case, machine=machine, target=position)


class _CaseOnMachine(pytest.Item):
    """What every item of a case on one machine shares: the case, the session, the report shape."""

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
    def golden_key(self) -> str:
        """The (case, machine) this item's goldens belong to, whatever the version."""
        root = self.pcie.corpus.top.goldens
        return golden.golden_key(root, golden.golden_path(root, self.case.case_id, self.machine))

    def _targets(self) -> list[Target]:
        try:
            return self.pcie.get_targets()
        except PcieFailure:
            self.session.shouldstop = self.pcie.unavailable or True
            raise

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | Any:
        if isinstance(excinfo.value, PcieFailure | BackendUnavailable):  # a host without an arch's emulator
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


class CaseItem(_CaseOnMachine):
    """One case on one machine and one backend: run it, check expect-error, compare (or update) the
    golden that holds for the backend's libvirt version."""

    def __init__(self, *, target: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target

    def runtest(self) -> None:
        target = self._targets()[self.target]
        # Predictions of the reference (declared deviations) are made for the release under test.
        with using_profile(profile_for(target.version)):
            self._run_on(target)

    def _run_on(self, target: Target) -> None:
        deviations = self.pcie.deviations
        with applied(deviations):  # the reference backend then models the fork
            outcome = target.backend.run(self.case, self.machine)
        document = normalise(outcome, self.machine)
        version = target.version
        settings = self.pcie.settings
        fork = deviations.expected(self.case, self.machine) if deviations is not None else None
        problems = []
        if fork is None:  # a deviating case's expectation already holds the fork's error, if any
            problems = self._expect_error_problems(outcome.failure.message if outcome.failure else None, version)
        corpus = self.pcie.corpus  # only ever its top layer is written (or the fork's deviation goldens)
        own_root, below = (corpus.top.goldens, corpus.golden_roots[:-1]) if fork is None else (
            settings.deviation_goldens, []
        )
        if settings.update and self.divergence is None and own_root is not None:
            status, path = golden.update_versioned_golden(
                own_root, self.case.case_id, self.machine, version, document, below=below
            )
            self.pcie.updates[str(path)] = status.value
        elif fork is not None:
            assert deviations is not None
            problems += self._deviation_problems(document, version, deviations, fork)
        else:
            problems += self._golden_problems(document, version)
        if problems:
            raise PcieFailure("\n".join(problems + self._write_diff(document, problems, version, fork)))

    def _deviation_problems(
        self, actual: etree._Element, version: Version, deviations: Deviations, fork: etree._Element
    ) -> list[str]:
        """Judge a case the declared deviations change: against the fork's own golden for it when
        there is one, else against the reference's prediction under the fork's policy."""
        causes = ", ".join(deviations.causes(self.case, self.machine)) or deviations.summary()
        expected, source = fork, f"the reference's prediction with {causes}"
        root = self.pcie.settings.deviation_goldens
        found = None
        if root is not None:
            try:
                found = golden.resolve_golden(root, self.case.case_id, self.machine, version)
                if found is not None:
                    expected = golden.read_golden(found[1])
            except golden.GoldenError as exc:
                return [str(exc)]
        if found is not None:
            source = f"{self.pcie.shown(str(found[1]))} (the fork's golden; deviates by {causes})"
        self.pcie.deviated[self.name] = source
        if golden.canonical_text(expected) == golden.canonical_text(actual):
            return []
        return [
            f"{self.case.case_id} on {self.machine} with libvirt {version} differs from {source}, "
            f"declared in {self.pcie.shown(str(deviations.path))}:",
            *self._rule_lines(actual),
            *golden.describe_mismatch(expected, actual),
        ]

    def _rule_lines(self, actual: etree._Element) -> list[str]:
        """Which policy parameter the result would follow, in the words of its rule, and the rules
        the case pins (from rules.toml beside the cases, when it is there)."""
        declared = self.pcie.deviations.policy if self.pcie.deviations is not None else None
        titles = self.pcie.rule_titles
        lines = []
        for explanation in explain(self.case, self.machine, actual, declared):
            lines += explanation.lines(titles, declared)
        if self.case.rules:
            pinned = ", ".join(f'{rule} ("{titles[rule]}")' if titles.get(rule) else rule for rule in self.case.rules)
            lines.append(f"rules this case pins: {pinned}")
        return lines

    def _golden_for(self, version: Version) -> Path | None:
        found = golden.resolve_golden(self.pcie.corpus.golden_roots, self.case.case_id, self.machine, version)
        return None if found is None else found[1]

    def _write_diff(
        self, actual: etree._Element, problems: list[str], version: Version, fork: etree._Element | None = None
    ) -> list[str]:
        """Pictures for --pcie-diff-dir; a known divergence (xfail) needs no attention, so gets none.

        Returns a line for the report when the pictures cannot be written: the verdict stands either way.
        """
        diff_dir = self.pcie.settings.diff_dir
        if diff_dir is None or self.divergence is not None:
            return []
        try:
            path = self._golden_for(version)
            expected = golden.read_golden(path) if path is not None else None
        except golden.GoldenError:
            expected = None
        if fork is not None:
            expected = fork
        backend = self.pcie.settings.backend_name
        try:
            diffdir.write_diff(diff_dir, self.case.case_id, self.machine, expected, actual, problems, backend)
        except OSError as exc:
            return [f"--pcie-diff-dir: cannot write to {diff_dir} ({exc.strerror}); pass a writable folder"]
        return []

    def _expect_error_problems(self, message: str | None, version: Version) -> list[str]:
        wanted = self.case.expect_error_for(version)
        if wanted is None or (message is not None and wanted in message):
            return []
        got = "the run succeeded" if message is None else f"it failed with: {message}"
        return [f"case.toml says expect-error = {wanted!r} for libvirt {version}, but {got}"]

    def _golden_problems(self, actual: etree._Element, version: Version) -> list[str]:
        update_hint = self._update_hint()
        try:
            path = self._golden_for(version)
        except golden.GoldenError as exc:
            return [str(exc)]
        if path is None:
            wanted = golden.golden_path(self.pcie.corpus.top.goldens, self.case.case_id, self.machine, version)
            return [
                f"no golden for libvirt {version}: {self.pcie.shown(str(wanted))} (or one of an older version) "
                f"is missing; create it from real libvirt {version} with {update_hint}"
            ]
        shown = self.pcie.shown(str(path))
        try:
            expected = golden.read_golden(path)
        except golden.GoldenError as exc:
            return [str(exc)]
        if golden.canonical_text(expected) == golden.canonical_text(actual):
            return []
        provenance = self._provenance(path, version)
        lines = [
            f"{self.case.case_id} on {self.machine} with libvirt {version} differs from {shown}{provenance}:",
            *self._rule_lines(actual),
            *golden.describe_mismatch(expected, actual),
        ]
        lines.append(f"if real libvirt {version} agrees with the actual result: {update_hint}")
        return lines


    def _update_hint(self) -> str:
        """The command that records what this case gave, into the layer updates write to."""
        corpus, config = self.pcie.corpus, self.config
        if not corpus.layered and not corpus.base.shipped:
            return f"pytest --pcie-backend=libvirt --pcie-update-goldens {self.pcie.shown(str(self.case.folder))}"
        flags = [f"--pcie-corpus={name}" for name in [config.getoption("pcie_corpus")] if name]
        flags += [f"--pcie-overlay={given}" for given in config.getoption("pcie_overlay") or []]
        if corpus.writable_reason() is not None:
            flags.append("--pcie-overlay=DIR")  # never into the installed package
        return f"pytest {' '.join(flags)} --pcie-backend=libvirt --pcie-update-goldens -k {self.case.case_id!r}"

    def _provenance(self, path: Path, version: Version) -> str:
        """With several layers: which one the golden came from, and what it stands in for."""
        corpus = self.pcie.corpus
        layer = corpus.golden_layer(path)
        if not corpus.layered or layer is None:
            return ""
        position = corpus.layers.index(layer)
        below = golden.resolve_golden(corpus.golden_roots[:position], self.case.case_id, self.machine, version)
        where = f" (from {layer.label}"
        if below is not None:
            lower = corpus.golden_layer(below[1])
            where += f", in place of {self.pcie.shown(str(below[1]))} of {lower.label if lower else 'a lower layer'}"
        return where + ")"


class UpgradeItem(_CaseOnMachine):
    """One case on one machine under ``--pcie-upgrade``: what the older libvirt stored must come
    back from each newer one with every device and controller where it was."""

    def runtest(self) -> None:
        targets = self._targets()
        origin = self.pcie.origin
        assert origin is not None
        outcome = origin.run(self.case, self.machine)
        previous = backend_version(origin)
        if outcome.domain_xml is None:
            pytest.skip(f"libvirt {previous} refuses the define, so it stores nothing to upgrade")
        stored = outcome.domain_xml
        problems: list[str] = []
        added: list[str] = []
        for target in targets:
            redefine = getattr(target.backend, "redefine", None)
            if redefine is None:
                raise PcieFailure(f"backend {target.backend.name!r} cannot define a stored XML unchanged")
            answer: Outcome = redefine(stored)
            hop = f"{previous} -> {target.version}"
            if answer.domain_xml is None:
                message = answer.failure.message if answer.failure else "no XML"
                problems.append(f"{hop}: libvirt {target.version} refuses what {previous} stored: {message}")
                break
            for change in compare_stored(stored, answer.domain_xml, self.machine):
                (problems if change.kind.breaks else added).append(f"{hop}: {change}")
            stored, previous = answer.domain_xml, target.version
        if added:
            self.pcie.upgrade_added[self.nodeid] = added
        if problems:
            heading = f"{self.case.case_id} on {self.machine} does not survive the upgrade:"
            raise PcieFailure("\n".join([heading, *problems]))
