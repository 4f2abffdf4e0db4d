"""What a run of ``pcie-bootcost golden/ --json`` says about host time, by the kind of topology.

The question it answers is the one a user of the corpus asks first: how long does one golden take
here, and which goldens take long, and why.  Host time per boot is dominated by a few guest-side
busy waits that ``-icount`` turns into hundreds of millions of emulated instructions (see
docs/bootcost.md, "Host time"); each kind below is one of them, recognised from the golden itself.
The first kind that matches a golden is its kind.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from pytest_pcie.normalise import DEVICES_TAG

BOUND_S = 10.0  # the "under ~10 s per domain here"


def _has_usb_controller(machine: str, devices: etree._Element) -> bool:
    return any(c.get("model") != "none" for c in devices.iterfind("controller[@type='usb']"))


def _has_e1000(machine: str, devices: etree._Element) -> bool:
    return devices.find("interface/model[@type='e1000']") is not None


@dataclass(frozen=True)
class Kind:
    name: str
    why: str
    matches: Callable[[str, etree._Element], bool]  # (machine family, the golden's <devices>)


KINDS: tuple[Kind, ...] = (
    Kind("USB controller", "SeaBIOS's USB port waits (firmware ~140-160 ms, not ~50)", _has_usb_controller),
    Kind("e1000 NIC", "each e1000 probe: ~0.3 s of guest time", _has_e1000),
    Kind("pc, other", "each PCI function's probe: ~79 ms of ACPI _PRT loop", lambda machine, _: machine == "pc"),
    Kind("q35, other", "", lambda machine, _: True),
)


@dataclass(frozen=True)
class Report:
    """One line of ``--json`` output, reduced to what this summary needs."""

    topology: str
    machine: str
    host_s: float  # the first boot's host seconds
    phases_ms: dict[str, object]

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Report:
        walls = data["host_wall_s"]
        phases = data["phases_ms"]
        assert isinstance(walls, list) and isinstance(phases, dict)
        return cls(str(data["topology"]), str(data["machine"]), float(walls[0]), phases)


def load(text: str) -> list[Report]:
    return [Report.from_json(json.loads(line)) for line in text.splitlines() if line.strip()]


def kind_of(report: Report, root: Path) -> Kind:
    """The kind of the golden a report was made from (its label is the golden's path, relative to ``root``)."""
    document = etree.parse(str(root / report.topology)).getroot()
    devices = document.find(DEVICES_TAG)
    assert devices is not None, f"{report.topology} has no <devices>: a refused define is never booted"
    return next(kind for kind in KINDS if kind.matches(report.machine, devices))


def table(reports: Sequence[Report], root: Path) -> str:
    """A Markdown table: for each kind and in all, how many goldens, and host seconds per boot."""
    groups: dict[str, list[float]] = {kind.name: [] for kind in KINDS}
    for report in reports:
        groups[kind_of(report, root).name].append(report.host_s)
    lines = [
        f"| kind | what costs the host most | goldens | median s | 90th percentile s | max s | under {BOUND_S:g} s |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(kind.name, kind.why, groups[kind.name]) for kind in KINDS]
    rows.append(("all", "", [report.host_s for report in reports]))
    for name, why, times in rows:
        if not times:
            continue
        ordered = sorted(times)
        under = sum(time < BOUND_S for time in ordered)
        lines.append(
            f"| {name} | {why} | {len(ordered)} | {statistics.median(ordered):.1f} | "
            f"{_percentile(ordered, 0.9):.1f} | {ordered[-1]:.1f} | {under} ({100 * under / len(ordered):.0f} %) |"
        )
    return "\n".join(lines)


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]


@dataclass(frozen=True)
class Difference:
    """One guest-side phase of one golden that two runs disagree on."""

    topology: str
    phase: str
    before: object
    after: object

    def __str__(self) -> str:
        if isinstance(self.before, float | int) and isinstance(self.after, float | int):
            return f"{self.topology}: {self.phase} {self.before:.1f} -> {self.after:.1f} ms"
        return f"{self.topology}: {self.phase} {self.before} -> {self.after}"


def differences(first: Sequence[Report], second: Sequence[Report], tolerance_ms: float = 0.1) -> list[Difference]:
    """The guest-side phases that differ between two runs by more than ``tolerance_ms``, golden by golden."""
    earlier = {report.topology: report for report in first}
    found: list[Difference] = []
    for report in second:
        before = earlier.get(report.topology)
        if before is None:
            continue
        for phase, value in report.phases_ms.items():
            old = before.phases_ms.get(phase)
            if isinstance(value, float | int) and isinstance(old, float | int):
                moved = abs(value - old) > tolerance_ms
            else:
                moved = (value is None) != (old is None)
            if moved:
                found.append(Difference(report.topology, phase, old, value))
    return found
