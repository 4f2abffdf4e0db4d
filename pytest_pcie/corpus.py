"""Where a run's cases and goldens come from: the shipped corpus and the overlays stacked on it.

A *layer* is a folder laid out like this repository: ``cases/``, ``golden/`` and, optionally,
``known-divergences.toml``.  A run reads one base layer (the project's own folders from the ini
keys, or with ``--pcie-corpus=builtin`` the corpus shipped inside the package) and any number of
overlays on top of it:

- an overlay's cases add to the corpus; a case id that two layers both hold is an error, because
  which of the two should run is anybody's guess;
- an overlay's goldens override the ones below it file by file, so case by case, machine by machine
  and version by version (``q35@11.3.0.xml`` in an overlay replaces only that version's file);
- an overlay's known divergences add to the ones below;
- golden updates write only into the top layer, and never into an installed package.

Nothing here knows about pytest; every mistake a user can make is a :class:`CorpusError` whose
text is one line naming the folder and the fix.
"""

from __future__ import annotations

import site
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_pcie import golden
from pytest_pcie.cases import find_case_folders

BUILTIN = "builtin"  # the value of --pcie-corpus / pcie_corpus that names the shipped corpus
CASES_DIR = "cases"
GOLDENS_DIR = "golden"
DIVERGENCES_FILE = "known-divergences.toml"
# Inside an installed wheel the corpus sits here (pyproject.toml maps the top-level folders to it).
PACKAGED = Path(__file__).resolve().parent / "builtin"
# In a checkout (or an editable install) it is the repository's own top-level folders.
CHECKOUT = Path(__file__).resolve().parent.parent


class CorpusError(Exception):
    """A corpus or overlay folder cannot be used as given; ``str()`` names it and the fix."""


@dataclass(frozen=True)
class Layer:
    """One folder of cases and goldens; ``label`` is how reports name it."""

    label: str
    cases: Path
    goldens: Path
    divergences: Path | None = None
    installed: bool = False  # inside an installed package: read, never written

    @property
    def shipped(self) -> bool:
        return self.label == SHIPPED_LABEL


SHIPPED_LABEL = "the shipped corpus"


def builtin_layer() -> Layer:
    """The corpus shipped with pytest-pcie: from the wheel's data, else from the checkout it runs in."""
    for root, installed in ((PACKAGED, True), (CHECKOUT, False)):
        cases, goldens = root / CASES_DIR, root / GOLDENS_DIR
        if cases.is_dir() and goldens.is_dir() and (installed or (root / "pyproject.toml").is_file()):
            divergences = root / DIVERGENCES_FILE
            return Layer(SHIPPED_LABEL, cases, goldens, divergences if divergences.is_file() else None, installed)
    raise CorpusError(
        f"--pcie-corpus={BUILTIN}: this installation of pytest-pcie carries no corpus (no {PACKAGED}); "
        "install pytest-pcie from its wheel, or run in a checkout of its repository"
    )


def overlay_layer(folder: Path, given: str, updating: bool = False) -> Layer:
    """The overlay in ``folder`` (``given`` is how the user spelt it, for the error text).

    An empty folder is refused (it is most likely the wrong one, say a fork's repository instead of
    its overlay inside), except by a run that updates goldens: that is how an overlay starts.
    """
    where = f"overlay {given!r} ({folder})"
    if not folder.exists():
        raise CorpusError(f"{where} does not exist; give a folder holding {CASES_DIR}/ and/or {GOLDENS_DIR}/")
    if not folder.is_dir():
        raise CorpusError(f"{where} is not a folder; give a folder holding {CASES_DIR}/ and/or {GOLDENS_DIR}/")
    cases, goldens, divergences = folder / CASES_DIR, folder / GOLDENS_DIR, folder / DIVERGENCES_FILE
    if not (updating or cases.is_dir() or goldens.is_dir() or divergences.is_file()):
        raise CorpusError(
            f"{where} holds none of {CASES_DIR}/, {GOLDENS_DIR}/ or {DIVERGENCES_FILE}; "
            "lay it out like the pytest-pcie repository (docs/forks.md)"
        )
    return Layer(f"overlay {folder}", cases, goldens, divergences if divergences.is_file() else None)


def in_site_packages(path: Path) -> bool:
    """True when ``path`` lies in an installation's package folders (where nothing is to be written)."""
    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    resolved = path.resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots if root)


