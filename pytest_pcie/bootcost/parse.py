"""Reading one boot's console: the kernel log the guest's init dumped, into where the time went.

Two clocks are involved.  The kernel stamps every log line with its own clock, which starts at
zero early in the kernel's boot; the phases inside the guest are read on it.  The time-stamp
counter, read once by init, counts from the machine's reset; it alone can say how long the
firmware ran before the kernel started its clock (see :mod:`pytest_pcie.bootcost.rdtsc`).

Relating the two needs one more number.  Late in boot the kernel switches its clock to the raw
TSC-based clock plus a constant offset, and prints both sides of the switch (``sched_clock:
Marking stable (ktime, gtod offset)->(raw, offset)``).  After it, ``kernel time = raw + offset``
and ``raw = TSC time - TSC time when the raw clock started``.  So the firmware's share, the TSC
time at which the kernel's raw clock started, is ``TSC - (kernel time - offset)`` at the moment
init read the counter.  It includes the kernel's first steps before it starts that clock (memory
map, early ACPI tables), which print time 0 in the log.

What is counted (all from the log, in milliseconds):

- firmware: see above.
- kernel to init: kernel time of init's first mark.
- PCI enumeration: the spans in PCI_SPANS, summed; they are inside "kernel to init".
- driver probe: the sum of the durations ``initcall_debug`` prints for every probe of a PCI
  function (``probe of 0000:01:00.0 returned 0 after 1167 usecs``), built-in drivers during
  "kernel to init" and modules during "loading drivers".
- loading drivers: from init's first mark to the mark after the last insmod.
- total: the TSC at the moment init read it, i.e. machine reset to a ready guest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pytest_pcie.bootcost import marks

LINE = re.compile(r"^\[\s*(\d+)\.(\d{6})\] (.*)$")
TSC_MHZ = (
    re.compile(r"tsc: Refined TSC clocksource calibration: ([\d.]+) MHz"),
    re.compile(r"tsc: Detected ([\d.]+) MHz processor"),
)  # the refined value wins when both are there
STABLE = re.compile(r"sched_clock: Marking stable \((-?\d+), (-?\d+)\)->\((-?\d+), (-?\d+)\)")
PROBE = re.compile(r"^probe of ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) returned (-?\d+) after (\d+) usecs$")
FUNCTION = re.compile(r"^pci ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]): \[([0-9a-f]{4}):([0-9a-f]{4})\] type (\d+)")

# PCI enumeration as spans of the log: (the line it starts at, the line it ends at), each matched
# as the start of the message.  On x86 the root bridges are found and scanned from ACPI, inside
# acpi_init, which then configures the PCI interrupt links; resource assignment and the final
# quirks are initcalls of their own.
PCI_SPANS: tuple[tuple[str, str], ...] = (
    ("ACPI: PCI Root Bridge", "initcall acpi_init+"),
    ("calling  pci_subsys_init+", "initcall pci_subsys_init+"),
    ("calling  pcibios_assign_resources+", "initcall pcibios_assign_resources+"),
    ("calling  pci_apply_final_quirks+", "initcall pci_apply_final_quirks+"),
)


FIRST_LINE = "Linux version "  # the kernel's first log line: if it is there, nothing was lost at the start
ERE_SPECIAL = set(".[]()*+?{}|^$\\")


def ere_literal(text: str) -> str:
    """``text`` as a POSIX extended regular expression that matches it literally."""
    return "".join(f"\\{character}" if character in ERE_SPECIAL else character for character in text)


# The messages the parser reads, as POSIX extended regular expressions (busybox ``grep -E``: no
# ``\d``), matched at the start of the message.  The guest's init copies only the log lines that
# match to the console: the whole log of a boot with initcall_debug is ~130 KB, and pushing it
# through the emulated serial port cost 1-5 s of host time per boot.  Keep this in step with what
# parse() reads; the tests check that parse() gives the same breakdown on a whole log and on the
# lines kept from it.
KEPT_MESSAGES: tuple[str, ...] = (
    ere_literal(FIRST_LINE),
    ere_literal(marks.PREFIX),
    "probe of ",
    r"pci [0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]: \[",
    "tsc: ",
    "sched_clock: Marking stable",
    *(ere_literal(text) for span in PCI_SPANS for text in span),
)


def kept_lines_pattern() -> str:
    """One ERE for a whole ``dmesg`` line whose message is one the parser reads."""
    return rf"^\[ *[0-9]+\.[0-9]+\] ({'|'.join(KEPT_MESSAGES)})"


class LogError(Exception):
    """The console does not hold a complete boot; ``str()`` is the one line to print."""


@dataclass(frozen=True)
class Entry:
    """One kernel log line: its kernel time in microseconds and its message."""

    time_us: int
    message: str


@dataclass(frozen=True)
class Function:
    """A PCI function the kernel found: address, vendor:device, and whether a driver probed it."""

    address: str
    ids: str
    bridge: bool
    probed: bool


@dataclass(frozen=True)
class Breakdown:
    """Where one boot's time went, in milliseconds (see the module docstring for each phase)."""

    firmware_ms: float | None  # None when the log lacks what relates the TSC to the kernel's clock
    kernel_to_init_ms: float
    pci_enumeration_ms: float
    driver_probe_ms: float
    loading_drivers_ms: float
    total_ms: float | None
    functions: tuple[Function, ...] = ()
    failed_modules: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def phases(self) -> list[tuple[str, float | None]]:
        """(name, milliseconds) in report order."""
        return [
            ("firmware", self.firmware_ms),
            ("kernel to init", self.kernel_to_init_ms),
            ("PCI enumeration", self.pci_enumeration_ms),
            ("driver probe", self.driver_probe_ms),
            ("loading drivers", self.loading_drivers_ms),
            ("total", self.total_ms),
        ]


