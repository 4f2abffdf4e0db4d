"""Character devices (serial, parallel, console, channel) on attach and detach, as libvirt 9.0.0 does.

libvirt (qemuDomainChrRemove -> virDomainChrRemove -> virDomainChrEquals) takes the first device of
the same element kind whose chardev source is equal and whose target matches: serial on target type
and port, parallel and console on port, channel on target type plus name (virtio, xen) or address
and port (guestfwd).  Addresses play no part.  A port left out of the device to detach is set at
parse to one above the highest port in use, so it never names an existing device.  A pci-serial is
the one that matters for PCI: detaching it frees its slot.

The rules per kind are rows of :data:`CHR_KINDS`; the chardev sources are compared by the keys in
:data:`CHR_SOURCE_KEYS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.model import Device, Element, child
from pytest_pcie.reference.parse import Domain, devices_of_kind, remove_device


def _source_attributes(*names: str) -> Callable[[Element], tuple[str | None, ...]]:
    def read(element: Element) -> tuple[str | None, ...]:
        source = child(element, "source")
        return tuple(source.get(name) if source is not None else None for name in names)

    return read


def _reconnect(source: Element | None) -> tuple[str | None, str | None]:
    reconnect = source.find("reconnect") if source is not None else None
    if reconnect is None:
        return (None, None)
    enabled = reconnect.get("enabled")
    return (enabled, reconnect.get("timeout") if enabled == "yes" else None)


def _tcp_source(element: Element) -> tuple[object, ...]:
    mode, host, service = _source_attributes("mode", "host", "service")(element)
    protocol = child(element, "protocol")
    kind = (protocol.get("type") if protocol is not None else None) or "raw"
    return (mode == "bind", kind, host, service, _reconnect(child(element, "source")))


def _udp_source(element: Element) -> tuple[object, ...]:
    """One <source> per direction: connect (the default mode) and bind, each host and service."""
    parts: dict[str, tuple[str | None, str | None]] = {}
    for source in element.iterfind("source"):
        parts.setdefault(source.get("mode") or "connect", (source.get("host"), source.get("service")))
    return (parts.get("connect", (None, None)), parts.get("bind", (None, None)))


def _unix_source(element: Element) -> tuple[object, ...]:
    source = child(element, "source")
    path = source.get("path") if source is not None else None
    bind = source is not None and source.get("mode") == "bind"
    return (bind, path, _reconnect(source))


def _vdagent_source(element: Element) -> tuple[object, ...]:
    source = child(element, "source")
    clipboard = source.find("clipboard") if source is not None else None
    mouse = source.find("mouse") if source is not None else None
    return (
        clipboard.get("copypaste") if clipboard is not None else None, mouse.get("mode") if mouse is not None else None
    )


# Chardev source type -> the parts virDomainChrSourceDefIsEqual compares (nothing for pty: its path
# is read only from live XML; nothing for null, vc, stdio and spicevmc).
CHR_SOURCE_KEYS: dict[str, Callable[[Element], tuple[object, ...]]] = {
    "file": _source_attributes("path", "append"),
    "dev": _source_attributes("path"),
    "pipe": _source_attributes("path"),
    "nmdm": _source_attributes("master", "slave"),
    "udp": _udp_source,
    "tcp": _tcp_source,
    "unix": _unix_source,
    "spiceport": _source_attributes("channel"),
    "dbus": _source_attributes("channel"),
    "qemu-vdagent": _vdagent_source,
}
# Source parts redirdev's parser fills in when left out.
REDIRDEV_SOURCE_DEFAULTS: dict[str, tuple[object, ...]] = {"dbus": ("org.qemu.usbredir",)}


def chr_source(device: Device, *, redirdev: bool = False) -> tuple[object, ...]:
    """The chardev source of a character device or redirdev, as libvirt compares it."""
    kind = device.element.get("type") or "pty"
    read = CHR_SOURCE_KEYS.get(kind)
    parts = read(device.element) if read is not None else ()
    if redirdev and parts == (None,) and kind in REDIRDEV_SOURCE_DEFAULTS:
        parts = REDIRDEV_SOURCE_DEFAULTS[kind]
    if kind == "unix" and not redirdev and parts[1] is None:
        parts = (True, *parts[1:])  # an inactive chr unix socket without a path is a listening one
    return (kind, *parts)


def _target(device: Device) -> Element | None:
    return child(device.element, "target")


def _target_attribute(device: Device, name: str) -> str | None:
    target = _target(device)
    return target.get(name) if target is not None else None


def _serial_target(device: Device) -> tuple[object, ...]:
    # qemuDomainChrDefPostParse: isa-serial and no type are one on x86
    return (_target_attribute(device, "type") or "isa-serial",)


def _channel_target(device: Device) -> tuple[object, ...]:
    kind = _target_attribute(device, "type")
    if kind == "guestfwd":
        return (kind, _target_attribute(device, "address"), _target_attribute(device, "port"))
    return (kind, _target_attribute(device, "name"))


@dataclass(frozen=True)
class ChrKind:
    """How libvirt tells the character devices of one element kind apart (virDomainChrEquals)."""

    target: Callable[[Device], tuple[object, ...]]
    # the ports the stored devices hold, in list order; None for kinds without a port (channel)
    ports: Callable[[list[Device]], list[int]] | None


def _written_port(device: Device) -> int | None:
    """The target port as libvirt reads it: strtoul's spelling (leading blanks, a sign), a negative
    number wrapped to 32 bits and stored in an int, so '-1' means 'not given' (None)."""
    text = _target_attribute(device, "port")
    if text is None:
        return None
    match = PORT_NUMBER.fullmatch(text)
    if match is None or int(match.group(2)) > UINT_MAX:
        raise LibvirtError(f"XML error: Invalid port number: {text}")
    value = int(match.group(2))
    if match.group(1) == "-":
        value = -value & UINT_MAX
    port = value - (UINT_MAX + 1) if value > INT_MAX else value
    return None if port == -1 else port


PORT_NUMBER = re.compile(r"\s*([+-]?)(\d+)")
UINT_MAX = 0xFFFFFFFF
INT_MAX = 0x7FFFFFFF


def check_port(device: Device) -> None:
    _written_port(device)


def _serial_ports(serials: list[Device]) -> list[int]:
    """The ports libvirt gives serials written without one: those written with target type
    isa-serial take the lowest free of ports 0-3 (virDomainChrIsaSerialDefPostParse), then the rest
    one above the highest port in use, in order (virDomainChrDefPostParse)."""
    ports = [_written_port(serial) for serial in serials]
    isa = [_target_attribute(serial, "type") == "isa-serial" for serial in serials]
    used = {port for port, is_isa in zip(ports, isa, strict=True) if is_isa and port is not None}
    for position, is_isa in enumerate(isa):
        if is_isa and ports[position] is None:
            free = next((port for port in range(4) if port not in used), None)
            if free is not None:
                ports[position] = free
                used.add(free)
    result: list[int] = []
    for position, port in enumerate(ports):
        if port is None:
            port = max((known for known in result + ports[position + 1:] if known is not None), default=-1) + 1
        result.append(port)
    return result


def _parallel_ports(parallels: list[Device]) -> list[int]:
    """The domain parser numbers a parallel written without a port one above the highest before it."""
    result: list[int] = []
    for parallel in parallels:
        port = _written_port(parallel)
        result.append(max(result, default=-1) + 1 if port is None else port)
    return result


CHR_KINDS: dict[str, ChrKind] = {
    "serial": ChrKind(_serial_target, _serial_ports),
    "parallel": ChrKind(lambda device: (), _parallel_ports),
    # the domain parser numbers consoles by position, whatever port is written (see _console_entries)
    "console": ChrKind(lambda device: (), lambda consoles: list(range(len(consoles)))),
    "channel": ChrKind(_channel_target, None),
}
CHR_MISSING = "invalid argument: device not present in domain configuration"
# Kinds whose port libvirt numbers and stores (consoles are numbered by position instead).
PORT_NUMBERED = ("serial", "parallel")

MAX_ISA_SERIALS = 4


def check_persistent_copy(domain: Domain) -> None:
    """The checks libvirt makes re-reading its stored XML into the copy that a --config attach or
    detach changes (virDomainObjCopyPersistentDef).  Define numbers the ports of ISA serials written
    without a target type after it checked the ISA ones, so it can store two on one port, or one on
    port 4 or above; the copy, where every ISA serial has its type written, is then refused
    (virDomainChrIsaSerialDefPostParse)."""
    serials = list(domain.of_kind("serial"))
    used: set[int] = set()
    count = 0
    for serial, port in zip(serials, _serial_ports(serials), strict=True):
        if _serial_target(serial) != ("isa-serial",):
            continue
        count += 1
        if count > MAX_ISA_SERIALS or port >= MAX_ISA_SERIALS:
            raise LibvirtError(f"internal error: Maximum supported number of ISA serial ports is '{MAX_ISA_SERIALS}'")
        if port in used:
            raise LibvirtError(f"internal error: target port '{port}' already allocated")
        used.add(port)
# Console target types that make a console the alias of serial 0 (none becomes serial at post-parse).
SERIAL_CONSOLE_TYPES = frozenset({None, "serial"})


def is_serial_console(device: Device) -> bool:
    """A console whose target type is serial or not given: as the first console, serial 0's alias."""
    target = child(device.element, "target")
    return (target.get("type") if target is not None else None) in SERIAL_CONSOLE_TYPES


