"""The console parser, on logs written here with known numbers (the real boot is tests/test_bootcost_boot.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_pcie.bootcost import marks
from pytest_pcie.bootcost.parse import LogError, entries, ere_literal, kept_lines_pattern, parse


def stamp(seconds: float, message: str) -> str:
    return f"[{seconds:12.6f}] {message}"


def console(*, tsc: int | None = 2_000_000_000, stable: bool = True, mhz: str = "1000.000") -> str:
    lines = [
        stamp(0, "Linux version 6.1.0-50-amd64"),
        stamp(0, "tsc: Detected 999.000 MHz processor"),
        stamp(0.4, "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00-ff])"),
        stamp(0.401, "pci 0000:00:00.0: [8086:29c0] type 00 class 0x060000"),
        stamp(0.402, "pci 0000:00:01.0: [1b36:000c] type 01 class 0x060400"),
        stamp(0.403, "pci 0000:01:00.0: [1af4:1041] type 00 class 0x020000"),
        stamp(0.45, "initcall acpi_init+0x0/0x4bd returned 0 after 96000 usecs"),
        stamp(0.46, "calling  pcibios_assign_resources+0x0/0xce @ 1"),
        stamp(0.4625, "initcall pcibios_assign_resources+0x0/0xce returned 0 after 617 usecs"),
        stamp(0.5, "probe of 0000:00:01.0:pcie001 returned 0 after 90 usecs"),
        stamp(0.5, "probe of 0000:00:01.0 returned 0 after 1200 usecs"),
        stamp(0.55, "sched_clock: Marking stable (600000000, -10000000)->(420000000, 170000000)"),
        stamp(0.8, marks.INIT),
        stamp(1.2, "probe of 0000:01:00.0 returned 0 after 2500 usecs"),
        stamp(1.25, f"{marks.LOAD_FAILED} xhci_pci"),
        stamp(1.3, marks.DRIVERS_LOADED),
        stamp(1.4, marks.TSC_BEFORE),
        stamp(1.4004, marks.TSC_AFTER),
    ]
    if tsc is not None:
        lines.append(stamp(1.401, f"{marks.TSC}      {tsc}"))
    if not stable:
        lines = [line for line in lines if "Marking stable" not in line]
    lines.insert(5, stamp(1.5, f"tsc: Refined TSC clocksource calibration: {mhz} MHz"))
    return "\n".join(lines) + f"\n{marks.END}\n[    1.5] reboot: Power down\n"


def test_breakdown_of_a_known_log() -> None:
    result = parse(console())
    assert result.kernel_to_init_ms == pytest.approx(800.0)
    assert result.loading_drivers_ms == pytest.approx(500.0)
    # 0.400 -> 0.450 inside acpi_init, plus 0.460 -> 0.4625 for resource assignment
    assert result.pci_enumeration_ms == pytest.approx(52.5)
    # top-level PCI functions only: the port service (pcie001) is inside its port's 1200 us
    assert result.driver_probe_ms == pytest.approx(1.2 + 2.5)
    # TSC 2.0 s at 1000 MHz, read at kernel time 1.4002 s, clock offset 0.17 s: 2.0 - (1.4002 - 0.17)
    assert result.firmware_ms == pytest.approx(769.8)
    assert result.total_ms == pytest.approx(2000.0)
    assert result.failed_modules == ("xhci_pci",)
    assert [(f.address, f.ids, f.bridge, f.probed) for f in result.functions] == [
        ("0000:00:00.0", "8086:29c0", False, False),
        ("0000:00:01.0", "1b36:000c", True, True),
        ("0000:01:00.0", "1af4:1041", False, True),
    ]
    assert [name for name, _ in result.phases()] == [
        "firmware", "kernel to init", "PCI enumeration", "driver probe", "loading drivers", "total",
    ]  # fmt: skip


def test_refined_tsc_frequency_wins_over_the_first_estimate() -> None:
    assert parse(console(mhz="500.000")).total_ms == pytest.approx(4000.0)


def test_without_the_clock_switch_firmware_is_not_separated() -> None:
    result = parse(console(stable=False))
    assert result.firmware_ms is None
    assert result.total_ms == pytest.approx(2000.0)
    assert result.notes and "stable" in result.notes[0]


def test_unreadable_counter_is_a_note_not_a_crash() -> None:
    result = parse(console(tsc=None))
    assert result.firmware_ms is None and result.total_ms is None
    assert "time-stamp counter" in result.notes[0]


def test_boot_that_never_ended_names_the_last_console_line() -> None:
    text = console().split(marks.END)[0].replace(marks.DRIVERS_LOADED, "x") + "Kernel panic - not syncing: VFS\n"
    with pytest.raises(LogError, match=r"did not finish its boot.*Kernel panic - not syncing: VFS"):
        parse(text)


def test_missing_mark_says_the_log_was_cut() -> None:
    text = console().replace(stamp(1.3, marks.DRIVERS_LOADED), "")
    with pytest.raises(LogError, match="lacks the mark 'bootcost: drivers-loaded'"):
        parse(text)


def test_entries_skip_lines_without_a_timestamp_and_carriage_returns() -> None:
    found = entries("[    0.000001] first\r\nnoise\n[   12.500000] second\r\n")
    assert [(entry.time_us, entry.message) for entry in found] == [(1, "first"), (12_500_000, "second")]


def kept(text: str) -> str:
    """What the guest's init copies to the console: the lines the pattern keeps (Python's re reads this ERE alike)."""
    pattern = re.compile(kept_lines_pattern())
    return "".join(line for line in text.splitlines(keepends=True) if pattern.match(line))


def noisy_console() -> str:
    """console() with lines the parser does not read between its own, as a whole initcall_debug log has."""
    noise = [
        stamp(0, "Command line: console=ttyS0 initcall_debug"),
        stamp(0.2, "calling  pci_subsys_init+0x0/0x75 @ 1"),
        stamp(0.2001, "calling  pci_arch_init+0x0/0x80 @ 1"),
        stamp(0.21, "initcall pci_arch_init+0x0/0x80 returned 0 after 5 usecs"),
        stamp(0.23, "initcall pci_subsys_init+0x0/0x75 returned 0 after 30000 usecs"),
        stamp(0.402, "pci 0000:00:01.0: reg 0x10: [mem 0xfea00000-0xfea00fff]"),
        stamp(0.402, "pci 0000:00:01.0: PCI bridge to [bus 01]"),
        stamp(0.47, "calling  pci_apply_final_quirks+0x0/0x129 @ 1"),
        stamp(0.48, "PCI: CLS 0 bytes, default 64"),
        stamp(0.49, "initcall pci_apply_final_quirks+0x0/0x129 returned 0 after 20000 usecs"),
        stamp(0.9, "virtio_net virtio0 enp1s0: renamed from eth0"),
    ]
    lines = console().splitlines(keepends=True)
    times = [entries(line)[0].time_us if entries(line) else 10**9 for line in lines]
    for line in noise:
        at = entries(line)[0].time_us
        index = next(position for position, time_us in enumerate(times) if time_us > at)
        lines.insert(index, line + "\n")
        times.insert(index, at)
    return "".join(lines)


def test_the_kept_lines_give_the_breakdown_of_the_whole_log() -> None:
    whole = noisy_console()
    lines = kept(whole)
    assert "reg 0x10" not in lines and "pci_arch_init" not in lines and "Command line" not in lines
    assert "calling  pci_subsys_init+" in lines and "initcall pci_apply_final_quirks+" in lines
    assert parse(whole).pci_enumeration_ms == pytest.approx(52.5 + 30 + 20)  # the noise added two spans
    assert parse(lines + f"{marks.END}\n") == parse(whole)


def test_a_log_that_lost_its_first_line_is_refused() -> None:
    text = console().replace("Linux version", "Linux versio")
    with pytest.raises(LogError, match=r"lost its first lines.*raise log_buf_len in pytest_pcie/bootcost/boot\.py"):
        parse(text)


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
def test_ere_literal_matches_exactly_its_text(text: str) -> None:
    assert re.fullmatch(ere_literal(text), text)
