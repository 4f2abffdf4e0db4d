"""The libvirt backend: run cases on a real libvirtd + QEMU host and record what libvirt decides.

Every case gets a fresh, uniquely named domain that carries our ownership marker
(:mod:`pytest_pcie.backends.libvirt_safety`), and is destroyed and undefined however the case ends.
Live cases start a transient guest with ``VIR_DOMAIN_START_AUTODESTROY``, so even a killed pytest
leaves no running guest: libvirtd stops it when our connection drops.  What a kill can leave (a
persistent definition) is swept by the next backend that connects, but only once its owner is
known to be gone.  The /dev/shm files our guests' shmem devices made QEMU create are removed once
those guests are gone (:mod:`pytest_pcie.backends.shared_memory`); a journal of them lets the next
backend remove those of a killed run, once that run's owner is gone by the same rules.

Everything goes through the libvirt API at the given URI, so a remote ``qemu+ssh://`` host works
the same as the local socket; only shared-memory files, which no API reaches, are cleaned up for
local URIs alone.
"""

from __future__ import annotations

import importlib
import itertools
import signal
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from lxml import etree

from pytest_pcie.backends.base import BackendUnavailable
from pytest_pcie.backends.libvirt_safety import (
    MARKER_NS,
    MARKER_PREFIX,
    MARKER_TAG,
    NAME_PREFIX,
    Owner,
    is_leftover,
    mark_domain,
    parse_marker,
    shares_host_shm,
    this_process,
    unmark_domain,
)
from pytest_pcie.backends.shared_memory import JOURNAL_DIR, PROC_DIR, SHM_DIR, SharedMemory
from pytest_pcie.cases import Action, Case, Operation
from pytest_pcie.domain import prepare_domain
from pytest_pcie.machines import MACHINE_FAMILIES, X86_64
from pytest_pcie.outcome import Failure, Outcome
from pytest_pcie.versions import Version

DEFAULT_URI = "qemu:///system"
PREPARE_HINT = "start it with `sudo scripts/prepare-host`"
# A socket= URI is, on hosts this project prepared, one of the chroot daemons of other versions.
PREPARE_VERSIONS_HINT = "start it with `sudo scripts/prepare-host --versions` if it is one of docs/versions.md's"

# Domain types in order of preference: KVM when the host offers it, else QEMU's TCG emulation.
# Both lay out PCI identically; KVM only starts guests faster.
DOMAIN_TYPES = ("kvm", "qemu")

# Stopping a guest takes libvirtd 0.2 s at best and, on hosts whose init reaps orphaned processes
# slowly (measured: 2 s in a container whose pid 1 is not a real init), that long again waiting for
# QEMU's pid to vanish.  Live guests are therefore destroyed in the background, over a connection
# of their own, while the next case runs.  This caps how many are in flight: libvirtd serves at
# most 5 requests per client at once by default, and every waiting destroy holds one.
MAX_BACKGROUND_DESTROYS = 4

# At close our own guests are all gone, so a shared-memory file still mapped is mapped by another
# run's guest that found it there (another worker running a case with the same shmem name); such a
# guest lives a few seconds.  Wait that long for it, not for a guest that never stops.
SHM_CLOSE_WAIT = 10.0


class StepRefused(Exception):
    """libvirt refused a step; carries libvirt's message exactly as libvirt-python words it."""


@dataclass
class _Run:
    """One case on one machine while it runs: the names the backend must put back afterwards."""

    name: str
    case_name: str
    case_type: str
    domain_xml: str | None = None
    shm_created: set[str] = field(default_factory=set)  # /dev/shm files its guest created


