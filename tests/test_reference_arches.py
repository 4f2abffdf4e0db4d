"""The reference on aarch64 and riscv64 virt: the per-arch rows, and invariants of what define lays out."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from pytest_pcie import reference
from pytest_pcie.domain import prepare_domain
from pytest_pcie.reference.machine import Chipset, canonical_on, chipset_on, unsupported_on

VIRT = ("aarch64-virt", "riscv64-virt")
# The facts below are libvirt 9.0.0's; where the reference models several releases, ask for that one.
AS_9_0_0 = {"profile": "9.0.0"} if "profile" in inspect.signature(reference.define).parameters else {}


def defined(devices: str, machine: str) -> etree._Element:
    text = prepare_domain(f"<domain><devices>{devices}</devices></domain>", machine)
    return etree.fromstring(reference.define(text, **AS_9_0_0))


def pci_models(root: etree._Element) -> list[str]:
    return [str(c.get("model")) for c in root.iterfind("devices/controller[@type='pci']")]


@pytest.mark.parametrize(
    ("machine", "arch", "chipset"),
    [("virt", "aarch64", Chipset.VIRT), ("virt-6.2", "aarch64", Chipset.VIRT), ("virt", "riscv64", Chipset.VIRT),
     ("virt", "x86_64", Chipset.NONE), ("q35", "x86_64", Chipset.Q35), ("sbsa-ref", "aarch64", Chipset.NONE)],
)  # fmt: skip
def test_virt_is_recognised_by_name_and_arch(machine: str, arch: str, chipset: Chipset) -> None:
    assert chipset_on(machine, arch) is chipset


def test_aliases_and_offered_machines_per_arch() -> None:
    assert (canonical_on("virt", "aarch64"), canonical_on("virt", "riscv64")) == ("virt-7.2", "virt")
    assert canonical_on("pc-q35-5.2", "x86_64") == "pc-q35-5.2"
    assert unsupported_on("virt-7.2", "aarch64") is None
    assert unsupported_on("virt-7.2", "riscv64") == (
        "unsupported configuration: Emulator '/usr/bin/qemu-system-riscv64' does not support machine type 'virt-7.2'"
    )


def test_an_empty_virt_domain_gets_its_root_and_on_riscv64_a_balloon() -> None:
    aarch64 = defined("", "aarch64-virt")
    assert pci_models(aarch64) == ["pcie-root"]
    assert aarch64.find("devices/memballoon") is None and aarch64.find("devices/input") is None
    riscv64 = defined("", "riscv64-virt")
    assert pci_models(riscv64) == ["pcie-root", "pcie-root-port", "pcie-root-port"]  # balloon's port + spare
    assert riscv64.find("devices/memballoon/address[@bus='0x01']") is not None


def test_default_models_follow_the_arch_of_each_domain_in_turn() -> None:
    nic = "<interface type='user'/><controller type='usb'/><graphics type='vnc'/>"
    wanted_by_machine = {
        "q35": ("rtl8139", "piix3-uhci", "cirrus"),
        "aarch64-virt": ("virtio", "qemu-xhci", "virtio"),
        "riscv64-virt": ("virtio", "piix3-uhci", "virtio"),
        "pc": ("rtl8139", "piix3-uhci", "cirrus"),
    }
    for machine, wanted in wanted_by_machine.items():
        root = defined(nic, machine)
        found = (root.find("devices/interface/model").get("type"),  # type: ignore[union-attr]
                 root.find("devices/controller[@type='usb']").get("model"),  # type: ignore[union-attr]
                 root.find("devices/video/model").get("type"))  # type: ignore[union-attr]  # fmt: skip
        assert found == wanted, machine


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    machine=st.sampled_from(VIRT),
    models=st.lists(st.sampled_from(["virtio", "e1000e", "e1000", "rtl8139"]), max_size=40),
)
def test_virt_layout_invariants(machine: str, models: list[str]) -> None:
    """Every PCIe device on its own root port, legacy ones behind pcie-to-pci-bridges, ports on
    bus 0 from slot 1 with port = slot*8+function, one spare port, and define a fixed point."""
    nics = "".join(f"<interface type='user'><model type='{model}'/></interface>" for model in models)
    text = reference.define(
        prepare_domain(f"<domain><devices><memballoon model='none'/>{nics}</devices></domain>", machine)
    )
    root = etree.fromstring(text)
    ports = {int(str(c.get("index"))): c for c in root.iterfind("devices/controller[@model='pcie-root-port']")}
    for port in ports.values():
        address = port.find("address")
        assert address is not None and int(str(address.get("bus")), 16) == 0 and int(str(address.get("slot")), 16) >= 1
        target = port.find("target")
        assert target is not None
        slot, function = int(str(address.get("slot")), 16), int(str(address.get("function")), 16)
        assert int(str(target.get("port")), 16) == slot * 8 + function
    bridges = {int(str(c.get("index"))) for c in root.iterfind("devices/controller[@model='pcie-to-pci-bridge']")}
    used: list[int] = []
    for nic in root.iterfind("devices/interface"):
        bus = int(str(nic.find("address").get("bus")), 16)  # type: ignore[union-attr]
        legacy = nic.find("model").get("type") in ("e1000", "rtl8139")  # type: ignore[union-attr]
        assert (bus in bridges) if legacy else (bus in ports)
        used.append(bus)
    pcie_buses = [bus for bus in used if bus in ports]
    assert len(pcie_buses) == len(set(pcie_buses))  # one device per root port
    holders = {
        int(str(c.find("address").get("bus")), 16)  # type: ignore[union-attr]
        for c in root.iterfind("devices/controller[@model='pcie-to-pci-bridge']")
    }
    empty = [index for index in ports if index not in used and index not in holders]
    assert len(empty) == (1 if models else 0)
    again = reference.define(text)
    assert etree.tostring(etree.fromstring(again)) == etree.tostring(root)
