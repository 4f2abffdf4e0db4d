"""Run one example on two backends and say whether, and how, they disagree.

Both outcomes go through the project's one normaliser (:func:`pytest_pcie.normalise.normalise`) and
are compared on the canonical text goldens are judged by (:func:`pytest_pcie.golden.canonical_text`),
so "the fuzzer agrees" means exactly "a golden made by either backend would pass on the other".
An exception other than a refusal (the reference's NotImplementedError, a broken connection) is a
crash, counted apart from disagreements: it says the backend is unfinished or broken, not wrong.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, fields
from enum import Enum

from lxml import etree

from pytest_pcie.backends.base import Backend
from pytest_pcie.cases import Case
from pytest_pcie.fuzz.example import Example, as_case
from pytest_pcie.golden import canonical_text, describe_changes, pair_devices
from pytest_pcie.normalise import DEVICES_TAG, FAILURE_TAG, normalise
from pytest_pcie.outcome import Outcome

NEVER = 1 << 30  # the step number of a failure that did not happen


class Verdict(Enum):
    AGREED = "agreed"
    DISAGREED = "disagreed"
    REFERENCE_CRASH = "reference-crash"
    LIBVIRT_CRASH = "libvirt-crash"


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """The verdict on one case, what disagreed in words, and a key to group alike disagreements.

    ``kind`` is coarse (``topology``, ``failure ...``, ``crash ...``) and is what the shrinker
    preserves; ``signature`` adds the masked wording, to write one case folder per distinct problem.
    """

    verdict: Verdict
    kind: str
    lines: tuple[str, ...] = ()
    reference_text: str | None = None
    libvirt_text: str | None = None
    libvirt_error: str | None = None

    @property
    def agreed(self) -> bool:
        return self.verdict is Verdict.AGREED

    @property
    def signature(self) -> str:
        return " | ".join([self.kind, *sorted({mask(line) for line in self.lines})])

    def sentence(self, limit: int = 3) -> str:
        """One sentence for a case description, e.g. ``reference puts interface #1 at 01:00.0, libvirt at 02:00.0``."""
        shown = list(self.lines[:limit])
        if self.verdict is Verdict.REFERENCE_CRASH:
            return "; ".join(self.lines)
        more = len(self.lines) - len(shown)
        return "; ".join(shown) + (f"; and {more} more difference(s)" if more > 0 else "")


@dataclass(frozen=True, kw_only=True)
class Comparison(Judgement):
    """A judgement on a random example, which the shrinker and the writer work from."""

    example: Example


def mask(text: str) -> str:
    """``text`` with numbers replaced, so alike disagreements at different addresses group together."""
    return re.sub(r"\b\w*\d\w*\b", "N", text)


def compare(example: Example, reference: Backend, libvirt: Backend) -> Comparison:
    """Run ``example`` on both backends and compare their normalised outcomes."""
    judgement = judge(as_case(example), example.machine, reference, libvirt)
    return Comparison(example=example, **{field.name: getattr(judgement, field.name) for field in fields(judgement)})


def judge(case: Case, machine: str, reference: Backend, libvirt: Backend) -> Judgement:
    """Run ``case`` on ``machine`` on both backends and compare their normalised outcomes."""
    ref_outcome, ref_crash = _run(reference, case, machine)
    lv_outcome, lv_crash = _run(libvirt, case, machine)
    if lv_crash is not None:
        return Judgement(verdict=Verdict.LIBVIRT_CRASH, kind=f"crash {lv_crash[0]}",
                         lines=(f"libvirt backend raised {lv_crash[1]}",))  # fmt: skip
    assert lv_outcome is not None
    lv_doc = normalise(lv_outcome, machine)
    lv_text = canonical_text(lv_doc)
    lv_error = lv_outcome.failure.message if lv_outcome.failure else None
    lines: tuple[str, ...]
    if ref_crash is not None:
        lines = (f"reference raised {ref_crash[1]}", f"libvirt {_libvirt_result(lv_outcome)}")
        return Judgement(verdict=Verdict.REFERENCE_CRASH, kind=f"crash {ref_crash[0]}", lines=lines,
                         libvirt_text=lv_text, libvirt_error=lv_error)  # fmt: skip
    assert ref_outcome is not None
    ref_doc = normalise(ref_outcome, machine)
    ref_text = canonical_text(ref_doc)
    if ref_text == lv_text:
        return Judgement(verdict=Verdict.AGREED, kind="agreed", reference_text=ref_text, libvirt_text=lv_text,
                         libvirt_error=lv_error)  # fmt: skip
    lines = _failure_lines(ref_doc.find(FAILURE_TAG), lv_doc.find(FAILURE_TAG))
    if lines:
        kind = _failure_kind(ref_outcome, lv_outcome)
    else:
        kind = "topology"
        lines = tuple(_device_lines(ref_doc.find(DEVICES_TAG), lv_doc.find(DEVICES_TAG))) or ("outcomes differ",)
    return Judgement(verdict=Verdict.DISAGREED, kind=kind, lines=lines, reference_text=ref_text,
                     libvirt_text=lv_text, libvirt_error=lv_error)  # fmt: skip


