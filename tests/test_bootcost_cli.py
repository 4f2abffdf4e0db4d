"""pcie-bootcost's command line: inputs, the corpus, reports and the errors a user can cause (no boot)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pytest_pcie.bootcost import cli, run
from pytest_pcie.bootcost.boot import BootError, Mode
from pytest_pcie.bootcost.packages import GuestUnavailable
from pytest_pcie.bootcost.parse import Breakdown
from pytest_pcie.bootcost.qemu import Layout
from pytest_pcie.bootcost.topology import Topology, load_topology

ROOT = Path(__file__).resolve().parent.parent


def breakdown(kernel: float) -> Breakdown:
    return Breakdown(48.0, kernel, 17.0, 4.5, 700.0, 1400.0 + kernel)


def result(mode: Mode, kernels: list[float]) -> run.Result:
    topology = load_topology(ROOT / "golden/controllers/pc-pci-bridge-no-index/pc.xml")
    return run.Result(topology, Layout(devices=2), mode, [breakdown(k) for k in kernels], [9.0] * len(kernels))


def test_icount_report_lists_each_phase_once() -> None:
    text = cli.render(result(Mode.ICOUNT, [800.0]))
    assert "guest-side work under -icount shift=0,sleep=off" in text
    assert "  kernel to init       800.0 ms" in text
    assert "  total               2200.0 ms" in text


def test_several_runs_give_min_median_max() -> None:
    text = cli.render(result(Mode.KVM, [810.0, 800.0, 900.0]))
    assert "kernel to init       810.0 ms median (min 800.0, max 900.0, 3 runs)" in text
    data = cli.describe(result(Mode.KVM, [810.0, 800.0, 900.0]))
    assert data["phases_ms"]["kernel to init"] == {"min": 800.0, "median": 810.0, "max": 900.0,  # type: ignore[index]
                                                   "runs": [810.0, 800.0, 900.0]}  # fmt: skip


def test_a_folder_means_its_goldens_without_the_refused_ones(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/q35.xml").write_text('<outcome machine="q35"><devices/></outcome>')
    (tmp_path / "a/pc.xml").write_text('<outcome machine="pc"><failure>no</failure></outcome>')
    (tmp_path / "input.xml").write_text("<domain/>")  # not a golden: a folder stands for its goldens only
    files, skipped = cli.expand([tmp_path])
    assert files == [tmp_path / "a/q35.xml"]
    assert skipped == [f"{tmp_path}: skipped 1 goldens that record a refused define (no topology to boot)"]


def test_whole_corpus_expands_to_goldens_that_all_load_and_boot_on_x86() -> None:
    files, skipped = cli.expand([ROOT / "golden"])
    assert len(files) > 300
    topologies = [load_topology(path) for path in files]
    assert {topology.machine for topology in topologies} == {"pc", "q35"}
    assert all(cli.unbootable(topology) is None for topology in topologies)
    assert any("for aarch64-virt" in line and "the guest boots q35 and pc only" in line for line in skipped)


def test_a_folder_skips_goldens_of_machines_the_guest_cannot_boot(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/q35.xml").write_text('<outcome machine="q35"><devices/></outcome>')
    (tmp_path / "a/aarch64-virt.xml").write_text('<outcome machine="aarch64-virt"><devices/></outcome>')
    (tmp_path / "a/riscv64-virt.xml").write_text('<outcome machine="riscv64-virt"><devices/></outcome>')
    files, skipped = cli.expand([tmp_path])
    assert files == [tmp_path / "a/q35.xml"]
    assert skipped == [f"{tmp_path}: skipped 1 for aarch64-virt, 1 for riscv64-virt (the guest boots q35 and pc only)"]


def test_a_named_golden_of_another_architecture_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    golden = ROOT / "golden/controllers/pci-bridge-with-address/aarch64-virt.xml"
    assert cli.main([str(golden)]) == 2
    assert capsys.readouterr().err == (
        f"pcie-bootcost: {golden}: machine 'aarch64-virt' cannot be booted: the guest is an amd64 kernel, "
        "so pcie-bootcost measures q35 and pc only\n"
    )


def test_bad_input_is_one_line_before_any_boot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.xml"
    bad.write_text("<domain>")
    assert cli.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pcie-bootcost: {bad}: not well-formed XML") and err.count("\n") == 1


def test_missing_qemu_is_reported_clearly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cli.main([str(ROOT / "golden/controllers/pc-pci-bridge-no-index/pc.xml")]) == 2
    assert capsys.readouterr().err == (
        "pcie-bootcost: qemu-system-x86_64 not found: install QEMU (apt-get install qemu-system-x86)\n"
    )


def test_missing_kernel_package_stops_before_booting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_guest(options: run.Options) -> run.Prepared:
        raise GuestUnavailable("apt-get download linux-image-x failed (E: no candidate); run apt-get update")

    monkeypatch.setattr(cli, "qemu_binary", lambda: "qemu")
    monkeypatch.setattr(cli, "prepare", no_guest)
    assert cli.main([str(ROOT / "golden/controllers/pc-pci-bridge-no-index/pc.xml")]) == 2
    assert capsys.readouterr().err == (
        "pcie-bootcost: apt-get download linux-image-x failed (E: no candidate); run apt-get update\n"
    )


def test_a_refused_topology_is_named_once_and_the_rest_still_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = ROOT / "golden/controllers/pc-pci-bridge-no-index/pc.xml"
    other = ROOT / "golden/libguestfs/appliance-untweaked/q35.xml"
    calls: list[str] = []

    def fake_measure(topology: Topology, prepared: run.Prepared, options: run.Options) -> run.Result:
        calls.append(topology.label)
        if topology.label == str(golden):
            raise BootError("QEMU refused to start: Bus 'pci.1' not found")
        return result(Mode.ICOUNT, [800.0])

    monkeypatch.setattr(cli, "qemu_binary", lambda: "qemu")
    monkeypatch.setattr(cli, "prepare", lambda options: None)
    monkeypatch.setattr(cli, "measure", fake_measure)
    assert cli.main([str(golden), str(other)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"pcie-bootcost: {golden}: QEMU refused to start: Bus 'pci.1' not found\n"
    assert calls == [str(golden), str(other)]
    assert "kernel to init" in captured.out


def test_runs_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["x.xml", "--runs", "0"]) == 2
    assert "--runs must be at least 1" in capsys.readouterr().err


def test_jobs_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["x.xml", "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_parallel_boots_report_in_input_order_and_a_failure_stops_none(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first topology is the slowest: with --jobs 2 it ends last, yet it is still reported first."""
    golden = ROOT / "golden"
    paths = [
        golden / "libguestfs/appliance-untweaked/q35.xml",
        golden / "controllers/pc-pci-bridge-no-index/pc.xml",
        golden / "libguestfs/appliance-untweaked/pc.xml",
    ]
    finished: list[str] = []
    second_done = threading.Event()
    running = 0
    most_at_once = 0
    lock = threading.Lock()

    def fake_measure(topology: Topology, prepared: run.Prepared, options: run.Options) -> run.Result:
        nonlocal running, most_at_once
        with lock:
            running += 1
            most_at_once = max(most_at_once, running)
        try:
            if topology.label == str(paths[0]):
                assert second_done.wait(10), "the second topology never ran beside the first"
            if topology.label == str(paths[1]):
                second_done.set()
                raise BootError("QEMU refused to start: Bus 'pci.1' not found")
            return result(Mode.ICOUNT, [800.0 + len(finished)])
        finally:
            with lock:
                running -= 1
                finished.append(topology.label)

    monkeypatch.setattr(cli, "qemu_binary", lambda: "qemu")
    monkeypatch.setattr(cli, "prepare", lambda options: None)
    monkeypatch.setattr(cli, "measure", fake_measure)
    assert cli.main([*map(str, paths), "--jobs", "2", "--json"]) == 1
    captured = capsys.readouterr()
    assert finished[0] == str(paths[1]) and set(finished) == set(map(str, paths))
    assert most_at_once == 2
    assert captured.err == f"pcie-bootcost: {paths[1]}: QEMU refused to start: Bus 'pci.1' not found\n"
    assert len(captured.out.splitlines()) == 2
