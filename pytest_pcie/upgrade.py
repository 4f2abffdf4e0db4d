"""Upgrade stability: does a newer libvirt keep every address of a guest an older one stored?

Management applications (KubeVirt, Nova) rely on this contract: a guest defined on libvirt N keeps
its PCI topology when the host moves to N+1 and the stored definition is read again.  The check
defines the older version's stored XML unchanged on the newer daemon and compares the two stored
topologies device by device.  A device or controller that moved, changed or vanished breaks the
contract; a device the newer version added is allowed (it can only sit in a slot that was free,
or a paired device would have moved) but is reported, because a guest OS sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from lxml import etree

from pytest_pcie.golden import canonical_text, describe_changes, pair_devices
from pytest_pcie.normalise import DEVICES_TAG, normalise
from pytest_pcie.outcome import Outcome


class ChangeKind(Enum):
    """What happened to one device across the upgrade; ``breaks`` says whether the contract holds."""

    MOVED = "moved"  # its PCI address changed
    CHANGED = "changed"  # same address, but its model, target or identity changed
    REMOVED = "removed"
    ADDED = "added"

    @property
    def breaks(self) -> bool:
        return self is not ChangeKind.ADDED


@dataclass(frozen=True)
class DeviceChange:
    """One device that is not the same after the upgrade, in words for a report."""

    kind: ChangeKind
    label: str
    detail: str

    def __str__(self) -> str:
        return f"{self.label}: {self.kind.value}" + (f" ({self.detail})" if self.detail else "")


def compare_stored(before_xml: str, after_xml: str, machine: str) -> list[DeviceChange]:
    """Every device and controller whose normalised form differs between two stored definitions."""
    before = _devices(before_xml, machine)
    after = _devices(after_xml, machine)
    changes = []
    for pair in pair_devices(before, after):
        if pair.expected is None:
            assert pair.actual is not None
            changes.append(DeviceChange(ChangeKind.ADDED, pair.label, _address_text(pair.actual)))
        elif pair.actual is None:
            changes.append(DeviceChange(ChangeKind.REMOVED, pair.label, _address_text(pair.expected)))
        elif canonical_text(pair.expected) != canonical_text(pair.actual):
            moved = _address_text(pair.expected) != _address_text(pair.actual)
            kind = ChangeKind.MOVED if moved else ChangeKind.CHANGED
            changes.append(DeviceChange(kind, pair.label, "; ".join(describe_changes(pair.expected, pair.actual))))
    return changes


def _devices(domain_xml: str, machine: str) -> etree._Element:
    devices = normalise(Outcome(domain_xml), machine).find(DEVICES_TAG)
    return devices if devices is not None else etree.Element(DEVICES_TAG)


def _address_text(device: etree._Element) -> str:
    address = device.find("address")
    if address is None or address.get("type") != "pci":
        return "no PCI address"
    fields = [address.get(name, "?").removeprefix("0x") for name in ("domain", "bus", "slot", "function")]
    return "{}:{}:{}.{}".format(*fields)
