"""The fuzzer's view of :mod:`pytest_pcie.backends.shared_memory`: only names it generates count.

A pass removes the /dev/shm files its live examples' ivshmem-plain devices made QEMU create, by the
rules of that module; on top of them, only names the catalogue generates
(:data:`pytest_pcie.fuzz.catalogue.SHMEM_PREFIX`) are ever candidates, so a name a user wrote in a
case folder that ``--recheck`` runs is left alone.  This keeps no journal: a killed pass's guests
ran through the libvirt backend, whose journal lets the next backend remove their files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pytest_pcie.backends import shared_memory
from pytest_pcie.backends.shared_memory import GUESTS_GONE_WAIT, PROC_DIR, SHM_DIR
from pytest_pcie.fuzz.catalogue import SHMEM_PREFIX

__all__ = ["GUESTS_GONE_WAIT", "SHM_DIR", "SharedMemory", "shmem_names"]


def shmem_names(xml_texts: Iterable[str]) -> set[str]:
    """The shmem names the fuzzer generated in these domain or device XML texts."""
    return shared_memory.shmem_names(xml_texts, SHMEM_PREFIX)


class SharedMemory(shared_memory.SharedMemory):
    """The shared-memory files one pass's guests created; see the base class for how to drive it."""

    def __init__(self, directory: Path | None = SHM_DIR, proc: Path = PROC_DIR) -> None:
        super().__init__(directory, proc, prefix=SHMEM_PREFIX)
