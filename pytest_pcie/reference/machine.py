"""Machine types QEMU 7.2 offers on x86_64 and how libvirt 9.0.0 classifies them.

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

EMULATOR = "/usr/bin/qemu-system-x86_64"


class Chipset(Enum):
    """The PCI chipset a machine name implies; NONE for machines without a PCI root libvirt adds."""

    I440FX = "pc"
    Q35 = "q35"
    VIRT = "virt"  # aarch64 / riscv64 virt: a pcie-root and nothing fixed on it
    NONE = "none"


ALIASES: dict[str, str] = {"pc": "pc-i440fx-7.2", "q35": "pc-q35-7.2"}

# Versioned machine names QEMU 7.2 (Debian 12) reports for x86_64, from `virsh capabilities`.
# (major, first minor, last minor) ranges.
_I440FX_RANGES = ((1, 4, 7), (2, 0, 12), (3, 0, 1), (4, 0, 2), (5, 0, 2), (6, 0, 2), (7, 0, 2))
_Q35_RANGES = ((2, 4, 12), (3, 0, 1), (4, 0, 2), (5, 0, 2), (6, 0, 2), (7, 0, 2))


def _versions(ranges: tuple[tuple[int, int, int], ...]) -> tuple[str, ...]:
    return tuple(f"{major}.{minor}" for major, first, last in ranges for minor in range(first, last + 1))


_I440FX_VERSIONS = _versions(_I440FX_RANGES)
_Q35_VERSIONS = (*_versions(_Q35_RANGES), "4.0.1")
SUPPORTED: frozenset[str] = frozenset(
    ["pc", "q35", "isapc", "microvm", "x-remote"]
    + [f"pc-i440fx-{version}" for version in _I440FX_VERSIONS]
    + [f"pc-q35-{version}" for version in _Q35_VERSIONS]
)

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
    """The machine name libvirt stores: aliases expand to QEMU 7.2's versioned name."""
    return ALIASES.get(machine, machine)


def unsupported_message(machine: str) -> str | None:
    """libvirt's validation error for a machine QEMU does not offer, or None when it is offered."""
    if machine in SUPPORTED:
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
