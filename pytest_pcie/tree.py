"""Drawing a normalised topology for people: a text tree plus a one-line summary.

A golden is exact but hard to picture; the tree shows what hangs where::

    pcie-root (bus 0x00)
    ├── 00:01.0 video virtio
    ├── 00:02.0 pcie-root-port index=1 chassis=1 port=0x10 (bus 0x01)
    │   └── 01:00.0 interface user virtio
    └── 00:02.1 pcie-root-port index=2 chassis=2 port=0x11 (bus 0x02)
        └── free hotplug slot 0x00
    3 PCI controllers, 2 devices, 1 free hotplug slot (1 on PCIe ports, 0 on PCI buses)

Free slots are marked only on buses that accept hotplug: root and downstream ports, bridges and
pci-root, unless ``hotplug='off'``.  On pci-root libvirt 9.0.0 ignores that setting when it picks
a slot, but QEMU then refuses the hotplug (golden attach-live/pci-root-hotplug-off), so no slot
of it is free for hotplug either.  pcie-root itself takes no hotplug.  The
summary splits them by kind because they answer different questions: a PCIe device (virtio on
q35, e1000e) needs a free port, a legacy PCI device a free slot on a PCI bus.

:func:`build_topology` is the one place that decides what hangs where; the text tree here and the
SVG of :mod:`pytest_pcie.svg` both draw from it, so they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from lxml import etree

from pytest_pcie.normalise import DEVICES_TAG

# Slots a device can be hotplugged into, per bus model.  pci-root keeps slot 0 for the host bridge
# and slot 1 for the PIIX3 chipset, which the domain XML never shows when USB is off (golden
# exhaustion/pc-live-until-full: refused with only 00:01 unused); bridges keep slot 0 for SHPC.
HOTPLUG_SLOTS: dict[str, range] = {
    "pci-root": range(2, 32),
    "pci-bridge": range(1, 32),
    "pcie-to-pci-bridge": range(1, 32),
    "pcie-root-port": range(0, 1),
    "pcie-switch-downstream-port": range(0, 1),
}
# Which summary column a bus model's free slots count in: a port takes one PCIe device, a PCI bus
# takes legacy (and, on pc, any) devices.
FREE_SLOT_KIND: dict[str, str] = {
    "pci-root": "PCI",
    "pci-bridge": "PCI",
    "pcie-to-pci-bridge": "PCI",
    "pcie-root-port": "PCIe",
    "pcie-switch-downstream-port": "PCIe",
}
TARGET_DETAILS = ("chassisNr", "chassis", "port", "busNr", "hotplug")
NO_DOMAIN = "(no domain: define failed)"
EMPTY = "(no PCI controllers or devices)"
ORPHANS = "(devices on buses that do not exist)"


class Kind(Enum):
    """What a node of the drawing is; the SVG styles each differently."""

    CONTROLLER = "controller"  # a PCI controller: it provides a bus
    DEVICE = "device"  # anything else with a PCI address, including non-PCI controllers
    FREE = "free"  # a run of free hotpluggable slots on its parent's bus
    ORPHANS = "orphans"  # the pseudo-root holding devices on buses that do not exist


@dataclass
class Node:
    """One box of the drawing: ``address`` is ``bus:slot.function`` (empty for roots and free slots)."""

    kind: Kind
    label: str
    address: str = ""
    model: str = ""
    bus: int | None = None
    hotplug: bool = True
    free_slots: tuple[int, ...] = ()
    children: list[Node] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The node as one line, as the text tree prints it."""
        return f"{self.address} {self.label}" if self.address else self.label


@dataclass(frozen=True)
class Summary:
    """The counts that answer "how much is there, and how many devices can I still hotplug?"."""

    controllers: int
    devices: int
    free: dict[str, int]

    @property
    def free_total(self) -> int:
        return sum(self.free.values())

    def line(self) -> str:
        kinds = ", ".join(f"{self.free.get(kind, 0)} on {kind} {_NOUNS[kind]}" for kind in _NOUNS)
        return (
            f"{_count(self.controllers, 'PCI controller')}, {_count(self.devices, 'device')}, "
            f"{_count(self.free_total, 'free hotplug slot')} ({kinds})"
        )


_NOUNS = {"PCIe": "ports", "PCI": "buses"}


