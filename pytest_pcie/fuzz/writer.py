"""Write a (shrunk) disagreement as a ready-to-use case folder.

The folder is a normal case folder (the plugin and :func:`load_case` read it as is); its description
says what disagreed, and ``disagreement.txt`` beside it keeps both normalised outcomes so whoever
turns it into a corpus case sees the evidence without re-running anything.  Folder names are stable
(machine, operation, kind and a hash of the signature), so a replayed run rewrites the same folders.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pytest_pcie.fuzz.differ import Comparison, Verdict
from pytest_pcie.fuzz.example import write_case_folder

EVIDENCE_FILE = "disagreement.txt"


def folder_name(comparison: Comparison) -> str:
    """``q35-attach-live-topology-1a2b3c4d``: readable, and unique per distinct disagreement."""
    example = comparison.example
    digest = hashlib.sha256(comparison.signature.encode("utf-8")).hexdigest()[:8]
    kind = re.sub(r"[^a-z0-9]+", "-", comparison.kind.split(" ", 1)[0].lower()).strip("-")
    return f"{example.machine}-{example.operation.value}-{kind}-{digest}"


def description(comparison: Comparison, seed: int | None = None) -> str:
    """What the case pins, in one sentence, and where it came from."""
    origin = f"pcie-fuzz --seed {seed}" if seed is not None else "pcie-fuzz"
    what = "backend crash" if comparison.verdict is not Verdict.DISAGREED else "reference and libvirt disagree"
    return f"Found by {origin} ({what}): {comparison.sentence()}"


def write_disagreement(comparison: Comparison, out: Path, seed: int | None = None) -> Path:
    """Write ``comparison``'s example under ``out`` and return the case folder."""
    folder = out / folder_name(comparison)
    for stale in folder.glob("step-*.xml"):  # a replay may shrink to fewer steps than last time
        stale.unlink()
    expect_error = comparison.libvirt_error if comparison.kind.startswith("failure") else None
    write_case_folder(comparison.example, folder, description(comparison, seed), expect_error)
    evidence = [
        f"verdict: {comparison.verdict.value}",
        f"kind: {comparison.kind}",
        f"example: {comparison.example.summary()}",
        "",
        "what disagreed:",
        *(f"  {line}" for line in comparison.lines),
        "",
        "libvirt (normalised):",
        comparison.libvirt_text or "  (none: the libvirt backend crashed)",
        "reference (normalised):",
        comparison.reference_text or "  (none: the reference crashed)",
    ]
    (folder / EVIDENCE_FILE).write_text("\n".join(evidence) + "\n", encoding="utf-8")
    return folder