def _run(backend: Backend, case: Case, machine: str) -> tuple[Outcome | None, tuple[str, str] | None]:
    """The backend's outcome, or the crash (exception type, one-line text) instead."""
    try:
        return backend.run(case, machine), None
    except Exception as exc:  # a crash is a finding, not the fuzzer's failure
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        return None, (type(exc).__name__, f"{text} (at {_where(exc)})")


def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback, ``path:line``: enough to find the broken assertion."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown place"
    last = frames[-1]
    return f"{last.filename.split('/pytest_pcie/')[-1]}:{last.lineno}"


def _libvirt_result(outcome: Outcome) -> str:
    if outcome.failure is None:
        return "succeeded"
    return f"refused {outcome.failure.label} with {outcome.failure.message!r}"


def _failure_kind(reference: Outcome, libvirt: Outcome) -> str:
    """The failure that matters: the earlier one, and only that side's message when they differ in step.

    What the other backend does after getting further is a consequence, not the finding, so the
    shrinker may drop it (e.g. the later steps after a define libvirt refuses).  Steps are named by
    what they do (``attach disk``), not their number, so earlier steps can be dropped too.
    """
    ref_step = reference.failure.step if reference.failure is not None else NEVER
    lv_step = libvirt.failure.step if libvirt.failure is not None else NEVER
    if ref_step < lv_step:
        return f"failure reference={_step_name(reference)}:{_masked(reference)} libvirt=further"
    if lv_step < ref_step:
        return f"failure libvirt={_step_name(libvirt)}:{_masked(libvirt)} reference=further"
    return f"failure {_step_name(libvirt)} reference={_masked(reference)} libvirt={_masked(libvirt)}"


def _step_name(outcome: Outcome) -> str:
    """``attach step-4-disk.xml`` -> ``attach disk``; ``define`` and ``start`` stay as they are."""
    label = outcome.failure.label if outcome.failure is not None else ""
    return re.sub(r"step-\d+-(\w+)\.xml", r"\1", label)


def _masked(outcome: Outcome) -> str:
    return mask(outcome.failure.message) if outcome.failure is not None else ""


def _failure_lines(reference: etree._Element | None, libvirt: etree._Element | None) -> tuple[str, ...]:
    """Words for a failure mismatch, or nothing when both failed (or both succeeded) alike."""

    def said(failure: etree._Element | None) -> tuple[str, str, str] | None:
        if failure is None:
            return None
        return failure.get("step", "?"), failure.get("label", "?"), failure.text or ""

    ref, lv = said(reference), said(libvirt)
    if ref == lv:
        return ()
    if ref is None and lv is not None:
        return (f"libvirt refuses {lv[1]} with {lv[2]!r}, reference accepts it",)
    if lv is None and ref is not None:
        return (f"reference refuses {ref[1]} with {ref[2]!r}, libvirt accepts it",)
    assert ref is not None and lv is not None
    if ref[0] != lv[0]:
        return (f"reference refuses {ref[1]} with {ref[2]!r}, libvirt refuses {lv[1]} with {lv[2]!r}",)
    return (f"both refuse {lv[1]}, reference with {ref[2]!r}, libvirt with {lv[2]!r}",)


def _device_lines(reference: etree._Element | None, libvirt: etree._Element | None) -> list[str]:
    """Words for a topology mismatch, pairing devices exactly as golden explanations do.

    libvirt is the side that is right (the expected one), so its order leads and its labels name
    paired devices; an address gets its own wording because a misplaced device is the usual finding.
    """
    if reference is None or libvirt is None:
        return []
    lines = []
    for pair in pair_devices(libvirt, reference):
        theirs, ours = pair.expected, pair.actual
        if ours is None:
            lines.append(f"libvirt has {pair.label}{_at(theirs)}, reference does not")
        elif theirs is None:
            lines.append(f"reference has {pair.label}{_at(ours)}, libvirt does not")
        elif _address(ours) != _address(theirs):
            lines.append(f"reference puts {pair.label} at {_address(ours)}, libvirt at {_address(theirs)}")
        elif canonical_text(ours) != canonical_text(theirs):
            changes = ", ".join(describe_changes(theirs, ours))
            lines.append(f"{pair.label}: {changes} (expected = libvirt, got = reference)")
    return lines


def _address(device: etree._Element) -> str:
    address = device.find("address")
    if address is None:
        return "no address"
    text = "{}:{}.{}".format(*(address.get(name, "?").removeprefix("0x") for name in ("bus", "slot", "function")))
    return text + (f" multifunction={address.get('multifunction')}" if address.get("multifunction") else "")


def _at(device: etree._Element | None) -> str:
    return f" at {_address(device)}" if device is not None and device.find("address") is not None else ""