# one stored character device (None: the console alias the reference does not write) and its identity
ChrEntry = tuple[Device | None, tuple[object, ...]]


def find_chr(domain: Domain, wanted: Device) -> Device | None:
    """qemuDomainChrRemove: the first stored device of the kind whose source, target and port equal
    the wanted one's; removing serial 0 removes the console that is its alias too."""
    if wanted.kind == "console" and _target_attribute(wanted, "type") in SERIAL_CONSOLE_TYPES:
        raise LibvirtError("Requested operation is not valid: detaching serial console is not supported")
    _freeze_ports(domain)
    entry = _chr_lookup(domain, wanted)
    if entry is None:
        raise LibvirtError(CHR_MISSING)
    device = entry[0]
    serials = list(domain.of_kind("serial"))
    if device is not None and serials and device is serials[0]:
        _drop_console_alias(domain)
    return device


def _chr_lookup(domain: Domain, wanted: Device) -> ChrEntry | None:
    """virDomainChrFind: the first stored entry equal to ``wanted``; None when there is none."""
    rules = CHR_KINDS[wanted.kind]
    port = _written_port(wanted)
    if rules.ports is not None and port is None:
        return None  # the parser numbered it past every stored device
    wanted_key = (chr_source(wanted), rules.target(wanted), port if rules.ports is not None else None)
    devices = devices_of_kind(domain, wanted.kind)
    entries = _console_entries(domain, devices) if wanted.kind == "console" else _chr_entries(rules, devices)
    return next((entry for entry in entries if entry[1] == wanted_key), None)


