"""The libvirt backend's ownership rules, checked without libvirt: who may remove which domain."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from pytest_pcie.backends.libvirt_safety import (
    MARKER_NS,
    REMOTE_STALE_AFTER_S,
    find_marker,
    is_leftover,
    mark_domain,
    marker_xml,
    parse_marker,
    process_start,
    shares_host_shm,
    this_process,
    unmark_domain,
)

DOMAIN = "<domain type='kvm'><name>pcie-case</name><devices/></domain>"


def dead_pid() -> int:
    """A pid that certainly belonged to a process which has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_process_start_tells_a_live_process_from_a_dead_one() -> None:
    assert process_start(os.getpid()) == this_process().pid_start
    assert process_start(os.getpid())
    assert process_start(dead_pid()) is None


def test_a_live_owner_on_this_host_is_never_a_leftover() -> None:
    me = this_process()
    other_session = this_process()  # same pid, another backend in this process
    assert other_session.session != me.session
    assert not is_leftover(other_session, me, now=me.created + 10 * REMOTE_STALE_AFTER_S)


def test_own_session_is_a_leftover_when_closing() -> None:
    me = this_process()
    assert is_leftover(me, me, now=me.created)


def test_a_dead_owner_on_this_host_is_a_leftover_at_once() -> None:
    me = this_process()
    dead = dataclasses.replace(me, pid=dead_pid(), session="dead0000")
    assert is_leftover(dead, me, now=me.created)


def test_a_reused_pid_is_a_leftover() -> None:
    """Our pid is alive, but a marker recording another start time was written by someone else."""
    me = this_process()
    earlier = dataclasses.replace(me, pid_start=str(int(me.pid_start) - 1), session="gone0000")
    assert is_leftover(earlier, me, now=me.created)


def test_another_host_is_trusted_until_the_age_limit() -> None:
    me = this_process()
    remote = dataclasses.replace(me, host="elsewhere", pid=1, session="far00000")
    assert not is_leftover(remote, me, now=remote.created + REMOTE_STALE_AFTER_S - 1)
    assert is_leftover(remote, me, now=remote.created + REMOTE_STALE_AFTER_S + 1)


def test_same_host_name_after_a_reboot_counts_as_another_host() -> None:
    """A pid recorded before a reboot says nothing about the processes running now."""
    me = this_process()
    before_reboot = dataclasses.replace(me, boot_id="00000000-0000-0000-0000-000000000000", session="old00000")
    assert not is_leftover(before_reboot, me, now=me.created)


def test_another_pid_namespace_counts_as_another_host() -> None:
    """A container sharing the kernel and the host name numbers its pids apart from ours."""
    me = this_process()
    contained = dataclasses.replace(me, pid_ns="pid:[1]", pid=dead_pid(), session="ctr00000")
    assert not is_leftover(contained, me, now=me.created)


def test_marker_round_trips_through_the_domain_xml() -> None:
    me = this_process()
    marked = mark_domain(DOMAIN, "pcie-test-abc-1", "qemu", me)
    assert MARKER_NS in marked
    assert "<name>pcie-test-abc-1</name>" in marked
    assert 'type="qemu"' in marked
    found = find_marker(marked)
    assert found is not None
    assert found.pid == me.pid
    assert found.session == me.session
    assert abs(found.created - me.created) < 0.001
    assert parse_marker(marker_xml(me)) == dataclasses.replace(me, created=round(me.created, 3))


def test_mark_drops_the_case_uuid() -> None:
    with_uuid = DOMAIN.replace("<devices/>", "<uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid><devices/>")
    marked = mark_domain(with_uuid, "pcie-test-abc-1", "kvm", this_process())
    assert "c7a5fdbd" not in marked
    assert "<uuid" not in marked


def test_unmark_restores_the_case_name_type_and_metadata() -> None:
    marked = mark_domain(DOMAIN, "pcie-test-abc-1", "qemu", this_process())
    restored = unmark_domain(marked, "pcie-case", "kvm")
    assert MARKER_NS not in restored
    assert "<metadata" not in restored
    assert "<name>pcie-case</name>" in restored
    assert 'type="kvm"' in restored


def test_unmark_keeps_metadata_of_others() -> None:
    with_metadata = DOMAIN.replace("<devices/>", "<metadata><app xmlns='urn:x'/></metadata><devices/>")
    restored = unmark_domain(mark_domain(with_metadata, "pcie-test-abc-1", "kvm", this_process()), "pcie-case", "kvm")
    assert "urn:x" in restored
    assert MARKER_NS not in restored


def test_incomplete_or_foreign_markers_are_not_ours() -> None:
    me = this_process()
    assert parse_marker(marker_xml(me).replace("pid=", "xid=")) is None
    assert parse_marker(marker_xml(me).replace(MARKER_NS, "urn:other")) is None
    assert parse_marker("<owner pid='nonsense'") is None
    assert find_marker(DOMAIN) is None


def test_only_local_uris_and_prepared_chroot_daemons_share_this_hosts_shm(tmp_path: Path) -> None:
    prepared = tmp_path / "uris"
    chroot_uri = "qemu+unix:///system?socket=/var/lib/pytest-pcie/roots/sid/run/libvirt/libvirt-sock"
    assert shares_host_shm("qemu:///system", prepared)
    assert not shares_host_shm(chroot_uri, prepared)  # no file: nothing is known of the socket's daemon
    prepared.write_text(f"12.8.0 {chroot_uri}\n")
    assert shares_host_shm(chroot_uri, prepared)
    assert not shares_host_shm("qemu+ssh://lab/system", prepared)
