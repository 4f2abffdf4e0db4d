"""The machine types a case can run on, as a table.

A case names machine *families* (``pc``, ``q35``); libvirt expands the alias to a versioned name
(``pc-i440fx-7.2``) that differs between QEMU releases, so goldens only ever record the family.
Adding a machine family is one row here plus the cases that pin its behaviour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class MachineFamily:
    """One machine family: the alias given to libvirt and how to recognise its versioned names."""

    name: str
    libvirt_alias: str
    versioned: re.Pattern[str]
    root_model: str


MACHINE_FAMILIES: dict[str, MachineFamily] = {
    family.name: family
    for family in (
        MachineFamily("pc", "pc", re.compile(r"^(pc|pc-i440fx-\d+\.\d+|pc-\d+\.\d+)$"), "pci-root"),
        MachineFamily("q35", "q35", re.compile(r"^(q35|pc-q35-\d+\.\d+)$"), "pcie-root"),
    )
}


def family_of(machine: str) -> MachineFamily | None:
    """Return the family a libvirt machine name belongs to, or None for a name we do not know."""
    for family in MACHINE_FAMILIES.values():
        if family.versioned.match(machine):
            return family
    return None
