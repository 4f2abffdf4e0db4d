"""Booting the guest once: the QEMU command line around a layout, and running it to power-off.

Two modes.  ``icount`` (the default) runs TCG with ``-icount shift=0,sleep=off``: the guest's
clock advances one nanosecond per guest instruction, and jumps straight to the next timer when the
guest idles, so a boot takes the same guest time on every run however loaded the host is;
what it measures is the guest's own work (and its waits), not the cost of VM exits or of the
host.  ``kvm`` runs on hardware virtualisation with the wall clock, where numbers vary and repeated
runs are summarised instead (see :mod:`pytest_pcie.bootcost.run`).

The kernel command line is the same for every topology.  Its last entries shorten every boot
without touching PCI; each one was measured (docs/bootcost.md, "Host time").  Under -icount the
host pays most for guest loops that poll a clock or a device register, or that fill memory: a loop
that the guest finishes in a few milliseconds can cost the host seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pytest_pcie.bootcost import marks
from pytest_pcie.bootcost.qemu import Layout

QEMU = "qemu-system-x86_64"
PROGRAM_PREFIX = re.compile(rf"^(\S*{QEMU}|qemu): ")  # argv[0] (often a full path), or just "qemu"
MEMORY_MIB = 256
KERNEL_ARGUMENTS = (
    "console=ttyS0",  # the log is copied there at the end; only emergencies go there before
    "loglevel=1",
    "printk.time=1",
    "initcall_debug",  # a duration for every initcall and every driver probe
    # initcall_debug writes ~2000 lines (~130 KB, about 1 KB more per PCI function); parse() refuses
    # a log that lost its first line.  The buffer's bookkeeping is zeroed at boot: 4.7 MB for 1M
    # against 37 MB for 8M, which cost about 1 s of host time.
    "log_buf_len=1M",
    "panic=-1",  # a panic reboots at once, and -no-reboot turns that into QEMU exiting
    "cryptomgr.notests",  # no crypto self-tests
    "nolapic_timer",  # no local APIC timer calibration, a busy loop on the TSC
    "no_timer_check",  # no check that the IO-APIC timer ticks, another busy loop on the TSC
    # No /dev/hpet: its calibration loops on HPET register reads and writes, each one a trap.  The
    # HPET stays the clock source and the timer; those are set up before, from time_init.
    "initcall_blacklist=hpet_late_init",
    "rodata=off",  # kernel memory is not made read-only: no page-table splitting, no W+X walk
    "rdinit=/init",
)
# The guest's clock chip starts at a fixed date and follows the guest clock, not the host's: the
# kernel reads it while booting, and a date taken from the host makes two boots differ.
RTC = "base=2020-01-01T00:00:00,clock=vm"
MACHINES = {"q35": "q35", "pc": "pc"}  # family -> the alias libvirt passes as well


class Mode(Enum):
    ICOUNT = "icount"
    KVM = "kvm"


ACCELERATORS: dict[Mode, tuple[str, ...]] = {
    Mode.ICOUNT: ("-accel", "tcg", "-icount", "shift=0,sleep=off"),
    Mode.KVM: ("-accel", "kvm", "-cpu", "host"),
}


class BootError(Exception):
    """The guest did not boot to its end; ``str()`` is the one line to print."""


@dataclass(frozen=True)
class Settings:
    mode: Mode = Mode.ICOUNT
    timeout_s: float = 300.0
    extra: tuple[str, ...] = ()  # more QEMU arguments (a sweep's -global, say)


@dataclass(frozen=True)
class GuestFiles:
    kernel: Path
    initrd: Path


@dataclass(frozen=True)
class Console:
    """What one boot printed on the serial port, and how long the host took to run it."""

    text: str
    wall_s: float
    command: tuple[str, ...]


def qemu_binary() -> str:
    """The QEMU binary, or a BootError saying how to get one."""
    found = shutil.which(QEMU)
    if found is None:
        raise BootError(f"{QEMU} not found: install QEMU (apt-get install qemu-system-x86)")
    return found


def command_line(
    machine: str, topology: Layout, files: GuestFiles, load: list[str], settings: Settings, console: Path
) -> list[str]:
    """The whole QEMU command: machine, accelerator, memory, guest, console, then the topology."""
    append = " ".join((*KERNEL_ARGUMENTS, f"{marks.LOAD_PARAMETER}={','.join(load)}" if load else ""))
    command = [
        qemu_binary(), "-machine", MACHINES[machine], *ACCELERATORS[settings.mode],
        *_memory(topology.numa_nodes),
        "-smp", "1", "-rtc", RTC, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", f"file,id=console,path={console}", "-serial", "chardev:console",
        "-kernel", str(files.kernel), "-initrd", str(files.initrd), "-append", append.strip(),
        "-trace", f"fw_cfg_select,file={handover_trace(console)}",
        *settings.extra, *topology.arguments,
    ]  # fmt: skip
    return command


def handover_trace(console: Path) -> Path:
    """Where QEMU logs the firmware's fw_cfg reads, beside the console.

    The last read before the kernel runs is ``kernel_entry`` (the PVH loader asking where to jump),
    so the log tells a firmware that never let go of the machine from a kernel that never powered
    off.  It is written by QEMU on the host: the guest executes the same instructions with or
    without it.
    """
    return console.with_name(console.name + ".fw_cfg")


def _memory(nodes: int) -> list[str]:
    """-m, split evenly over NUMA nodes when an expander bus names one (the CPU sits on node 0)."""
    if nodes == 0:
        return ["-m", str(MEMORY_MIB)]
    arguments = ["-m", str(MEMORY_MIB)]
    for node in range(nodes):
        size = MEMORY_MIB // nodes
        arguments += ["-object", f"memory-backend-ram,id=ram-node{node},size={size}M"]
        cpus = ",cpus=0" if node == 0 else ""
        arguments += ["-numa", f"node,nodeid={node},memdev=ram-node{node}{cpus}"]
    return arguments


def run(command: list[str], console: Path, settings: Settings) -> Console:
    """Run QEMU to its exit; BootError with QEMU's own message if it refused to start."""
    if settings.mode is Mode.KVM and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise BootError("--mode kvm needs /dev/kvm (hardware virtualisation); use --mode icount")
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, timeout=settings.timeout_s
            )
        except subprocess.TimeoutExpired:
            raise BootError(_timed_out(console, settings.timeout_s)) from None
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    wall = time.monotonic() - started
    text = console.read_text(encoding="utf-8", errors="replace") if console.is_file() else ""
    if process.returncode != 0 and marks.END not in text:
        raise BootError(f"QEMU refused to start: {qemu_message(stderr)}")
    return Console(text, wall, tuple(command))


def _timed_out(console: Path, timeout_s: float) -> str:
    """Why a boot ran out of time, as far as the host can tell: still in the firmware, or in the kernel."""
    trace = handover_trace(console)
    reads = trace.read_text(encoding="utf-8", errors="replace") if trace.is_file() else ""
    if "'kernel_entry'" in reads:
        return f"the kernel started but the guest did not power off within {timeout_s:.0f} s (raise --timeout)"
    return (
        f"the firmware had not started the kernel after {timeout_s:.0f} s: SeaBIOS may loop forever on this "
        "topology (see docs/bootcost.md, Caveats); a longer --timeout helps only if it is merely slow"
    )


def qemu_message(stderr: str) -> str:
    """QEMU's error, once: the last line that is not a warning, without the program-name prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "warning:" not in line] or lines or ["(no message; exit status only)"]
    return PROGRAM_PREFIX.sub("", errors[-1], count=1)
