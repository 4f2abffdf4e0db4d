"""``pcie-bootcost``: what a PCI topology costs a guest at boot, for a domain XML, a golden, or the corpus.

::

    pcie-bootcost PATH... [--machine M] [--backend B] [--mode icount|kvm] [--runs N] [--jobs N]
                  [--json] [--cache-dir DIR] [--kernel-package NAME[=VERSION]] [--keep-console DIR]

A PATH that is a folder stands for every golden under it (``pcie-bootcost golden/`` measures the
corpus); goldens that record a refused define have no topology and are skipped, and so are goldens
for machines the guest cannot boot (only x86 ``pc`` and ``q35``: the guest is an amd64 kernel).  Exit status: 0
every topology was measured, 1 at least one could not be booted (QEMU's message is printed once
per topology, and the others are still measured), 2 bad input or no guest to boot.  ``--jobs N``
boots N topologies at once and still prints the reports in input order: under ``-icount`` the
guest numbers do not depend on the host's load, only the host seconds do.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lxml import etree

from pytest_pcie.backends import DEFAULT_LIBVIRT_URI, BackendSettings, backend_names
from pytest_pcie.bootcost import packages
from pytest_pcie.bootcost.boot import MACHINES, BootError, Mode, qemu_binary
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
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="boot this many topologies at once (default 1; kvm mode: keep 1, parallel boots skew the wall clock)",
    )
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
        foreign: Counter[str] = Counter()
        for candidate in sorted(path.rglob("*.xml")):
            try:
                root = etree.parse(str(candidate)).getroot()
            except (OSError, etree.XMLSyntaxError):
                files.append(candidate)  # load_topology will say what is wrong with it
                continue
            if root.tag != ROOT_TAG:
                continue
            if root.find(FAILURE_TAG) is not None:
                refused += 1
            elif root.get("machine") in MACHINES or root.get("machine") not in MACHINE_FAMILIES:
                files.append(candidate)  # an unknown machine: load_topology names it
            else:
                foreign[str(root.get("machine"))] += 1
        if refused:
            skipped.append(f"{path}: skipped {refused} goldens that record a refused define (no topology to boot)")
        if foreign:
            counts = ", ".join(f"{count} for {machine}" for machine, count in sorted(foreign.items()))
            skipped.append(f"{path}: skipped {counts} (the guest boots {' and '.join(MACHINES)} only)")
    return files, skipped


def unbootable(topology: Topology) -> str | None:
    """Why ``topology`` cannot be booted, or None: the guest kernel is amd64, so x86 machines only."""
    if topology.machine in MACHINES:
        return None
    return (
        f"{topology.label}: machine {topology.machine!r} cannot be booted: the guest is an amd64 kernel, "
        f"so {PROGRAM} measures {' and '.join(MACHINES)} only"
    )


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
    if args.jobs < 1:
        print(f"{PROGRAM}: --jobs must be at least 1", file=sys.stderr)
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
    for topology in topologies:
        why = unbootable(topology)
        if why is not None:
            print(f"{PROGRAM}: {why}", file=sys.stderr)
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
    for topology, outcome in measure_all(topologies, prepared, options, args.jobs):
        if isinstance(outcome, Exception):
            print(f"{PROGRAM}: {topology.label}: {outcome}", file=sys.stderr, flush=True)
            status = 1
            continue
        print(json.dumps(describe(outcome), sort_keys=True) if args.json else render(outcome), flush=True)
    return status


def measure_all(
    topologies: Sequence[Topology], prepared: Prepared, options: Options, jobs: int
) -> Iterator[tuple[Topology, Result | BootError | LogError]]:
    """Each topology with its result or the error that stopped it, in input order, ``jobs`` booting at once.

    Reports come in input order so that a parallel run's output can be compared line by line with a
    serial one; a topology that fails does not stop the others.
    """

    def one(topology: Topology) -> tuple[Topology, Result | BootError | LogError]:
        try:
            return topology, measure(topology, prepared, options)
        except (BootError, LogError) as exc:
            return topology, exc

    if jobs == 1:
        yield from map(one, topologies)
        return
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(one, topology) for topology in topologies]
        for future in futures:
            yield future.result()
    finally:
        # On Ctrl-C no further boot starts; the ones running finish (a terminal's SIGINT stops their QEMU too).
        pool.shutdown(wait=True, cancel_futures=True)


if __name__ == "__main__":
    sys.exit(main())