def _freeze_ports(domain: Domain) -> None:
    """Write the port libvirt stored for each serial and parallel written without one, so that
    removing one does not renumber the others (libvirt always writes the port back)."""
    for kind in PORT_NUMBERED:
        devices = devices_of_kind(domain, kind)
        numbering = CHR_KINDS[kind].ports
        assert numbering is not None
        for device, port in zip(devices, numbering(devices), strict=True):
            _write_port(device, port)


def _write_port(device: Device, port: int) -> None:
    target = _target(device)
    if target is None:
        target = etree.SubElement(device.element, "target")
    if _written_port(device) is None:  # not written, or '-1'
        target.set("port", str(port))


def check_chr_attach(domain: Domain, device: Device) -> None:
    """qemuDomainChrPreInsert: no serial console, nothing equal already there.  A serial or parallel
    written without a port gets one above the highest in use (virDomainChrDefPostParse)."""
    if device.kind == "console" and _target_attribute(device, "type") in SERIAL_CONSOLE_TYPES:
        raise LibvirtError("Operation not supported: attaching serial console is not supported")
    if device.kind in PORT_NUMBERED and _written_port(device) is None:
        _freeze_ports(domain)
        stored = devices_of_kind(domain, device.kind)
        ports = [_written_port(other) for other in stored]
        _write_port(device, max((port for port in ports if port is not None), default=-1) + 1)
    if _chr_lookup(domain, device) is not None:
        raise LibvirtError("Requested operation is not valid: chardev already exists")


def _chr_entries(rules: ChrKind, devices: list[Device]) -> list[ChrEntry]:
    ports: list[int | None] = list(rules.ports(devices)) if rules.ports is not None else [None] * len(devices)
    return [
        (device, (chr_source(device), rules.target(device), port)) for device, port in zip(devices, ports, strict=True)
    ]


def _console_entries(domain: Domain, consoles: list[Device]) -> list[ChrEntry]:
    """The consoles as libvirt holds them after reading its stored XML: the first is the alias of
    serial 0 (its source is serial 0's) when serial 0 is an ISA one or a console is written as
    serial, and each console's port is its position (virDomainDefAddConsoleCompat,
    virDomainDefParseXML).  The reference does not write that alias, so it may have no element."""
    serials = list(domain.of_kind("serial"))
    entries: list[ChrEntry] = []
    first_is_alias = bool(consoles) and _target_attribute(consoles[0], "type") in SERIAL_CONSOLE_TYPES
    if serials and not first_is_alias and _serial_target(serials[0]) == ("isa-serial",):
        entries.append((None, (chr_source(serials[0]), (), 0)))
    for device in consoles:
        source = chr_source(serials[0]) if device is consoles[0] and first_is_alias and serials else chr_source(device)
        entries.append((device, (source, (), len(entries))))
    return entries


def _drop_console_alias(domain: Domain) -> None:
    """Removing serial 0 removes the console that is its alias too (qemuDomainChrRemove)."""
    consoles = list(domain.of_kind("console"))
    if consoles and _target_attribute(consoles[0], "type") in SERIAL_CONSOLE_TYPES:
        remove_device(domain, consoles[0])
