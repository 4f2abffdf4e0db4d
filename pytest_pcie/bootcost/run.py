"""Measuring a topology: prepare the guest once, boot it ``runs`` times, and summarise the breakdowns.

Under ``icount`` one run is enough: the guest clock counts instructions, so a second run gives the
same numbers (docs/bootcost.md shows two sweeps agreeing).  Under ``kvm`` the numbers are wall
clock and vary, so several runs are made and each phase is given as min/median/max.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pytest_pcie.bootcost import boot, guest, initramfs, parse, qemu, rdtsc
from pytest_pcie.bootcost.boot import Mode
from pytest_pcie.bootcost.packages import PackageSpec
from pytest_pcie.bootcost.topology import Topology


@dataclass(frozen=True)
class Options:
    cache_dir: Path
    mode: Mode = Mode.ICOUNT
    runs: int = 1
    kernel: PackageSpec = guest.DEFAULT_KERNEL
    busybox: PackageSpec = guest.DEFAULT_BUSYBOX
    timeout_s: float = 300.0
    console_dir: Path | None = None  # keep each boot's console here (NAME-RUN.log): the log lines the parser read


@dataclass(frozen=True)
class Prepared:
    """The guest every topology boots: the same kernel and the same initramfs bytes."""

    guest: guest.Guest
    initrd: Path


@dataclass(frozen=True)
class Phase:
    name: str
    values_ms: tuple[float | None, ...]

    @property
    def known(self) -> list[float]:
        return [value for value in self.values_ms if value is not None]

    def summary(self) -> tuple[float, float, float] | None:
        """(min, median, max) over the runs that measured this phase, or None if none did."""
        known = self.known
        return (min(known), statistics.median(known), max(known)) if known else None


@dataclass
class Result:
    """Every run of one topology."""

    topology: Topology
    layout: qemu.Layout
    mode: Mode
    breakdowns: list[parse.Breakdown] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    missing_modules: list[str] = field(default_factory=list)

    def phases(self) -> list[Phase]:
        names = [name for name, _ in self.breakdowns[0].phases()]
        columns = [[value for _, value in breakdown.phases()] for breakdown in self.breakdowns]
        return [Phase(name, tuple(column[index] for column in columns)) for index, name in enumerate(names)]


def prepare(options: Options) -> Prepared:
    """Fetch and unpack the packages (cached) and write the initramfs (cached by its content)."""
    prepared = guest.prepare_guest(options.cache_dir, qemu.all_modules(), options.kernel, options.busybox)
    modules = {name: path.read_bytes() for name, path in prepared.modules.items()}
    data = initramfs.build_initramfs(prepared.busybox.read_bytes(), rdtsc.rdtsc_program(), modules)
    initrd = options.cache_dir / "initramfs" / f"{hashlib.sha256(data).hexdigest()[:16]}.cpio"
    if not initrd.is_file():
        initrd.parent.mkdir(parents=True, exist_ok=True)
        partial = initrd.with_suffix(".partial")
        partial.write_bytes(data)
        partial.rename(initrd)
    return Prepared(prepared, initrd)


def measure(topology: Topology, prepared: Prepared, options: Options, extra: tuple[str, ...] = ()) -> Result:
    """Boot ``topology`` ``options.runs`` times; BootError/LogError on the first run that fails."""
    settings = boot.Settings(options.mode, options.timeout_s, extra)
    with tempfile.TemporaryDirectory(prefix="pcie-bootcost-") as scratch_name:
        scratch = Path(scratch_name)
        layout = qemu.layout(topology, scratch / "share")
        (scratch / "share").mkdir()
        result = Result(topology, layout, options.mode, missing_modules=prepared.guest.missing(layout.modules))
        load = prepared.guest.load_order(layout.modules)
        files = boot.GuestFiles(prepared.guest.vmlinux, prepared.initrd)
        for number in range(options.runs):
            console = scratch / f"console-{number}.log"
            command = boot.command_line(topology.machine, layout, files, load, settings, console)
            outcome = boot.run(command, console, settings)
            if options.console_dir is not None:
                options.console_dir.mkdir(parents=True, exist_ok=True)
                name = Path(topology.label).with_suffix("").as_posix().replace("/", "_")
                (options.console_dir / f"{name}-{number + 1}.log").write_text(outcome.text, encoding="utf-8")
            result.breakdowns.append(parse.parse(outcome.text))
            result.wall_s.append(outcome.wall_s)
    return result
