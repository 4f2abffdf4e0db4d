"""``pcie-fuzz``: differential testing of the reference model against real libvirt from the shell.

Prints the seed first so any run can be replayed, progress while it runs, and a table of agreement
by operation and machine at the end.  Exit status: 0 all agreed, 1 disagreements found (written to
``--out``), 2 bad usage or a backend that cannot run (one line saying why).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_pcie.backends.base import Backend, BackendUnavailable, backend_version
from pytest_pcie.backends.reference import ReferenceBackend
from pytest_pcie.cases import CaseError, Operation
from pytest_pcie.fuzz.recheck import recheck
from pytest_pcie.fuzz.runner import DEFAULT_MAX_WRITTEN, PassOptions, findings_table, run_pass, summary_table
from pytest_pcie.fuzz.shrink import DEFAULT_BUDGET
from pytest_pcie.fuzz.strategies import MIXED, PROFILES
from pytest_pcie.machines import MACHINE_FAMILIES
from pytest_pcie.reference.profiles import UnknownProfile

EXIT_AGREED, EXIT_DISAGREED, EXIT_USAGE = 0, 1, 2
DEFAULT_URI = "qemu:///system"

# Where the two backends come from; tests swap in fakes here rather than patching imports.
BackendFactory = Callable[[str], Backend]


def _libvirt_backend(uri: str) -> Backend:
    from pytest_pcie.backends.libvirt import LibvirtBackend  # needs libvirt-python, only when used

    return LibvirtBackend(uri)


def _reference_backend(libvirt: Backend) -> Backend:
    """The reference profile of the daemon's release (or the newest release before it)."""
    try:
        return ReferenceBackend.matching(backend_version(libvirt))
    except UnknownProfile as exc:
        raise BackendUnavailable(str(exc)) from None


# Builds the reference to compare with, given the libvirt backend it is compared with.
ReferenceFactory = Callable[[Backend], Backend]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pcie-fuzz",
        description="Run random PCI topologies on the reference model and on real libvirt; "
        "write each disagreement, shrunk, as a case folder.",
    )
    p.add_argument("--examples", type=_positive, default=100, help="how many random examples (default 100)")
    p.add_argument("--seed", type=int, default=None, help="replay a run: the seed a previous run printed")
    p.add_argument("--out", type=Path, help="folder to write disagreeing case folders into (required to fuzz)")
    p.add_argument("--recheck", type=Path, metavar="DIR",
                   help="instead of fuzzing, re-run the case folders under DIR; say which still disagree")  # fmt: skip
    p.add_argument("--machine", choices=sorted(MACHINE_FAMILIES), action="append",
                   help="only this machine family (repeatable; default all)")  # fmt: skip
    p.add_argument("--operation", choices=[op.value for op in Operation], action="append",
                   help="only this operation (repeatable; default all)")  # fmt: skip
    p.add_argument("--profile", choices=sorted(PROFILES), default=MIXED.name,
                   help="mixed: some inputs invalid on purpose (default); valid: none invalid on purpose")  # fmt: skip
    p.add_argument("--libvirt-uri", default=DEFAULT_URI, help=f"libvirt URI (default {DEFAULT_URI})")
    p.add_argument("--time-limit", type=_positive_float, default=None, metavar="SECONDS",
                   help="stop drawing new examples after this many seconds")  # fmt: skip
    p.add_argument("--shrink-budget", type=_positive, default=DEFAULT_BUDGET,
                   help=f"at most this many re-runs to shrink one disagreement (default {DEFAULT_BUDGET})")  # fmt: skip
    p.add_argument("--max-written", type=_positive, default=DEFAULT_MAX_WRITTEN,
                   help=f"write at most this many case folders (default {DEFAULT_MAX_WRITTEN})")  # fmt: skip
    return p


