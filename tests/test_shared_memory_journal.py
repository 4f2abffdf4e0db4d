"""The shared-memory journal: a later run removes the /dev/shm files a killed run's guests created.

Everything here runs on folders in tmp_path standing in for /dev/shm, /proc and the journal
directory.  A "run" is a :class:`SharedMemory` whose owner is a real process: a ``sleep`` child
while it lives, and the same record once that child has been killed and reaped, so
:func:`~pytest_pcie.backends.libvirt_safety.is_leftover` judges it exactly as it would a killed
pytest.  The fake QEMU creates the files (and maps them, where a test says so) as the real one does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_pcie.backends.libvirt_safety import Owner, process_start, this_process
from pytest_pcie.backends.shared_memory import CLOCK_SLACK, JOURNAL_FORMAT, START_WINDOW, SharedMemory


@dataclasses.dataclass
class Host:
    shm: Path
    proc: Path
    journals: Path

    def shared(self, owner: Owner | None = None) -> SharedMemory:
        return SharedMemory(self.shm, self.proc, journal_dir=self.journals, owner=owner)

    def qemu_creates(self, *names: str) -> None:
        """QEMU opens ``<shm>/<name>``, creating it if missing, and keeps what an existing one holds."""
        for name in names:
            with (self.shm / name).open("ab") as stream:
                if stream.tell() == 0:
                    stream.write(b"\0" * 64)

    def maps(self, pid: int, *names: str) -> None:
        """Process ``pid`` (of the fake /proc) maps these files, as a running QEMU does."""
        (self.proc / str(pid)).mkdir(exist_ok=True)
        line = "7f8f79431000-7f8f79831000 rw-s 00000000 00:1b 111                        {}\n"
        (self.proc / str(pid) / "maps").write_text("".join(line.format(self.shm / name) for name in names))

    def unmaps(self, pid: int) -> None:
        (self.proc / str(pid) / "maps").unlink()

    def journal_files(self) -> list[Path]:
        return sorted(self.journals.glob("shm-*.json"))

    def files(self) -> list[str]:
        return sorted(path.name for path in self.shm.iterdir())


@pytest.fixture
def host(tmp_path: Path) -> Host:
    made = Host(tmp_path / "shm", tmp_path / "proc", tmp_path / "journals")
    made.shm.mkdir()
    made.proc.mkdir()
    return made


@dataclasses.dataclass
class Child:
    """A real process to own a journal: alive until :meth:`kill`, then certainly gone."""

    process: subprocess.Popen[bytes]
    owner: Owner

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def child() -> Iterator[Child]:
    process = subprocess.Popen(["sleep", "600"])
    start = process_start(process.pid)
    assert start is not None
    owner = dataclasses.replace(this_process(), pid=process.pid, pid_start=start)
    yield Child(process, owner)
    if process.poll() is None:
        process.kill()
        process.wait()


def shmem(name: str) -> str:
    return f"<domain><devices><shmem name='{name}'><model type='ivshmem-plain'/></shmem></devices></domain>"


def started(run: SharedMemory, host: Host, *names: str) -> set[str]:
    """What a run does around a start whose QEMU creates ``names``: journal, start, confirm."""
    absent = run.before([shmem(name) for name in names])
    host.qemu_creates(*names)
    return run.appeared(absent)


def test_a_dead_runs_file_is_removed_and_its_journal_deleted(host: Host, child: Child) -> None:
    (host.shm / "someone-else").write_text("not named by the run")
    run = host.shared(child.owner)
    assert started(run, host, "guest-a", "guest-b") == {"guest-a", "guest-b"}
    assert len(host.journal_files()) == 1
    assert stat.S_IMODE(host.journals.stat().st_mode) == 0o700
    child.kill()  # the run dies with its files still claimed: nothing removed them
    assert host.files() == ["guest-a", "guest-b", "someone-else"]

    removed, left = host.shared().sweep()

    assert sorted(path.name for path in removed) == ["guest-a", "guest-b"]
    assert left == []
    assert host.files() == ["someone-else"]
    assert host.journal_files() == []


def test_a_live_owners_journal_is_untouched(host: Host, child: Child) -> None:
    started(host.shared(child.owner), host, "guest-a")
    [journal] = host.journal_files()
    text, mtime = journal.read_text(), journal.stat().st_mtime_ns

    assert host.shared().sweep() == ([], [])

    assert host.files() == ["guest-a"]
    assert journal.read_text() == text and journal.stat().st_mtime_ns == mtime


def test_this_processes_own_journal_is_untouched_by_its_sweep(host: Host) -> None:
    run = host.shared()
    started(run, host, "guest-a")
    assert run.sweep() == ([], [])
    assert host.shared().sweep() == ([], [])  # another instance in the same process: alive too
    assert host.files() == ["guest-a"]
    assert len(host.journal_files()) == 1


def test_a_mapped_file_stays_and_so_does_the_journal(host: Host, child: Child) -> None:
    started(host.shared(child.owner), host, "mapped", "free")
    child.kill()
    host.maps(77, "mapped")  # another run's guest found the file there and uses it

    removed, left = host.shared().sweep()

    assert ([path.name for path in removed], [path.name for path in left]) == (["free"], ["mapped"])
    assert host.files() == ["mapped"]
    [journal] = host.journal_files()
    assert set(json.loads(journal.read_text())["claimed"]) == {"mapped"}
    host.unmaps(77)
    assert [path.name for path in host.shared().sweep()[0]] == ["mapped"]  # the next run tries again
    assert host.files() == []
    assert host.journal_files() == []


def test_a_symlink_a_directory_a_missing_or_a_replaced_file_is_left_alone(
    host: Host, child: Child, tmp_path: Path
) -> None:
    started(host.shared(child.owner), host, "link", "dir", "missing", "replaced")
    child.kill()
    target = tmp_path / "target"
    target.write_text("somebody's")
    # Made while the old file still exists, so it cannot get the old inode number back.
    (host.shm / "new").write_text("made later by somebody else under the same name")
    (host.shm / "new").rename(host.shm / "replaced")
    for name in ("link", "dir", "missing"):
        (host.shm / name).unlink()
    (host.shm / "link").symlink_to(target)
    (host.shm / "dir").mkdir()

    assert host.shared().sweep() == ([], [])

    assert host.files() == ["dir", "link", "replaced"]
    assert target.read_text() == "somebody's"
    assert (host.shm / "replaced").read_text().startswith("made later")
    assert host.journal_files() == []  # nothing it names can be the run's any more


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"format": "something else"}',
        b"OWNER-WITH-PARENT-NAME",
        b"OWNER-WITH-BAD-ID",
        b"OWNER-WITHOUT-OWNER",
    ],
)
def test_a_corrupt_or_foreign_journal_is_ignored(host: Host, child: Child, content: bytes) -> None:
    started(host.shared(child.owner), host, "guest-a")
    child.kill()
    [journal] = host.journal_files()
    data = json.loads(journal.read_text())
    if content == b"OWNER-WITH-PARENT-NAME":
        data["claimed"]["../guest-a"] = data["claimed"]["guest-a"]
    elif content == b"OWNER-WITH-BAD-ID":
        data["claimed"]["guest-a"] = ["1", 2]
    elif content == b"OWNER-WITHOUT-OWNER":
        data["owner"] = "<owner/>"
    if content.startswith(b"OWNER-"):
        content = json.dumps(data).encode()
    journal.write_bytes(content)

    assert host.shared().sweep() == ([], [])

    assert host.files() == ["guest-a"]
    assert journal.read_bytes() == content


def test_a_journal_that_is_a_symlink_or_not_ours_is_ignored(host: Host, child: Child, tmp_path: Path) -> None:
    started(host.shared(child.owner), host, "guest-a")
    child.kill()
    [journal] = host.journal_files()
    elsewhere = tmp_path / "elsewhere.json"
    journal.rename(elsewhere)
    journal.symlink_to(elsewhere)
    assert host.shared().sweep() == ([], [])
    assert host.files() == ["guest-a"]
    journal.unlink()
    elsewhere.rename(journal)
    if os.geteuid() == 0:
        os.chown(journal, 65534, 65534)  # another user's file in our directory
        assert host.shared().sweep() == ([], [])
        assert host.files() == ["guest-a"]
        os.chown(journal, 0, 0)
    assert [path.name for path in host.shared().sweep()[0]] == ["guest-a"]  # the same journal, ours again


def test_a_journal_directory_others_can_write_to_is_not_used(host: Host, child: Child) -> None:
    started(host.shared(child.owner), host, "guest-a")
    child.kill()
    host.journals.chmod(0o733)
    assert host.shared().sweep() == ([], [])
    assert host.files() == ["guest-a"]
    run = host.shared()
    assert started(run, host, "guest-b") == {"guest-b"}
    assert len(host.journal_files()) == 1  # the new run wrote none there
    host.journals.chmod(0o700)


def test_a_file_that_existed_before_the_start_is_never_recorded(host: Host, child: Child) -> None:
    (host.shm / "existing").write_text("made before")
    (host.shm / "link").symlink_to(host.shm / "nowhere")
    run = host.shared(child.owner)
    absent = run.before([shmem("existing"), shmem("link"), shmem("new")])
    assert absent == {"new"}
    [journal] = host.journal_files()
    assert set(json.loads(journal.read_text())["pending"]) == {"new"}
    host.qemu_creates("existing", "new")
    assert run.appeared(absent) == {"new"}
    data = json.loads(journal.read_text())
    assert (set(data["claimed"]), data["pending"]) == ({"new"}, {})
    child.kill()

    assert [path.name for path in host.shared().sweep()[0]] == ["new"]
    assert host.files() == ["existing", "link"]
    assert (host.shm / "existing").read_text() == "made before"


def test_a_run_that_removes_its_files_deletes_its_journal(host: Host) -> None:
    run = host.shared()
    run.claim(started(run, host, "guest-a", "guest-b"))
    host.maps(77, "guest-b")
    assert run.remove(wait=0) == ([host.shm / "guest-a"], [host.shm / "guest-b"])
    [journal] = host.journal_files()  # what had to stay is still recorded for a later run
    assert set(json.loads(journal.read_text())["claimed"]) == {"guest-b"}
    host.unmaps(77)
    assert run.remove(wait=0) == ([host.shm / "guest-b"], [])
    assert host.journal_files() == []


def test_a_start_that_created_nothing_leaves_no_journal(host: Host) -> None:
    run = host.shared()
    absent = run.before([shmem("never")])
    assert len(host.journal_files()) == 1  # written before the start
    assert run.appeared(absent) == set()  # the start was refused
    assert host.journal_files() == []


def test_an_unconfirmed_candidate_goes_if_it_was_created_during_the_start(host: Host, child: Child) -> None:
    run = host.shared(child.owner)
    run.before([shmem("created"), shmem("in-use"), shmem("never")])
    host.qemu_creates("created", "in-use")
    host.maps(77, "in-use")
    child.kill()  # during the start: appeared() never ran

    removed, left = host.shared().sweep()

    assert ([path.name for path in removed], [path.name for path in left]) == (["created"], ["in-use"])
    [journal] = host.journal_files()
    assert set(json.loads(journal.read_text())["pending"]) == {"in-use"}
    host.unmaps(77)
    assert [path.name for path in host.shared().sweep()[0]] == ["in-use"]
    assert host.journal_files() == []


@pytest.mark.parametrize("offset", [-(CLOCK_SLACK + 5), START_WINDOW + 5])
def test_an_unconfirmed_candidate_made_outside_the_start_window_stays(
    host: Host, child: Child, offset: float
) -> None:
    run = host.shared(child.owner)
    run.before([shmem("late")])
    child.kill()
    [journal] = host.journal_files()
    data = json.loads(journal.read_text())
    host.qemu_creates("late")  # ctime: now, i.e. just after the name was seen absent
    data["pending"]["late"] = time.time() - offset  # as if it had been seen absent at another time
    journal.write_text(json.dumps(data))

    assert host.shared().sweep() == ([], [])

    assert host.files() == ["late"]
    assert host.journal_files() == []  # nothing it names can be the run's


def test_an_unconfirmed_candidate_with_an_old_mtime_stays(host: Host, child: Child) -> None:
    run = host.shared(child.owner)
    run.before([shmem("old")])
    host.qemu_creates("old")
    os.utime(host.shm / "old", (time.time() - 3600, time.time() - 3600))
    child.kill()
    assert host.shared().sweep() == ([], [])
    assert host.files() == ["old"]


def test_a_journal_of_another_shm_directory_is_left_to_its_own(host: Host, child: Child, tmp_path: Path) -> None:
    other = Host(tmp_path / "other-shm", host.proc, host.journals)
    other.shm.mkdir()
    started(other.shared(child.owner), other, "guest-a")
    child.kill()
    host.qemu_creates("guest-a")  # the same name in our directory is another file

    assert host.shared().sweep() == ([], [])
    assert host.files() == ["guest-a"] and other.files() == ["guest-a"]
    assert len(host.journal_files()) == 1
    assert [path.name for path in other.shared().sweep()[0]] == ["guest-a"]
    assert other.files() == [] and host.files() == ["guest-a"]


def test_a_journal_of_a_directory_that_no_longer_exists_is_deleted(host: Host, child: Child, tmp_path: Path) -> None:
    other = Host(tmp_path / "other-shm", host.proc, host.journals)
    other.shm.mkdir()
    started(other.shared(child.owner), other, "guest-a")
    child.kill()
    (other.shm / "guest-a").unlink()
    other.shm.rmdir()
    assert host.shared().sweep() == ([], [])
    assert host.journal_files() == []


def test_without_a_shm_directory_nothing_is_journaled_or_swept(host: Host, child: Child) -> None:
    started(host.shared(child.owner), host, "guest-a")
    child.kill()
    remote = SharedMemory(None, host.proc, journal_dir=host.journals)
    assert remote.before([shmem("guest-b")]) == set()
    assert remote.sweep() == ([], [])
    assert host.files() == ["guest-a"]
    assert len(host.journal_files()) == 1


def test_the_journal_format_is_what_the_sweep_reads(host: Host) -> None:
    run = host.shared()
    started(run, host, "guest-a")
    [journal] = host.journal_files()
    data = json.loads(journal.read_text())
    assert data["format"] == JOURNAL_FORMAT
    assert data["directory"] == os.path.realpath(host.shm)
    info = (host.shm / "guest-a").stat()
    assert data["claimed"] == {"guest-a": [info.st_dev, info.st_ino]}
    assert f'pid="{os.getpid()}"' in data["owner"]
    assert not list(host.journals.glob("*.tmp"))  # written through a temporary file, then renamed