@dataclass(frozen=True)
class Corpus:
    """The layers of a run, bottom first."""

    layers: tuple[Layer, ...]

    @property
    def base(self) -> Layer:
        return self.layers[0]

    @property
    def top(self) -> Layer:
        """Where golden updates go."""
        return self.layers[-1]

    @property
    def layered(self) -> bool:
        return len(self.layers) > 1

    @property
    def golden_roots(self) -> tuple[Path, ...]:
        return tuple(layer.goldens for layer in self.layers)

    @property
    def cases_roots(self) -> tuple[Path, ...]:
        return tuple(layer.cases for layer in self.layers if layer.cases.is_dir())

    def case_layer(self, path: Path) -> Layer | None:
        """The layer whose cases folder holds ``path``, if any."""
        resolved = path.resolve()
        for layer in reversed(self.layers):
            if resolved.is_relative_to(layer.cases):
                return layer
        return None

    def golden_layer(self, path: Path) -> Layer | None:
        """The layer whose goldens folder holds ``path``, if any."""
        for layer in reversed(self.layers):
            if path.is_relative_to(layer.goldens):
                return layer
        return None

    def divergence_files(self) -> list[Path]:
        return [layer.divergences for layer in self.layers if layer.divergences is not None]

    def writable_reason(self) -> str | None:
        """Why golden updates cannot go into the top layer (None when they can)."""
        top = self.top
        if top.installed or in_site_packages(top.goldens):
            return (
                f"--pcie-update-goldens would write into the installed package at {top.goldens}; "
                "give your own folder with --pcie-overlay=DIR and the goldens are written there"
            )
        return None

    def check(self) -> None:
        """Refuse what would make a run ambiguous, before any case runs: nested layers, a case id two
        layers hold, and an overlay golden folder that names no case of any layer."""
        if not self.layered:
            return  # one layer cannot clash with itself, and a run without overlays pays no scan
        self._check_nesting()
        owners: dict[str, Layer] = {}
        for layer in self.layers:
            for case_id in case_ids(layer):
                other = owners.get(case_id)
                if other is not None:
                    raise CorpusError(
                        f"{layer.cases / case_id}: case {case_id!r} is also in {other.label} ({other.cases}); "
                        "an overlay adds cases and overrides goldens, so rename its folder (or drop it and keep "
                        "only the golden override)"
                    )
                owners[case_id] = layer
        for layer in self.layers[1:]:
            for folder in golden_case_folders(layer):
                case_id = folder.relative_to(layer.goldens).as_posix()
                if case_id not in owners:
                    raise CorpusError(
                        f"{folder}: these goldens of {layer.label} override no case (no layer has a case "
                        f"{case_id!r}); fix the folder name or delete it"
                    )

    def _check_nesting(self) -> None:
        for position, layer in enumerate(self.layers):
            for other in self.layers[:position]:
                for mine, theirs in ((layer.cases, other.cases), (layer.goldens, other.goldens)):
                    if mine.is_relative_to(theirs) or theirs.is_relative_to(mine):
                        raise CorpusError(
                            f"{layer.label}: its {mine.name}/ and the one of {other.label} ({theirs}) overlap; "
                            "give an overlay a folder of its own, outside the corpus"
                        )

    def overrides(self, layer: Layer) -> list[Path]:
        """The golden files of ``layer`` that take the place of a lower layer's file of the same name."""
        below = self.layers[: self.layers.index(layer)]
        found = []
        for path in golden.find_goldens(layer.goldens):
            relative = path.relative_to(layer.goldens)
            if any((lower.goldens / relative).is_file() for lower in below):
                found.append(path)
        return found


def case_ids(layer: Layer) -> Iterable[str]:
    if layer.cases.is_dir():
        for folder in find_case_folders(layer.cases):
            yield folder.relative_to(layer.cases).as_posix()


def golden_case_folders(layer: Layer) -> list[Path]:
    """The folders of ``layer``'s goldens that hold golden files directly (one per case)."""
    return sorted({path.parent for path in golden.find_goldens(layer.goldens)})


def build_corpus(base: Layer, overlays: Sequence[Layer]) -> Corpus:
    """Stack ``overlays`` on ``base`` and check the result (:meth:`Corpus.check`)."""
    corpus = Corpus((base, *overlays))
    corpus.check()
    return corpus
