"""Machine types QEMU 7.2 offers on x86_64, aarch64 and riscv64, and how libvirt 9.0.0 classifies them.

libvirt recognises its two x86 PCI chipsets by name (``qemuDomainIsI440FX`` / ``qemuDomainIsQ35``)
and the ``virt`` machine of aarch64 and riscv64 by name and arch, and expands the aliases ``pc``,
``q35`` and aarch64's ``virt`` to the newest versioned name (riscv64's ``virt`` is unversioned).
A machine QEMU does not offer is only rejected at validation, after address assignment, so an unknown name that reaches
assignment with PCI devices fails earlier with "No PCI buses available" (checked on libvirtd).
"""

from __future__ import annotations

import re
from enum import Enum

X86_64 = "x86_64"
EMULATORS: dict[str, str] = {arch: f"/usr/bin/qemu-system-{arch}" for arch in (X86_64, "aarch64", "riscv64")}
EMULATOR = EMULATORS[X86_64]


class Chipset(Enum):
    """The PCI chipset a machine name implies; NONE for machines without a PCI root libvirt adds."""

    I440FX = "pc"
    Q35 = "q35"
    VIRT = "virt"  # aarch64 / riscv64 virt: a pcie-root and nothing fixed on it
    NONE = "none"


ALIASES: dict[str, str] = {"pc": "pc-i440fx-7.2", "q35": "pc-q35-7.2"}
ARCH_ALIASES: dict[str, dict[str, str]] = {X86_64: ALIASES, "aarch64": {"virt": "virt-7.2"}}

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
# The PCI-capable machines of the other arches (the many board machines are not modelled).
_VIRT_RANGES = ((2, 6, 12), (3, 0, 1), (4, 0, 2), (5, 0, 2), (6, 0, 2), (7, 0, 2))
SUPPORTED_BY_ARCH: dict[str, frozenset[str]] = {
    X86_64: SUPPORTED,
    "aarch64": frozenset(["virt", "sbsa-ref"] + [f"virt-{version}" for version in _versions(_VIRT_RANGES)]),
    "riscv64": frozenset({"virt", "spike", "sifive_u", "sifive_e", "shakti_c", "microchip-icicle-kit"}),
}

# libvirt's own name tests, in its order.
_CHIPSET_PATTERNS: tuple[tuple[re.Pattern[str], Chipset], ...] = (
    (re.compile(r"^(pc|pc-0\..*|pc-1\..*|pc-i440fx-.*|rhel.*)$"), Chipset.I440FX),
    (re.compile(r"^(q35|pc-q35-.*)$"), Chipset.Q35),
)


# Per arch (qemuDomainIsARMVirt / qemuDomainIsRISCVVirt): "virt" or a versioned "virt-*".
_ARCH_CHIPSET_PATTERNS: dict[str, tuple[tuple[re.Pattern[str], Chipset], ...]] = {
    X86_64: _CHIPSET_PATTERNS,
    "aarch64": ((re.compile(r"^virt(-.*)?$"), Chipset.VIRT),),
    "riscv64": ((re.compile(r"^virt(-.*)?$"), Chipset.VIRT),),
}


def chipset_of(machine: str, arch: str = X86_64) -> Chipset:
    """Which chipset libvirt assumes for ``machine`` on ``arch`` (by name, as libvirt does)."""
    for pattern, chipset in _ARCH_CHIPSET_PATTERNS.get(arch, ()):
        if pattern.match(machine):
            return chipset
    return Chipset.NONE


def canonical(machine: str, arch: str = X86_64) -> str:
    """The machine name libvirt stores: aliases expand to QEMU 7.2's versioned name."""
    return ARCH_ALIASES.get(arch, {}).get(machine, machine)


def unsupported_message(machine: str, arch: str = X86_64) -> str | None:
    """libvirt's validation error for a machine QEMU does not offer, or None when it is offered."""
    if machine in SUPPORTED_BY_ARCH.get(arch, frozenset()):
        return None
    emulator = EMULATORS.get(arch, EMULATOR)
    return f"unsupported configuration: Emulator '{emulator}' does not support machine type '{machine}'"
