"""pcie-assign: argument handling, exit statuses and output forms, through a recording fake backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_pcie import cli
from pytest_pcie.backends import BackendSettings, create_backend, register_backend
from pytest_pcie.backends.base import BackendUnavailable
from pytest_pcie.cases import Action, Case, Operation
from pytest_pcie.machines import MACHINE_FAMILIES
from pytest_pcie.outcome import Failure, Outcome

KNOWN = ", ".join(sorted(MACHINE_FAMILIES))  # what the one-line errors offer

DATA = Path(__file__).parent / "data" / "dumpxml"
NO_SLOTS = "internal error: No more available PCI slots"


@dataclass
class RecordingBackend:
    """Returns a captured dumpxml (or a refusal) and remembers what it was asked to run."""

    outcome: Outcome
    name: str = "cli-fake"
    runs: list[tuple[Case, str]] = field(default_factory=list)
    closed: int = 0

    def header(self) -> str:
        return "pcie backend: cli-fake"

    def run(self, case: Case, machine: str) -> Outcome:
        self.runs.append((case, machine))
        return self.outcome

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def backend() -> RecordingBackend:
    fake = RecordingBackend(Outcome((DATA / "q35-defined.xml").read_text()))
    register_backend("cli-fake", lambda settings: fake)
    return fake


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "q35.xml").write_text("<domain><os><type machine='pc-q35-7.2'>hvm</type></os><devices/></domain>")
    (tmp_path / "bare.xml").write_text("<domain><devices/></domain>")
    (tmp_path / "nic.xml").write_text("<interface type='user'><model type='virtio'/></interface>")
    (tmp_path / "disk.xml").write_text("<disk type='file' device='disk'><target dev='vdb' bus='virtio'/></disk>")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_steps_run_in_command_line_order_on_the_input_machine(
    backend: RecordingBackend, files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        capsys, files / "q35.xml", "--backend", "cli-fake",
        "--attach", files / "nic.xml", "--detach", files / "disk.xml", "--attach", files / "disk.xml",
    )  # fmt: skip
    assert (status, err) == (0, "")
    assert out == (DATA / "q35-defined.xml").read_text()
    ((case, machine),) = backend.runs
    assert machine == "q35"
    assert case.operation is Operation.ATTACH_OFFLINE
    assert [step.label for step in case.steps] == ["attach nic.xml", "detach disk.xml", "attach disk.xml"]
    assert [step.action for step in case.steps] == [Action.ATTACH, Action.DETACH, Action.ATTACH]
    assert backend.closed == 1


@pytest.mark.parametrize(("arch", "machine"), [("aarch64", "aarch64-virt"), ("riscv64", "riscv64-virt")])
def test_the_input_arch_picks_the_virt_family(
    backend: RecordingBackend, files: Path, capsys: pytest.CaptureFixture[str], arch: str, machine: str
) -> None:
    (files / "virt.xml").write_text(f"<domain><os><type arch='{arch}' machine='virt'>hvm</type></os></domain>")
    status, _, err = run(capsys, files / "virt.xml", "--backend", "cli-fake")
    assert (status, err) == (0, "")
    assert backend.runs[0][1] == machine


@pytest.mark.parametrize(
    ("options", "operation"),
    [([], Operation.DEFINE), (["--live"], Operation.ATTACH_LIVE), (["--attach", "nic.xml"], Operation.ATTACH_OFFLINE)],
)
def test_operation_follows_the_options(
    backend: RecordingBackend, files: Path, capsys: pytest.CaptureFixture[str], options: list[str], operation: Operation
) -> None:
    options = [str(files / o) if o.endswith(".xml") else o for o in options]
    status, _, _ = run(capsys, files / "bare.xml", "--machine", "pc", "--backend", "cli-fake", *options)
    assert status == 0
    assert backend.runs[0][0].operation is operation
    assert backend.runs[0][1] == "pc"


def test_normalize_and_tree_outputs(backend: RecordingBackend, files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, files / "q35.xml", "--backend", "cli-fake", "--normalize")
    assert status == 0
    assert out.startswith(
        '<outcome machine="q35">\n  <devices>\n    <controller type="pci" index="0" model="pcie-root"/>'
    )
    status, out, _ = run(capsys, files / "q35.xml", "--backend", "cli-fake", "--tree")
    assert status == 0
    assert out.splitlines()[:2] == ["pcie-root (bus 0x00)", "├── 00:01.0 video virtio"]


def test_a_refused_step_exits_1_with_the_message_on_stderr(
    backend: RecordingBackend, files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backend.outcome = Outcome(backend.outcome.domain_xml, Failure(2, "attach nic.xml", NO_SLOTS))
    nic = files / "nic.xml"
    status, out, err = run(
        capsys, files / "q35.xml", "--backend", "cli-fake", "--live", "--attach", nic, "--attach", nic
    )
    assert (status, out) == (1, "")
    assert err == f"pcie-assign: step 2 (attach nic.xml) refused: {NO_SLOTS}\n"
    assert backend.closed == 1


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["missing.xml"], "missing.xml: no such file"),
        (["bare.xml"], "bare.xml: names no machine in <os><type machine=...>; pass --machine (" + KNOWN + ")"),
        (["broken.xml", "--machine", "pc"], "broken.xml: not well-formed XML"),
        (["nic.xml", "--machine", "pc"], "nic.xml: root element is <interface>, expected <domain>"),
        (["virt.xml"], "virt.xml: machine 'virt' is not one pytest-pcie knows; pass --machine (" + KNOWN + ")"),
        (["q35.xml", "--machine", "pc"], "q35.xml: names machine 'q35' but --machine is 'pc'; drop one of them"),
        (["q35.xml", "--attach", "gone.xml"], "gone.xml: no such file"),
        (["q35.xml", "--live", "--detach", "nic.xml"], "--detach cannot be combined with --live"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    backend: RecordingBackend, files: Path, capsys: pytest.CaptureFixture[str], argv: list[str], complaint: str
) -> None:
    (files / "broken.xml").write_text("<domain>")
    (files / "virt.xml").write_text("<domain><os><type machine='virt'>hvm</type></os></domain>")
    argv = [str(files / a) if a.endswith(".xml") else a for a in argv]
    status, out, err = run(capsys, *argv, "--backend", "cli-fake")
    assert (status, out) == (2, "")
    assert err.startswith("pcie-assign: ") and complaint in err and err.count("\n") == 1
    assert backend.runs == []


def test_an_unavailable_backend_exits_3(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def unavailable(settings: BackendSettings) -> RecordingBackend:
        raise BackendUnavailable(f"cannot connect to {settings.libvirt_uri}")

    register_backend("cli-down", unavailable)
    status, _, err = run(capsys, files / "q35.xml", "--backend", "cli-down", "--libvirt-uri", "qemu:///nowhere")
    assert status == 3
    assert err == "pcie-assign: backend 'cli-down' is unavailable: cannot connect to qemu:///nowhere\n"


def test_normalize_and_tree_exclude_each_other(files: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(files / "q35.xml"), "--normalize", "--tree"])
    assert exit_info.value.code == 2


def test_against_real_libvirt(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """End to end through the libvirt backend: a NIC on q35 gets a root port; a second live NIC is refused."""
    try:
        create_backend("libvirt").close()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    bare = files / "bare.xml"
    status, out, _ = run(
        capsys, bare, "--machine", "q35", "--backend", "libvirt", "--attach", files / "nic.xml", "--tree"
    )
    assert status == 0
    assert "pcie-root (bus 0x00)" in out and "interface user virtio" in out
    nic = files / "nic.xml"
    status, out, err = run(
        capsys,
        bare,
        "--machine",
        "q35",
        "--backend",
        "libvirt",
        "--live",
        "--attach",
        nic,
        "--attach",
        nic,
        "--attach",
        nic,
    )
    assert status == 1
    assert "refused: internal error: No more available PCI slots" in err
