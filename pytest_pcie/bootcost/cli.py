"""``pcie-bootcost``: what a PCI topology costs a guest at boot, for a domain XML, a golden, or the corpus.

::

    pcie-bootcost PATH... [--machine M] [--backend B] [--mode icount|kvm] [--runs N] [--json]
                  [--cache-dir DIR] [--kernel-package NAME[=VERSION]] [--keep-console DIR]

A PATH that is a folder stands for every golden under it (``pcie-bootcost golden/`` measures the
corpus); goldens that record a refused define have no topology and are skipped.  Exit status: 0
every topology was measured, 1 at least one could not be booted (QEMU's message is printed once
per topology, and the others are still measured), 2 bad input or no guest to boot.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lxml import etree

from pytest_pcie.backends import DEFAULT_LIBVIRT_URI, BackendSettings, backend_names
from pytest_pcie.bootcost import packages
from pytest_pcie.bootcost.boot import BootError, Mode, qemu_binary
from pytest_pcie.bootcost.packages import GuestUnavailable, PackageSpec
from pytest_pcie.bootcost.parse import LogError
from pytest_pcie.bootcost.run import Options, Prepared, Result, measure, prepare
from pytest_pcie.bootcost.topology import PROGRAM, Topology, TopologyError, load_topology
from pytest_pcie.machines import MACHINE_FAMILIES
from pytest_pcie.normalise import FAILURE_TAG, ROOT_TAG

MODE_NOTE = {
    Mode.ICOUNT: "guest-side work under -icount shift=0,sleep=off (1 instruction = 1 ns; not VM exits)",
    Mode.KVM: "wall clock under KVM",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="Boot a tiny Linux guest with a domain's PCI topology "
                                     "and report where its boot time went.")  # fmt: skip
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="a domain XML, a golden <outcome>, or a folder of goldens (the corpus)",
    )
    parser.add_argument(
        "--machine", choices=sorted(MACHINE_FAMILIES), help="machine family of a domain XML that names none"
    )
    parser.add_argument(
        "--backend",
        choices=backend_names(),
        default="reference",
        help="lays out a domain XML that lacks addresses (default: reference)",
    )
    parser.add_argument("--libvirt-uri", default=DEFAULT_LIBVIRT_URI, help="for --backend libvirt")
    parser.add_argument(
        "--mode",
        choices=[mode.value for mode in Mode],
        default=Mode.ICOUNT.value,
        help="icount: deterministic guest-side cost under TCG (default); kvm: wall clock",
    )
    parser.add_argument("--runs", type=int, help="boots per topology (default 1 for icount, 5 for kvm)")
    parser.add_argument("--json", action="store_true", help="one JSON object per topology instead of text")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"where the packages and the guest are kept (default {packages.default_cache_dir()})",
    )
    parser.add_argument(
        "--kernel-package",
        type=PackageSpec.parse,
        default=None,
        metavar="NAME[=VERSION]",
        help="the Debian linux-image package to boot (default: the one docs/bootcost.md used)",
    )
    parser.add_argument(
        "--keep-console", type=Path, metavar="DIR", help="keep every boot's console in DIR (the log lines read)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one boot may take (default 300)")
    return parser  # fmt: skip


def expand(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """The files to measure (a folder's goldens, sorted) and the lines explaining what was skipped."""
    files: list[Path] = []
    skipped: list[str] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        refused = 0
        for candidate in sorted(path.rglob("*.xml")):
            try:
                root = etree.parse(str(candidate)).getroot()
            except (OSError, etree.XMLSyntaxError):
                files.append(candidate)  # load_topology will say what is wrong with it
                continue
            if root.tag == ROOT_TAG and root.find(FAILURE_TAG) is not None:
                refused += 1
            elif root.tag == ROOT_TAG:
                files.append(candidate)
        if refused:
            skipped.append(f"{path}: skipped {refused} goldens that record a refused define (no topology to boot)")
    return files, skipped


def describe(result: Result) -> dict[str, object]:
    """One topology's result as plain data (the --json output)."""
    phases: dict[str, object] = {}
    for phase in result.phases():
        summary = phase.summary()
        if len(phase.values_ms) == 1 or summary is None:
            phases[phase.name] = phase.values_ms[0]
        else:
            phases[phase.name] = {"min": summary[0], "median": summary[1], "max": summary[2], "runs": list(phase.known)}
    first = result.breakdowns[0]
    return {
        "topology": result.topology.label,
        "machine": result.topology.machine,
        "mode": result.mode.value,
        "runs": len(result.breakdowns),
        "devices": result.layout.devices,
        "pci_functions": len(first.functions),
        "phases_ms": phases,
        "host_wall_s": [round(wall, 2) for wall in result.wall_s],
        "dropped": [f"{dropped.label}: {dropped.reason}" for dropped in result.layout.dropped],
        "failed_modules": list(first.failed_modules) + result.missing_modules,
        "notes": list(first.notes),
    }


def render(result: Result) -> str:
    """The text report of one topology."""
    first = result.breakdowns[0]
    lines = [
        f"{result.topology.label}: {result.topology.machine}, {result.layout.devices} -device, "
        f"{len(first.functions)} PCI functions seen by the guest; {MODE_NOTE[result.mode]}"
    ]
    for phase in result.phases():
        summary = phase.summary()
        if summary is None:
            text = "n/a"
        elif len(phase.values_ms) == 1:
            text = f"{summary[1]:9.1f} ms"
        else:
            text = f"{summary[1]:9.1f} ms median (min {summary[0]:.1f}, max {summary[2]:.1f}, {len(phase.known)} runs)"
        lines.append(f"  {phase.name:<16} {text}")
    walls = ", ".join(f"{wall:.1f}" for wall in result.wall_s)
    lines.append(f"  (host time per boot: {walls} s)")
    for dropped in result.layout.dropped:
        lines.append(f"  not booted: {dropped.label}: {dropped.reason}")
    for module in [*first.failed_modules, *result.missing_modules]:
        lines.append(f"  driver not loaded: {module}")
    lines.extend(f"  note: {note}" for note in first.notes)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = Mode(args.mode)
    runs = args.runs if args.runs is not None else (1 if mode is Mode.ICOUNT else 5)
    if runs < 1:
        print(f"{PROGRAM}: --runs must be at least 1", file=sys.stderr)
        return 2
    files, skipped = expand(args.paths)
    for line in skipped:
        print(line, file=sys.stderr)
    settings = BackendSettings(libvirt_uri=args.libvirt_uri)
    topologies: list[Topology] = []
    try:
        for path in files:
            topologies.append(load_topology(path, args.machine, args.backend, settings))
    except TopologyError as exc:
        print(f"{PROGRAM}: {exc}", file=sys.stderr)
        return 2
    options = Options(
        cache_dir=args.cache_dir or packages.default_cache_dir(),
        mode=mode,
        runs=runs,
        kernel=args.kernel_package or Options.kernel,
        timeout_s=args.timeout,
        console_dir=args.keep_console,
    )
    try:
        qemu_binary()
        prepared: Prepared = prepare(options)
    except (BootError, GuestUnavailable) as exc:
        print(f"{PROGRAM}: {exc}", file=sys.stderr)
        return 2
    status = 0
    for topology in topologies:
        try:
            result = measure(topology, prepared, options)
        except (BootError, LogError) as exc:
            print(f"{PROGRAM}: {topology.label}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps(describe(result), sort_keys=True) if args.json else render(result), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
