"""Virtio-serial ports for consoles and channels, handed out before any PCI address.

libvirt gives every virtio console and virtio channel a port on a virtio-serial controller first
(virDomainVirtioSerialAddr*, run at the start of address assignment).  It matters to the PCI
topology for one reason: when every port is taken, libvirt adds one more virtio-serial controller,
at the lowest index not in use, and that controller then needs a PCI slot like any virtio device
(libvirt's own golden ``channel-virtio-autoadd``; cases ``defaults/virtio-serial-*``).

The rules, learned from the three daemons (see ``rules.toml``, ``defaults.virtio-serial-ports``):

* each controller has the ports its ``ports`` attribute says, :data:`DEFAULT_PORTS` without one;
* ports written on devices are held first (a channel with a port written later in the document
  keeps it, and an earlier channel without one moves on);
* then the virtio consoles, then the channels get the first free port of the controllers in index
  order: a console from port 0, a channel from port 1.  Only a port other than 0 is ever marked
  taken, so the consoles, which all land on port 0 of the first controller, use up nothing (and
  their port is not stored);
* a channel that names a controller but no port takes that controller's first free port above
  0, or is refused; a console written so takes one of controller 0's up to 11.3.0, none from
  12.8.0 (``versions.virtio-console-address-takes-no-port``);
* when no controller has a free port, a controller is added and the device takes its first port.

A live attach runs the same search for the new channel only, on what the running guest holds; a
controller it adds there is never plugged into QEMU, so the attach fails (:func:`live_channel`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_pcie.reference.chardev import is_serial_console
from pytest_pcie.reference.defaults import new_controller
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.model import Device, child, parse_int
from pytest_pcie.reference.parse import Domain
from pytest_pcie.reference.profiles import current_rules

# Ports of a virtio-serial controller whose XML names none (libvirt's default, port 0 included).
DEFAULT_PORTS = 31
# Where the search for a free port starts, exclusive: consoles may take port 0, channels may not.
_FIRST_CONSOLE_PORT = -1
_FIRST_CHANNEL_PORT = 0
# Chardev kinds whose written virtio-serial addresses are held, in libvirt's device iteration order.
_HOLDING_KINDS: tuple[str, ...] = ("serial", "channel", "console")


@dataclass
class _Controller:
    """One virtio-serial controller of the port table: its index and which of its ports are taken."""

    index: int
    taken: list[bool]

    def next_free(self, after: int) -> int | None:
        """The first free port above ``after`` (libvirt's virBitmapNextClearBit)."""
        for port in range(after + 1, len(self.taken)):
            if not self.taken[port]:
                return port
        return None

    def hold(self, port: int) -> None:
        """Mark ``port`` taken; port 0 never is (libvirt reserves only an address whose port is not 0)."""
        if port:
            self.taken[port] = True


class PortTable:
    """The virtio-serial ports of a domain: every controller in index order, ports held or free."""

    def __init__(self, domain: Domain) -> None:
        self.domain = domain
        self.controllers: list[_Controller] = []
        for controller in domain.controllers:
            if controller.ctype == "virtio-serial":
                self._add(controller)

    def _add(self, controller: Device) -> _Controller:
        assert controller.index is not None
        entry = _Controller(controller.index, [False] * _ports(controller))
        self.controllers.append(entry)
        self.controllers.sort(key=lambda other: other.index)
        return entry

    def _find(self, index: int) -> _Controller | None:
        return next((entry for entry in self.controllers if entry.index == index), None)

    def hold(self, controller: int, port: int) -> None:
        """Mark a written port taken (virDomainVirtioSerialAddrReserve), with libvirt's refusals."""
        entry = self._find(controller)
        if entry is None:
            raise LibvirtError(f"XML error: virtio serial controller {controller} is missing")
        if not 0 <= port < len(entry.taken):
            raise LibvirtError(f"XML error: virtio serial controller {controller} does not have port {port}")
        if entry.taken[port]:
            raise LibvirtError(f"XML error: virtio serial port {port} on controller {controller} is already occupied")
        entry.hold(port)

    def take(self, after: int) -> tuple[int, int, bool]:
        """The next free ``(controller, port, added)``: the first controller in index order with a free
        port above ``after``, else a controller added at the lowest unused index."""
        for entry in self.controllers:
            port = entry.next_free(after)
            if port is not None:
                entry.hold(port)
                return entry.index, port, False
        used = {entry.index for entry in self.controllers}
        index = next(number for number in range(len(used) + 1) if number not in used)
        added = self._add(new_controller(self.domain, "virtio-serial", index, None))
        port = after + 1
        added.hold(port)
        return index, port, True

    def take_on(self, controller: int) -> int:
        """The first free port above 0 of a named controller (virDomainVirtioSerialAddrNextFromController)."""
        entry = self._find(controller)
        if entry is None:
            raise LibvirtError(f"internal error: virtio-serial controller {controller} not available")
        port = entry.next_free(0)
        if port is None:
            raise LibvirtError(f"XML error: Unable to find a free port on virtio-serial controller {controller}")
        entry.hold(port)
        return port


def assign_virtio_serial_ports(domain: Domain) -> None:
    """Give every virtio console and channel of ``domain`` a port, adding controllers as needed."""
    if not any(device.kind in ("channel", "console") and device.model == "virtio" for device in domain.devices):
        return
    table = held_table(domain)
    for device in [*domain.of_kind("console"), *domain.of_kind("channel")]:
        if device.model == "virtio" and not _complete(device):
            _assign(table, device)


def held_table(domain: Domain) -> PortTable:
    """The port table of ``domain`` with every written port held (virDomainVirtioSerialAddrSetCreateFromDomain)."""
    table = PortTable(domain)
    for kind in _HOLDING_KINDS:
        for number, device in enumerate(domain.of_kind(kind)):
            if kind == "console" and number == 0 and is_serial_console(device):
                continue  # the alias of serial 0: libvirt's device iteration skips it
            if _complete(device):
                controller, port = _written(device)
                table.hold(controller, port)
    return table


def _assign(table: PortTable, device: Device) -> bool:
    """Give ``device`` its port; True when a controller had to be added for it.

    A console's port is not stored: libvirt assigns it into a scratch address.  Up to 11.3.0 that
    makes a console written with a virtio-serial address but no port search controller 0, whatever
    it names, and take a port there; 12.8.0 gives such a console none
    (``versions.virtio-console-address-takes-no-port``)."""
    console = device.kind == "console"
    if console and device.address_type == "virtio-serial" and not current_rules().console_address_takes_port:
        return False
    if device.address_type == "virtio-serial":
        controller = 0 if console else _written(device)[0]
        port = table.take_on(controller)
        added = False
    else:
        controller, port, added = table.take(_FIRST_CONSOLE_PORT if console else _FIRST_CHANNEL_PORT)
    if not console:
        _write(device, controller, port)
    return added


def live_channel(domain: Domain, device: Device) -> None:
    """A live attach of a virtio channel: its port is found among what the running guest holds.

    A controller added for it joins the live definition but not QEMU, so building the channel's
    QEMU device finds no alias for its bus and the attach fails (the caller keeps the old state)."""
    if device.model != "virtio" or _complete(device):
        return
    table = held_table(domain)
    if _assign(table, device):
        index = _written(device)[0]
        raise LibvirtError(current_rules().controller_alias_message.format(type="virtio-serial", index=index))


def _ports(controller: Device) -> int:
    value = parse_int(controller.element.get("ports"), "virtio-serial ports")
    return DEFAULT_PORTS if value is None else value


def _written(device: Device) -> tuple[int, int]:
    address = child(device.element, "address")
    assert address is not None
    controller = parse_int(address.get("controller"), "virtio-serial controller") or 0
    port = parse_int(address.get("port"), "virtio-serial port") or 0
    return controller, port


def _complete(device: Device) -> bool:
    """A virtio-serial address with a port other than 0 (virDomainVirtioSerialAddrIsComplete)."""
    return device.address_type == "virtio-serial" and _written(device)[1] != 0


def _write(device: Device, controller: int, port: int) -> None:
    address = child(device.element, "address")
    if address is None:
        address = device.element.makeelement("address", {})
        device.element.append(address)
    address.attrib.clear()
    for name, value in (("type", "virtio-serial"), ("controller", str(controller)), ("bus", "0"), ("port", str(port))):
        address.set(name, value)
    device.address_type = "virtio-serial"
    device.has_address_element = True