class LibvirtBackend:
    """Runs cases on libvirtd at ``uri``; one instance per pytest session or xdist worker."""

    name = "libvirt"

    def __init__(
        self,
        uri: str = DEFAULT_URI,
        shm_dir: Path = SHM_DIR,
        proc_dir: Path = PROC_DIR,
        journal_dir: Path | None = JOURNAL_DIR,
    ) -> None:
        """``shm_dir``, ``proc_dir`` and ``journal_dir`` stand in for /dev/shm, /proc and
        /run/pytest-pcie in tests; ``journal_dir`` None keeps no journal of shared-memory files."""
        self.uri = uri
        self.owner = this_process()
        local = shares_host_shm(uri)
        self._shm = SharedMemory(shm_dir if local else None, proc_dir, journal_dir=journal_dir, owner=self.owner)
        self._libvirt = _import_libvirt()
        self._conn = _open(self._libvirt, uri)
        try:
            self.domain_type = pick_domain_type(self._conn, uri)
            self.domain_types = offered_domain_types(self._conn)  # by arch: aarch64 runs under TCG
            # The daemon's versions, not this process's library: a remote or chroot daemon may be
            # another release than the libvirt-python that talks to it.
            self.version = Version.from_number(self._conn.getLibVersion())
            self.qemu_version = Version.from_number(self._conn.getVersion())
            self.host = str(self._conn.getHostname())
            self._counter = itertools.count(1)
            self._destroyer = ThreadPoolExecutor(MAX_BACKGROUND_DESTROYS, thread_name_prefix="pcie-destroy")
            self._destroy_conn: Any = None
            self._pending: dict[Future[None], Collection[str]] = {}  # destroy -> its guest's shm files
            self._closed = False
            self.swept = self.sweep()
            self._shm.sweep()  # a killed run's guests are gone (autodestroy): their files may go
        except BaseException:
            self._conn.close()
            raise

    @property
    def session(self) -> str:
        """The random token in every domain name this backend creates (``pcie-test-<session>-<n>``)."""
        return self.owner.session

    def header(self) -> str:
        client = Version.from_number(self._libvirt.getVersion())
        return (
            f"pcie backend: libvirt {self.version}, QEMU {self.qemu_version} on host {self.host} "
            f"(client library {client}) at {self.uri}, domain type {self.domain_type}"
        )

    def run(self, case: Case, machine: str) -> Outcome:
        if MACHINE_FAMILIES[machine].arch not in self.domain_types:
            raise BackendUnavailable(missing_arch(self.uri, machine))
        run, marked = self._new_run(prepare_domain(case.input_xml, machine))
        try:
            return self._run_steps(case, run, marked)
        except self._libvirt.libvirtError as exc:
            self._check_connection(exc)
            raise
        finally:
            with sigint_deferred():
                self._discard(run.name, background=True, shm_created=run.shm_created)

    def redefine(self, domain_xml: str) -> Outcome:
        """Define ``domain_xml`` exactly as given and return what libvirt stored, then remove it.

        This is the upgrade check's step: ``domain_xml`` is what another (older) libvirt stored, and
        the answer shows whether this one keeps every address.  A refusal is the outcome's failure.
        """
        run, marked = self._new_run(domain_xml)
        try:
            try:
                domain = self._conn.defineXML(marked)
            except self._libvirt.libvirtError as exc:
                return Outcome(None, Failure(0, "define", self._refusal(exc)))
            run.domain_xml = self._xml(domain, live=False)
            return self._outcome(run)
        finally:
            with sigint_deferred():
                self._discard(run.name)

    def close(self) -> None:
        """Finish background destroys, remove what this session (or an earlier, dead one) left,
        including its guests' shared-memory files (and with them this session's journal), then
        drop the connection.  Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._destroyer.shutdown(wait=True)  # Ctrl-C stays possible: the threads finish anyway
            self._collect_finished()
            if self._conn.isAlive():
                self.sweep()
            self._shm.remove(SHM_CLOSE_WAIT)
            self._shm.sweep()
        finally:
            if self._destroy_conn is not None:
                self._destroy_conn.close()
            self._conn.close()

    def sweep(self) -> list[str]:
        """Destroy and undefine every leftover domain of ours; return the names removed.

        A domain is touched only if it has our name prefix AND our marker AND its owner is gone
        (see :func:`pytest_pcie.backends.libvirt_safety.is_leftover`).  Domains vanishing under our
        feet (another worker sweeping the same leftovers) are not an error.
        """
        removed = []
        now = time.time()
        for domain in self._conn.listAllDomains(0):
            name = domain.name()
            if not name.startswith(NAME_PREFIX):
                continue
            owner = self._owner_of(domain)
            if owner is None or not is_leftover(owner, self.owner, now):
                continue
            with sigint_deferred():
                if self._discard(name, owner_check=owner.__eq__):
                    removed.append(name)
        return removed

    # ---- one case -------------------------------------------------------------------------------

    def _new_run(self, domain_xml: str) -> tuple[_Run, str]:
        """A fresh run for ``domain_xml`` and the XML to define: our name, domain type and marker."""
        root = etree.fromstring(domain_xml.encode("utf-8"))
        run = _Run(
            name=f"{NAME_PREFIX}{self.session}-{next(self._counter)}",
            case_name=root.findtext("name") or "",
            case_type=root.get("type", "kvm"),
        )
        # The marker's time is the domain's own creation time, not the session's: the age rule must
        # not judge a fresh domain of a long-running session (a fuzzer, a big corpus) as stale.
        os_type = root.find("os/type")
        arch = (os_type.get("arch") if os_type is not None else None) or X86_64
        domain_type = self.domain_types.get(arch, self.domain_type)  # none: libvirt names what is missing
        marked = mark_domain(domain_xml, run.name, domain_type, replace(self.owner, created=time.time()))
        self._collect_finished()
        return run, marked

    def _run_steps(self, case: Case, run: _Run, marked_xml: str) -> Outcome:
        try:
            domain = self._conn.defineXML(marked_xml)
        except self._libvirt.libvirtError as exc:
            return Outcome(None, Failure(0, "define", self._refusal(exc)))
        run.domain_xml = self._xml(domain, live=False)
        if case.operation is Operation.DEFINE:
            return self._outcome(run)
        if case.operation.live:
            try:
                domain = self._start_transient(run)
            except StepRefused as exc:
                return self._outcome(run, Failure(0, "start", str(exc)))
            run.domain_xml = self._xml(domain, live=True)
        flags = self._libvirt.VIR_DOMAIN_AFFECT_LIVE if case.operation.live else self._libvirt.VIR_DOMAIN_AFFECT_CONFIG
        for number, step in enumerate(case.steps, start=1):
            apply = domain.attachDeviceFlags if step.action is Action.ATTACH else domain.detachDeviceFlags
            hotplugged = step.device_xml if case.operation.live and step.action is Action.ATTACH else None
            try:
                with self._noting_shm(run, hotplugged):
                    apply(step.device_xml, flags)
            except self._libvirt.libvirtError as exc:
                return self._outcome(run, Failure(number, step.label, self._refusal(exc)))
            run.domain_xml = self._xml(domain, live=case.operation.live)
        return self._outcome(run)

    def _start_transient(self, run: _Run) -> Any:
        """Swap the definition for a running transient guest built from exactly what define stored.

        Transient plus AUTODESTROY means libvirtd itself stops the guest if this process dies.
        """
        assert run.domain_xml is not None
        inactive = run.domain_xml
        with sigint_deferred():
            self._discard(run.name)
        try:
            with self._noting_shm(run, inactive):
                return self._conn.createXML(inactive, self._libvirt.VIR_DOMAIN_START_AUTODESTROY)
        except self._libvirt.libvirtError as exc:
            raise StepRefused(self._refusal(exc)) from None

    @contextmanager
    def _noting_shm(self, run: _Run, started_xml: str | None) -> Iterator[None]:
        """Note in ``run`` the /dev/shm files QEMU creates while the block starts or hotplugs
        ``started_xml`` (None: nothing reaches QEMU), however the block ends."""
        absent = self._shm.before([started_xml] if started_xml is not None else [])
        try:
            yield
        finally:
            run.shm_created |= self._shm.appeared(absent)

    def _refusal(self, exc: Any) -> str:
        """libvirt's message for a step it refused, exactly as libvirt-python words it."""
        self._check_connection(exc)
        return str(exc)

    def _check_connection(self, exc: Any) -> None:
        """A dropped connection is no answer about the case: stop with one line instead."""
        if not self._conn.isAlive():
            raise BackendUnavailable(
                f"lost the connection to libvirtd at {self.uri}: {_one_line(exc)}; "
                "the next run removes the test domains this one left"
            ) from None

    def _outcome(self, run: _Run, failure: Failure | None = None) -> Outcome:
        xml = run.domain_xml
        restored = None if xml is None else unmark_domain(xml, run.case_name, run.case_type)
        return Outcome(restored, failure)

    def _xml(self, domain: Any, *, live: bool) -> str:
        flags = 0 if live else self._libvirt.VIR_DOMAIN_XML_INACTIVE
        return str(domain.XMLDesc(flags))

    # ---- removing domains -----------------------------------------------------------------------

    def _owner_of(self, domain: Any) -> Owner | None:
        try:
            text = domain.metadata(self._libvirt.VIR_DOMAIN_METADATA_ELEMENT, MARKER_NS, 0)
        except self._libvirt.libvirtError:
            return None  # no marker of ours, or the domain is already gone
        return parse_marker(_with_namespace(str(text)))

    def _discard(
        self,
        name: str,
        owner_check: Callable[[Owner], bool] | None = None,
        *,
        background: bool = False,
        shm_created: Collection[str] = (),
    ) -> bool:
        """Stop and undefine domain ``name`` if it still exists and is ours; True if it was removed.

        Looked up by name rather than by handle so that an interrupt between libvirt creating the
        domain and Python receiving the handle still finds it.  Without ``owner_check`` the marker
        must name this backend's session.  With ``background`` a running guest is stopped by a
        worker thread (see :data:`MAX_BACKGROUND_DESTROYS`); :meth:`close` waits for all of them.
        ``shm_created``, the /dev/shm files the guest created, are removed once it is gone.
        """
        try:
            if not name.startswith(NAME_PREFIX) or not self._conn.isAlive():
                return False
            lv = self._libvirt
            try:
                domain = self._conn.lookupByName(name)
                owner = self._owner_of(domain)
                check = owner_check or (lambda found: found.session == self.session and found.pid == self.owner.pid)
                if owner is None or not check(owner):
                    return False
                if background and domain.isActive():
                    uuid, conn = domain.UUIDString(), self._destroy_connection()
                    self._in_background(lambda: self._remove(conn, lambda: conn.lookupByUUIDString(uuid)), shm_created)
                    shm_created = ()  # handed to the destroy: they go when it has finished
                    return True
            except lv.libvirtError as exc:
                if _gone(lv, exc):
                    return False
                raise
            self._remove(self._conn, lambda: domain)
            return True
        finally:
            self._guest_gone(shm_created)

    def _remove(self, conn: Any, find: Callable[[], Any]) -> None:
        """Destroy and undefine the domain ``find`` returns, already known to be ours.

        The guest's log file goes too (it would otherwise pile up, one per live case).  A domain
        that is gone already is fine: another worker's sweep got there first, or a transient guest
        vanished as it stopped.  So is a connection that dropped meanwhile: the run already
        reported it, and the next run's sweep removes the domain.
        """
        lv = self._libvirt
        try:
            domain = find()
            persistent = domain.isPersistent()
            if domain.isActive():
                domain.destroyFlags(getattr(lv, "VIR_DOMAIN_DESTROY_REMOVE_LOGS", 0))
            if persistent:
                domain.undefineFlags(lv.VIR_DOMAIN_UNDEFINE_NVRAM)
        except lv.libvirtError as exc:
            if not _gone(lv, exc) and conn.isAlive():
                raise

    def _destroy_connection(self) -> Any:
        """The second connection background destroys use, opened on first need."""
        if self._destroy_conn is None:
            self._destroy_conn = _open(self._libvirt, self.uri)
        return self._destroy_conn

    def _in_background(self, job: Callable[[], None], shm_created: Collection[str]) -> None:
        """Run destroy ``job`` in a worker thread; its guest's ``shm_created`` go when it finishes."""
        while len(self._pending) >= MAX_BACKGROUND_DESTROYS:
            wait(list(self._pending), return_when=FIRST_COMPLETED)
            self._collect_finished()
        self._pending[self._destroyer.submit(job)] = shm_created

    def _collect_finished(self) -> None:
        """Forget finished background destroys and remove the shared-memory files of their guests,
        now gone; re-raise the first destroy that failed (a backend bug)."""
        finished = [future for future in self._pending if future.done()]
        gone: set[str] = set()
        for future in finished:
            gone.update(self._pending.pop(future))
        self._guest_gone(gone)
        for future in finished:
            future.result()

    def _guest_gone(self, shm_created: Collection[str]) -> None:
        """Remove the /dev/shm files a guest created, now that it is gone.

        A file another run's guest still maps stays claimed, for the next guest gone or for
        :meth:`close`.
        """
        if shm_created:
            self._shm.claim(shm_created)
            self._shm.remove(wait=0)


