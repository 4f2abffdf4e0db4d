"""Drawing a normalised topology as a text tree, for failure reports and ``pcie-assign --tree``.

A golden is exact but hard to picture; the tree shows what hangs where::

    pcie-root (bus 0x00)
    ├── 00:01.0 video virtio
    ├── 00:02.0 pcie-root-port index=1 chassis=1 port=0x10 (bus 0x01)
    │   └── 01:00.0 interface user virtio
    └── 00:02.1 pcie-root-port index=2 chassis=2 port=0x11 (bus 0x02)
        └── free hotplug slot 0x00

Free slots are marked only on buses that accept hotplug (root and downstream ports, bridges and
pci-root, whose ``hotplug='off'`` libvirt ignores); pcie-root itself takes no hotplug.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from pytest_pcie.normalise import DEVICES_TAG

# Slots a device can be hotplugged into, per bus model.  pci-root keeps slot 0 for the host bridge.
HOTPLUG_SLOTS: dict[str, range] = {
    "pci-root": range(1, 32),
    "pci-bridge": range(1, 32),
    "pcie-to-pci-bridge": range(1, 32),
    "pcie-root-port": range(0, 1),
    "pcie-switch-downstream-port": range(0, 1),
}
# pci-root ignores hotplug='off' in libvirt 9.0.0 (see docs); everywhere else it is honoured.
IGNORES_HOTPLUG_OFF = frozenset({"pci-root"})
TARGET_DETAILS = ("chassisNr", "chassis", "port", "busNr", "hotplug")


@dataclass
class _Node:
    label: str
    bus: int | None = None
    model: str = ""
    hotplug: bool = True
    children: list[tuple[int, int, _Node]] = field(default_factory=list)


def render_tree(document: etree._Element) -> list[str]:
    """Lines drawing the topology of a normalised document, root bus first."""
    devices = document.find(DEVICES_TAG)
    if devices is None:
        return ["(no domain: define failed)"]
    buses: dict[int, _Node] = {}
    placed: list[tuple[int, int, int, _Node]] = []
    roots: list[_Node] = []
    for element in devices:
        node = _node(element)
        if node.bus is not None:
            buses[node.bus] = node
        address = element.find("address")
        if address is None:
            if node.bus is not None:
                roots.append(node)
            continue
        placed.append((_int(address.get("bus")), _int(address.get("slot")), _int(address.get("function")), node))
    orphans = _Node("(devices on buses that do not exist)")
    for bus, slot, function, node in placed:
        parent = buses.get(bus)
        node.label = f"{bus:02x}:{slot:02x}.{function:x} {node.label}"
        (parent or orphans).children.append((slot, function, node))
    lines: list[str] = []
    for root in [*roots, orphans] if orphans.children else roots:
        lines.append(root.label)
        lines += _draw_children(root, "")
    return lines or ["(no PCI controllers or devices)"]


def _node(element: etree._Element) -> _Node:
    if element.tag == "controller" and element.get("type") == "pci":
        model = element.get("model", "pci")
        index = _int(element.get("index"))
        target = element.find("target")
        details = [f"{name}={target.get(name)}" for name in TARGET_DETAILS if target is not None and target.get(name)]
        label = " ".join([model, f"index={index}", *details]) if index else model
        hotplug = target is None or target.get("hotplug") != "off" or model in IGNORES_HOTPLUG_OFF
        return _Node(f"{label} (bus 0x{index:02x})", bus=index, model=model, hotplug=hotplug)
    return _Node(" ".join([element.tag, *_identity_values(element)]))


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


def _draw_children(node: _Node, indent: str) -> list[str]:
    entries = [(slot, function, child.label, child) for slot, function, child in sorted(node.children, key=_order)]
    free = _free_slots(node)
    rows: list[tuple[str, _Node | None]] = [(label, child) for _, _, label, child in entries]
    if free:
        rows.append((free, None))
    lines = []
    for position, (label, child) in enumerate(rows):
        last = position == len(rows) - 1
        lines.append(f"{indent}{'└── ' if last else '├── '}{label}")
        if child is not None:
            lines += _draw_children(child, indent + ("    " if last else "│   "))
    return lines


def _order(entry: tuple[int, int, _Node]) -> tuple[int, int]:
    return entry[0], entry[1]


def _free_slots(node: _Node) -> str:
    slots = HOTPLUG_SLOTS.get(node.model)
    if node.bus is None or slots is None or not node.hotplug:
        return ""
    used = {slot for slot, _, _ in node.children}
    free = [slot for slot in slots if slot not in used]
    if not free:
        return ""
    if len(free) == 1:
        return f"free hotplug slot 0x{free[0]:02x}"
    return "free hotplug slots " + ", ".join(_ranges(free))


def _ranges(numbers: list[int]) -> list[str]:
    spans: list[list[int]] = []
    for number in numbers:
        if spans and spans[-1][1] == number - 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return [f"0x{low:02x}" if low == high else f"0x{low:02x}-0x{high:02x}" for low, high in spans]


def _int(value: str | None) -> int:
    try:
        return int(value or "0", 0)
    except ValueError:
        return 0
