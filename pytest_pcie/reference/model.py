"""The in-memory domain: a thin typed view over the parsed XML tree.

The reference works on the lxml tree itself (so every element it does not understand survives a
define untouched) and keeps, per device, the few facts address assignment needs: its class, model,
controller type/index, and its PCI address.  Addresses are written back into the tree once
placement is over, all in one batch, in libvirt's spelling.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from lxml import etree

from pytest_pcie.reference.elements import make_elements
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.tables import FORMAT_ORDER, Connect

Element = etree._Element
NO_FLAGS = Connect(0)

# The element of a PCI controller the assigner added, until it is built (see
# :func:`build_added_controllers`).  Never inserted into any document: it only stands in, empty, for
# the controller's element while placement runs, as no step before then reads an added
# controller's children or attributes.
UNBUILT: Element = etree.Element("controller")


class PciAddress(NamedTuple):
    """A guest PCI address (domain 0 on x86).  ``bus`` is the index of the controller providing it.

    A named tuple rather than a frozen dataclass: the assigner makes one per device searched for and
    reserved, and a tuple is several times cheaper to build, hash and compare."""

    domain: int
    bus: int
    slot: int
    function: int

    def __str__(self) -> str:
        """libvirt's spelling in messages: ``0000:00:03.0``."""
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function}"

    @property
    def is_empty(self) -> bool:
        """libvirt treats domain, bus and slot all 0 as "no address yet", whatever the function."""
        return self.domain == 0 and self.bus == 0 and self.slot == 0


@dataclass(eq=False, slots=True)
class Device:
    """One device of the domain, as far as PCI placement cares.

    ``kind`` is the element tag (``interface``, ``controller``…); ``model`` the model libvirt
    stores; for controllers ``ctype``/``index``.  ``address_type`` is the type of the device's own
    ``<address>`` (None when absent).  ``flags`` is filled in by the assigner.
    """

    element: Element
    kind: str
    model: str
    ctype: str | None = None
    index: int | None = None
    address_type: str | None = None
    address: PciAddress | None = None
    multifunction: str | None = None
    flags: Connect = NO_FLAGS
    # added by libvirt itself, not written by the user: an added PCI controller's element has no
    # children until the assigner writes its settings (after both passes)
    implicit: bool = False
    written: bool = False  # the <address> element is already in libvirt's full spelling
    # the element has an <address> child (so writing one replaces it): known without looking, as
    # looking costs a Python object per child element
    has_address_element: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_pci_controller(self) -> bool:
        return self.kind == "controller" and self.ctype == "pci"

    @property
    def has_pci_address(self) -> bool:
        """A usable PCI address is present (libvirt's virDeviceInfoPCIAddressIsPresent)."""
        return self.address_type == "pci" and self.address is not None and not self.address.is_empty

    @property
    def wants_pci_address(self) -> bool:
        """No address at all, or a PCI one still empty (virDeviceInfoPCIAddressIsWanted)."""
        return self.address_type is None or (self.address_type == "pci" and not self.has_pci_address)

    def label(self) -> str:
        if self.kind == "controller":
            return f"controller type={self.ctype} index={self.index} model={self.model}"
        return f"{self.kind} model={self.model}"


def child(element: Element, tag: str) -> Element | None:
    """The first child named ``tag``.  By index rather than lxml's ``find`` (which compiles a path)
    or its child iterator (an object per call): a device element has a few children, often none."""
    for position in range(len(element)):
        candidate = element[position]
        if candidate.tag == tag:
            return candidate
    return None


def parse_xml(text: str, what: str) -> Element:
    """Parse ``text`` or raise the LibvirtError virsh would print for a malformed document."""
    try:
        root = etree.fromstring(text.encode("utf-8"), _parser())
    except etree.XMLSyntaxError as exc:
        raise LibvirtError(f"XML error: {what} is not well-formed XML: {exc}") from None
    if not isinstance(root.tag, str):
        raise LibvirtError(f"XML error: {what} has no root element")
    return root


def _parser() -> etree.XMLParser:
    """This thread's parser (lxml parsers must not be shared between threads; making one per
    document costs more than parsing a small one)."""
    parser: etree.XMLParser | None = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    return parser


_PARSERS = threading.local()