def _import_libvirt() -> ModuleType:
    try:
        module = importlib.import_module("libvirt")
    except ImportError:
        raise BackendUnavailable("libvirt-python is not installed: pip install 'pytest-pcie[libvirt]'") from None
    # libvirt-python prints every error to stderr by default; we report them ourselves.
    module.registerErrorHandler(lambda _ctx, _err: None, None)
    return module


def _open(lv: ModuleType, uri: str) -> Any:
    try:
        return lv.open(uri)
    except lv.libvirtError as exc:
        hint = PREPARE_VERSIONS_HINT if "socket=" in uri else PREPARE_HINT
        raise BackendUnavailable(f"libvirtd is not reachable at {uri}: {_one_line(exc)}; {hint}") from None


def offered_domain_types(conn: Any) -> dict[str, str]:
    """The preferred domain type (:data:`DOMAIN_TYPES` order) the host offers for hvm guests, by arch.

    The capabilities list a domain type for an architecture only when the matching emulator is
    installed, so an arch missing here has no ``qemu-system-*`` binary on the (possibly remote) host.
    """
    caps = etree.fromstring(str(conn.getCapabilities()).encode("utf-8"))
    offered: dict[str, set[str]] = {}
    for guest in caps.findall("guest"):
        if guest.findtext("os_type") != "hvm":
            continue
        for arch in guest.findall("arch"):
            offered.setdefault(str(arch.get("name")), set()).update(
                str(domain.get("type")) for domain in arch.findall("domain")
            )
    return {
        arch: next(domain_type for domain_type in DOMAIN_TYPES if domain_type in types)
        for arch, types in offered.items()
        if any(domain_type in types for domain_type in DOMAIN_TYPES)
    }


