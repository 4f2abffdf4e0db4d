"""One bounded differential pass: draw examples from a seed, run both backends, tally, shrink, write.

Examples are drawn by hypothesis in its generate phase only, with a fixed seed and no database, so
a seed replays the same examples whatever happened before.  The body never raises, so hypothesis
never takes over: tallying, shrinking (:mod:`pytest_pcie.fuzz.shrink`) and writing are ours.  Once
the time limit has passed the remaining draws are skipped, not run.  At the end, the /dev/shm files
the pass's guests created are removed (:mod:`pytest_pcie.fuzz.shared_memory`), so a pass leaves
nothing behind on the host.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from pytest_pcie.backends.base import Backend
from pytest_pcie.cases import Operation
from pytest_pcie.fuzz.differ import Comparison, Verdict, compare, mask
from pytest_pcie.fuzz.example import Example
from pytest_pcie.fuzz.shared_memory import GUESTS_GONE_WAIT, SHM_DIR, SharedMemory
from pytest_pcie.fuzz.shrink import DEFAULT_BUDGET, shrink
from pytest_pcie.fuzz.strategies import MACHINES, MIXED, OPERATIONS, Profile, examples
from pytest_pcie.fuzz.writer import write_disagreement

DEFAULT_MAX_WRITTEN = 25


@dataclass
class Tally:
    """Counts for one operation-by-machine cell of the summary table."""

    examples: int = 0
    agreed: int = 0
    disagreed: int = 0
    crashed: int = 0

    def add(self, verdict: Verdict) -> None:
        self.examples += 1
        self.agreed += verdict is Verdict.AGREED
        self.disagreed += verdict is Verdict.DISAGREED
        self.crashed += verdict in (Verdict.REFERENCE_CRASH, Verdict.LIBVIRT_CRASH)

    @property
    def rate(self) -> float | None:
        return self.agreed / self.examples if self.examples else None


@dataclass
class PassResult:
    """Everything a pass found, for the summary table and the exit code."""

    seed: int
    requested: int
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    written: dict[str, Path] = field(default_factory=dict)
    findings: dict[str, Comparison] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    timed_out: bool = False
    seconds: float = 0.0
    shm_removed: list[Path] = field(default_factory=list)
    shm_left: list[Path] = field(default_factory=list)

    @property
    def total(self) -> Tally:
        total = Tally()
        for tally in self.tallies.values():
            total.examples += tally.examples
            total.agreed += tally.agreed
            total.disagreed += tally.disagreed
            total.crashed += tally.crashed
        return total

    @property
    def all_agreed(self) -> bool:
        total = self.total
        return total.examples > 0 and total.agreed == total.examples


@dataclass(frozen=True)
class PassOptions:
    examples: int
    seed: int
    out: Path | None = None
    machines: Sequence[str] = MACHINES
    operations: Sequence[Operation] = OPERATIONS
    time_limit: float | None = None
    shrink_budget: int = DEFAULT_BUDGET
    max_written: int = DEFAULT_MAX_WRITTEN
    profile: Profile = MIXED
    strategy: st.SearchStrategy[Example] | None = None  # default: examples(machines, operations, profile)
    shm_dir: Path | None = SHM_DIR  # where QEMU puts shmem files; None: leave shared memory alone


def run_pass(
    reference: Backend, libvirt: Backend, options: PassOptions, say: Callable[[str], None] = lambda _line: None
) -> PassResult:
    """Run ``options.examples`` random examples on both backends; report through ``say``."""
    result = PassResult(options.seed, options.examples)
    started = time.monotonic()
    every = max(10, options.examples // 20)
    shared = SharedMemory(options.shm_dir)

    def run(example: Example) -> Comparison:
        """Compare ``example`` on both backends, noting the shared-memory files its guests create."""
        absent = shared.before([example.input_xml(), *(step.device.xml() for step in example.steps)])
        try:
            return compare(example, reference, libvirt)
        finally:
            shared.after(absent)

    def one(example: Example) -> None:
        if options.time_limit is not None and time.monotonic() - started > options.time_limit:
            result.timed_out = True
            return
        comparison = run(example)
        result.tallies.setdefault((example.operation.value, example.machine), Tally()).add(comparison.verdict)
        if not comparison.agreed:
            _found(comparison, run, options, result, say)
        done = result.total.examples
        if done % every == 0 or done == options.examples:
            total = result.total
            say(f"[{done:>5}/{options.examples}] agreed {total.agreed}, disagreed {total.disagreed}, "
                f"crashed {total.crashed} ({time.monotonic() - started:.1f} s)")  # fmt: skip

    strategy = options.strategy
    if strategy is None:
        strategy = examples(options.machines, options.operations, options.profile)
    configure = settings(
        max_examples=options.examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    drive: Callable[[], None] = configure(hypothesis_seed(options.seed)(given(strategy)(one)))
    finished = False
    try:
        drive()
        finished = True
    finally:  # when interrupted, remove what is free now rather than wait for the guests
        _remove_shared_memory(shared, GUESTS_GONE_WAIT if finished else 0.0, result, say)
    result.seconds = time.monotonic() - started
    return result


def _remove_shared_memory(shared: SharedMemory, wait: float, result: PassResult, say: Callable[[str], None]) -> None:
    """Remove the pass's /dev/shm files once its guests are gone, and say so (and what had to stay)."""
    result.shm_removed, result.shm_left = shared.remove(wait)
    if result.shm_removed:
        say(f"removed {len(result.shm_removed)} shared-memory file(s) the pass's guests created in {shared.directory}")
    if result.shm_left:
        say(f"left {len(result.shm_left)} shared-memory file(s) still in use or not removable: "
            + " ".join(str(path) for path in result.shm_left))  # fmt: skip


