"""Machine types QEMU offers on x86_64 and how libvirt classifies them.

libvirt recognises its two PCI chipsets by name (``qemuDomainIsI440FX`` / ``qemuDomainIsQ35``)
and expands the aliases ``pc`` and ``q35`` to the newest versioned name.  A machine QEMU does not
offer is only rejected at validation, after address assignment, so an unknown name that reaches
assignment with PCI devices fails earlier with "No PCI buses available" (checked on libvirtd).
"""

from __future__ import annotations

import re
from enum import Enum

from pytest_pcie.reference.profiles import current_profile

EMULATOR = "/usr/bin/qemu-system-x86_64"


class Chipset(Enum):
    """The PCI chipset a machine name implies; NONE for machines without a PCI root libvirt adds."""

    I440FX = "pc"
    Q35 = "q35"
    NONE = "none"


# libvirt's own name tests, in its order.
_CHIPSET_PATTERNS: tuple[tuple[re.Pattern[str], Chipset], ...] = (
    (re.compile(r"^(pc|pc-0\..*|pc-1\..*|pc-i440fx-.*|rhel.*)$"), Chipset.I440FX),
    (re.compile(r"^(q35|pc-q35-.*)$"), Chipset.Q35),
)


def chipset_of(machine: str) -> Chipset:
    """Which chipset libvirt assumes for ``machine`` (by name, as libvirt does)."""
    for pattern, chipset in _CHIPSET_PATTERNS:
        if pattern.match(machine):
            return chipset
    return Chipset.NONE


def canonical(machine: str) -> str:
    """The machine name libvirt stores: aliases expand to the profile's QEMU's newest versioned
    name (``pc-q35-7.2`` under 9.0.0's profile, ``pc-q35-11.1`` under 12.8.0's)."""
    return current_profile().machines.aliases.get(machine, machine)


def unsupported_message(machine: str) -> str | None:
    """libvirt's validation error for a machine QEMU does not offer, or None when it is offered."""
    if machine in current_profile().machines.supported:
        return None
    return f"unsupported configuration: Emulator '{EMULATOR}' does not support machine type '{machine}'"
