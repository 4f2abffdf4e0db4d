"""Known divergences: cases on which a backend is known to differ from the goldens, written down.

The file (``known-divergences.toml``, named by the ini key ``pcie_known_divergences``) holds::

    [[divergence]]
    case = "q35/e1000-gets-bridge"      # case id: folder relative to the cases root
    machine = "q35"
    backend = "reference"
    reason = "the reference does not model pcie-to-pci-bridge placement yet"

The plugin turns each entry into a strict xfail for that backend only, so fixing the divergence
makes the test fail until the entry is removed.  Entries must name a case and machine that exist:
a stale entry would silently excuse nothing, so it is an error.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_pcie.cases import CASE_FILE, CaseError, load_case

KEYS = ("case", "machine", "backend", "reason")


class DivergenceError(Exception):
    """The known-divergences file is malformed or stale; ``str()`` names the file, the entry and the fix."""


@dataclass(frozen=True)
class Divergence:
    """One entry: on ``backend``, case ``case_id`` on ``machine`` is expected to differ, because ``reason``."""

    case_id: str
    machine: str
    backend: str
    reason: str


def load_divergences(
    path: Path, cases_root: Path | Sequence[Path], backends: Collection[str] = ()
) -> list[Divergence]:
    """Read and check ``path``; every entry must name an existing case and one of its machines.

    With several cases folders (an overlay's entries may name a case of the corpus below it), the
    case may be in any of them.

    When ``backends`` is given, an entry must also name one of them: a misspelt backend would
    excuse nothing, silently.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DivergenceError(f"{path}: file not found; create it or fix the ini key pcie_known_divergences") from None
    except tomllib.TOMLDecodeError as exc:
        raise DivergenceError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("divergence", [])
    unknown = sorted(set(data) - {"divergence"})
    if unknown or not isinstance(entries, list):
        raise DivergenceError(f"{path}: only [[divergence]] tables are allowed here, found {unknown or ['divergence']}")
    roots = [cases_root] if isinstance(cases_root, Path) else list(cases_root)
    divergences = [_read_entry(path, number, entry, roots) for number, entry in enumerate(entries, start=1)]
    for number, divergence in enumerate(divergences, start=1):
        if backends and divergence.backend not in backends:
            known = ", ".join(backends)
            raise DivergenceError(
                f"{path}: divergence #{number}: unknown backend {divergence.backend!r}; use one of: {known}"
            )
    return divergences


def _read_entry(path: Path, number: int, entry: object, cases_roots: Sequence[Path]) -> Divergence:
    where = f"{path}: divergence #{number}"
    if not isinstance(entry, dict) or set(entry) != set(KEYS):
        raise DivergenceError(f"{where}: needs exactly the keys {', '.join(KEYS)}")
    values = {key: entry[key] for key in KEYS}
    if not all(isinstance(value, str) and value.strip() for value in values.values()):
        raise DivergenceError(f"{where}: every key needs a non-empty string")
    divergence = Divergence(values["case"], values["machine"], values["backend"], values["reason"])
    holders = [root for root in cases_roots if (root / divergence.case_id / CASE_FILE).is_file()]
    if not holders:
        searched = " or ".join(str(root) for root in cases_roots)
        raise DivergenceError(
            f"{where}: case {divergence.case_id!r} does not exist under {searched}; remove the entry"
        )
    cases_root = holders[0]
    folder = cases_root / divergence.case_id
    try:
        case = load_case(folder, cases_root)
    except CaseError:
        return divergence  # the broken case is reported at collection; the entry itself is fine
    if divergence.machine not in case.machines:
        raise DivergenceError(
            f"{where}: case {divergence.case_id!r} does not run on machine {divergence.machine!r}; remove the entry"
        )
    return divergence
