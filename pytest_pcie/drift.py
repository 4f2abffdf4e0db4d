"""What changed between the goldens of two libvirt versions, sorted into causes a reader knows.

Every version override in the corpus (``golden/<case>/<machine>@<version>.xml``) says "from this
version on, the outcome differs from what the previous golden says".  This module compares the
override with the golden it replaces and names the causes, so the versions page can group the
corpus's drift by why it happened rather than list files.  The causes form a table with a fixed
order; an override can have several (a new default device that also pushes others along).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from itertools import pairwise
from pathlib import Path

from lxml import etree

from pytest_pcie.golden import canonical_text, golden_versions, pair_devices, read_golden
from pytest_pcie.normalise import DEVICES_TAG, FAILURE_TAG
from pytest_pcie.versions import Version

# Controllers whose number is the "how many spare ports / bridges" question of the 2016 policy.
PORT_MODELS = frozenset({"pcie-root-port", "pci-bridge", "pcie-to-pci-bridge", "dmi-to-pci-bridge"})


class Cause(Enum):
    """Why two versions' outcomes differ; the value is the heading on the versions page."""

    NOW_FAILS = "the operation now fails"
    NOW_SUCCEEDS = "the operation now succeeds"
    MESSAGE_TEXT = "message text"
    PORT_COUNT = "spare port / bridge count"
    NEW_DEVICE = "new default device"
    DROPPED_DEVICE = "device no longer added"
    ADDRESS_MOVED = "address moved"
    DEVICE_CHANGED = "device changed in place"


@dataclass(frozen=True)
class Drift:
    """One override: the case, machine, the version it holds from, the one it replaces, and why."""

    case_id: str
    machine: str
    version: Version
    previous: Version
    causes: tuple[Cause, ...]
    details: tuple[str, ...]


def classify(before: etree._Element, after: etree._Element) -> tuple[tuple[Cause, ...], tuple[str, ...]]:
    """The causes (in :class:`Cause` order) and one detail line per difference."""
    found: dict[Cause, list[str]] = {}
    failure_before, failure_after = before.find(FAILURE_TAG), after.find(FAILURE_TAG)
    if failure_before is None and failure_after is not None:
        found[Cause.NOW_FAILS] = [f"fails: {failure_after.text}"]
    elif failure_before is not None and failure_after is None:
        found[Cause.NOW_SUCCEEDS] = [f"no longer fails with: {failure_before.text}"]
    elif failure_before is not None and failure_after is not None and failure_before.text != failure_after.text:
        found[Cause.MESSAGE_TEXT] = [f"{failure_before.text!r} became {failure_after.text!r}"]
    devices_before, devices_after = before.find(DEVICES_TAG), after.find(DEVICES_TAG)
    if devices_before is not None and devices_after is not None:
        _classify_devices(devices_before, devices_after, found)
    causes = tuple(cause for cause in Cause if cause in found)
    return causes, tuple(line for cause in causes for line in found[cause])


def _classify_devices(before: etree._Element, after: etree._Element, found: dict[Cause, list[str]]) -> None:
    ports_before, ports_after = _port_count(before), _port_count(after)
    if ports_before != ports_after:
        found.setdefault(Cause.PORT_COUNT, []).append(f"{ports_before} ports/bridges became {ports_after}")
    for pair in pair_devices(before, after):
        either = pair.expected if pair.expected is not None else pair.actual
        is_port = either is not None and either.get("model") in PORT_MODELS  # counted above, not one by one
        if pair.expected is None:
            if not is_port:
                found.setdefault(Cause.NEW_DEVICE, []).append(f"{pair.label} added")
        elif pair.actual is None:
            if not is_port:
                found.setdefault(Cause.DROPPED_DEVICE, []).append(f"{pair.label} no longer added")
        elif canonical_text(pair.expected) != canonical_text(pair.actual):
            moved = _address(pair.expected) != _address(pair.actual)
            cause = Cause.ADDRESS_MOVED if moved else Cause.DEVICE_CHANGED
            found.setdefault(cause, []).append(f"{pair.label}: {_address(pair.expected)} -> {_address(pair.actual)}")


def _port_count(devices: etree._Element) -> int:
    return sum(1 for element in devices.iterchildren("controller") if element.get("model") in PORT_MODELS)


def _address(device: etree._Element) -> str:
    address = device.find("address")
    if address is None:
        return "no address"
    return etree.tostring(address, encoding="unicode").strip()


def corpus_drift(goldens_root: Path) -> Iterator[Drift]:
    """Every override under ``goldens_root``, compared with the golden it replaces."""
    seen: set[tuple[str, str]] = set()
    for path in sorted(goldens_root.rglob("*@*.xml")):
        case_id = path.parent.relative_to(goldens_root).as_posix()
        machine = path.name.split("@", 1)[0]
        if (case_id, machine) in seen:
            continue
        seen.add((case_id, machine))
        versions = sorted(golden_versions(goldens_root, case_id, machine).items())
        for (previous, older), (version, newer) in pairwise(versions):
            causes, details = classify(read_golden(older), read_golden(newer))
            yield Drift(case_id, machine, version, previous, causes, details)
