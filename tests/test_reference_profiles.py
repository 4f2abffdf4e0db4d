"""Version profiles of the reference model: the rule-change table, choosing a profile, and each
change doing what the daemon of its version showed (the corpus pins the same through goldens;
these tests pin the table itself)."""

from __future__ import annotations

import re
import threading
import tomllib
from pathlib import Path

import pytest

from pytest_pcie.reference import LibvirtError, attach, define
from pytest_pcie.reference.machine import canonical
from pytest_pcie.reference.profiles import (
    PROFILES,
    RULE_CHANGES,
    UnknownProfile,
    current_profile,
    profile_for,
    profile_named,
    rules_for,
    using_profile,
)
from pytest_pcie.versions import Version

ROOT = Path(__file__).resolve().parents[1]
BARE = "<domain type='kvm'><name>p</name><memory>65536</memory><os><type machine='{machine}'>hvm</type></os>"


def domain(machine: str, devices: str) -> str:
    return BARE.format(machine=machine) + f"<devices><controller type='usb' model='none'/>{devices}</devices></domain>"


def test_every_change_names_a_documented_rule_and_a_modelled_release() -> None:
    rules = tomllib.loads((ROOT / "rules.toml").read_text())["rules"]
    releases = {profile.libvirt for profile in PROFILES.values()}
    for change in RULE_CHANGES:
        assert change.rule in rules, change.rule
        assert change.since in releases, change.since
        assert change.summary.endswith("."), change.rule


def test_rules_accumulate_release_by_release() -> None:
    base, middle, newest = (rules_for(Version.parse(name)) for name in ("9.0.0", "11.3.0", "12.8.0"))
    assert set(base.single_device_messages) == {"watchdog", "memballoon", "iommu", "vsock"}
    assert set(middle.single_device_messages) == {"memballoon", "iommu", "vsock"}
    assert set(newest.single_device_messages) == {"memballoon", "vsock"}
    assert (base.slot_needed_word, middle.slot_needed_word, newest.slot_needed_word) == ("PCI", "PCI", "PCIe")
    assert base.hotpluggable_controllers == {"scsi"} and newest.hotpluggable_controllers == {"scsi", "virtio-serial"}


def test_profile_names_and_the_profile_a_daemon_is_compared_with() -> None:
    assert list(PROFILES) == ["9.0.0", "11.3.0", "12.8.0"]
    assert profile_named("11.3.0").qemu == Version(10, 0, 0)
    assert profile_for(Version(10, 1, 0)).name == "9.0.0"  # a fork between releases reads 9.0.0's goldens
    assert profile_for(Version(13, 0, 0)).name == "12.8.0"
    with pytest.raises(UnknownProfile, match=re.escape("the profiles are 9.0.0, 11.3.0, 12.8.0")):
        profile_named("10.0.0")
    with pytest.raises(UnknownProfile, match="older than every reference profile"):
        profile_for(Version(8, 0, 0))


def test_the_default_is_the_newest_and_a_choice_stays_in_its_thread() -> None:
    assert current_profile().name == "12.8.0"
    seen: list[str] = []
    with using_profile("9.0.0"):
        worker = threading.Thread(target=lambda: seen.append(current_profile().name))
        worker.start()
        worker.join()
        assert current_profile().name == "9.0.0"
    assert seen == ["12.8.0"] and current_profile().name == "12.8.0"


@pytest.mark.parametrize(
    ("profile", "expected"), [("9.0.0", "pc-q35-7.2"), ("11.3.0", "pc-q35-10.0"), ("12.8.0", "pc-q35-11.1")]
)
def test_machine_aliases_expand_to_the_profiles_qemu(profile: str, expected: str) -> None:
    with using_profile(profile):
        assert canonical("q35") == expected
    assert f"machine=\"{expected}\"" in define(domain("q35", ""), profile=profile)


def test_machines_qemu_dropped_are_refused() -> None:
    old = domain("pc-i440fx-2.0", "")
    assert "pc-i440fx-2.0" in define(old, profile="9.0.0")
    with pytest.raises(LibvirtError, match=re.escape("does not support machine type 'pc-i440fx-2.0'")):
        define(old, profile="11.3.0")


def _error(xml: str, profile: str) -> str | None:
    try:
        define(xml, profile=profile)
    except LibvirtError as exc:
        return exc.message
    return None


