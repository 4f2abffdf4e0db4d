"""The QEMU command line pcie-bootcost builds for a topology (no boot: tests/test_bootcost_boot.py boots)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_pcie.bootcost import boot, cli, qemu
from pytest_pcie.bootcost.topology import load_topology

ROOT = Path(__file__).resolve().parent.parent
SHARE = Path("/nonexistent-share")


def devices(layout: qemu.Layout) -> list[dict[str, object]]:
    arguments = layout.arguments
    return [json.loads(arguments[i + 1]) for i, word in enumerate(arguments) if word == "-device"]


def by_id(layout: qemu.Layout) -> dict[object, dict[str, object]]:
    return {device["id"]: device for device in devices(layout)}


def test_root_ports_and_devices_of_a_q35_golden() -> None:
    topology = load_topology(ROOT / "golden/libguestfs/appliance-untweaked/q35.xml")
    layout = qemu.layout(topology, SHARE)
    found = by_id(layout)
    assert found["pci.1"] == {
        "driver": "pcie-root-port", "id": "pci.1", "chassis": 1, "port": 8, "bus": "pcie.0", "addr": "0x1",
        "multifunction": True,
    }  # fmt: skip
    assert found["pci.6"] == {"driver": "pcie-root-port", "id": "pci.6", "chassis": 6, "port": 13, "bus": "pcie.0",
                              "addr": "0x1.0x5"}  # fmt: skip
    drivers = {device["driver"]: device["bus"] for device in devices(layout)}
    assert drivers["virtio-scsi-pci"] == "pci.1" and drivers["qemu-xhci"] == "pci.2"
    assert drivers["virtio-rng-pci"] == "pci.5"
    assert layout.builtin == ["controller sata 0 at 00:1f.2"]  # q35's own AHCI is not passed again
    assert "ich9-ahci" not in drivers
    assert layout.devices == 11 and not layout.dropped
    assert {"ahci", "virtio_pci", "virtio_scsi", "xhci_pci", "virtio_rng"} <= set(layout.modules)


def test_pc_bridge_gets_its_chassis_number_and_the_nic_a_hub_port() -> None:
    layout = qemu.layout(load_topology(ROOT / "golden/controllers/pc-pci-bridge-no-index/pc.xml"), SHARE)
    found = by_id(layout)
    assert found["pci.1"] == {"driver": "pci-bridge", "id": "pci.1", "chassis_nr": 1, "bus": "pci.0", "addr": "0x2"}
    assert found["interface0"]["netdev"] == "net-interface0"
    assert "hubport,id=net-interface0,hubid=1" in layout.arguments


def test_hostdev_is_dropped_and_reported() -> None:
    layout = qemu.layout(load_topology(ROOT / "golden/scenarios/09-offline-attach-vfio-hostdev/q35.xml"), SHARE)
    assert [dropped.label for dropped in layout.dropped] == ["hostdev pci at 02:00.0"]
    assert "VFIO" in layout.dropped[0].reason


def test_command_line_puts_mode_guest_and_topology_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boot.shutil, "which", lambda name: f"/opt/{name}")
    layout = qemu.Layout(arguments=["-device", '{"driver":"pcie-root-port"}'])
    files = boot.GuestFiles(Path("/c/vmlinux"), Path("/c/initrd.cpio"))
    command = boot.command_line("q35", layout, files, ["virtio", "virtio_pci"], boot.Settings(), tmp_path / "c.log")
    assert command[:7] == [
        "/opt/qemu-system-x86_64",
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-icount",
        "shift=0,sleep=off",
    ]
    assert command[command.index("-kernel") + 1] == "/c/vmlinux"
    assert command[command.index("-initrd") + 1] == "/c/initrd.cpio"
    append = command[command.index("-append") + 1].split()
    assert "bootcost.load=virtio,virtio_pci" in append and "initcall_debug" in append
    assert "log_buf_len=1M" in append and "initcall_blacklist=hpet_late_init" in append
    assert command[-2:] == layout.arguments
    assert command[command.index("-trace") + 1] == f"fw_cfg_select,file={tmp_path / 'c.log.fw_cfg'}"
    kvm = boot.command_line("pc", layout, files, [], boot.Settings(mode=boot.Mode.KVM), tmp_path / "c.log")
    assert kvm[1:7] == ["-machine", "pc", "-accel", "kvm", "-cpu", "host"]
    assert not any(word.startswith("bootcost.load") for word in kvm[kvm.index("-append") + 1].split())


def test_numa_node_of_an_expander_bus_gives_the_guest_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boot.shutil, "which", lambda name: name)
    files = boot.GuestFiles(Path("k"), Path("i"))
    command = boot.command_line("q35", qemu.Layout(numa_nodes=2), files, [], boot.Settings(), tmp_path / "c")
    assert "node,nodeid=1,memdev=ram-node1" in command
    assert "memory-backend-ram,id=ram-node0,size=128M" in command


def test_qemu_message_is_its_last_error_without_the_program_name() -> None:
    stderr = (
        "/usr/bin/qemu-system-x86_64: warning: short-form boolean option deprecated\n"
        '/usr/bin/qemu-system-x86_64: -device {"driver":"virtio-net-pci","bus":"pci.9"}: Bus \'pci.9\' not found\n'
    )
    assert boot.qemu_message(stderr) == '-device {"driver":"virtio-net-pci","bus":"pci.9"}: Bus \'pci.9\' not found'
    assert boot.qemu_message("") == "(no message; exit status only)"
    assert boot.qemu_message("qemu: could not load kernel 'k': No such file or directory\n").startswith("could not")


def test_a_refused_topology_raises_with_qemus_message(tmp_path: Path) -> None:
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho \"$0: -device pcie-root-port: Bus 'pcie.7' not found\" >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(boot.BootError, match=r"^QEMU refused to start: -device pcie-root-port: Bus 'pcie.7' not fo"):
        boot.run([str(fake)], tmp_path / "console.log", boot.Settings())


@pytest.mark.parametrize(
    ("reads", "reason"),
    [
        ("fw_cfg_select 0x1 key 0x0000 'signature', ret: 1\n", "the firmware had not started the kernel after 1 s"),
        ("fw_cfg_select 0x1 key 0x0010 'kernel_entry', ret: 1\n", "the kernel started but the guest did not power"),
    ],
    ids=["in-firmware", "in-kernel"],
)
def test_a_boot_out_of_time_says_whether_the_firmware_let_go(tmp_path: Path, reads: str, reason: str) -> None:
    console = tmp_path / "console.log"
    boot.handover_trace(console).write_text(reads)
    with pytest.raises(boot.BootError) as caught:
        boot.run(["sleep", "30"], console, boot.Settings(timeout_s=1))
    assert str(caught.value).startswith(reason)


@pytest.mark.skipif(shutil.which(boot.QEMU) is None, reason="QEMU is not installed")
def test_every_driver_of_the_table_is_known_to_this_qemu() -> None:
    known = subprocess.run([boot.QEMU, "-device", "help"], capture_output=True, text=True, check=True).stdout
    names = {line.split('"')[1] for line in known.splitlines() if line.startswith("name ")}
    wanted = {row.driver for row in qemu.DEVICES.values()} | {
        row.secondary for row in qemu.DEVICES.values() if row.secondary
    }
    wanted |= {f"virtio-net-pci{suffix}" for suffix in qemu.VARIANTS.values()}
    assert sorted(wanted - names) == []


def _without_guest(command: list[str]) -> list[str]:
    """The command without -kernel, -initrd and -append: QEMU checks the devices without a guest."""
    at = command.index("-kernel")
    return command[:at] + command[at + 6 :]


@pytest.mark.skipif(shutil.which(boot.QEMU) is None, reason="QEMU is not installed")
def test_real_qemu_refusing_a_device_gives_its_message_once(tmp_path: Path) -> None:
    layout = qemu.Layout(arguments=["-device", '{"driver":"virtio-net-pci","id":"n","bus":"pci.9","addr":"0x0"}'])
    files = boot.GuestFiles(tmp_path / "vmlinux", tmp_path / "initrd")
    command = _without_guest(boot.command_line("q35", layout, files, [], boot.Settings(), tmp_path / "console.log"))
    with pytest.raises(boot.BootError) as refused:
        boot.run(command, tmp_path / "console.log", boot.Settings(timeout_s=60))
    message = str(refused.value)
    assert message.startswith("QEMU refused to start: -device ") and message.endswith("Bus 'pci.9' not found")
    assert message.count("pci.9' not found") == 1 and "\n" not in message


# Goldens whose layout real libvirt defines but cannot start: the libvirtd of the golden's version,
# given the case's input, fails `virsh start` with this same QEMU message (checked 2026-12-04; the
# upstream port on 9.0.0, 11.3.0 and 12.8.0 alike: each adds the port that holds it at a higher index
# and then creates the two in index order).  pcie-bootcost must report them as QEMU does.
LIBVIRT_CANNOT_START = {
    "addresses/multifunction-user-off/pc.xml": "PCI: single function device can't be populated in function 5.1",
    "addresses/multifunction-user-off/q35.xml": "PCI: single function device can't be populated in function 5.1",
    "controllers/q35-switch-upstream-port-alone/q35.xml": "Bus 'pci.2' not found",
    "rejections/q35-pcie-to-pci-bridge-without-port/q35@12.8.0.xml": "Bus 'pci.2' not found",
}
# 12.8.0 starts two virtio IOMMUs with its QEMU 11.1; the QEMU pcie-bootcost boots here is Debian 12's 7.2.
QEMU_7_REFUSES = {"fuzz-found/q35-second-iommu/q35@12.8.0.xml": "QEMU does not support multiple vIOMMUs for x86 yet."}


def _start_paused(command: list[str]) -> subprocess.CompletedProcess[str]:
    """QEMU builds every device, then quits over QMP before running a single guest instruction."""
    command = _without_guest(command)
    quit_now = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
    return subprocess.run([*command, "-S", "-qmp", "stdio"], input=quit_now, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.mark.skipif(shutil.which(boot.QEMU) is None, reason="QEMU is not installed")
def test_this_qemu_builds_every_bootable_golden_of_the_corpus(tmp_path: Path) -> None:
    """Every x86 golden's -device list starts in QEMU, in libvirt's order (a codec after its HDA controller)."""
    files, _ = cli.expand([ROOT / "golden"])
    refused: dict[str, str] = {}
    files_for = boot.GuestFiles(tmp_path / "vmlinux", tmp_path / "initrd")
    for path in files:
        topology = load_topology(path)
        layout = qemu.layout(topology, tmp_path)
        command = boot.command_line(topology.machine, layout, files_for, [], boot.Settings(), tmp_path / "c.log")
        process = _start_paused(command)
        if process.returncode != 0:
            refused[path.relative_to(ROOT / "golden").as_posix()] = boot.qemu_message(process.stderr)
    version = subprocess.run([boot.QEMU, "--version"], capture_output=True, text=True, check=True).stdout
    expected = LIBVIRT_CANNOT_START | (QEMU_7_REFUSES if version.startswith("QEMU emulator version 7.") else {})
    assert {name: message.split(": ", 1)[-1] for name, message in refused.items()} == expected