def build_topology(document: etree._Element) -> list[Node] | None:
    """The roots of the topology of a normalised document (root bus first), or None if define failed.

    Every node's children are in address order; a bus with free hotplug slots gets one last FREE
    child naming them all (see :func:`free_label`), as one line is enough to read and to draw.
    """
    devices = document.find(DEVICES_TAG)
    if devices is None:
        return None
    buses: dict[int, Node] = {}
    placed: list[tuple[int, int, int, Node]] = []
    roots: list[Node] = []
    for element in devices:
        node = _node(element)
        if node.bus is not None:
            buses[node.bus] = node
        address = element.find("address")
        if address is None:
            if node.bus is not None:
                roots.append(node)
            continue
        bus, slot, function = (_int(address.get(part)) for part in ("bus", "slot", "function"))
        node.address = f"{bus:02x}:{slot:02x}.{function:x}"
        placed.append((bus, slot, function, node))
    orphans = Node(Kind.ORPHANS, ORPHANS)
    used: dict[int, set[int]] = {}
    for bus, slot, _function, node in sorted(placed, key=lambda entry: entry[1:3]):
        parent = buses.get(bus)
        (parent or orphans).children.append(node)
        used.setdefault(id(parent), set()).add(slot)
    for node in buses.values():
        node.free_slots = _free_slots(node, used.get(id(node), set()))
        if node.free_slots:
            node.children.append(Node(Kind.FREE, free_label(node.free_slots), model=node.model))
    return [*roots, orphans] if orphans.children else roots


def render_tree(document: etree._Element) -> list[str]:
    """Lines drawing the topology of a normalised document, root bus first."""
    roots = build_topology(document)
    if roots is None:
        return [NO_DOMAIN]
    lines: list[str] = []
    for root in roots:
        lines.append(root.text)
        lines += _draw_children(root, "")
    return lines or [EMPTY]


def summarise(document: etree._Element) -> Summary | None:
    """Counts of a normalised document's topology; None when define failed (there is no domain)."""
    roots = build_topology(document)
    if roots is None:
        return None
    controllers = devices = 0
    free: dict[str, int] = dict.fromkeys(_NOUNS, 0)
    for node in walk(roots):
        if node.kind is Kind.CONTROLLER:
            controllers += 1
            kind = FREE_SLOT_KIND.get(node.model)
            if kind is not None:
                free[kind] += len(node.free_slots)
        elif node.kind is Kind.DEVICE:
            devices += 1
    return Summary(controllers, devices, free)


def summary_line(document: etree._Element) -> str | None:
    """The summary as one line, or None when there is nothing to count (define failed, or empty)."""
    summary = summarise(document)
    if summary is None or summary.controllers + summary.devices == 0:
        return None
    return summary.line()


def free_label(slots: tuple[int, ...]) -> str:
    """``free hotplug slot 0x00`` or ``free hotplug slots 0x03-0x1f, 0x1e``: runs of free slots."""
    if len(slots) == 1:
        return f"free hotplug slot 0x{slots[0]:02x}"
    return "free hotplug slots " + ", ".join(_ranges(list(slots)))


def walk(nodes: list[Node]) -> list[Node]:
    """Every node of the trees under ``nodes``, each before its children (drawing order)."""
    found: list[Node] = []
    for node in nodes:
        found.append(node)
        found += walk(node.children)
    return found


def _node(element: etree._Element) -> Node:
    if element.tag == "controller" and element.get("type") == "pci":
        model = element.get("model", "pci")
        index = _int(element.get("index"))
        target = element.find("target")
        details = [f"{name}={target.get(name)}" for name in TARGET_DETAILS if target is not None and target.get(name)]
        label = " ".join([model, f"index={index}", *details]) if index else model
        hotplug = target is None or target.get("hotplug") != "off"
        return Node(Kind.CONTROLLER, f"{label} (bus 0x{index:02x})", model=model, bus=index, hotplug=hotplug)
    return Node(Kind.DEVICE, " ".join([element.tag, *_identity_values(element)]), model=element.tag)


def _identity_values(element: etree._Element) -> list[str]:
    """The attribute values (and texts) the normaliser kept, which is what identifies the device."""
    values: list[str] = []
    for part in element.iter():
        if part.tag == "address":
            continue
        values += [str(value) for value in part.attrib.values()]
        if part.text and part.text.strip():
            values.append(part.text.strip())
    return values


def _draw_children(node: Node, indent: str) -> list[str]:
    lines = []
    for position, child in enumerate(node.children):
        last = position == len(node.children) - 1
        lines.append(f"{indent}{'└── ' if last else '├── '}{child.text}")
        lines += _draw_children(child, indent + ("    " if last else "│   "))
    return lines


def _free_slots(node: Node, used: set[int]) -> tuple[int, ...]:
    slots = HOTPLUG_SLOTS.get(node.model)
    if slots is None or not node.hotplug:
        return ()
    return tuple(slot for slot in slots if slot not in used)


def _ranges(numbers: list[int]) -> list[str]:
    spans: list[list[int]] = []
    for number in numbers:
        if spans and spans[-1][1] == number - 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return [f"0x{low:02x}" if low == high else f"0x{low:02x}-0x{high:02x}" for low, high in spans]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _int(value: str | None) -> int:
    try:
        return int(value or "0", 0)
    except ValueError:
        return 0