def test_a_second_watchdog_is_refused_until_11_3_0() -> None:
    xml = domain("pc", "<watchdog model='i6300esb'/><watchdog model='i6300esb'/>")
    assert _error(xml, "9.0.0") == "internal error: only a single watchdog device is supported"
    assert _error(xml, "11.3.0") is None


def test_a_second_iommu_is_refused_until_12_8_0() -> None:
    xml = domain("q35", "<iommu model='intel'/><iommu model='intel'/>")
    assert _error(xml, "11.3.0") == "XML error: only a single IOMMU device is supported"
    assert _error(xml, "12.8.0") is None


def test_q35_refuses_ib700_from_11_3_0() -> None:
    xml = domain("q35", "<watchdog model='ib700'/>")
    assert _error(xml, "9.0.0") is None
    assert _error(xml, "11.3.0") == (
        "unsupported configuration: ib700 model of watchdog cannot be used with this machine type"
    )
    assert _error(domain("pc", "<watchdog model='ib700'/>"), "12.8.0") is None


def test_the_slot_wording_changes_in_12_8_0() -> None:
    xml = domain("pc", "<controller type='pci' index='1' model='pcie-root-port'/>")
    assert "a PCI slot is needed" in (_error(xml, "11.3.0") or "")
    assert "a PCIe slot is needed" in (_error(xml, "12.8.0") or "")


def test_a_lone_pcie_to_pci_bridge_gets_a_root_port_from_12_8_0() -> None:
    xml = domain("q35", "<controller type='pci' index='1' model='pcie-to-pci-bridge'/>")
    assert "Cannot automatically add a new PCI bus" in (_error(xml, "11.3.0") or "")
    assert "model=\"pcie-root-port\"" in define(xml, profile="12.8.0")


def test_index_gap_controllers_are_addressed_in_index_order_from_11_3_0() -> None:
    xml = domain("pc", "<memballoon model='none'/><controller type='pci' index='3' model='pci-bridge'/>")

    def slot_of_index(profile: str, index: str) -> str:
        stored = define(xml, profile=profile)
        start = stored.index(f'index="{index}" model="pci-bridge"')
        return stored[stored.index("slot=", start) : stored.index("slot=", start) + 11]

    assert slot_of_index("9.0.0", "3") == 'slot="0x02"'
    assert slot_of_index("11.3.0", "1") == 'slot="0x02"'


def test_virtio_serial_hotplug_and_sata_disk_hotplug_from_11_3_0() -> None:
    running = define(domain("q35", ""), profile="9.0.0")
    serial = "<controller type='virtio-serial'/>"
    with pytest.raises(LibvirtError, match="'virtio-serial' controller cannot be hot plugged"):
        attach(running, serial, live=True, profile="9.0.0")
    assert "virtio-serial" in attach(define(domain("q35", ""), profile="11.3.0"), serial, live=True, profile="11.3.0")
    cdrom = "<disk type='file' device='cdrom'><target dev='sdb' bus='sata'/></disk>"
    with pytest.raises(LibvirtError, match="argument key 'filename' must not have null value"):
        attach(running, cdrom, live=True, profile="9.0.0")
    with pytest.raises(LibvirtError, match="disk bus 'sata' cannot be hotplugged"):
        attach(define(domain("q35", ""), profile="11.3.0"), cdrom, live=True, profile="11.3.0")


def test_a_second_watchdog_attach_is_refused_until_11_3_0() -> None:
    one = domain("pc", "<watchdog model='i6300esb'/>")
    with pytest.raises(LibvirtError, match="domain already has a watchdog"):
        attach(define(one, profile="9.0.0"), "<watchdog model='ib700'/>", live=False, profile="9.0.0")
    stored = define(one, profile="11.3.0")
    assert attach(stored, "<watchdog model='ib700'/>", live=False, profile="11.3.0").count("<watchdog") == 2
    with pytest.raises(LibvirtError, match="device is already in the domain configuration"):
        attach(stored, "<watchdog model='i6300esb'/>", live=False, profile="11.3.0")
    with pytest.raises(LibvirtError, match="watchdogs with different actions are not supported"):
        attach(stored, "<watchdog model='ib700' action='poweroff'/>", live=False, profile="11.3.0")
