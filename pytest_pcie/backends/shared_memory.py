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

A run killed hard (SIGKILL, a CI timeout, the OOM killer) skips all of that: libvirtd's autodestroy
stops its guests, but which files they created was known only to the dead process.  So a caller
that passes a ``journal_dir`` (the libvirt backend does: :data:`JOURNAL_DIR`) keeps that knowledge
on disk, one small journal per process: before a start or hotplug, the candidate names found absent
and when; right after it, which of them appeared as a regular file, with the file's device and
inode.  Each write replaces the whole journal (temporary file, then ``os.replace``), so a reader
sees the old state or the new one, never half.  :meth:`SharedMemory.remove` drops the files it dealt
with, and a journal left empty is deleted.

:meth:`SharedMemory.sweep` (run when a libvirt backend starts and closes) reads the other journals
and acts only on those whose owner :func:`~pytest_pcie.backends.libvirt_safety.is_leftover` declares
gone, by the same owner rules as leftover domains.  It removes a recorded file only under the rules
above: a plain name, inside *this* shm directory (a journal written for another directory is left
alone), a regular file and not a link, mapped by no process; and for a file recorded as appeared,
only if it is still the same file (device and inode), not one somebody made later under that name.
A journal is deleted once nothing it records can be ours any more; while a file is still mapped it
stays, so a later run tries again.  Anything unreadable, malformed, not ours (another owner uid, a
symlink) or of another format is skipped, and never leads to a removal.

