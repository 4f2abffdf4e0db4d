"""Choosing a reference profile: ``pcie-assign --profile/--profiles`` and ``--pcie-profile``.

The plugin tests copy one corpus case whose outcome changed between releases (a lone
pcie-to-pci-bridge: refused until 11.3.0, given a root port from 12.8.0) with its goldens, which
the real daemons wrote, so each profile is judged against its own version's golden.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_plugin import QUIET

from pytest_pcie import cli

ROOT = Path(__file__).resolve().parents[1]
CASE = "rejections/q35-pcie-to-pci-bridge-without-port"
LONE_BRIDGE = (
    "<domain><os><type machine='q35'>hvm</type></os><devices>"
    "<controller type='usb' model='none'/><memballoon model='none'/>"
    "<controller type='pci' index='1' model='pcie-to-pci-bridge'/></devices></domain>"
)


@pytest.fixture
def lone_bridge(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.xml"
    path.write_text(LONE_BRIDGE)
    return path


def test_profiles_lists_every_release_and_its_changes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--profiles"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("9.0.0: libvirt 9.0.0 + QEMU 7.2")
    assert "12.8.0: libvirt 12.8.0 + QEMU 11.1 (Debian sid) (default)" in out
    assert "  versions.pcie-to-pci-bridge-gets-a-port: " in out


def test_profile_picks_the_release_modelled(lone_bridge: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([str(lone_bridge), "--profile", "11.3.0"]) == cli.EXIT_REFUSED
    assert "Cannot automatically add a new PCI bus" in capsys.readouterr().err
    assert cli.main([str(lone_bridge)]) == cli.EXIT_OK  # the newest by default
    assert 'model="pcie-root-port"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--profile", "10.0.0"], "no reference profile '10.0.0'; the profiles are 9.0.0, 11.3.0, 12.8.0"),
        (["--profile", "9.0.0", "--backend", "libvirt"], "--profile chooses what the reference models"),
    ],
)
def test_bad_profile_choices_are_one_line(
    lone_bridge: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert cli.main([str(lone_bridge), *arguments]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def corpus(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copytree(ROOT / "cases" / CASE, pytester.path / "cases" / CASE)
    shutil.copytree(ROOT / "golden" / CASE, pytester.path / "golden" / CASE)
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\npcie_cases = "cases"\n')
    return pytester


def test_all_profiles_run_every_case_each_against_its_golden(corpus: pytest.Pytester) -> None:
    result = corpus.runpytest(*QUIET, "--pcie-profile=all", "-v")
    result.assert_outcomes(passed=3)
    for version in ("9.0.0", "11.3.0", "12.8.0"):
        result.stdout.fnmatch_lines([f"*{CASE}[[]q35@{version}[]] PASSED*"])
    result.stdout.fnmatch_lines(["*reference (pure-Python model of libvirt 11.3.0 + QEMU 10.0*"])


def test_a_profile_is_judged_by_its_own_golden(corpus: pytest.Pytester) -> None:
    (corpus.path / "golden" / CASE / "q35@12.8.0.xml").unlink()  # 12.8.0 now inherits 9.0.0's refusal
    result = corpus.runpytest(*QUIET, "--pcie-profile=12.8.0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Cannot automatically add a new PCI bus*"])
    corpus.runpytest(*QUIET, "--pcie-profile=11.3.0").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--pcie-profile=10.0.0"], "*--pcie-profile: no reference profile '10.0.0'; the profiles are*"),
        (["--pcie-profile=9.0.0", "--pcie-backend=libvirt"], "*--pcie-profile chooses what the reference backend*"),
    ],
)
def test_bad_pcie_profile_is_a_usage_error(corpus: pytest.Pytester, arguments: list[str], message: str) -> None:
    result = corpus.runpytest(*QUIET, *arguments)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
