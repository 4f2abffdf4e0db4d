"""Re-run case folders the fuzzer wrote, to see which disagreements the reference has since fixed.

The reference changes faster than the folders are triaged; ``pcie-fuzz --recheck DIR`` says which
written folders still disagree before someone spends time turning one into a corpus case.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pytest_pcie.backends.base import Backend
from pytest_pcie.cases import find_case_folders, load_case
from pytest_pcie.fuzz.differ import Judgement, judge


@dataclass(frozen=True)
class Rechecked:
    case_id: str
    machine: str
    judgement: Judgement

    def line(self) -> str:
        if self.judgement.agreed:
            return f"agrees     {self.case_id} ({self.machine})"
        return f"disagrees  {self.case_id} ({self.machine}): {self.judgement.sentence(1)}"


def recheck(root: Path, reference: Backend, libvirt: Backend) -> Iterator[Rechecked]:
    """Judge every case folder under ``root`` on every machine it names (raises CaseError on a bad folder)."""
    for folder in find_case_folders(root):
        case = load_case(folder, root)
        for machine in case.machines:
            yield Rechecked(case.case_id, machine, judge(case, machine, reference, libvirt))