def pick_domain_type(conn: Any, uri: str) -> str:
    """Return the preferred domain type the host offers for x86_64 hvm guests, which every run
    needs (the other architectures are checked when a case needs them: :func:`missing_arch`)."""
    found = offered_domain_types(conn).get(X86_64)
    if found is not None:
        return found
    raise BackendUnavailable(
        f"no QEMU {X86_64} emulator at {uri} (libvirt's {conn.getType()} driver offers no {X86_64} domain type); "
        "install one there with `apt-get install qemu-system-x86`, or point --pcie-libvirt-uri at a qemu:// URI"
    )


def missing_arch(uri: str, machine: str) -> str:
    """The message for a case on ``machine`` at a host without the family's emulator."""
    family = MACHINE_FAMILIES[machine]
    return (
        f"no QEMU {family.arch} emulator at {uri}, which machine {machine!r} needs; install one there with "
        f"`apt-get install {family.emulator_package}` (scripts/prepare-host does), or leave {machine!r} out"
    )


def _gone(lv: ModuleType, exc: Any) -> bool:
    """True for errors meaning the domain vanished or stopped under us, e.g. by a parallel sweep."""
    return exc.get_error_code() in (lv.VIR_ERR_NO_DOMAIN, lv.VIR_ERR_OPERATION_INVALID)


def _with_namespace(text: str) -> str:
    """libvirt returns a metadata element without its namespace declaration; give it back ours."""
    root = etree.fromstring(text.encode("utf-8"))
    element = etree.Element(f"{{{MARKER_NS}}}{MARKER_TAG}", nsmap={MARKER_PREFIX: MARKER_NS})
    for key, value in root.attrib.items():
        element.set(key, value)
    return etree.tostring(element, encoding="unicode")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back while a domain is being removed, so an interrupt cannot leave half of one.

    The pending SIGINT is delivered (as KeyboardInterrupt) as soon as the block ends.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