def parse_int(text: str | None, what: str) -> int | None:
    """libvirt accepts decimal or 0x-prefixed hex (strtoul base 0) for address parts and indexes."""
    if text is None:
        return None
    value = text.strip()
    try:
        if value.lower().startswith("0x"):
            return int(value[2:], 16)
        if len(value) > 1 and value.startswith("0"):
            return int(value[1:], 8)
        return int(value, 10)
    except ValueError:
        raise LibvirtError(f"XML error: Cannot parse {what} '{text}'") from None


def read_pci_address(element: Element) -> tuple[PciAddress, str | None]:
    """Read a ``<address type='pci'>`` element, with libvirt's range checks and messages."""
    parts = {}
    for name in ("domain", "bus", "slot", "function"):
        value = parse_int(element.get(name), f"<address> '{name}' attribute")
        parts[name] = 0 if value is None else value
    if parts["domain"] > 0xFFFF:
        raise LibvirtError(f"XML error: Invalid PCI address domain='0x{parts['domain']:x}', must be <= 0xFFFF")
    if parts["bus"] > 0xFF:
        raise LibvirtError(f"XML error: Invalid PCI address bus='0x{parts['bus']:x}', must be <= 0xFF")
    if parts["slot"] > 0x1F:
        raise LibvirtError(f"XML error: Invalid PCI address slot='0x{parts['slot']:x}', must be <= 0x1F")
    if parts["function"] > 7:
        raise LibvirtError(f"XML error: Invalid PCI address function=0x{parts['function']:x}, must be <= 7")
    multi = element.get("multifunction")
    if multi is not None and multi not in ("on", "off"):
        raise LibvirtError(f"XML error: Unknown value '{multi}' for <address> 'multifunction' attribute")
    return PciAddress(parts["domain"], parts["bus"], parts["slot"], parts["function"]), multi


# libvirt's spelling of each address part, computed once: the assigner writes hundreds of addresses
# into a large domain, and formatting them was a visible share of a define.
_DOMAIN_TEXT: dict[int, str] = {0: "0x0000"}
_BYTE_TEXT: tuple[str, ...] = tuple(f"0x{number:02x}" for number in range(256))
_FUNCTION_TEXT: tuple[str, ...] = tuple(f"0x{number:x}" for number in range(8))


def write_pci_address(device: Device) -> None:
    """Write ``device.address`` into its element as libvirt formats it."""
    write_pci_addresses([device])


def write_pci_addresses(devices: Sequence[Device]) -> None:
    """Write the ``address`` of each of ``devices`` into its element as libvirt formats it, replacing
    the ``<address>`` it had (the elements are built in one batch: see :mod:`elements`)."""
    built = make_elements([_address_text(device) for device in devices])
    for device, new in zip(devices, built, strict=True):
        element = device.element
        old = child(element, "address") if device.has_address_element else None
        if old is not None:
            old.addprevious(new)
            element.remove(old)
        else:
            element.append(new)
        device.address_type = "pci"
        device.written = True
        device.has_address_element = True


def build_added_controllers(added: Sequence[Device], devices: Element, after: Element | None) -> None:
    """Build the elements of the PCI controllers the assigner added, in one batch and complete:
    attributes, ``<model>``/``<target>`` (as :mod:`controllers` spelled them into
    ``extra[SETTINGS]``) and ``<address>``.  Built once at the end rather than bare when they are
    added and then filled child by child: a large domain adds hundreds of root ports.

    The elements go after ``after`` (the last controller element in ``devices``), or at the end;
    formatting puts every device in libvirt's order anyway."""
    built = make_elements([added_controller_text(device, "") for device in added])
    for device, element in zip(added, built, strict=True):
        device.element = element
        device.written = device.has_address_element = device.address is not None
        device.extra.pop(SETTINGS, None)  # in the element now
    if built:
        _insert_after(devices, after, built)


