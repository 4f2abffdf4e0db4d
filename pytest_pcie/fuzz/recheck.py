"""Re-run case folders the fuzzer wrote, to see which disagreements the reference has since fixed.

The reference changes faster than the folders are triaged; ``pcie-fuzz --recheck DIR`` says which
written folders still disagree before someone spends time turning one into a corpus case.  The
folders name shmem devices as the fuzzer does, so their /dev/shm files are removed at the end too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pytest_pcie.backends.base import Backend
from pytest_pcie.cases import find_case_folders, load_case
from pytest_pcie.fuzz.differ import Judgement, judge
from pytest_pcie.fuzz.shared_memory import SHM_DIR, SharedMemory


@dataclass(frozen=True)
class Rechecked:
    case_id: str
    machine: str
    judgement: Judgement

    def line(self) -> str:
        if self.judgement.agreed:
            return f"agrees     {self.case_id} ({self.machine})"
        return f"disagrees  {self.case_id} ({self.machine}): {self.judgement.sentence(1)}"


def recheck(root: Path, reference: Backend, libvirt: Backend, shm_dir: Path | None = SHM_DIR) -> Iterator[Rechecked]:
    """Judge every case folder under ``root`` on every machine it names (raises CaseError on a bad folder).

    The /dev/shm files the guests created are removed when the iteration ends, however it ends
    (``shm_dir`` None: leave shared memory alone).
    """
    shared = SharedMemory(shm_dir)
    try:
        for folder in find_case_folders(root):
            case = load_case(folder, root)
            for machine in case.machines:
                absent = shared.before([case.input_xml, *(step.device_xml for step in case.steps)])
                try:
                    judgement = judge(case, machine, reference, libvirt)
                finally:
                    shared.after(absent)
                yield Rechecked(case.case_id, machine, judgement)
    finally:
        shared.remove()
