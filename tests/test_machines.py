"""Machine families as data: recognising libvirt's names per arch, and the domains they make."""

from __future__ import annotations

import pytest
from lxml import etree

from pytest_pcie.domain import DomainInputError, prepare_domain
from pytest_pcie.machines import MACHINE_FAMILIES, X86_64, family_of
from pytest_pcie.normalise import machine_family


@pytest.mark.parametrize(
    ("machine", "arch", "family"),
    [
        ("pc-q35-7.2", X86_64, "q35"),
        ("virt", "aarch64", "aarch64-virt"),
        ("virt-7.2", "aarch64", "aarch64-virt"),
        ("virt-11.1", "aarch64", "aarch64-virt"),
        ("virt", "riscv64", "riscv64-virt"),
        ("virt-7.2", "riscv64", None),  # riscv64's virt has no versioned names
        ("virt", X86_64, None),  # there is no x86 virt
        ("pc-q35-7.2", "aarch64", None),
    ],
)
def test_a_machine_name_is_known_only_on_its_arch(machine: str, arch: str, family: str | None) -> None:
    found = family_of(machine, arch)
    assert (found.name if found is not None else None) == family


def test_every_family_recognises_its_own_alias() -> None:
    for family in MACHINE_FAMILIES.values():
        assert family_of(family.libvirt_alias, family.arch) is family


def test_normalised_machine_names_the_family_or_arch_and_name() -> None:
    def named(os_type: str) -> str | None:
        return machine_family(etree.fromstring(f"<domain><os>{os_type}</os></domain>"))

    assert named("<type arch='aarch64' machine='virt-10.0'>hvm</type>") == "aarch64-virt"
    assert named("<type machine='pc-i440fx-7.2'>hvm</type>") == "pc"  # no arch: x86_64
    assert named("<type arch='riscv64' machine='spike'>hvm</type>") == "riscv64 spike"
    assert named("<type arch='x86_64' machine='microvm'>hvm</type>") == "microvm"


def test_a_virt_domain_is_tcg_with_its_arch_and_cpu_and_no_acpi() -> None:
    root = etree.fromstring(prepare_domain("<domain><devices/></domain>", "aarch64-virt").encode())
    assert root.get("type") == "qemu"
    os_type = root.find("os/type")
    assert os_type is not None and (os_type.get("arch"), os_type.get("machine")) == ("aarch64", "virt")
    assert root.findtext("cpu/model") == "cortex-a57"
    assert root.find("features") is None
    riscv = etree.fromstring(prepare_domain("<domain><devices/></domain>", "riscv64-virt").encode())
    assert (riscv.get("type"), riscv.find("cpu"), riscv.find("features")) == ("qemu", None, None)
    q35 = etree.fromstring(prepare_domain("<domain><devices/></domain>", "q35").encode())
    assert (q35.get("type"), q35.find("cpu"), q35.find("features/acpi") is not None) == ("kvm", None, True)


def test_an_own_cpu_is_kept() -> None:
    text = "<domain><cpu mode='custom'><model>max</model></cpu><devices/></domain>"
    root = etree.fromstring(prepare_domain(text, "aarch64-virt").encode())
    assert [model.text for model in root.iterfind("cpu/model")] == ["max"]


def test_an_input_of_another_arch_is_one_clear_error() -> None:
    with pytest.raises(DomainInputError, match="input names arch 'x86_64', but machine 'aarch64-virt' is aarch64"):
        prepare_domain("<domain><os><type arch='x86_64'>hvm</type></os></domain>", "aarch64-virt")
    with pytest.raises(DomainInputError, match="input names machine 'virt', but this run is for 'q35'"):
        prepare_domain("<domain><os><type machine='virt'>hvm</type></os></domain>", "q35")
