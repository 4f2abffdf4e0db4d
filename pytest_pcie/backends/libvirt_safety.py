"""How the libvirt backend recognises its own domains, so it never touches anybody else's.

Users point the backend at hosts that hold their real VMs, and several runs may share one libvirtd
(two xdist workers, two pytest sessions, colleagues on the same box).  So a domain counts as ours
only when it carries BOTH marks:

* a name starting with :data:`NAME_PREFIX`, and
* a ``<metadata>`` element in :data:`MARKER_NS` recording who created it: the client host (name,
  kernel boot id and pid namespace), the pid and that process's start time, a random session token
  and the creation time.

A marked domain is a *leftover* only when its owner is certainly gone: on the same client host
(same name, boot id and pid namespace) its pid is dead or now belongs to a process that started at another time;
from any other host, whose processes we cannot see, only once it is older than
:data:`REMOTE_STALE_AFTER_S`, far longer than any case runs.  Only the guests of
:data:`LOCAL_URIS` share this host's /dev/shm, so only theirs can have their shared-memory files
removed.  Nothing here talks to libvirt: the backend does that, and this module stays a set of
pure, testable decisions.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

NAME_PREFIX = "pcie-test-"
MARKER_NS = "https://pytest-pcie.invalid/ns/owner/1"
MARKER_PREFIX = "pcie"
MARKER_TAG = "owner"

# A domain marked by another client host is removed only after this long.  Cases live for about a
# second; six hours leaves room for clock skew between hosts and for very slow remote runs.
REMOTE_STALE_AFTER_S = 6 * 3600

# The URIs whose QEMU runs on this host with this host's /dev/shm, where it puts a shmem device's
# file.  Any other (a transport such as qemu+ssh://, a host, a socket= of another libvirtd, maybe in
# another mount namespace) may name a file that is not the one QEMU created: nothing is removed.
LOCAL_URIS = frozenset({"qemu:///system", "qemu:///session"})
# The one exception: the daemons scripts/prepare-versions starts in chroots of this host, whose /dev
# is this host's /dev bind-mounted, list their URIs here.
PREPARED_VERSIONS_FILE = Path("/run/pytest-pcie-versions/uris")


def shares_host_shm(uri: str, prepared: Path = PREPARED_VERSIONS_FILE) -> bool:
    """True when the guests of ``uri`` put their shared-memory files in this host's /dev/shm."""
    if uri in LOCAL_URIS:
        return True
    try:
        lines = prepared.read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    return any(line.split()[1:] == [uri] for line in lines)

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Owner:
    """The process that created a domain, as recorded in (and read back from) its marker."""

    host: str
    boot_id: str
    pid_ns: str
    pid: int
    pid_start: str
    session: str
    created: float  # when the marked domain was created (the backend stamps each domain afresh)

    def same_host(self, other: Owner) -> bool:
        """True when one process can look the other's pid up: same host, same kernel boot, and the
        same pid namespace (containers sharing a kernel and a host name still number pids apart)."""
        return bool(self.boot_id) and (self.host, self.boot_id, self.pid_ns) == (
            other.host,
            other.boot_id,
            other.pid_ns,
        )


def this_process(session: str | None = None) -> Owner:
    """Describe the running process as the owner of the domains it is about to create."""
    pid = os.getpid()
    return Owner(
        host=socket.gethostname(),
        boot_id=_read_boot_id(),
        pid_ns=_read_pid_namespace(),
        pid=pid,
        pid_start=process_start(pid) or "",
        session=session or secrets.token_hex(4),
        created=time.time(),
    )


def process_start(pid: int) -> str | None:
    """Return when process ``pid`` started (clock ticks since boot, as text), or None if it is gone.

    A pid alone is not an identity: after the owner dies the kernel may give its number to some
    other process, and the start time tells the two apart.  Off Linux the answer is None, which
    makes every same-host domain look orphaned; :func:`is_leftover` therefore asks for a start time
    on both sides before trusting a comparison.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def is_leftover(owner: Owner, me: Owner, now: float) -> bool:
    """Decide whether a domain created by ``owner`` may be removed by ``me`` at time ``now``.

    Our own session's domains are leftovers (the backend is closing them).  A same-host owner is
    gone when its pid has no process or a process with another start time.  If this host cannot
    report start times at all, fall back to the age rule rather than guess.
    """
    if owner.session == me.session and owner.same_host(me) and owner.pid == me.pid:
        return True
    if owner.same_host(me) and me.pid_start:
        return process_start(owner.pid) != owner.pid_start
    return now - owner.created > REMOTE_STALE_AFTER_S


def marker_element(owner: Owner) -> etree._Element:
    """The ``<pcie:owner>`` element that goes into a domain's ``<metadata>``."""
    element = etree.Element(f"{{{MARKER_NS}}}{MARKER_TAG}", nsmap={MARKER_PREFIX: MARKER_NS})
    for key, value in _owner_fields(owner).items():
        element.set(key, value)
    return element


