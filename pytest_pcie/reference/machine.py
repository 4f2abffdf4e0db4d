"""Machine types QEMU offers on x86_64 and how libvirt classifies them.

libvirt recognises its two PCI chipsets by name (``qemuDomainIsI440FX`` / ``qemuDomainIsQ35``)
and expands the aliases ``pc`` and ``q35`` to the newest versioned name.  A machine QEMU does not
offer is only rejected at validation, after address assignment, so an unknown name that reaches
assignment with PCI devices fails earlier with "No PCI buses available" (checked on libvirtd).

The ``virt`` machine of aarch64 and riscv64 is recognised by name *and* arch
(``qemuDomainIsARMVirt`` / ``qemuDomainIsRISCVVirt``); the ``*_on`` functions take the arch, and
what else differs per arch is in :mod:`arches`.
"""

from __future__ import annotations

import re
from enum import Enum

from pytest_pcie.reference import arches
from pytest_pcie.reference.profiles import current_profile

EMULATOR = "/usr/bin/qemu-system-x86_64"


class Chipset(Enum):
    """The PCI chipset a machine name implies; NONE for machines without a PCI root libvirt adds."""

    I440FX = "pc"
    Q35 = "q35"
    VIRT = "virt"  # aarch64 / riscv64 virt: a pcie-root and nothing fixed on it
    NONE = "none"


# libvirt's own name tests, in its order.
_CHIPSET_PATTERNS: tuple[tuple[re.Pattern[str], Chipset], ...] = (
    (re.compile(r"^(pc|pc-0\..*|pc-1\..*|pc-i440fx-.*|rhel.*)$"), Chipset.I440FX),
    (re.compile(r"^(q35|pc-q35-.*)$"), Chipset.Q35),
)
_VIRT_PATTERN = re.compile(r"^virt(-.*)?$")


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


def chipset_on(machine: str, arch: str) -> Chipset:
    """Which chipset libvirt assumes for ``machine`` on ``arch``: x86 by :func:`chipset_of`, virt by name."""
    if arch == arches.X86_64:
        return chipset_of(machine)
    if arch in arches.SUPPORTED and _VIRT_PATTERN.match(machine):
        return Chipset.VIRT
    return Chipset.NONE


def canonical_on(machine: str, arch: str) -> str:
    """:func:`canonical` for a domain of ``arch``."""
    if arch == arches.X86_64:
        return canonical(machine)
    return arches.ALIASES.get(arch, {}).get(machine, machine)


def unsupported_on(machine: str, arch: str) -> str | None:
    """:func:`unsupported_message` for a domain of ``arch``."""
    if arch == arches.X86_64:
        return unsupported_message(machine)
    if machine in arches.SUPPORTED.get(arch, frozenset()):
        return None
    emulator = arches.EMULATORS.get(arch, f"/usr/bin/qemu-system-{arch}")
    return f"unsupported configuration: Emulator '{emulator}' does not support machine type '{machine}'"