def place_added_block(added: Sequence[Device], devices: Element, after: Element | None) -> AddedBlock:
    """Stand one placeholder element in for a run of added PCI controllers that follow each other
    in the controller list, and keep their text: formatting splices it in (see
    :func:`splice_added_block`), so hundreds of root ports are never parsed into elements.  The
    first controller holds the placeholder as its element (it sorts where the run goes); the others
    keep :data:`UNBUILT`."""
    placeholder = devices.makeelement("controller", {"type": "pci", _BLOCK_ATTRIBUTE: "run"})
    _insert_after(devices, after, [placeholder])
    for device in added:
        device.written = device.has_address_element = device.address is not None
    added[0].element = placeholder
    indent = CHILD_BREAK + "  " * (_DEVICE_DEPTH + 1)
    text = (CHILD_BREAK + "  " * _DEVICE_DEPTH).join([added_controller_text(device, indent) for device in added])
    return AddedBlock(placeholder, list(added), text)


class AddedBlock(NamedTuple):
    """A run of added PCI controllers waiting for the text of the document (place_added_block)."""

    placeholder: Element
    controllers: list[Device]
    text: str  # as libvirt's pretty-printed output spells them, at the depth of a device


def splice_added_block(document: str, block: AddedBlock) -> str:
    """``document`` (pretty-printed) with the block's text where its placeholder is."""
    return document.replace(_PLACEHOLDER_TEXT, block.text, 1)


def build_added_block(block: AddedBlock) -> None:
    """Turn a block back into elements, where its placeholder is (when the document cannot be
    pretty-printed by libxml2 and needs ``etree.indent``, which knows nothing of the block)."""
    placeholder = block.placeholder
    devices = placeholder.getparent()
    assert devices is not None
    for device in block.controllers:
        device.element = UNBUILT
    build_added_controllers(block.controllers, devices, placeholder)
    devices.remove(placeholder)


def added_controller_text(device: Device, indent: str) -> str:
    """The element text of one added PCI controller, its children each after ``indent``."""
    children = [text for text in device.extra.get(SETTINGS, "").split(CHILD_BREAK) if text]
    if device.address is not None:
        children.append(_address_text(device))
    opening = f'<controller type="pci" index="{device.index}" model="{device.model}"'
    if not children:
        return opening + "/>"
    inner = "".join([indent + text for text in children])
    closing = indent[: -2] if indent else ""
    return f"{opening}>{inner}{closing}</controller>"


def _insert_after(devices: Element, after: Element | None, elements: list[Element]) -> None:
    position = len(devices) if after is None else devices.index(after) + 1
    devices[position:position] = elements  # one C-level insert


# How deep a device element sits (domain > devices > device), for the block's indentation.
_DEVICE_DEPTH = 2
# Separates the child element texts of an added controller until they are laid out.
CHILD_BREAK = "\n"
_BLOCK_ATTRIBUTE = "pytest-pcie-added-controllers"
_PLACEHOLDER_TEXT = f'<controller type="pci" {_BLOCK_ATTRIBUTE}="run"/>'


# The key of ``Device.extra`` under which an added controller's ``<model>`` and ``<target>`` wait,
# as element text, until :func:`build_added_controllers` builds its element.
SETTINGS = "pci-settings"


def _address_text(device: Device) -> str:
    """The ``<address>`` element as text.  Every value is a number the assigner formats or the
    multifunction value the parser checked to be on/off, so nothing needs escaping."""
    address = device.address
    assert address is not None
    domain = _DOMAIN_TEXT.get(address.domain) or f"0x{address.domain:04x}"
    bus = _BYTE_TEXT[address.bus] if address.bus < 256 else f"0x{address.bus:02x}"
    multifunction = "" if device.multifunction is None else f' multifunction="{device.multifunction}"'
    return (
        f'<address type="pci" domain="{domain}" bus="{bus}" slot="{_BYTE_TEXT[address.slot]}" '
        f'function="{_FUNCTION_TEXT[address.function]}"{multifunction}/>'
    )


def insert_device(devices: Element, element: Element) -> None:
    """Insert ``element`` into ``<devices>`` after the last device that libvirt formats before it."""
    last = len(FORMAT_ORDER)
    mine = FORMAT_RANK.get(element.tag, last)
    for child in reversed(devices):  # from the end: the place is usually near it
        if FORMAT_RANK.get(child.tag, last) <= mine:
            child.addnext(element)
            return
    devices.insert(0, element)


# Element tag -> its place in libvirt's device order (tables.FORMAT_ORDER); keyed by object, as a
# comment's tag is a function.
FORMAT_RANK: dict[object, int] = {tag: number for number, tag in enumerate(FORMAT_ORDER)}