def main(
    argv: Sequence[str] | None = None,
    reference_factory: ReferenceFactory = _reference_backend,
    libvirt_factory: BackendFactory = _libvirt_backend,
) -> int:
    """Entry point of ``pcie-fuzz``; returns the exit status."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage line
        return EXIT_USAGE if exc.code else EXIT_AGREED
    if args.recheck is None and args.out is None:
        print("pcie-fuzz: error: name a folder for what is found with --out DIR (or use --recheck DIR)")
        return EXIT_USAGE
    if args.recheck is not None:
        return _recheck(args.recheck, args.libvirt_uri, reference_factory, libvirt_factory)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"pcie-fuzz seed {seed} (replay with --seed {seed})", flush=True)
    if args.out.exists() and not args.out.is_dir():  # checked after the seed line: the seed always comes first
        print(f"pcie-fuzz: error: --out {args.out} is a file; name a folder to write case folders into")
        return EXIT_USAGE
    try:
        reference, libvirt = _open_backends(args.libvirt_uri, reference_factory, libvirt_factory)
    except BackendUnavailable as exc:
        print(f"pcie-fuzz: error: {exc}")
        return EXIT_USAGE
    print(f"{reference.header()}\n{libvirt.header()}", flush=True)
    options = PassOptions(
        examples=args.examples,
        seed=seed,
        out=args.out,
        machines=tuple(args.machine or MACHINE_FAMILIES),
        operations=tuple(Operation(op) for op in args.operation) if args.operation else tuple(Operation),
        time_limit=args.time_limit,
        profile=PROFILES[args.profile],
        shrink_budget=args.shrink_budget,
        max_written=args.max_written,
    )
    try:
        result = run_pass(reference, libvirt, options, say=lambda line: print(line, flush=True))
    finally:
        libvirt.close()
        reference.close()
    print()
    print(summary_table(result))
    ran = result.total.examples
    stop = f" (time limit reached after {ran} of {args.examples})" if result.timed_out else ""
    print(f"\nseed {seed}: {ran} examples in {result.seconds:.1f} s{stop}")
    if result.all_agreed:
        return EXIT_AGREED
    if result.written:
        print(f"{len(result.written)} case folder(s) written to {args.out}:")
        print("\n".join(f"  {folder}" for folder in result.written.values()))
    print(f"{len(result.findings)} distinct disagreement(s) or crash(es) seen, by number of examples:")
    print(findings_table(result))
    return EXIT_DISAGREED if ran else EXIT_AGREED


def _open_backends(
    uri: str, reference_factory: ReferenceFactory, libvirt_factory: BackendFactory
) -> tuple[Backend, Backend]:
    """The daemon at ``uri``, then the reference matching its release; BackendUnavailable (with
    the daemon closed again) when either cannot be had."""
    libvirt = libvirt_factory(uri)
    try:
        return reference_factory(libvirt), libvirt
    except BackendUnavailable:
        libvirt.close()
        raise


def _recheck(root: Path, uri: str, reference_factory: ReferenceFactory, libvirt_factory: BackendFactory) -> int:
    if not root.is_dir():
        print(f"pcie-fuzz: error: --recheck {root} is not a folder; name the --out folder of an earlier run")
        return EXIT_USAGE
    try:
        reference, libvirt = _open_backends(uri, reference_factory, libvirt_factory)
    except BackendUnavailable as exc:
        print(f"pcie-fuzz: error: {exc}")
        return EXIT_USAGE
    agreed = disagreed = 0
    try:
        for found in recheck(root, reference, libvirt):
            print(found.line(), flush=True)
            agreed += found.judgement.agreed
            disagreed += not found.judgement.agreed
    except CaseError as exc:
        print(f"pcie-fuzz: error: {exc}")
        return EXIT_USAGE
    finally:
        libvirt.close()
        reference.close()
    print(f"{agreed} agree, {disagreed} still disagree")
    return EXIT_DISAGREED if disagreed else EXIT_AGREED


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
