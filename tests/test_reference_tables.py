"""The reference's data tables: rows that libvirt 9.0.0's behaviour pins (see domain_addr.c and the
define cases verified on libvirtd)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_pcie.reference.addresses import AddressSet, Bus
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.machine import Chipset, canonical, chipset_of
from pytest_pcie.reference.model import PciAddress
from pytest_pcie.reference.profiles import using_profile
from pytest_pcie.reference.tables import CONTROLLER_MODELS, Connect, Link, device_link


@pytest.fixture(autouse=True)
def _libvirt_9_0_0() -> Iterator[None]:
    """These tests pin libvirt 9.0.0's rules, as measured on its daemon; what later releases
    changed is pinned rule by rule in test_reference_profiles.py."""
    with using_profile("9.0.0"):
        yield


@pytest.mark.parametrize(
    ("kind", "model", "link"),
    [
        ("interface", "virtio", Link.VIRTIO),
        ("interface", "virtio-non-transitional", Link.VIRTIO),
        ("interface", "virtio-transitional", Link.PCI),
        ("interface", "e1000e", Link.PCIE),
        ("interface", "rtl8139", Link.PCI),
        ("video", "bochs", Link.PCIE),
        ("video", "qxl", Link.PCI),
        ("video", "ramfb", Link.NONE),
        ("controller:usb", "qemu-xhci", Link.PCIE),
        ("controller:usb", "ich9-uhci2", Link.PCI),
        ("controller:usb", "none", Link.NONE),
        ("controller:scsi", "lsilogic", Link.PCI),
        ("controller:fdc", "default", Link.NONE),
        ("sound", "pcspk", Link.NONE),
        ("shmem", "ivshmem-doorbell", Link.PCI),
    ],
)
def test_device_links(kind: str, model: str, link: Link) -> None:
    assert device_link(kind, model) is link


@pytest.mark.parametrize(
    ("model", "slots", "hotplug"),
    [("pci-root", (1, 31), True), ("pcie-root", (1, 31), False), ("pcie-root-port", (0, 0), True),
     ("dmi-to-pci-bridge", (0, 31), False), ("pcie-to-pci-bridge", (1, 31), True),
     ("pcie-switch-upstream-port", (0, 31), False), ("pci-expander-bus", (0, 31), True)],
)
def test_bus_rows(model: str, slots: tuple[int, int], hotplug: bool) -> None:
    row = CONTROLLER_MODELS[model]
    assert ((row.min_slot, row.max_slot), row.hotplug) == (slots, hotplug)


def test_pcie_root_does_not_auto_assign_endpoints_but_takes_root_ports() -> None:
    bus = Bus.of_model("pcie-root", False)
    table = AddressSet([bus], dry_run=False)
    with pytest.raises(LibvirtError, match="No more available PCI slots"):
        table.reserve_next(Connect.PCIE_DEVICE | Connect.AUTOASSIGN)
    assert table.reserve_next(Connect.PCIE_ROOT_PORT | Connect.AGGREGATE_SLOT) == PciAddress(0, 0, 1, 0)


def test_root_ports_share_a_slot_eight_ways() -> None:
    bus = Bus.of_model("pcie-root", False)
    table = AddressSet([bus], dry_run=False)
    port = Connect.PCIE_ROOT_PORT | Connect.AGGREGATE_SLOT
    placed = [table.reserve_next(port) for _ in range(9)]
    assert [(address.slot, address.function) for address in placed] == [(1, f) for f in range(8)] + [(2, 0)]


def test_dry_run_grows_a_root_port_and_bridge_pair_for_a_legacy_device() -> None:
    bus = Bus.of_model("pcie-root", False)
    table = AddressSet([bus], dry_run=True)
    address = table.reserve_next(Connect.PCI_DEVICE | Connect.AUTOASSIGN)
    assert [added.model for added in table.buses[1:]] == ["pcie-root-port", "pcie-to-pci-bridge"]
    assert address == PciAddress(0, 2, 1, 0)


@pytest.mark.parametrize(
    ("machine", "chipset"),
    [("pc", Chipset.I440FX), ("pc-i440fx-7.2", Chipset.I440FX), ("pc-1.0", Chipset.I440FX), ("q35", Chipset.Q35),
     ("pc-q35-2.12", Chipset.Q35), ("pc-q35", Chipset.NONE), ("virt", Chipset.NONE)],
)
def test_chipset_by_name(machine: str, chipset: Chipset) -> None:
    assert chipset_of(machine) is chipset


def test_aliases_expand_to_qemu_7_2_names() -> None:
    assert (canonical("pc"), canonical("q35"), canonical("pc-q35-5.2")) == ("pc-i440fx-7.2", "pc-q35-7.2", "pc-q35-5.2")
