"""The libvirt backend against the libvirtd on this host.

Without a reachable libvirtd these tests skip; with ``PCIE_REQUIRE_LIBVIRT=1`` (set by CI) they
fail instead, so a broken host cannot pass as a green run.  The expected values are what libvirt
9.0.0 + QEMU 7.2 did on the development host; the cases are built in tmp_path so that the tests do
not depend on the corpus.  The shared-memory tests at the end mostly run on a fake libvirt module
instead, so they need no libvirtd.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from pytest_pcie.backends.base import BackendUnavailable
from pytest_pcie.backends.libvirt import LibvirtBackend, offered_domain_types
from pytest_pcie.backends.libvirt_safety import (
    MARKER_NS,
    NAME_PREFIX,
    REMOTE_STALE_AFTER_S,
    Owner,
    mark_domain,
    this_process,
)
from pytest_pcie.backends.shared_memory import SHM_DIR, SharedMemory, shmem_names
from pytest_pcie.cases import Case, load_case
from pytest_pcie.domain import prepare_domain
from pytest_pcie.machines import MACHINE_FAMILIES

URI = "qemu:///system"
MIN = "<controller type='usb' model='none'/><memballoon model='none'/>"
VIRTIO_NIC = "<interface type='user'><model type='virtio'/></interface>"
REQUIRE_ENV = "PCIE_REQUIRE_LIBVIRT"
REPO = Path(__file__).resolve().parent.parent
QEMU_LOGS = Path("/var/log/libvirt/qemu")


def open_backend(uri: str = URI) -> LibvirtBackend:
    """A backend on this host, or a skip (a failure under PCIE_REQUIRE_LIBVIRT=1) saying why not."""
    try:
        return LibvirtBackend(uri)
    except BackendUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but the libvirt backend is unavailable: {exc}", pytrace=False)
        pytest.skip(f"libvirt backend unavailable: {exc}")


def require_libvirt_python() -> None:
    """Skip (fail under PCIE_REQUIRE_LIBVIRT=1) when libvirt-python itself is missing."""
    try:
        import libvirt  # noqa: F401
    except ImportError:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but libvirt-python is not installed", pytrace=False)
        pytest.skip("libvirt-python is not installed")


@pytest.fixture
def backend() -> Iterator[LibvirtBackend]:
    opened = open_backend()
    yield opened
    opened.close()


@pytest.fixture
def make_case(tmp_path: Path) -> Callable[..., Case]:
    """Write a case folder into tmp_path and load it with the real case loader."""
    counter = iter(range(1_000))

    def make(operation: str, input_xml: str, steps: Sequence[tuple[str, str, str]] = (), machine: str = "q35") -> Case:
        folder = tmp_path / f"case{next(counter)}"
        folder.mkdir()
        step_lines = ", ".join(f'{{ {action} = "{file_name}" }}' for action, file_name, _ in steps)
        toml = f'description = "test"\nmachines = ["{machine}"]\noperation = "{operation}"\n'
        if steps:
            toml += f"steps = [{step_lines}]\n"
        (folder / "case.toml").write_text(toml)
        (folder / "input.xml").write_text(input_xml)
        for _, file_name, device_xml in steps:
            (folder / file_name).write_text(device_xml)
        return load_case(folder, tmp_path)

    return make


def pci_layout(domain_xml: str) -> list[tuple[str, str, str]]:
    """(device, model or type, bus:slot.function) for every device with a PCI address, in order."""
    root = etree.fromstring(domain_xml.encode("utf-8"))
    layout = []
    devices = root.find("devices")
    for device in devices if devices is not None else []:
        address = device.find("address")
        if address is None or address.get("type") != "pci":
            continue
        kind = device.get("model") or device.get("type") or ""
        if device.tag == "controller":
            kind = f"{device.get('type')}{device.get('index')}:{device.get('model') or ''}"
        bus, slot, function = (int(address.get(key, "0"), 16) for key in ("bus", "slot", "function"))
        layout.append((device.tag, kind, f"{bus:02x}:{slot:02x}.{function:x}"))
    return layout


def domain_names(backend: LibvirtBackend) -> set[str]:
    return {domain.name() for domain in backend._conn.listAllDomains(0)}


def session_domains(backend: LibvirtBackend, session: str) -> set[str]:
    return {name for name in domain_names(backend) if name.startswith(f"{NAME_PREFIX}{session}-")}


# ---- start-up -------------------------------------------------------------------------------------


def test_header_names_versions_and_domain_type(backend: LibvirtBackend) -> None:
    header = backend.header()
    assert header.startswith("pcie backend: libvirt 9.0.0, QEMU 7.2.")
    assert header.endswith(f" at {URI}, domain type {backend.domain_type}")
    assert backend.domain_type == ("kvm" if os.path.exists("/dev/kvm") else "qemu")


def test_unreachable_uri_is_one_line() -> None:
    require_libvirt_python()
    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    with pytest.raises(BackendUnavailable) as raised:
        LibvirtBackend(uri)
    message = str(raised.value)
    assert message.startswith(f"libvirtd is not reachable at {uri}: ")
    assert "/nonexistent/libvirt-sock" in message
    assert message.endswith("start it with `sudo scripts/prepare-host --versions` if it is one of docs/versions.md's")
    assert "\n" not in message


def test_missing_libvirt_python_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "libvirt", None)  # makes `import libvirt` raise ImportError
    with pytest.raises(BackendUnavailable) as raised:
        LibvirtBackend(URI)
    assert str(raised.value) == "libvirt-python is not installed: pip install 'pytest-pcie[libvirt]'"


def test_a_driver_without_qemu_is_one_line() -> None:
    require_libvirt_python()
    with pytest.raises(BackendUnavailable) as raised:
        LibvirtBackend("test:///default")
    message = str(raised.value)
    assert message.startswith("no QEMU x86_64 emulator at test:///default (libvirt's TEST driver offers")
    assert "apt-get install qemu-system-x86" in message
    assert "\n" not in message


def test_required_libvirt_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    require_libvirt_python()
    bad = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="PCIE_REQUIRE_LIBVIRT=1 but the libvirt backend is unavailable"):
        open_backend(bad)
    monkeypatch.delenv(REQUIRE_ENV)
    with pytest.raises(pytest.skip.Exception, match="libvirt backend unavailable: libvirtd is not reachable"):
        open_backend(bad)


# ---- outcome shapes -------------------------------------------------------------------------------


def test_define_q35_one_virtio_nic(backend: LibvirtBackend, make_case: Callable[..., Case]) -> None:
    case = make_case("define", f"<domain><devices>{MIN}{VIRTIO_NIC}</devices></domain>")
    outcome = backend.run(case, "q35")
    assert outcome.failure is None
    assert outcome.domain_xml is not None
    assert pci_layout(outcome.domain_xml) == [
        ("controller", "sata0:", "00:1f.2"),
        ("controller", "pci1:pcie-root-port", "00:01.0"),
        ("controller", "pci2:pcie-root-port", "00:01.1"),  # the spare port
        ("interface", "user", "01:00.0"),
    ]
    # The backend's own name, domain type and marker do not leak into outcomes.
    root = etree.fromstring(outcome.domain_xml.encode("utf-8"))
    assert root.findtext("name") == "pcie-case"
    assert root.get("type") == "kvm"
    assert MARKER_NS not in outcome.domain_xml
    assert root.find("metadata") is None


def test_define_q35_nic_with_default_devices(backend: LibvirtBackend, make_case: Callable[..., Case]) -> None:
    """With libvirt's default USB controller and balloon, each takes a root port of its own too."""
    outcome = backend.run(make_case("define", f"<domain><devices>{VIRTIO_NIC}</devices></domain>"), "q35")
    assert outcome.failure is None
    assert outcome.domain_xml is not None
    assert pci_layout(outcome.domain_xml) == [
        ("controller", "usb0:qemu-xhci", "02:00.0"),
        ("controller", "sata0:", "00:1f.2"),
        ("controller", "pci1:pcie-root-port", "00:01.0"),
        ("controller", "pci2:pcie-root-port", "00:01.1"),
        ("controller", "pci3:pcie-root-port", "00:01.2"),
        ("controller", "pci4:pcie-root-port", "00:01.3"),  # the spare port
        ("interface", "user", "01:00.0"),  # NICs come before the USB controller and the balloon
        ("memballoon", "virtio", "03:00.0"),
    ]