Candidates recorded as absent but never confirmed (the process died during the start or hotplug,
the very call a CI timeout most likely interrupts, since starting a guest is the slow step) are
removed only if the file is a regular file, unmapped, and its ctime lies between the time the name
was seen absent (less :data:`CLOCK_SLACK`, for the coarse file clock) and :data:`START_WINDOW`
after it, and its mtime is no older than that time either.  The live check ("absent before, a
regular file afterwards") claims exactly the files created while the start ran; the ctime window
is that same test done later, with "afterwards" bounded by how long a start can take.  ctime
cannot be set back by anybody (unlike mtime), QEMU's own create and truncate set it, and a
guest's writes through its mapping leave it alone, so a file our guest created passes, while a file
made under that name later (after the owner died and its guest was stopped) does not.  What it
cannot tell apart is a file someone else created under the same name within those seconds: the
live check could not either, and such a file is removed only once nothing maps it.  Dropping
unconfirmed candidates instead would keep the leak for every kill that lands during a start.

/run (and $XDG_RUNTIME_DIR for other users) is a tmpfs like /dev/shm, so a journal lives exactly as
long as the files it describes: a reboot clears both.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lxml import etree

from pytest_pcie.backends.libvirt_safety import Owner, is_leftover, marker_xml, parse_marker, this_process

SHM_DIR = Path("/dev/shm")
PROC_DIR = Path("/proc")
# Long enough for the libvirt backend's background destroys to finish (about 2 s each at worst,
# four at a time), short enough that a guest that never stops does not hold up the end of a run.
GUESTS_GONE_WAIT = 60.0
POLL_SECONDS = 0.1
# shmem models whose file QEMU itself creates; None: no <model>, which libvirt reads as ivshmem-plain
# when the device has no <server> (with one, the server's process owns the memory).
FILE_BACKED_MODELS = frozenset({"ivshmem-plain", None})

JOURNAL_FORMAT = "pytest-pcie shm journal 1"
JOURNAL_GLOB = "shm-*.json"
MAX_JOURNAL_BYTES = 1 << 20  # a journal holds a few names; anything bigger is not one of ours
# An unconfirmed candidate counts only if its file was created this long after the name was seen
# absent: libvirt gives QEMU 30 s to come up (its monitor timeout), a hotplug takes well under that.
START_WINDOW = 120.0
# File times come from the kernel's coarse clock, which can lag time.time() by a tick.
CLOCK_SLACK = 1.0

FileId = tuple[int, int]  # (st_dev, st_ino): the file itself, whatever name it has later


def default_journal_dir() -> Path | None:
    """Where journals go: /run/pytest-pcie for root, else under $XDG_RUNTIME_DIR; None: no journal.

    Both are tmpfs that vanish at reboot together with /dev/shm, and both are private to their user.
    """
    if os.geteuid() == 0:
        return Path("/run/pytest-pcie")
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    return Path(runtime) / "pytest-pcie" if os.path.isabs(runtime) else None


JOURNAL_DIR = default_journal_dir()


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


@dataclass
class Journal:
    """What one process's guests may have created in one shm directory, as kept on disk.

    ``pending``: names seen absent (and when) before a start or hotplug whose outcome is not known
    yet; ``claimed``: names that appeared as a regular file, with that file's identity.
    """

    path: Path
    owner: Owner
    directory: str  # the shm directory, resolved: names mean files directly inside it
    pending: dict[str, float] = field(default_factory=dict)
    claimed: dict[str, FileId] = field(default_factory=dict)

    def save(self) -> None:
        """Replace the journal on disk with this one atomically; delete it when it records nothing.

        A journal that cannot be written (a full /run) costs only the clean-up after a kill, so
        that is no reason to fail a run.
        """
        if not self.pending and not self.claimed:
            self.discard()
            return
        text = json.dumps(
            {
                "format": JOURNAL_FORMAT,
                "owner": marker_xml(self.owner),
                "directory": self.directory,
                "pending": self.pending,
                "claimed": {name: list(file_id) for name, file_id in self.claimed.items()},
            },
            sort_keys=True,
        )
        temporary = self._temporary()
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(temporary, self.path)
        except OSError:
            pass

    def discard(self) -> None:
        """Delete the journal (and a temporary copy a kill may have left mid-write)."""
        for path in (self.path, self._temporary()):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def _temporary(self) -> Path:
        return self.path.with_name(f"{self.path.name}.tmp")

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        """Read a journal back; None for anything that is not a complete journal of ours.

        Ours means: a regular file (not a link) owned by this user, of our format, with an owner
        marker, an absolute directory and plain names only.  Whatever else is there never gets
        a file removed.
        """
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_size > MAX_JOURNAL_BYTES:
                return None
            with os.fdopen(os.dup(descriptor), "rb") as stream:
                data = json.loads(stream.read(MAX_JOURNAL_BYTES).decode("utf-8"))
        except (OSError, ValueError):  # ValueError covers bad JSON and bad UTF-8
            return None
        finally:
            os.close(descriptor)
        return cls._from_data(path, data)

    @classmethod
    def _from_data(cls, path: Path, data: Any) -> Journal | None:
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
            return None
        owner_text, directory = data.get("owner"), data.get("directory")
        pending, claimed = data.get("pending"), data.get("claimed")
        owner = parse_marker(owner_text) if isinstance(owner_text, str) else None
        if owner is None or not isinstance(directory, str) or not os.path.isabs(directory):
            return None
        if not isinstance(pending, dict) or not isinstance(claimed, dict):
            return None
        if not all(_plain_name(name) and _number(seen) for name, seen in pending.items()):
            return None
        if not all(_plain_name(name) and _file_id_data(file_id) for name, file_id in claimed.items()):
            return None
        return cls(
            path,
            owner,
            directory,
            {name: float(seen) for name, seen in pending.items()},
            {name: (file_id[0], file_id[1]) for name, file_id in claimed.items()},
        )


class SharedMemory:
    """The shared-memory files some guests created, and their removal once those guests are gone.

    Call :meth:`before` with the XML texts about to start a guest or hotplug devices, and
    :meth:`after` with what it returned once that ran; :meth:`remove` once the guests are gone.
    Callers that know when each guest is gone split :meth:`after` into :meth:`appeared` (right
    after the start) and :meth:`claim` (once that guest is gone).  ``directory`` and ``proc`` stand
    in for /dev/shm and /proc in tests; ``directory`` None leaves shared memory alone (no guests on
    this host, or a caller that cleans up itself).  ``prefix`` limits the candidates to names
    starting with it.  With a ``journal_dir`` the candidates are journaled for :meth:`sweep` by a
    later run, under ``owner`` (default: this process); None keeps no journal and sweeps nothing.
    """

    def __init__(
        self,
        directory: Path | None = SHM_DIR,
        proc: Path = PROC_DIR,
        prefix: str = "",
        journal_dir: Path | None = None,
        owner: Owner | None = None,
    ) -> None:
        self.directory = directory
        self.proc = proc
        self.prefix = prefix
        self.created: set[str] = set()
        self.journal_dir = journal_dir if directory is not None else None
        self.owner = owner if owner is not None else this_process()
        self._journal: Journal | None = None

    def before(self, xml_texts: Iterable[str]) -> set[str]:
        """The candidate names whose files do not exist yet, not even as a link: the ones a guest may create.

        With a journal they are recorded as pending before this returns, i.e. before the start.
        """
        if self.directory is None:
            return set()
        seen = time.time()  # taken before looking: a file found absent is created after this
        directory = self.directory
        absent = {name for name in shmem_names(xml_texts, self.prefix) if not os.path.lexists(directory / name)}
        journal = self._journal_to_write() if absent else None
        if journal is not None:
            journal.pending.update(dict.fromkeys(absent, seen))
            self._save(journal)
        return absent

    def appeared(self, absent: set[str]) -> set[str]:
        """Of the names :meth:`before` returned, those now naming a regular file: the ones created since.

        With a journal they move from pending to claimed, the rest are dropped from it.
        """
        if self.directory is None:
            return set()
        found = {name: file_id for name in absent if (file_id := _file_id(self.directory / name)) is not None}
        journal = self._journal
        if journal is not None and absent:
            for name in absent:
                journal.pending.pop(name, None)
            journal.claimed.update(found)
            self._save(journal)
        return set(found)

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
        a regular file, is simply forgotten.  The journal keeps only the files left (so a later
        run removes them once this process is gone), and is deleted when none are.
        """
        if self.directory is None:
            return [], []
        handled = set(self.created)
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
        journal = self._journal
        if journal is not None and handled - self.created:
            for name in handled - self.created:
                journal.claimed.pop(name, None)
            self._save(journal)
        return removed, sorted(pending | set(failed))

    def sweep(self) -> tuple[list[Path], list[Path]]:
        """Remove the files the guests of dead processes created, as their journals record them.

        Returns the files removed and those left for a later run (still mapped, or not
        removable).  Journals of live owners, of this process, of another shm directory and any
        journal that cannot be read are not touched; see the module docstring for the rules.
        """
        if self.directory is None or self.journal_dir is None or not _private_directory(self.journal_dir, create=False):
            return [], []
        own = None if self._journal is None else self._journal.path
        directory = os.path.realpath(self.directory)
        now = time.time()
        removed: list[Path] = []
        left: list[Path] = []
        for path in sorted(self.journal_dir.glob(JOURNAL_GLOB)):
            journal = None if path == own else Journal.load(path)
            if journal is None or self._alive(journal.owner, now):
                continue
            if journal.directory != directory:
                if not os.path.isdir(journal.directory):
                    journal.discard()  # that directory is gone, and with it every file it could name
                continue
            gone, kept = self._sweep_journal(journal)
            removed += gone
            left += kept
        return removed, left

    def _sweep_journal(self, journal: Journal) -> tuple[list[Path], list[Path]]:
        """Remove what one dead owner's journal records, where the rules allow; keep it for the rest."""
        assert self.directory is not None
        candidates: dict[str, Path] = {}
        for name, file_id in journal.claimed.items():
            path = self.directory / name
            if _file_id(path) == file_id:
                candidates[name] = path
        for name, seen in journal.pending.items():
            path = self.directory / name
            if name not in journal.claimed and _created_during_start(path, seen):
                candidates[name] = path
        mapped = self._mapped(set(candidates.values()))
        removed: list[Path] = []
        left: list[Path] = []
        for path in sorted(candidates.values()):
            if path in mapped:
                left.append(path)
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError:
                left.append(path)
                continue
            removed.append(path)
        kept = {path.name for path in left}
        journal.claimed = {name: file_id for name, file_id in journal.claimed.items() if name in kept}
        journal.pending = {name: seen for name, seen in journal.pending.items() if name in kept}
        journal.save()  # deletes it when nothing is kept
        return removed, left

    def _alive(self, owner: Owner, now: float) -> bool:
        """True unless the journal's owner is certainly gone; this process (any of its journals) is alive."""
        me = self.owner
        if owner.same_host(me) and (owner.pid, owner.pid_start) == (me.pid, me.pid_start):
            return True
        return not is_leftover(owner, me, now)

    def _journal_to_write(self) -> Journal | None:
        """This process's journal, started on first need; None without a usable journal directory."""
        if self._journal is None and self.journal_dir is not None and self.directory is not None:
            if not _private_directory(self.journal_dir, create=True):
                self.journal_dir = None  # not ours to write into: run on without a journal
                return None
            name = f"shm-{self.owner.pid}-{secrets.token_hex(6)}.json"
            self._journal = Journal(self.journal_dir / name, self.owner, os.path.realpath(self.directory))
        return self._journal

    def _save(self, journal: Journal) -> None:
        """Write the journal, stamped with the time of writing: the age rule judges owners by it."""
        journal.owner = replace(journal.owner, created=time.time())
        journal.save()

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
    return _file_id(path) is not None


def _file_id(path: Path) -> FileId | None:
    """The device and inode of ``path`` if it itself (not what a link points to) is a regular file."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


def _created_during_start(path: Path, seen: float) -> bool:
    """True if ``path`` is a regular file made within :data:`START_WINDOW` of its name being seen absent."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    earliest = seen - CLOCK_SLACK
    return (
        stat.S_ISREG(info.st_mode)
        and earliest <= info.st_ctime <= seen + START_WINDOW
        and info.st_mtime >= earliest
    )


def _private_directory(path: Path, *, create: bool) -> bool:
    """True if ``path`` is a directory (not a link) of this user that nobody else may write to.

    With ``create`` a missing one is made with mode 0700.  Journals in a directory others can
    write to could name files for us to remove, so such a directory is not used at all.
    """
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _file_id_data(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(type(part) is int for part in value)
