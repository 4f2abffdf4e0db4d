"""The sweep of docs/bootcost.md: the 2016 measurement (what does an empty root port cost?) on today's stack.

Every point is a bare domain input, laid out by a backend exactly as a case input would be:

- ``q35-ports-N``: q35 with ``pcie-root`` and N bare ``pcie-root-port`` controllers and nothing
  else (no USB, no balloon).  Naming a PCI controller keeps libvirt from adding a spare port, so
  exactly N ports are booted, all empty.
- ``q35-nics-N``: N virtio NICs and N bare root ports named: each NIC takes one port, and no
  spare is added because the domain names its PCI controllers.
- ``q35-nics-N-spare``: the same NICs in a domain that names no PCI controller at all: libvirt
  adds the ports the NICs need plus its spare.
- ``pc-nics-N``: the pc machine with the same NICs, which sit on the root bus (no ports exist).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_pcie.bootcost.run import Result

EMPTY_PORTS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 28, 32)
NIC_COUNTS = (1, 4, 8)
STRIPPED = "<controller type='usb' model='none'/><memballoon model='none'/>"
NIC = "<interface type='user'><model type='virtio'/></interface>"
PCIE_ROOT = "<controller type='pci' index='0' model='pcie-root'/>"
PORT = "<controller type='pci' model='pcie-root-port'/>"
COLUMNS = ("firmware", "kernel to init", "PCI enumeration", "driver probe", "loading drivers", "total")


@dataclass(frozen=True)
class Point:
    name: str
    machine: str
    xml: str
    ports: int  # empty ports asked for (the empty-port series), else -1

    @property
    def series(self) -> str:
        return self.name.rsplit("-", 1)[0] if self.ports >= 0 else self.name


def _domain(devices: str) -> str:
    return f"<domain><devices>{STRIPPED}{devices}</devices></domain>"


def points() -> list[Point]:
    """Every point of the sweep, in table order."""
    found = [Point(f"q35-ports-{count}", "q35", _domain(PCIE_ROOT + PORT * count), count) for count in EMPTY_PORTS]
    for count in NIC_COUNTS:
        found.append(Point(f"q35-nics-{count}", "q35", _domain(PCIE_ROOT + PORT * count + NIC * count), -1))
        found.append(Point(f"q35-nics-{count}-spare", "q35", _domain(NIC * count), -1))
        found.append(Point(f"pc-nics-{count}", "pc", _domain(NIC * count), -1))
    return found


@dataclass(frozen=True)
class Row:
    """One measured point, as the table and the plot need it."""

    name: str
    machine: str
    ports: int
    root_ports: int  # pcie-root-port controllers in the laid-out topology
    functions: int
    phases_ms: dict[str, float | None]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "machine": self.machine, "ports": self.ports, "root_ports": self.root_ports,
                "functions": self.functions, "phases_ms": self.phases_ms}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Row:
        phases = data["phases_ms"]
        assert isinstance(phases, dict)
        values = {str(key): (None if value is None else float(value)) for key, value in phases.items()}
        numbers = [int(str(data[key])) for key in ("ports", "root_ports", "functions")]
        return cls(str(data["name"]), str(data["machine"]), numbers[0], numbers[1], numbers[2], values)


def row(point: Point, result: Result) -> Row:
    """The row of ``point`` from its measurement (the median when there were several runs)."""
    root_ports = sum(
        1
        for device in result.topology.devices
        if device.tag == "controller" and device.get("model") == "pcie-root-port"
    )
    phases: dict[str, float | None] = {}
    for phase in result.phases():
        summary = phase.summary()
        phases[phase.name] = None if summary is None else round(summary[1], 3)
    return Row(point.name, point.machine, point.ports, root_ports, len(result.breakdowns[0].functions), phases)


def table(rows: Sequence[Row]) -> str:
    """A Markdown table of the rows, milliseconds to 0.1."""
    header = "| point | machine | root ports | PCI functions | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "---|" * (4 + len(COLUMNS))]
    for item in rows:
        cells = [_ms(item.phases_ms.get(column)) for column in COLUMNS]
        lines.append(
            f"| {item.name} | {item.machine} | {item.root_ports} | {item.functions} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def differences(first: Sequence[Row], second: Sequence[Row], tolerance_ms: float = 0.1) -> list[str]:
    """Where two sweeps disagree by more than ``tolerance_ms`` (or list different points)."""
    found: list[str] = []
    if [item.name for item in first] != [item.name for item in second]:
        return ["the two sweeps measured different points"]
    for a, b in zip(first, second, strict=True):
        for column in COLUMNS:
            x, y = a.phases_ms.get(column), b.phases_ms.get(column)
            if (x is None) != (y is None) or (x is not None and y is not None and abs(x - y) > tolerance_ms):
                found.append(f"{a.name} {column}: {_ms(x)} vs {_ms(y)} ms")
    return found


def dump(rows: Sequence[Row]) -> str:
    return json.dumps([item.to_json() for item in rows], indent=1, sort_keys=True) + "\n"


def load(text: str) -> list[Row]:
    return [Row.from_json(item) for item in json.loads(text)]
