"""How fast the libvirt backend runs cases on this host, and how it scales with parallel workers.

Usage::

    python benchmarks/bench_libvirt.py [--uri qemu:///system] [--repeat 15] [--workers 1,2,4] [--batch 24]

Part 1 runs each operation ``--repeat`` times through one :class:`LibvirtBackend` and prints the
median and spread of a whole ``run()`` (what one test costs): a define round trip, an offline
attach of one NIC, and a live attach including starting the guest.  Part 2 splits a batch of mixed
cases (one third live) over N worker processes, each with its own backend as pytest-xdist would
do, and prints wall time and cases per second.  Everything runs through the backend, so the
safety marker, the sweeps and the background destroys are all part of the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pytest_pcie.backends.libvirt import LibvirtBackend
from pytest_pcie.cases import Case, load_case

NIC = "<interface type='user'><model type='virtio'/></interface>"

# name: (operation, input.xml, steps) — the three shapes of case the corpus is made of.
OPERATIONS: dict[str, tuple[str, str, list[str]]] = {
    "define (round trip)": ("define", f"<domain><devices>{NIC}</devices></domain>", []),
    "attach-offline, 1 NIC": ("attach-offline", "<domain/>", ["nic.xml"]),
    "attach-live, 1 NIC (incl. start)": ("attach-live", "<domain/>", ["nic.xml"]),
}


def write_case(root: Path, name: str, operation: str, input_xml: str, steps: list[str]) -> Case:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    toml = f'description = "benchmark"\nmachines = ["q35"]\noperation = "{operation}"\n'
    if steps:
        toml += "steps = [" + ", ".join(f'{{ attach = "{step}" }}' for step in steps) + "]\n"
    (folder / "case.toml").write_text(toml, encoding="utf-8")
    (folder / "input.xml").write_text(input_xml, encoding="utf-8")
    (folder / "nic.xml").write_text(NIC, encoding="utf-8")
    return load_case(folder, root)


def all_cases(root: Path) -> dict[str, Case]:
    return {label: write_case(root, f"op{number}", *spec) for number, (label, spec) in enumerate(OPERATIONS.items())}


def time_operations(uri: str, repeat: int) -> tuple[dict[str, list[float]], float, float]:
    """Seconds per run() for each operation, plus the backend's start-up and close times."""
    with tempfile.TemporaryDirectory() as tmp:
        cases = all_cases(Path(tmp))
        started = time.perf_counter()
        backend = LibvirtBackend(uri)
        startup = time.perf_counter() - started
        timings: dict[str, list[float]] = {label: [] for label in cases}
        try:
            for _ in range(repeat):
                for label, case in cases.items():
                    started = time.perf_counter()
                    outcome = backend.run(case, "q35")
                    timings[label].append(time.perf_counter() - started)
                    if outcome.failure is not None:
                        raise SystemExit(f"benchmark case {label!r} failed: {outcome.failure.message}")
        finally:
            started = time.perf_counter()
            backend.close()
            closing = time.perf_counter() - started
    return timings, startup, closing


def worker(uri: str, labels: list[str]) -> int:
    """One worker process: its own backend, running its share of the batch."""
    with tempfile.TemporaryDirectory() as tmp:
        cases = all_cases(Path(tmp))
        backend = LibvirtBackend(uri)
        try:
            for label in labels:
                backend.run(cases[label], "q35")
        finally:
            backend.close()
    return len(labels)


def time_parallel(uri: str, workers: int, batch: int) -> float:
    """Wall seconds for ``batch`` mixed cases split over ``workers`` processes (start-up included)."""
    labels = [list(OPERATIONS)[number % len(OPERATIONS)] for number in range(batch)]
    shares = [labels[index::workers] for index in range(workers)]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        done = sum(pool.map(worker, [uri] * workers, shares))
    assert done == batch
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--uri", default="qemu:///system")
    parser.add_argument("--repeat", type=int, default=15, help="runs per operation in part 1")
    parser.add_argument("--workers", default="1,2,4", help="worker counts for part 2, comma separated")
    parser.add_argument("--batch", type=int, default=24, help="cases per worker count in part 2")
    args = parser.parse_args(argv)

    backend = LibvirtBackend(args.uri)
    print(backend.header())
    backend.close()

    timings, startup, closing = time_operations(args.uri, args.repeat)
    print(f"\none backend, {args.repeat} runs each (seconds per run())")
    print(f"{'operation':<36}{'median':>8}{'min':>8}{'max':>8}")
    for label, values in timings.items():
        print(f"{label:<36}{statistics.median(values):>8.3f}{min(values):>8.3f}{max(values):>8.3f}")
    print(f"{'backend start-up (connect + sweep)':<36}{startup:>8.3f}")
    print(f"{'close (drain destroys + sweep)':<36}{closing:>8.3f}")

    print(f"\n{args.batch} mixed cases (1/3 live) split over N worker processes")
    print(f"{'workers':<10}{'wall s':>8}{'cases/s':>9}{'speed-up':>10}")
    base = None
    for workers in (int(text) for text in args.workers.split(",")):
        wall = time_parallel(args.uri, workers, args.batch)
        base = base or wall
        print(f"{workers:<10}{wall:>8.2f}{args.batch / wall:>9.2f}{base / wall:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
