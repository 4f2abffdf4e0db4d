"""Smoke test of benchmarks/bench_reference.py: it runs and prints its report.  It is not a timed test.

The script is loaded from its path (benchmarks/ is not a package) and its ``main`` is called in this
process with libvirt left out, so the test takes milliseconds.  No timing value is checked: only that
the table, its rows and the fit line are there.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_reference.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there while the script loads
    spec.loader.exec_module(module)
    return module


def run(bench: ModuleType, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert bench.main(["--no-libvirt", "--repeat", "1", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_quick_run_prints_the_table_and_the_fit_line(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    lines = run(bench, capsys, "--sizes", "10")
    assert bench.HEADER in lines
    assert "reference ms" in bench.HEADER and "virsh ms" in bench.HEADER
    rows = [line for line in lines if re.match(r"\s*10\s+virtio\s", line)]
    assert len(rows) == 1
    assert rows[0].split()[-6:] == ["-"] * 6  # libvirt columns skipped under --no-libvirt
    assert any(line.startswith("linear fit over virtio rows:") for line in lines)


def test_two_virtio_sizes_give_a_fitted_line(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    lines = run(bench, capsys, "--sizes", "10,100")
    fit = [line for line in lines if line.startswith("linear fit over virtio rows:")]
    assert len(fit) == 1
    assert "a = " in fit[0] and "b = " in fit[0] and "largest relative residual" in fit[0]


def test_least_squares_fit_recovers_an_exact_line(bench: ModuleType) -> None:
    a, b = bench.linear_fit([(10.0, 3.0), (100.0, 21.0), (200.0, 41.0)])
    assert a == pytest.approx(1.0)
    assert b == pytest.approx(0.2)


def test_sizes_outside_the_table_are_refused(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--no-libvirt", "--sizes", "7"])
    assert "choose from" in capsys.readouterr().err


PROFILES_SCRIPT = SCRIPT.parent / "bench_profiles.py"


def test_profile_benchmark_prints_one_row_per_profile(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_profiles", PROFILES_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--repeat", "1", "--devices", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert module.HEADER in lines
    rows = [line.split() for line in lines if re.match(r"\s*\d+\.\d+\.\d+\s", line)]
    assert [row[0] for row in rows] == ["9.0.0", "11.3.0", "12.8.0"]
    assert all(row[-1] in ("ok", "OVER") and row[-2].endswith("x") for row in rows)
