"""Removing the shared-memory files that our guests' shmem devices made QEMU create.

libvirt 9.0.0 backs an ivshmem-plain device with QEMU's ``memory-backend-file`` at
``/dev/shm/<name>`` (``mem-path`` in the guest's command line, at start and at hotplug alike), and
neither QEMU nor libvirt removes that file when the guest stops.  Every live guest with a shmem
device would leave 4 MiB in /dev/shm behind, for good.

What is removed is narrow on purpose, because other runs (a fuzz pass, the conformance suite on
another worker, anybody's guest) may use /dev/shm at the same time, and shmem names are not unique
to a run:

* only names of ivshmem-plain devices in XML the caller started or hotplugged (an ivshmem-doorbell's
  memory belongs to its server, not to the guest), optionally only those with a given prefix, and
  never a name with a path separator or ``..``;
* only files that did not exist, not even as a symlink, before the guest started or the device was
  hotplugged, and did exist as a regular file afterwards, i.e. that the caller's guests created (an
  older leftover, or a file another run created first, stays);
* only once no process maps the file any more, i.e. once the guest using it is gone: the libvirt
  backend destroys live guests in the background, so a guest may outlive its case a little.

Callers: the libvirt backend for the guests it starts (local URIs only), and the differential fuzzer
(:mod:`pytest_pcie.fuzz.shared_memory`) for its passes.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from lxml import etree

SHM_DIR = Path("/dev/shm")
PROC_DIR = Path("/proc")
# Long enough for the libvirt backend's background destroys to finish (about 2 s each at worst,
# four at a time), short enough that a guest that never stops does not hold up the end of a run.
GUESTS_GONE_WAIT = 60.0
POLL_SECONDS = 0.1
# shmem models whose file QEMU itself creates; None: no <model>, which libvirt reads as ivshmem-plain
# when the device has no <server> (with one, the server's process owns the memory).
FILE_BACKED_MODELS = frozenset({"ivshmem-plain", None})


def shmem_names(xml_texts: Iterable[str], prefix: str = "") -> set[str]:
    """The names of file-backed shmem devices starting with ``prefix`` in these domain or device XMLs.

    Anything else (another model, a name with a path separator or ``..``) is left out, so it can
    never be removed.
    """
    names: set[str] = set()
    for text in xml_texts:
        try:
            root = etree.fromstring(text.encode("utf-8"))
        except etree.XMLSyntaxError:
            continue  # the backends report a broken file; nothing of it ever reached QEMU
        for shmem in root.iter("shmem"):
            name = shmem.get("name", "")
            model = shmem.find("model")
            model_type = None if model is None else model.get("type")
            if model_type is None and shmem.find("server") is not None:
                continue
            if model_type in FILE_BACKED_MODELS and name.startswith(prefix) and _plain_name(name):
                names.add(name)
    return names


def _plain_name(name: str) -> bool:
    """True for a name that can only mean a file directly inside the shared-memory directory."""
    return name not in ("", ".") and "/" not in name and ".." not in name and "\0" not in name


class SharedMemory:
    """The shared-memory files some guests created, and their removal once those guests are gone.

    Call :meth:`before` with the XML texts about to start a guest or hotplug devices, and
    :meth:`after` with what it returned once that ran; :meth:`remove` once the guests are gone.
    Callers that know when each guest is gone split :meth:`after` into :meth:`appeared` (right
    after the start) and :meth:`claim` (once that guest is gone).  ``directory`` and ``proc`` stand
    in for /dev/shm and /proc in tests; ``directory`` None leaves shared memory alone (no guests on
    this host, or a caller that cleans up itself).  ``prefix`` limits the candidates to names
    starting with it.
    """

    def __init__(self, directory: Path | None = SHM_DIR, proc: Path = PROC_DIR, prefix: str = "") -> None:
        self.directory = directory
        self.proc = proc
        self.prefix = prefix
        self.created: set[str] = set()

    def before(self, xml_texts: Iterable[str]) -> set[str]:
        """The candidate names whose files do not exist yet, not even as a link: the ones a guest may create."""
        if self.directory is None:
            return set()
        return {name for name in shmem_names(xml_texts, self.prefix) if not os.path.lexists(self.directory / name)}

    def appeared(self, absent: set[str]) -> set[str]:
        """Of the names :meth:`before` returned, those now naming a regular file: the ones created since."""
        if self.directory is None:
            return set()
        return {name for name in absent if _regular_file(self.directory / name)}

    def claim(self, names: Iterable[str]) -> None:
        """Take files :meth:`appeared` found for removal: :meth:`remove` removes them once unmapped."""
        self.created |= set(names)

    def after(self, absent: set[str]) -> None:
        """Of the names :meth:`before` returned, claim those whose files the guest created."""
        self.claim(self.appeared(absent))

    def remove(self, wait: float = GUESTS_GONE_WAIT) -> tuple[list[Path], list[Path]]:
        """Remove the claimed files as soon as no process maps them, waiting at most ``wait`` seconds.

        Returns the files removed and those left because a process still mapped them (or removing
        them failed).  A file someone else removed meanwhile, or replaced by something that is not
        a regular file, is simply forgotten.
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
                if not _regular_file(path):
                    continue  # gone, or a link or directory someone put there: never ours
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

        /proc shows a mapped file by its real path, whatever links lead to the directory.  A process
        whose maps cannot be read (gone meanwhile, or another user's) counts as mapping nothing:
        only a mapping actually seen can keep a file.
        """
        wanted = {os.path.join(os.path.realpath(path.parent), path.name): path for path in paths}
        found: set[Path] = set()
        for maps in self.proc.glob("[0-9]*/maps"):
            try:
                text = maps.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                fields = line.split(None, 5)  # address, perms, offset, device, inode, path (may hold spaces)
                path = wanted.get(fields[5]) if len(fields) == 6 else None
                if path is not None:
                    found.add(path)
        return found


def _regular_file(path: Path) -> bool:
    """True if ``path`` itself (not what a link points to) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