def _found(
    comparison: Comparison,
    run: Callable[[Example], Comparison],
    options: PassOptions,
    result: PassResult,
    say: Callable[[str], None],
) -> None:
    """Shrink and write a disagreement unless one alike was already written (or the cap is reached)."""
    example = comparison.example
    first_line = mask(comparison.lines[0]) if comparison.lines else ""
    first_seen = f"{example.machine} {example.operation.value}: {comparison.kind} | {first_line}"
    result.counts[first_seen] += 1
    if first_seen in result.findings or options.out is None or len(result.written) >= options.max_written:
        result.findings.setdefault(first_seen, comparison)
        return

    def same_way(candidate: Example) -> bool:
        return run(candidate).kind == comparison.kind

    small = shrink(comparison.example, same_way, options.shrink_budget)
    shrunk = run(small)
    result.findings[first_seen] = shrunk
    if shrunk.signature in result.written:
        return
    folder = write_disagreement(shrunk, options.out, options.seed)
    result.written[shrunk.signature] = folder
    say(f"  ! {shrunk.verdict.value} on {small.machine} {small.operation.value}: {shrunk.sentence()}")
    say(f"    shrunk from {len(comparison.example.devices)} devices/{len(comparison.example.steps)} steps "
        f"to {len(small.devices)}/{len(small.steps)}: {folder}")  # fmt: skip


def summary_table(result: PassResult) -> str:
    """Agreement by operation and machine, plus a total row."""
    header = f"{'operation':<16}{'machine':<14}{'examples':>9}{'agreed':>8}{'disagreed':>11}{'crashed':>9}{'rate':>9}"
    rows = [header, "-" * len(header)]
    order = {op.value: number for number, op in enumerate(Operation)}
    for (operation, machine), tally in sorted(result.tallies.items(), key=lambda item: (order[item[0][0]], item[0][1])):
        rows.append(_row(operation, machine, tally))
    rows.append("-" * len(header))
    rows.append(_row("all", "", result.total))
    return "\n".join(rows)


def findings_table(result: PassResult) -> str:
    """Each distinct disagreement with how many examples showed it, most frequent first."""
    lines = []
    for key, count in result.counts.most_common():
        found = result.findings[key]
        lines.append(f"{count:>6}  {found.example.machine} {found.example.operation.value}: {found.sentence(1)}")
    return "\n".join(lines)


def _row(operation: str, machine: str, tally: Tally) -> str:
    rate = f"{100 * tally.rate:.1f}%" if tally.rate is not None else "-"
    return (f"{operation:<16}{machine:<14}{tally.examples:>9}{tally.agreed:>8}{tally.disagreed:>11}"
            f"{tally.crashed:>9}{rate:>9}")  # fmt: skip