def test_define_pc_one_virtio_nic(backend: LibvirtBackend, make_case: Callable[..., Case]) -> None:
    case = make_case("define", f"<domain><devices>{MIN}{VIRTIO_NIC}</devices></domain>", machine="pc")
    outcome = backend.run(case, "pc")
    assert outcome.failure is None
    assert outcome.domain_xml is not None
    assert pci_layout(outcome.domain_xml) == [("interface", "user", "00:02.0")]


def test_define_refused(backend: LibvirtBackend, make_case: Callable[..., Case]) -> None:
    case = make_case(
        "define", "<domain><devices><controller type='pci' index='0' model='pci-root'/></devices></domain>"
    )
    outcome = backend.run(case, "q35")
    assert outcome.domain_xml is None
    assert outcome.failure is not None
    assert (outcome.failure.step, outcome.failure.label) == (0, "define")
    assert outcome.failure.message == (
        "XML error: The PCI controller with index='0' must be model='pcie-root' for this machine type, "
        "but model='pci-root' was found instead"
    )


def test_attach_offline_adds_ports_and_detach_removes_only_the_device(
    backend: LibvirtBackend, make_case: Callable[..., Case]
) -> None:
    first_nic = "<interface type='user'><model type='virtio'/><address type='pci' bus='1' slot='0'/></interface>"
    steps = [("attach", "nic.xml", VIRTIO_NIC), ("attach", "nic.xml", VIRTIO_NIC), ("detach", "first.xml", first_nic)]
    outcome = backend.run(make_case("attach-offline", f"<domain><devices>{MIN}</devices></domain>", steps), "q35")
    assert outcome.failure is None
    assert outcome.domain_xml is not None
    assert pci_layout(outcome.domain_xml) == [
        ("controller", "sata0:", "00:1f.2"),
        ("controller", "pci1:pcie-root-port", "00:01.0"),
        ("controller", "pci2:pcie-root-port", "00:01.1"),
        ("interface", "user", "02:00.0"),
    ]
    assert "<alias" not in outcome.domain_xml  # the persistent definition, not a live XML


def test_attach_offline_failure_keeps_the_last_good_xml(
    backend: LibvirtBackend, make_case: Callable[..., Case]
) -> None:
    sata_address = "<address type='pci' bus='0' slot='0x1f' function='2'/>"
    on_root = f"<interface type='user'><model type='virtio'/>{sata_address}</interface>"
    steps = [("attach", "nic.xml", VIRTIO_NIC), ("attach", "clash.xml", on_root)]
    outcome = backend.run(make_case("attach-offline", f"<domain><devices>{MIN}</devices></domain>", steps), "q35")
    assert outcome.failure is not None
    assert (outcome.failure.step, outcome.failure.label) == (2, "attach clash.xml")
    assert outcome.failure.message == "XML error: Attempted double use of PCI Address 0000:00:1f.2"
    assert outcome.domain_xml is not None
    assert ("interface", "user", "01:00.0") in pci_layout(outcome.domain_xml)


