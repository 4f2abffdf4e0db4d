"""The machine types a case can run on, as a table.

A case names machine *families* (``pc``, ``q35``, ``aarch64-virt``); libvirt expands the alias to
a versioned name (``pc-i440fx-7.2``, ``virt-7.2``) that differs between QEMU releases, so goldens
only ever record the family.  A family is one guest architecture plus one machine: ``virt`` is
the name of both the aarch64 and the riscv64 machine, so the architecture is part of what
identifies it.  Adding a machine family is one row here plus the cases that pin its behaviour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

X86_64 = "x86_64"


@dataclass(frozen=True)
class MachineFamily:
    """One machine family: what a domain for it must say, and how to recognise its versioned names.

    ``domain_type`` is the ``<domain type>`` a run uses, or None for the best one the host offers
    for ``arch`` (KVM, else TCG); ``cpu_model`` is a custom CPU model to ask for, where QEMU's
    default CPU for the machine is not the one management applications use; ``acpi`` says whether
    the domain gets ``<features><acpi/>``.  None of these shapes the PCI topology: they only make
    the guest define and start.
    """

    name: str
    libvirt_alias: str
    versioned: re.Pattern[str]
    root_model: str
    arch: str = X86_64
    domain_type: str | None = None
    cpu_model: str | None = None
    acpi: bool = True
    emulator_package: str = "qemu-system-x86"  # Debian 12's package, for error messages


MACHINE_FAMILIES: dict[str, MachineFamily] = {
    family.name: family
    for family in (
        MachineFamily("pc", "pc", re.compile(r"^(pc|pc-i440fx-\d+\.\d+|pc-\d+\.\d+)$"), "pci-root"),
        MachineFamily("q35", "q35", re.compile(r"^(q35|pc-q35-\d+\.\d+)$"), "pcie-root"),
        # TCG: these guests run emulated on an x86 host (no KVM for a foreign architecture).
        MachineFamily(
            "aarch64-virt", "virt", re.compile(r"^virt(-\d+\.\d+)?$"), "pcie-root",
            arch="aarch64", domain_type="qemu", cpu_model="cortex-a57", acpi=False, emulator_package="qemu-system-arm",
        ),
        MachineFamily(
            "riscv64-virt", "virt", re.compile(r"^virt$"), "pcie-root",
            arch="riscv64", domain_type="qemu", acpi=False, emulator_package="qemu-system-misc",
        ),
    )
}  # fmt: skip

ARCHES: frozenset[str] = frozenset(family.arch for family in MACHINE_FAMILIES.values())


def family_of(machine: str, arch: str = X86_64) -> MachineFamily | None:
    """Return the family of libvirt machine name ``machine`` on ``arch``, or None if we know none."""
    for family in MACHINE_FAMILIES.values():
        if family.arch == arch and family.versioned.match(machine):
            return family
    return None
