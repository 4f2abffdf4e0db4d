"""Removing the shared-memory files that a fuzz run's shmem devices made QEMU create.

libvirt 9.0.0 backs an ivshmem-plain device with QEMU's ``memory-backend-file`` at
``/dev/shm/<name>`` (``mem-path`` in the guest's command line, at start and at hotplug alike), and
neither QEMU nor libvirt removes that file when the guest stops.  Every live example drawing a
shmem device would leave 4 MiB in /dev/shm behind, for good.

What is removed is narrow on purpose, because other runs (another fuzz pass, the conformance suite,
anybody's guest) may use /dev/shm at the same time and the fuzzer's names are not unique to a run:

* only names the catalogue generates (:data:`pytest_pcie.fuzz.catalogue.SHMEM_PREFIX`);
* only files that did not exist before one of this run's examples and did exist after it, i.e.
  that this run's guests created (an older leftover, or a file another run created first, stays);
* only once no process maps the file any more, i.e. once the guest using it is gone: the libvirt
  backend destroys live guests in the background, so a guest may outlive its example a little.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from lxml import etree

from pytest_pcie.fuzz.catalogue import SHMEM_PREFIX

SHM_DIR = Path("/dev/shm")
PROC_DIR = Path("/proc")
# Long enough for the libvirt backend's background destroys to finish (about 2 s each at worst,
# four at a time), short enough that a guest that never stops does not hold up the end of a run.
GUESTS_GONE_WAIT = 60.0
POLL_SECONDS = 0.1


def shmem_names(xml_texts: Iterable[str]) -> set[str]:
    """The shmem names the fuzzer generated in these domain or device XML texts.

    Anything else (a name a user wrote in a case folder, one with a path separator) is left out, so
    it can never be removed.
    """
    names: set[str] = set()
    for text in xml_texts:
        try:
            root = etree.fromstring(text.encode("utf-8"))
        except etree.XMLSyntaxError:
            continue  # the backends report a broken file; nothing of it ever reached QEMU
        for shmem in root.iter("shmem"):
            name = shmem.get("name", "")
            if name.startswith(SHMEM_PREFIX) and "/" not in name and name not in (".", ".."):
                names.add(name)
    return names


class SharedMemory:
    """The shared-memory files one run's guests created, and their removal at the end of the run.

    Call :meth:`before` with an example's XML texts before running it and :meth:`after` with what it
    returned once the example ran; :meth:`remove` at the end.  ``directory`` and ``proc`` stand in
    for /dev/shm and /proc in tests; ``directory`` None leaves shared memory alone (no backend that
    starts QEMU guests, or a caller that cleans up itself).
    """

    def __init__(self, directory: Path | None = SHM_DIR, proc: Path = PROC_DIR) -> None:
        self.directory = directory
        self.proc = proc
        self.created: set[str] = set()

    def before(self, xml_texts: Iterable[str]) -> set[str]:
        """The example's generated names whose files do not exist yet: the ones it may create."""
        if self.directory is None:
            return set()
        return {name for name in shmem_names(xml_texts) if not (self.directory / name).exists()}

    def after(self, absent: set[str]) -> None:
        """Of the names :meth:`before` returned, claim those whose files the example created."""
        if self.directory is not None:
            self.created |= {name for name in absent if (self.directory / name).exists()}

    def remove(self, wait: float = GUESTS_GONE_WAIT) -> tuple[list[Path], list[Path]]:
        """Remove the created files as soon as no process maps them, waiting at most ``wait`` seconds.

        Returns the files removed and those left because a process still mapped them (or removing
        them failed).  A file someone else removed meanwhile is simply forgotten.
        """
        if self.directory is None:
            return [], []
        pending = {self.directory / name for name in self.created}
        removed: list[Path] = []
        failed: list[Path] = []
        deadline = time.monotonic() + wait
        while pending:
            for path in sorted(pending - self._mapped(pending)):
                pending.discard(path)
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError:
                    failed.append(path)  # e.g. another user's file: not ours to remove after all
                    continue
                removed.append(path)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        self.created = {path.name for path in pending | set(failed)}
        return removed, sorted(pending | set(failed))

    def _mapped(self, paths: set[Path]) -> set[Path]:
        """Which of ``paths`` some process has mapped (QEMU maps the file for the guest's lifetime).

        A process whose maps cannot be read (gone meanwhile, or another user's) counts as mapping
        nothing: only a mapping actually seen can keep a file.
        """
        wanted = {str(path): path for path in paths}
        found: set[Path] = set()
        for maps in self.proc.glob("[0-9]*/maps"):
            try:
                text = maps.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                path = wanted.get(line.rsplit(" ", 1)[-1])
                if path is not None:
                    found.add(path)
        return found