def test_attach_live_second_nic_finds_no_slot(backend: LibvirtBackend, make_case: Callable[..., Case]) -> None:
    steps = [("attach", "nic.xml", VIRTIO_NIC), ("attach", "nic.xml", VIRTIO_NIC)]
    outcome = backend.run(make_case("attach-live", "<domain/>", steps), "q35")
    assert outcome.failure is not None
    assert (outcome.failure.step, outcome.failure.label) == (2, "attach nic.xml")
    assert outcome.failure.message == "internal error: No more available PCI slots"
    assert outcome.domain_xml is not None
    assert '<alias name="net0"/>' in outcome.domain_xml  # the live XML of the running guest
    assert pci_layout(outcome.domain_xml) == [
        ("controller", "usb0:qemu-xhci", "01:00.0"),
        ("controller", "sata0:", "00:1f.2"),
        ("controller", "pci1:pcie-root-port", "00:01.0"),
        ("controller", "pci2:pcie-root-port", "00:01.1"),
        ("controller", "pci3:pcie-root-port", "00:01.2"),
        ("interface", "user", "03:00.0"),  # the one spare port
        ("memballoon", "virtio", "02:00.0"),
    ]


def test_attach_live_refused_first_step(backend: LibvirtBackend, make_case: Callable[..., Case]) -> None:
    on_root = "<interface type='user'><model type='virtio'/><address type='pci' bus='0' slot='5'/></interface>"
    outcome = backend.run(make_case("attach-live", "<domain/>", [("attach", "root.xml", on_root)]), "q35")
    assert outcome.failure is not None
    assert (outcome.failure.step, outcome.failure.label) == (1, "attach root.xml")
    assert outcome.failure.message == (
        "XML error: The device at PCI address 0000:00:05.0 requires hotplug capability, "
        "but the PCI controller with index='0' doesn't support hotplug"
    )
    assert outcome.domain_xml is not None
    assert "<interface" not in outcome.domain_xml
    assert "id=" in outcome.domain_xml.split(">", 1)[0]  # the running guest's XML


def test_a_guest_that_cannot_start_is_step_0_start(backend: LibvirtBackend, make_case: Callable[..., Case]) -> None:
    """define accepts a NIC on a network that does not exist; starting the guest does not."""
    nic = "<interface type='network'><source network='pcie-no-such-net'/><model type='virtio'/></interface>"
    outcome = backend.run(
        make_case("attach-live", f"<domain><devices>{nic}</devices></domain>", [("attach", "nic.xml", VIRTIO_NIC)]),
        "q35",
    )
    assert outcome.failure is not None
    assert (outcome.failure.step, outcome.failure.label) == (0, "start")
    assert outcome.failure.message == "Network not found: no network with matching name 'pcie-no-such-net'"
    assert outcome.domain_xml is not None
    assert " id=" not in outcome.domain_xml.split(">", 1)[0]  # the defined XML: no guest ever ran
    assert ("interface", "network", "01:00.0") in pci_layout(outcome.domain_xml)


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_transient_start_gives_the_same_topology_as_define_and_start(backend: LibvirtBackend, machine: str) -> None:
    """The backend starts live cases as transient guests from the defined XML; a persistent
    define+start must give the same live layout, or live goldens would depend on the choice."""
    lv = backend._libvirt
    devices = f"{VIRTIO_NIC}<interface type='user'><model type='e1000'/></interface><video><model type='vga'/></video>"
    prepared = prepare_domain(f"<domain><devices>{devices}</devices></domain>", machine)
    layouts = []
    for how in ("transient", "persistent"):
        name = f"{NAME_PREFIX}{backend.session}-{how}"
        domain = backend._conn.defineXML(mark_domain(prepared, name, backend.domain_type, backend.owner))
        try:
            if how == "transient":
                inactive = domain.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)
                domain.undefine()
                domain = backend._conn.createXML(inactive, lv.VIR_DOMAIN_START_AUTODESTROY)
            else:
                domain.createWithFlags(lv.VIR_DOMAIN_START_AUTODESTROY)
            domain.attachDeviceFlags(VIRTIO_NIC, lv.VIR_DOMAIN_AFFECT_LIVE)
            layouts.append(pci_layout(domain.XMLDesc(0)))
        finally:
            backend._discard(name)
    assert layouts[0] == layouts[1]
    assert len(layouts[0]) >= 4


def test_a_remote_style_transport_works_the_same(tmp_path: Path, make_case: Callable[..., Case]) -> None:
    """qemu+ssh:// talks to virt-ssh-helper on the far side over a pipe; the ext transport does the
    same with a local command, so this runs the remote code path without an ssh server."""
    helper_binary = Path("/usr/bin/virt-ssh-helper")
    local = open_backend()
    local.close()
    if not helper_binary.is_file():
        pytest.skip("virt-ssh-helper is not installed (package libvirt-clients)")
    helper = tmp_path / "helper.sh"
    helper.write_text(f"#!/bin/sh\nexec {helper_binary} {URI}\n")
    helper.chmod(0o755)
    uri = f"qemu+ext:///system?command={helper}"
    backend = LibvirtBackend(uri)
    try:
        assert backend.header().endswith(f" at {uri}, domain type {local.domain_type}")
        steps = [("attach", "nic.xml", VIRTIO_NIC), ("attach", "nic.xml", VIRTIO_NIC)]
        outcome = backend.run(make_case("attach-live", "<domain/>", steps), "q35")
        assert outcome.failure is not None
        assert (outcome.failure.step, outcome.failure.message) == (2, "internal error: No more available PCI slots")
    finally:
        backend.close()
    checker = open_backend()
    try:
        assert session_domains(checker, backend.session) == set()
    finally:
        checker.close()