def entries(console: str) -> list[Entry]:
    """The timestamped kernel log lines of ``console``, in order; other lines are left out."""
    found = []
    for line in console.splitlines():
        match = LINE.match(line.rstrip("\r"))
        if match:
            found.append(Entry(int(match.group(1)) * 1_000_000 + int(match.group(2)), match.group(3)))
    return found


def parse(console: str) -> Breakdown:
    """The breakdown of one boot; LogError when the boot did not reach init's last mark."""
    if marks.END not in console:
        tail = [line for line in console.splitlines() if line.strip()][-1:] or ["(nothing)"]
        raise LogError(f"the guest did not finish its boot; the console's last line: {tail[0].strip()}")
    log = entries(console)
    if not any(entry.message.startswith(FIRST_LINE) for entry in log):
        raise LogError(
            "the guest's log lost its first lines: the kernel's log buffer was too small for this topology "
            "(raise log_buf_len in pytest_pcie/bootcost/boot.py)"
        )
    init = _mark(log, marks.INIT)
    loaded = _mark(log, marks.DRIVERS_LOADED)
    probes = [(entry, PROBE.match(entry.message)) for entry in log]
    probe_us = sum(int(match.group(3)) for _, match in probes if match)
    probed = {match.group(1) for _, match in probes if match and match.group(2) == "0"}
    functions = tuple(
        Function(
            match.group(1), f"{match.group(2)}:{match.group(3)}", int(match.group(4)) == 1, match.group(1) in probed
        )
        for match in (FUNCTION.match(entry.message) for entry in log)
        if match
    )
    failed = tuple(
        entry.message.removeprefix(marks.LOAD_FAILED).strip()
        for entry in log
        if entry.message.startswith(marks.LOAD_FAILED)
    )
    firmware, total, notes = _firmware(log)
    return Breakdown(
        firmware_ms=firmware,
        kernel_to_init_ms=init.time_us / 1000,
        pci_enumeration_ms=sum(_span(log, start, end) for start, end in PCI_SPANS) / 1000,
        driver_probe_ms=probe_us / 1000,
        loading_drivers_ms=(loaded.time_us - init.time_us) / 1000,
        total_ms=total,
        functions=functions,
        failed_modules=failed,
        notes=notes,
    )


def _mark(log: list[Entry], text: str) -> Entry:
    for entry in log:
        if entry.message == text:
            return entry
    raise LogError(f"the guest's log lacks the mark {text!r}: the kernel log was cut short (log_buf_len too small?)")


def _span(log: list[Entry], start: str, end: str) -> int:
    """Microseconds from the first line starting ``start`` to the first line after it starting ``end``; 0 if absent."""
    begin = next((index for index, entry in enumerate(log) if entry.message.startswith(start)), None)
    if begin is None:
        return 0
    finish = next((entry for entry in log[begin:] if entry.message.startswith(end)), None)
    return 0 if finish is None else finish.time_us - log[begin].time_us


def _firmware(log: list[Entry]) -> tuple[float | None, float | None, tuple[str, ...]]:
    """(firmware ms, total ms, notes) from the TSC init read and the kernel's clock switch."""
    before, after = _mark(log, marks.TSC_BEFORE), _mark(log, marks.TSC_AFTER)
    reading = next((entry.message for entry in log if entry.message.startswith(marks.TSC + " ")), None)
    if reading is None or not reading.removeprefix(marks.TSC).strip().isdigit():
        return None, None, ("the guest could not read its time-stamp counter",)
    mhz = next(
        (float(m.group(1)) for pattern in TSC_MHZ for m in map(pattern.search, (e.message for e in log)) if m), None
    )
    if mhz is None:
        return None, None, ("the kernel printed no TSC frequency",)
    tsc_us = int(reading.removeprefix(marks.TSC).strip()) / mhz
    read_at_us = (before.time_us + after.time_us) / 2  # the counter was read between the two marks
    stable = next((m for m in map(STABLE.search, (e.message for e in log)) if m), None)
    if stable is None:
        return None, tsc_us / 1000, ("the kernel never marked its clock stable, so firmware is not separated",)
    offset_us = int(stable.group(4)) / 1000
    return (tsc_us - (read_at_us - offset_us)) / 1000, tsc_us / 1000, ()