def marker_xml(owner: Owner) -> str:
    """The marker as text, the form ``virDomainSetMetadata`` takes."""
    return etree.tostring(marker_element(owner), encoding="unicode")


def parse_marker(text: str) -> Owner | None:
    """Read an owner back from marker text; None when the text is not a complete marker of ours."""
    try:
        element = etree.fromstring(text.encode("utf-8"))
    except etree.XMLSyntaxError:
        return None
    return _owner_from_element(element)


def find_marker(domain_xml: str) -> Owner | None:
    """Return the owner recorded in a whole domain XML, or None when it carries no marker of ours."""
    root = etree.fromstring(domain_xml.encode("utf-8"))
    element = root.find(f"metadata/{{{MARKER_NS}}}{MARKER_TAG}")
    return None if element is None else _owner_from_element(element)


def mark_domain(domain_xml: str, name: str, domain_type: str, owner: Owner) -> str:
    """Return ``domain_xml`` renamed to ``name``, with ``domain_type`` and our marker added.

    A ``<uuid>`` from the case is dropped so that libvirt picks a fresh one: with the case's own,
    two workers running the case on two machines would collide, and a case that happened to carry
    the uuid of a real VM on the host would have its define refused ("already exists with uuid").
    """
    root = etree.fromstring(domain_xml.encode("utf-8"), etree.XMLParser(remove_blank_text=True))
    for uuid in root.findall("uuid"):
        root.remove(uuid)
    root.set("type", domain_type)
    name_element = root.find("name")
    if name_element is None:
        name_element = etree.SubElement(root, "name")
    name_element.text = name
    metadata = root.find("metadata")
    if metadata is None:
        metadata = etree.Element("metadata")
        name_element.addnext(metadata)
    for old in metadata.findall(f"{{{MARKER_NS}}}{MARKER_TAG}"):
        metadata.remove(old)
    metadata.append(marker_element(owner))
    return etree.tostring(root, encoding="unicode")


def unmark_domain(domain_xml: str, name: str, domain_type: str) -> str:
    """Undo :func:`mark_domain` on XML libvirt returned, so outcomes read like the case's own domain.

    The name, the domain type and the marker are the backend's own changes, not libvirt's layout
    decisions; putting the case's values back keeps libvirt's XML comparable with the reference
    backend's and independent of whether this host offers KVM.
    """
    root = etree.fromstring(domain_xml.encode("utf-8"))
    root.set("type", domain_type)
    name_element = root.find("name")
    if name_element is not None:
        name_element.text = name
    metadata = root.find("metadata")
    if metadata is not None:
        for element in metadata.findall(f"{{{MARKER_NS}}}{MARKER_TAG}"):
            metadata.remove(element)
        if len(metadata) == 0:
            root.remove(metadata)
    return etree.tostring(root, encoding="unicode")


def _owner_fields(owner: Owner) -> dict[str, str]:
    return {
        "host": owner.host,
        "boot-id": owner.boot_id,
        "pid-ns": owner.pid_ns,
        "pid": str(owner.pid),
        "pid-start": owner.pid_start,
        "session": owner.session,
        "created": f"{owner.created:.3f}",
    }


def _owner_from_element(element: etree._Element) -> Owner | None:
    if element.tag != f"{{{MARKER_NS}}}{MARKER_TAG}":
        return None
    values = {key: element.get(key) for key in ("host", "boot-id", "pid", "pid-start", "session", "created")}
    # Markers written before pid namespaces were recorded lack "pid-ns"; they then never pass as
    # same-host, so only the age rule can remove them.
    values["pid-ns"] = element.get("pid-ns", "")
    if any(value is None for value in values.values()):
        return None
    try:
        return Owner(
            host=str(values["host"]),
            boot_id=str(values["boot-id"]),
            pid_ns=str(values["pid-ns"]),
            pid=int(str(values["pid"])),
            pid_start=str(values["pid-start"]),
            session=str(values["session"]),
            created=float(str(values["created"])),
        )
    except ValueError:
        return None


def _read_pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _read_boot_id() -> str:
    try:
        return _BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except OSError:
        return ""