def test_a_lost_connection_is_one_line_not_a_case_failure(tmp_path: Path, make_case: Callable[..., Case]) -> None:
    """A dropped connection must not be recorded as libvirt refusing the case."""
    helper_binary = Path("/usr/bin/virt-ssh-helper")
    open_backend().close()
    if not helper_binary.is_file():
        pytest.skip("virt-ssh-helper is not installed (package libvirt-clients)")
    helper = tmp_path / "helper.sh"
    helper.write_text(f"#!/bin/sh\nexec {helper_binary} {URI}\n")
    helper.chmod(0o755)
    uri = f"qemu+ext:///system?command={helper}"
    backend = LibvirtBackend(uri)
    helpers = [pid for pid in children(os.getpid()) if "virt-ssh-helper" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(helpers) == 1
    os.kill(helpers[0], signal.SIGKILL)
    try:
        with pytest.raises(BackendUnavailable) as raised:
            backend.run(make_case("define", "<domain/>"), "q35")
        message = str(raised.value)
        assert message.startswith(f"lost the connection to libvirtd at {uri}: ")
        assert "\n" not in message
    finally:
        backend.close()  # nothing to sweep over a dead connection, and no traceback either


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


# ---- nothing of ours remains ----------------------------------------------------------------------


def test_nothing_remains_after_passing_and_failing_cases(make_case: Callable[..., Case]) -> None:
    backend = open_backend()
    session = backend.session
    try:
        two_nics = [("attach", "nic.xml", VIRTIO_NIC), ("attach", "nic.xml", VIRTIO_NIC)]
        assert backend.run(make_case("define", "<domain/>"), "q35").failure is None
        assert backend.run(make_case("attach-offline", "<domain/>", two_nics), "q35").failure is None
        assert backend.run(make_case("attach-live", "<domain/>", two_nics), "q35").failure is not None
        pci_root_on_q35 = "<domain><devices><controller type='pci' index='0' model='pci-root'/></devices></domain>"
        assert backend.run(make_case("define", pci_root_on_q35), "q35").failure is not None
        assert session_domains(backend, session) <= {f"{NAME_PREFIX}{session}-3"}  # at most the live guest stopping
    finally:
        backend.close()
        backend.close()  # the plugin may close twice (sessionfinish, unconfigure): harmless
    checker = open_backend()
    try:
        assert session_domains(checker, session) == set()
    finally:
        checker.close()
    if QEMU_LOGS.is_dir():  # libvirtd on this host: the live guest's log file went with it
        assert sorted(QEMU_LOGS.glob(f"{NAME_PREFIX}{session}-*")) == []


def test_exception_inside_a_case_still_removes_its_domain(
    backend: LibvirtBackend, make_case: Callable[..., Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def boom(self: LibvirtBackend, domain: Any, *, live: bool) -> str:
        seen.append(domain.name())
        raise KeyboardInterrupt

    monkeypatch.setattr(LibvirtBackend, "_xml", boom)
    with pytest.raises(KeyboardInterrupt):
        backend.run(make_case("define", "<domain/>"), "q35")
    assert seen and seen[0].startswith(f"{NAME_PREFIX}{backend.session}-")
    assert seen[0] not in domain_names(backend)


def test_markers_carry_the_domain_creation_time_not_the_session_start(
    backend: LibvirtBackend, make_case: Callable[..., Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other client hosts judge markers by age; a long session's fresh domain must not look stale."""
    backend.owner = dataclasses.replace(backend.owner, created=time.time() - REMOTE_STALE_AFTER_S - 3600)
    seen: list[Owner | None] = []
    original = LibvirtBackend._xml

    def spy(self: LibvirtBackend, domain: Any, *, live: bool) -> str:
        seen.append(self._owner_of(domain))
        return original(self, domain, live=live)

    monkeypatch.setattr(LibvirtBackend, "_xml", spy)
    started = time.time()
    assert backend.run(make_case("define", "<domain/>"), "q35").failure is None
    assert seen and seen[0] is not None
    assert started - 1 <= seen[0].created <= time.time() + 1
    assert seen[0].session == backend.session


INTERRUPTED_RUN = textwrap.dedent(
    """
    import faulthandler, signal, sys, time
    from pathlib import Path
    # Ctrl-C as in a terminal: a parent started in the background (a CI runner's nohup'd job, a
    # shell without job control) leaves SIGINT ignored, and Python keeps an ignored SIGINT ignored;
    # a parent may also hand down a mask that blocks it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for our stacks if we hang
    from pytest_pcie.backends.libvirt import LibvirtBackend, offered_domain_types
    from pytest_pcie.cases import load_case

    class Paused(LibvirtBackend):
        def _start_transient(self, run):
            domain = super()._start_transient(run)
            self._pause(domain)
            return domain

        def _xml(self, domain, *, live):
            if not live:
                self._pause(domain)
            return super()._xml(domain, live=live)

        def _pause(self, domain):
            print("READY", domain.name(), flush=True)
            # Short sleeps, not one long one: a SIGINT that lands between the eval loop's last
            # check and the start of a sleep would otherwise wait for the whole sleep.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(0.05)

    case = load_case(Path(sys.argv[1]), Path(sys.argv[1]).parent)
    Paused().run(case, "q35")
    """
)

# How long an interrupted child may take to remove its domain and exit.  Generous on purpose: a
# destroy may wait up to 30 s for a domain job libvirtd is running, and QEMU up to 15 s to die.
INTERRUPT_EXIT_S = 90


def _signal_state(pid: int) -> str:
    """The signal lines of /proc/PID/status, to tell a blocked or ignored SIGINT from a slow exit."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        return f"(no /proc/{pid}/status: {exc})"
    return " ".join(line.replace("\t", "") for line in status.splitlines() if line.startswith(("Sig", "ShdPnd")))


@pytest.mark.parametrize(
    ("operation", "sig"),
    [
        ("attach-live", signal.SIGINT),
        ("attach-live", signal.SIGKILL),
        ("define", signal.SIGINT),
        ("define", signal.SIGKILL),
    ],
)
def test_interrupted_run_leaves_nothing_after_the_next_sweep(
    make_case: Callable[..., Case], operation: str, sig: signal.Signals
) -> None:
    open_backend().close()  # skip (or fail) here, not in the child, when libvirtd is unavailable
    steps = [("attach", "nic.xml", VIRTIO_NIC)] if operation == "attach-live" else []
    case = make_case(operation, "<domain/>", steps)
    stderr_path = case.folder / "child-stderr.txt"
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", INTERRUPTED_RUN, str(case.folder)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=REPO,
        )
    try:
        assert child.stdout is not None
        ready = child.stdout.readline().split()
        assert ready and ready[0] == "READY", (ready, stderr_path.read_text())
        name = ready[1]
        observer = open_backend()  # sweeps at start and at close: the owner is alive, so untouched
        try:
            assert name in domain_names(observer)
        finally:
            observer.close()
        assert child.poll() is None
        child.send_signal(sig)
        try:
            child.wait(timeout=INTERRUPT_EXIT_S)
        except subprocess.TimeoutExpired:
            state = _signal_state(child.pid)
            child.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack to stderr
            time.sleep(1)
            pytest.fail(
                f"the child did not exit within {INTERRUPT_EXIT_S} s of {sig.name}; {state}; "
                f"its stderr:\n{stderr_path.read_text()}"
            )
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    sweeper = open_backend()
    try:
        # After SIGKILL of a define case only a sweep can remove the persistent definition: this
        # backend's, or that of a backend a parallel test started meanwhile.
        assert name not in domain_names(sweeper)
    finally:
        sweeper.close()


# ---- other people's domains -----------------------------------------------------------------------


def test_a_case_carrying_the_uuid_of_another_domain_leaves_it_alone(
    backend: LibvirtBackend, make_case: Callable[..., Case]
) -> None:
    lv = backend._libvirt
    tag = uuid.uuid4()
    name = f"pcie-safety-uuid-{tag.hex[:8]}"
    other = prepare_domain(f"<domain><name>{name}</name><uuid>{tag}</uuid></domain>", "pc")
    backend._conn.defineXML(other)
    try:
        outcome = backend.run(make_case("define", f"<domain><uuid>{tag}</uuid></domain>"), "q35")
        assert outcome.failure is None
        assert outcome.domain_xml is not None
        assert str(tag) not in outcome.domain_xml
        still = backend._conn.lookupByName(name)
        assert still.UUIDString() == str(tag)
        assert "pc-i440fx" in still.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)
    finally:
        backend._conn.lookupByName(name).undefine()


def test_sweep_touches_only_marked_domains_of_dead_owners(backend: LibvirtBackend) -> None:
    lv = backend._libvirt
    me = this_process()
    tag = uuid.uuid4().hex[:8]
    dead_child = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_child.wait()
    dead = Owner(me.host, me.boot_id, me.pid_ns, dead_child.pid, "1", "dead" + tag[:4], time.time())
    live_other = this_process(session="live" + tag[:4])
    far_old = Owner("elsewhere", "", "", 1, "1", "far0" + tag[:4], time.time() - REMOTE_STALE_AFTER_S - 60)
    far_new = Owner("elsewhere", "", "", 1, "1", "far1" + tag[:4], time.time())
    plain = prepare_domain("<domain/>", "pc")
    kept = {
        f"pcie-safety-unmarked-{tag}": plain.replace("pcie-case", f"pcie-safety-unmarked-{tag}"),
        f"{NAME_PREFIX}nomarker-{tag}": plain.replace("pcie-case", f"{NAME_PREFIX}nomarker-{tag}"),
        f"pcie-safety-dead-owner-{tag}": mark_domain(plain, f"pcie-safety-dead-owner-{tag}", "kvm", dead),
        f"{NAME_PREFIX}live-owner-{tag}": mark_domain(plain, f"{NAME_PREFIX}live-owner-{tag}", "kvm", live_other),
        f"{NAME_PREFIX}far-new-{tag}": mark_domain(plain, f"{NAME_PREFIX}far-new-{tag}", "kvm", far_new),
    }
    removed = {
        f"{NAME_PREFIX}dead-owner-{tag}": mark_domain(plain, f"{NAME_PREFIX}dead-owner-{tag}", "kvm", dead),
        f"{NAME_PREFIX}far-old-{tag}": mark_domain(plain, f"{NAME_PREFIX}far-old-{tag}", "kvm", far_old),
    }
    try:
        for xml in (*kept.values(), *removed.values()):
            backend._conn.defineXML(xml)
        running = backend._conn.createXML(
            mark_domain(plain, f"{NAME_PREFIX}live-running-{tag}", "kvm", live_other), lv.VIR_DOMAIN_START_AUTODESTROY
        )
        swept = backend.sweep()
        names = domain_names(backend)
        assert set(kept) <= names
        assert f"{NAME_PREFIX}live-running-{tag}" in names and running.isActive()
        assert set(removed) & names == set()  # by this sweep, or by a parallel test's backend
        assert set(kept).isdisjoint(swept)
    finally:
        for name in (*kept, *removed, f"{NAME_PREFIX}live-running-{tag}"):
            try:
                domain = backend._conn.lookupByName(name)
            except lv.libvirtError:
                continue
            persistent = domain.isPersistent()
            if domain.isActive():
                domain.destroy()
            if persistent:
                domain.undefine()


# ---- shared memory: the /dev/shm files our guests created -----------------------------------------
#
# These run anywhere: a fake libvirt module stands in for libvirt-python, and a fake QEMU in it does
# to a temporary "/dev/shm" and "/proc" what the real one does to the host's for an ivshmem-plain
# device.  The last test checks the same on the real libvirtd.


class FakeLibvirtError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    def get_error_code(self) -> int:
        return self.code


NO_DOMAIN = 42


class FakeDomain:
    """A domain on the fake host; a running one is a fake QEMU with a pid of its own in ``proc``."""

    def __init__(self, host: FakeHost, xml: str, *, persistent: bool) -> None:
        self.host, self.xml, self.persistent = host, xml, persistent
        self.uuid = str(uuid.uuid4())
        self.pid: int | None = None

    def name(self) -> str:
        return str(etree.fromstring(self.xml.encode()).findtext("name"))

    def UUIDString(self) -> str:
        return self.uuid

    def isActive(self) -> bool:
        return self.pid is not None

    def isPersistent(self) -> bool:
        return self.persistent

    def XMLDesc(self, flags: int) -> str:
        return self.xml

    def metadata(self, kind: int, uri: str, flags: int) -> str:
        marker = etree.fromstring(self.xml.encode()).find(f"metadata/{{{uri}}}owner")
        if marker is None:
            raise FakeLibvirtError("metadata not found", 80)
        return etree.tostring(marker, encoding="unicode")

    def start(self) -> None:
        self.pid = next(self.host.pids)
        (self.host.proc / str(self.pid)).mkdir()
        self.hotplug(self.xml)

    def hotplug(self, xml: str) -> None:
        """What QEMU does for each ivshmem-plain: open /dev/shm/<name>, creating it, and map it."""
        for shmem in etree.fromstring(xml.encode()).iter("shmem"):
            path = self.host.shm / shmem.get("name", "")
            with path.open("ab"):
                pass
            with (self.host.proc / str(self.pid) / "maps").open("a") as maps:
                maps.write(f"7f8f79431000-7f8f79831000 rw-s 00000000 00:1b 111                        {path}\n")

    def attachDeviceFlags(self, xml: str, flags: int) -> None:
        if flags == FAKE_LIBVIRT.VIR_DOMAIN_AFFECT_LIVE:
            self.hotplug(xml)

    def destroyFlags(self, flags: int) -> None:
        maps = self.host.proc / str(self.pid) / "maps"
        maps.unlink(missing_ok=True)
        maps.parent.rmdir()
        self.pid = None
        if not self.persistent:
            del self.host.domains[self.name()]

    def undefineFlags(self, flags: int) -> None:
        self.persistent = False
        if self.pid is None:
            del self.host.domains[self.name()]


@dataclasses.dataclass
class FakeHost:
    """libvirtd's domains and the directories its QEMU touches; every fake connection shares it."""

    shm: Path
    proc: Path
    journals: Path  # where backends keep their shared-memory journals (never the real /run)
    domains: dict[str, FakeDomain] = dataclasses.field(default_factory=dict)
    pids: Iterator[int] = dataclasses.field(default_factory=lambda: iter(range(1000, 2000)))

    def open(self, uri: str) -> FakeConnection:
        return FakeConnection(self)


class FakeConnection:
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def getCapabilities(self) -> str:
        arch = "<arch name='x86_64'><domain type='kvm'/></arch>"
        return f"<capabilities><guest><os_type>hvm</os_type>{arch}</guest></capabilities>"

    def getVersion(self) -> int:
        return 7_002_000

    def getLibVersion(self) -> int:
        return 9_000_000

    def getHostname(self) -> str:
        return "fake-host"

    def isAlive(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def listAllDomains(self, flags: int) -> list[FakeDomain]:
        return list(self.host.domains.values())

    def defineXML(self, xml: str) -> FakeDomain:
        domain = FakeDomain(self.host, xml, persistent=True)
        self.host.domains[domain.name()] = domain
        return domain

    def createXML(self, xml: str, flags: int) -> FakeDomain:
        domain = FakeDomain(self.host, xml, persistent=False)
        self.host.domains[domain.name()] = domain
        domain.start()
        return domain

    def lookupByName(self, name: str) -> FakeDomain:
        if name not in self.host.domains:
            raise FakeLibvirtError(f"Domain not found: no domain with matching name '{name}'", NO_DOMAIN)
        return self.host.domains[name]

    def lookupByUUIDString(self, wanted: str) -> FakeDomain:
        return next(domain for domain in list(self.host.domains.values()) if domain.uuid == wanted)


FAKE_LIBVIRT = types.ModuleType("libvirt")  # what the backend uses of libvirt-python
vars(FAKE_LIBVIRT).update(
    libvirtError=FakeLibvirtError,
    registerErrorHandler=lambda handler, context: None,
    getVersion=lambda: 9_000_000,
    VIR_DOMAIN_START_AUTODESTROY=1,
    VIR_DOMAIN_AFFECT_LIVE=1,
    VIR_DOMAIN_AFFECT_CONFIG=2,
    VIR_DOMAIN_XML_INACTIVE=2,
    VIR_DOMAIN_METADATA_ELEMENT=2,
    VIR_DOMAIN_UNDEFINE_NVRAM=4,
    VIR_ERR_NO_DOMAIN=NO_DOMAIN,
    VIR_ERR_OPERATION_INVALID=55,
)


@pytest.fixture
def fake_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    """A fake libvirtd + QEMU whose "/dev/shm" and "/proc" are folders in tmp_path."""
    host = FakeHost(tmp_path / "shm", tmp_path / "proc", tmp_path / "journals")
    host.shm.mkdir()
    host.proc.mkdir()
    monkeypatch.setattr(FAKE_LIBVIRT, "open", host.open, raising=False)
    monkeypatch.setitem(sys.modules, "libvirt", FAKE_LIBVIRT)
    return host


def shmem_device(name: str, model: str = "ivshmem-plain") -> str:
    return f"<shmem name='{name}'><model type='{model}'/><size unit='M'>4</size></shmem>"


def finish_destroys(backend: LibvirtBackend) -> None:
    """Wait until the guests the backend is destroying in the background are gone."""
    for future in list(backend._pending):
        future.result(timeout=30)


def test_the_shared_memory_files_our_guests_created_go_once_no_guest_maps_them(
    fake_host: FakeHost, make_case: Callable[..., Case]
) -> None:
    shm = fake_host.shm
    (shm / "in use").write_text("created by an earlier run")  # a name our guest uses, but not its file
    (shm / "someone-else").write_text("not named by any case")
    started = f"<domain><devices>{MIN}{shmem_device('guest a')}{shmem_device('in use')}</devices></domain>"
    steps = [("attach", "shm.xml", shmem_device("hotplugged"))]
    backend = LibvirtBackend(URI, shm_dir=shm, proc_dir=fake_host.proc, journal_dir=fake_host.journals)
    try:
        assert backend.run(make_case("attach-live", started, steps), "q35").failure is None
        assert {"guest a", "hotplugged"} <= {path.name for path in shm.iterdir()}  # the fake QEMU made them
        other = fake_host.proc / "77"  # another run's guest maps one of them meanwhile
        other.mkdir()
        (other / "maps").write_text(f"7f-7f rw-s 00000000 00:1b 112                        {shm}/guest a\n")
        finish_destroys(backend)
        assert backend.run(make_case("define", "<domain/>"), "q35").failure is None  # reaps the finished destroy
        # Our guest is gone: the file only it mapped went, the one mapped elsewhere waits.
        assert sorted(path.name for path in shm.iterdir()) == ["guest a", "in use", "someone-else"]
        (other / "maps").unlink()
    finally:
        backend.close()
    assert sorted(path.name for path in shm.iterdir()) == ["in use", "someone-else"]
    assert (shm / "in use").read_text() == "created by an earlier run"


def test_shared_memory_outside_the_folder_or_of_a_remote_host_is_never_removed(
    fake_host: FakeHost, make_case: Callable[..., Case], tmp_path: Path
) -> None:
    (tmp_path / "outside").mkdir()
    (fake_host.shm / "link").symlink_to(tmp_path / "outside" / "target")  # dangling: QEMU creates the target
    started = f"<domain><devices>{MIN}{shmem_device('link')}{shmem_device('remote')}</devices></domain>"
    steps = [("attach", "escape.xml", shmem_device("../escaped"))]
    backend = LibvirtBackend(URI, shm_dir=fake_host.shm, proc_dir=fake_host.proc, journal_dir=fake_host.journals)
    try:
        assert backend.run(make_case("attach-live", started, steps), "q35").failure is None
    finally:
        backend.close()
    assert (tmp_path / "outside" / "target").is_file()
    assert (fake_host.shm / "link").is_symlink()
    assert (tmp_path / "escaped").is_file()
    assert not (fake_host.shm / "remote").exists()  # removed: the same run, a plain name
    remote = LibvirtBackend(
        "qemu+ssh://root@lab1/system", shm_dir=fake_host.shm, proc_dir=fake_host.proc, journal_dir=fake_host.journals
    )
    try:
        assert remote.run(make_case("attach-live", started, steps), "q35").failure is None
    finally:
        remote.close()
    assert (fake_host.shm / "remote").is_file()  # that host's /dev/shm is not this one


def test_only_file_backed_shmem_devices_with_plain_names_are_candidates() -> None:
    xml = (
        f"<domain><devices>{shmem_device('plain')}<shmem name='default'/>{shmem_device('bell', 'ivshmem-doorbell')}"
        "<shmem name='served'><server path='/tmp/ivshmem.sock'/></shmem>"
        f"{shmem_device('a/b')}{shmem_device('..')}{shmem_device('x..y')}{shmem_device('.')}<shmem/></devices></domain>"
    )
    assert shmem_names([xml, "<shmem name='broken'", shmem_device("with space")]) == {"plain", "default", "with space"}
    assert shmem_names([xml], prefix="pl") == {"plain"}


def test_a_real_live_guest_leaves_no_shared_memory_file_of_its_own(make_case: Callable[..., Case]) -> None:
    """On the real libvirtd and /dev/shm: QEMU creates the files, the backend removes its guests'."""
    backend = open_backend()
    tag = f"pcie-test-shm-{uuid.uuid4().hex[:8]}"
    existing = SHM_DIR / f"{tag}-existing"
    existing.write_bytes(b"\1" * 4 * 1024 * 1024)
    try:
        started = f"<domain><devices>{MIN}{shmem_device(f'{tag}-a')}{shmem_device(existing.name)}</devices></domain>"
        case = make_case("attach-live", started, [("attach", "shm.xml", shmem_device(f"{tag}-b"))])
        assert backend.run(case, "q35").failure is None
        assert (SHM_DIR / f"{tag}-a").is_file() and (SHM_DIR / f"{tag}-b").is_file()
        backend.close()
        assert sorted(path.name for path in SHM_DIR.glob(f"{tag}-*")) == [existing.name]
        assert existing.read_bytes()[:4] == b"\1" * 4
    finally:
        backend.close()
        for path in SHM_DIR.glob(f"{tag}-*"):
            path.unlink()


def test_a_killed_runs_shared_memory_files_go_when_the_next_backend_starts(
    fake_host: FakeHost, make_case: Callable[..., Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's path through the backend: written while a case runs, swept at the next start."""
    journals, shm = fake_host.journals, fake_host.shm
    (shm / "existing").write_text("made before")
    started = f"<domain><devices>{MIN}{shmem_device('guest a')}{shmem_device('existing')}</devices></domain>"
    steps = [("attach", "shm.xml", shmem_device("hotplugged"))]
    killed = LibvirtBackend(URI, shm_dir=shm, proc_dir=fake_host.proc, journal_dir=journals)
    # A process that died: same pid, another start time (what is_leftover sees after pid reuse).
    killed._shm.owner = dataclasses.replace(killed._shm.owner, pid_start="dead")
    monkeypatch.setattr(killed, "_guest_gone", lambda shm_created: None)  # SIGKILL: it never got that far
    assert killed.run(make_case("attach-live", started, steps), "q35").failure is None
    finish_destroys(killed)  # libvirtd's autodestroy stops its guest
    killed._destroyer.shutdown()
    assert sorted(path.name for path in shm.iterdir()) == ["existing", "guest a", "hotplugged"]
    assert len(list(journals.glob("shm-*.json"))) == 1

    remote = LibvirtBackend("qemu+ssh://root@lab1/system", shm_dir=shm, proc_dir=fake_host.proc, journal_dir=journals)
    remote.close()
    assert sorted(path.name for path in shm.iterdir()) == ["existing", "guest a", "hotplugged"]  # not its /dev/shm

    sweeper = LibvirtBackend(URI, shm_dir=shm, proc_dir=fake_host.proc, journal_dir=journals)
    try:
        assert sorted(path.name for path in shm.iterdir()) == ["existing"]
        assert list(journals.glob("shm-*.json")) == []
        assert (shm / "existing").read_text() == "made before"
    finally:
        sweeper.close()


KILLED_WITH_SHMEM = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pytest_pcie.backends.libvirt import LibvirtBackend, offered_domain_types
    from pytest_pcie.cases import load_case

    folder, journals, when = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def pause(domain):
        print("READY", domain.name(), flush=True)
        time.sleep(120)

    class Paused(LibvirtBackend):
        def _start_transient(self, run):
            if when == "during-start":  # QEMU has created the file; the check after the start has not run
                create = self._conn.createXML
                self._conn.createXML = lambda xml, flags: pause(create(xml, flags))
            domain = super()._start_transient(run)
            pause(domain)
            return domain

    case = load_case(folder, folder.parent)
    Paused(journal_dir=journals).run(case, "q35")
    """
)


@pytest.mark.parametrize("when", ["after-start", "during-start"])
def test_a_real_killed_runs_shared_memory_file_goes_when_the_next_backend_starts(
    make_case: Callable[..., Case], tmp_path: Path, when: str
) -> None:
    """On the real libvirtd and /dev/shm: SIGKILL a run whose live guest holds a shmem file."""
    open_backend().close()  # skip (or fail) here, not in the child, when libvirtd is unavailable
    journals = tmp_path / "journals"
    tag = f"pcie-test-shm-{uuid.uuid4().hex[:8]}"
    path = SHM_DIR / f"{tag}-a"
    started = f"<domain><devices>{MIN}{shmem_device(path.name)}</devices></domain>"
    case = make_case("attach-live", started, [("attach", "nic.xml", VIRTIO_NIC)])
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WITH_SHMEM, str(case.folder), str(journals), when],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        ready = child.stdout.readline().split()
        assert ready[0] == "READY", ready
        assert path.is_file()
        [journal] = journals.glob("shm-*.json")
        assert path.name in json.loads(journal.read_text())["pending" if when == "during-start" else "claimed"]
        child.kill()
        child.wait(timeout=30)
        wait_until_stopped(ready[1], path)
        assert path.is_file()  # QEMU and libvirtd leave it behind
        sweeper = LibvirtBackend(URI, journal_dir=journals)
        try:
            assert not path.exists()
            assert list(journals.glob("shm-*.json")) == []
        finally:
            sweeper.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for leftover in SHM_DIR.glob(f"{tag}-*"):
            leftover.unlink()


def wait_until_stopped(name: str, path: Path, timeout: float = 60) -> None:
    """Wait for libvirtd's autodestroy: domain ``name`` gone and no process mapping ``path``."""
    checker = open_backend()
    try:
        deadline = time.monotonic() + timeout
        while name in domain_names(checker) or SharedMemory()._mapped({path}):
            assert time.monotonic() < deadline, f"{name} still running {timeout} s after its owner was killed"
            time.sleep(0.1)
    finally:
        checker.close()


# ---- machines of other arches ---------------------------------------------------------------------


def test_domain_types_are_picked_per_arch() -> None:
    class Caps:
        def getCapabilities(self) -> str:
            guests = {"x86_64": "kvm", "aarch64": "qemu", "riscv64": "qemu"}
            both = "<domain type='qemu'/><domain type='kvm'/>"
            return "<capabilities>" + "".join(
                f"<guest><os_type>hvm</os_type><arch name='{arch}'>"
                f"{both if kind == 'kvm' else '<domain type=' + repr(kind) + '/>'}</arch></guest>"
                for arch, kind in guests.items()
            ) + "<guest><os_type>xen</os_type><arch name='armv7l'><domain type='xen'/></arch></guest></capabilities>"

    assert offered_domain_types(Caps()) == {"x86_64": "kvm", "aarch64": "qemu", "riscv64": "qemu"}


def test_a_host_without_the_arch_emulator_is_one_line(fake_host: FakeHost, make_case: Callable[..., Case]) -> None:
    backend = LibvirtBackend(URI, shm_dir=fake_host.shm, proc_dir=fake_host.proc, journal_dir=fake_host.journals)
    try:
        with pytest.raises(BackendUnavailable) as raised:
            backend.run(make_case("define", "<domain><devices/></domain>", machine="aarch64-virt"), "aarch64-virt")
    finally:
        backend.close()
    message = str(raised.value)
    assert message.startswith(f"no QEMU aarch64 emulator at {URI}, which machine 'aarch64-virt' needs")
    assert "apt-get install qemu-system-arm" in message and "\n" not in message
    assert fake_host.domains == {}


@pytest.mark.parametrize("machine", ["aarch64-virt", "riscv64-virt"])
def test_virt_guests_define_start_and_hotplug_under_tcg(
    backend: LibvirtBackend, make_case: Callable[..., Case], machine: str
) -> None:
    family = MACHINE_FAMILIES[machine]
    if family.arch not in backend.domain_types:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but libvirtd offers no {family.arch} guests", pytrace=False)
        pytest.skip(f"libvirtd offers no {family.arch} guests")
    case = make_case("attach-live", f"<domain><devices>{MIN}{VIRTIO_NIC}</devices></domain>",
                     [("attach", "nic.xml", VIRTIO_NIC)], machine=machine)  # fmt: skip
    outcome = backend.run(case, machine)
    assert outcome.failure is None and outcome.domain_xml is not None
    root = etree.fromstring(outcome.domain_xml.encode("utf-8"))
    assert root.get("type") == "qemu"  # the case's own type is given back: TCG, whatever the host has
    nics = [entry for entry in pci_layout(outcome.domain_xml) if entry[0] == "interface"]
    assert nics == [("interface", "user", "01:00.0"), ("interface", "user", "02:00.0")]  # the spare port took it
