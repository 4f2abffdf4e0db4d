"""Version-keyed goldens, several libvirt URIs in one run, and the upgrade check, through pytester.

The fake backend here reads its libvirt version from its URI (``fake://11.3.0``) and answers with
``fake-output@<version>.xml`` when the case folder has one, else ``fake-output.xml``; ``redefine``
(the upgrade check's step) answers with ``fake-upgrade@<version>.xml`` or the XML it was given.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_plugin import QUIET, domain

CONFTEST = """
from pathlib import Path

from pytest_pcie.backends import register_backend
from pytest_pcie.outcome import Failure, Outcome
from pytest_pcie.versions import Version

HERE = Path(__file__).parent
VERSIONED = {"pc": "pc-i440fx-7.2", "q35": "pc-q35-7.2"}


class VersionedBackend:
    name = "versioned"
    in_flight = None  # the case folder the origin last ran: the targets' redefine answers from it

    def __init__(self, uri):
        self.uri = uri
        self.version = Version.parse(uri.removeprefix("fake://").split("?")[0])

    def header(self):
        return f"pcie backend: versioned libvirt {self.version} at {self.uri}"

    def run(self, case, machine):
        VersionedBackend.in_flight = case.folder
        failure = None
        failure_file = case.folder / f"fake-failure@{self.version}.txt"
        if failure_file.exists():
            step, label, message = failure_file.read_text().strip().split("|")
            failure = Failure(int(step), label, message)
            if step == "0":
                return Outcome(None, failure)
        output = case.folder / f"fake-output@{self.version}.xml"
        output = output if output.exists() else case.folder / "fake-output.xml"
        return Outcome(output.read_text().replace("MACHINE", VERSIONED[machine]), failure)

    def redefine(self, xml):
        with open(HERE / "redefined.log", "a") as log:
            log.write(f"{self.version}\\n")
        upgraded = VersionedBackend.in_flight / f"fake-upgrade@{self.version}.xml"
        return Outcome(upgraded.read_text() if upgraded.exists() else xml)

    def close(self):
        pass


register_backend("versioned", lambda settings: VersionedBackend(settings.libvirt_uri))

"""


class VersionedProject:
    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.root = pytester.path
        pytester.makeconftest(CONFTEST)
        pytester.makepyprojecttoml('[tool.pytest.ini_options]\npcie_cases = "cases"\n')

    def case(self, case_id: str, toml_extra: str = "", **outputs: str) -> Path:
        """A q35 define case; ``outputs`` maps ``v11_3_0`` to that version's answer (default: domain())."""
        folder = self.root / "cases" / case_id
        folder.mkdir(parents=True)
        (folder / "case.toml").write_text(
            f'description = "{case_id}"\nmachines = ["q35"]\noperation = "define"\n{toml_extra}'
        )
        (folder / "input.xml").write_text("<domain><devices/></domain>\n")
        (folder / "fake-output.xml").write_text(domain())
        for key, text in outputs.items():
            (folder / f"fake-output@{key.removeprefix('v').replace('_', '.')}.xml").write_text(text)
        return folder

    def run(self, *uris: str, backend: str = "versioned", extra: tuple[str, ...] = ()) -> pytest.RunResult:
        options = [f"--pcie-libvirt-uri=fake://{uri}" for uri in uris]
        return self.pytester.runpytest(*QUIET, f"--pcie-backend={backend}", *options, *extra)

    def goldens(self) -> list[str]:
        root = self.root / "golden"
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def project(pytester: pytest.Pytester) -> VersionedProject:
    return VersionedProject(pytester)


def test_several_uris_parametrise_every_case_by_version(project: VersionedProject) -> None:
    project.case("q35/a")
    result = project.run("9.0.0", "11.3.0", "11.3.0?again", "11.3.0", extra=("--collect-only", "-q"))
    result.stdout.fnmatch_lines(
        [
            "*::q35/a[[]q35@9.0.0[]]",
            "*::q35/a[[]q35@11.3.0[]]",
            "*::q35/a[[]q35@11.3.0#2[]]",
            "3 tests collected*",
        ]
    )


def test_header_names_every_target(project: VersionedProject) -> None:
    project.case("q35/a")
    result = project.run("9.0.0", "12.8.0", extra=("--collect-only",))
    result.stdout.fnmatch_lines(
        [
            "pcie backend: versioned libvirt 9.0.0 at fake://9.0.0",
            "pcie backend: versioned libvirt 12.8.0 at fake://12.8.0",
        ]
    )


def test_update_writes_an_override_only_where_a_version_differs(project: VersionedProject) -> None:
    project.case("q35/same")
    project.case("q35/moved", v11_3_0=domain(nic_bus=2), v12_8_0=domain(nic_bus=2))
    project.case("q35/back", v11_3_0=domain(nic_bus=2))
    result = project.run("9.0.0", "11.3.0", "12.8.0", extra=("--pcie-update-goldens",))
    result.assert_outcomes(passed=9)
    # 12.8.0 inherits 11.3.0's override where it agrees with it, and says so itself where it goes back.
    assert project.goldens() == [
        "q35/back/q35.xml",
        "q35/back/q35@11.3.0.xml",
        "q35/back/q35@12.8.0.xml",
        "q35/moved/q35.xml",
        "q35/moved/q35@11.3.0.xml",
        "q35/same/q35.xml",
    ]
    # The run now passes everywhere without updating.
    project.run("9.0.0", "11.3.0", "12.8.0").assert_outcomes(passed=9)


def test_each_version_is_compared_with_the_newest_golden_not_newer_than_it(project: VersionedProject) -> None:
    folder = project.case("q35/a")
    project.run("9.0.0", extra=("--pcie-update-goldens",)).assert_outcomes(passed=1)
    # A later version gives another answer: without its override it fails against 9.0.0's golden.
    (folder / "fake-output@11.3.0.xml").write_text(domain(nic_bus=2))
    failed = project.run("11.3.0")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(["q35/a on q35 with libvirt 11.3.0 differs from golden/q35/a/q35.xml:"])
    project.run("11.3.0", extra=("--pcie-update-goldens",)).assert_outcomes(passed=1)
    # 9.0.0 still reads its own golden, untouched; 10.0.0 inherits it; 11.3.0 and 12.8.0 the override.
    assert project.goldens() == ["q35/a/q35.xml", "q35/a/q35@11.3.0.xml"]
    (folder / "fake-output@10.0.0.xml").write_text(domain())
    (folder / "fake-output@12.8.0.xml").write_text(domain(nic_bus=2))
    project.run("9.0.0", "10.0.0", "11.3.0", "12.8.0").assert_outcomes(passed=4)


def test_an_override_that_no_longer_differs_is_removed_by_its_own_version(project: VersionedProject) -> None:
    folder = project.case("q35/a", v11_3_0=domain(nic_bus=2))
    project.run("9.0.0", "11.3.0", extra=("--pcie-update-goldens",)).assert_outcomes(passed=2)
    (folder / "fake-output@11.3.0.xml").unlink()
    result = project.run("11.3.0", extra=("--pcie-update-goldens",))
    result.stdout.fnmatch_lines(
        ["goldens: 0 created, 0 changed, 0 unchanged, 1 removed", "  removed: golden/q35/a/q35@11.3.0.xml"]
    )
    assert project.goldens() == ["q35/a/q35.xml"]


def test_a_version_older_than_every_golden_is_one_clear_error(project: VersionedProject) -> None:
    project.case("q35/a")
    result = project.run("8.0.0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*libvirt 8.0.0 at fake://8.0.0 is older than every golden (the corpus starts at 9.0.0)"]
    )


def test_a_case_with_goldens_only_from_a_later_version_is_reported_missing(project: VersionedProject) -> None:
    project.case("q35/a")
    project.run("11.3.0", extra=("--pcie-update-goldens",))
    assert project.goldens() == ["q35/a/q35@11.3.0.xml"]
    result = project.run("9.0.0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["no golden for libvirt 9.0.0: golden/q35/a/q35.xml (or one of an older version)*"])


def test_a_misspelled_override_is_an_error_not_ignored(project: VersionedProject) -> None:
    project.case("q35/a")
    project.run("9.0.0", extra=("--pcie-update-goldens",))
    (project.root / "golden" / "q35" / "a" / "q35@11.3.xml").write_text("<outcome/>")
    result = project.run("9.0.0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*q35@11.3.xml: '11.3' is not a version*"])


def test_orphans_are_judged_per_case_and_machine_whatever_the_version(project: VersionedProject) -> None:
    project.case("q35/a", v11_3_0=domain(nic_bus=2))
    project.run("9.0.0", "11.3.0", extra=("--pcie-update-goldens",))
    result = project.run("9.0.0")
    assert "no case produces" not in result.stdout.str()
    (project.root / "cases" / "q35" / "a" / "case.toml").write_text(
        'description = "a"\nmachines = ["pc"]\noperation = "define"\n'
    )
    project.run("9.0.0").stdout.fnmatch_lines(
        ["*no case produces: golden/q35/a/q35.xml", "*no case produces: golden/q35/a/q35@11.3.0.xml"]
    )


def test_expect_error_is_versioned_like_goldens(project: VersionedProject) -> None:
    table = 'expect-error = { "9.0.0" = "old words", "11.3.0" = "new words" }\n'
    folder = project.case("q35/a", toml_extra=table)
    (folder / "fake-failure@9.0.0.txt").write_text("0|define|error: old words here")
    (folder / "fake-failure@12.8.0.txt").write_text("0|define|error: old words here")
    project.run("9.0.0", "12.8.0", extra=("--pcie-update-goldens",))
    result = project.run("9.0.0", "12.8.0")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*expect-error = 'new words' for libvirt 12.8.0, but it failed with: error: old words here"]
    )


def test_expect_error_table_with_a_bad_version_is_a_collection_error(project: VersionedProject) -> None:
    project.case("q35/a", toml_extra='expect-error = { "11.3" = "x" }\n')
    result = project.run("9.0.0")
    result.stdout.fnmatch_lines(["*case.toml: 'expect-error' key '11.3' is not a version*"])


# --- the upgrade check ---------------------------------------------------------------------------


def test_upgrade_passes_when_every_address_stays(project: VersionedProject) -> None:
    project.case("q35/a")
    result = project.run("11.3.0", "12.8.0", backend="versioned", extra=("--pcie-upgrade=fake://9.0.0", "-v"))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*q35/a[[]q35 upgrade 9.0.0>11.3.0>12.8.0[]] PASSED*"])
    assert (project.root / "redefined.log").read_text().split() == ["11.3.0", "12.8.0"]


def test_upgrade_fails_naming_the_hop_and_the_device_that_moved(project: VersionedProject) -> None:
    folder = project.case("q35/a")
    (folder / "fake-upgrade@12.8.0.xml").write_text(domain(nic_bus=2))
    result = project.run("11.3.0", "12.8.0", backend="versioned", extra=("--pcie-upgrade=fake://9.0.0",))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "q35/a on q35 does not survive the upgrade:",
            "11.3.0 -> 12.8.0: interface #1: moved (bus 0x01 expected, got 0x02)",
        ]
    )


def test_upgrade_reports_added_devices_without_failing(project: VersionedProject) -> None:
    folder = project.case("q35/a")
    before = domain(extra_port=False)
    (folder / "fake-output.xml").write_text(before)
    (folder / "fake-upgrade@11.3.0.xml").write_text(domain())
    result = project.run("11.3.0", backend="versioned", extra=("--pcie-upgrade=fake://9.0.0",))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*pcie upgrade: devices a newer libvirt added*",
            "*9.0.0 -> 11.3.0: controller pci index=2 (pcie-root-port): added (0000:00:02.1)",
        ]
    )


def test_upgrade_skips_a_case_whose_define_fails_saying_why(project: VersionedProject) -> None:
    folder = project.case("q35/a")
    (folder / "fake-failure@9.0.0.txt").write_text("0|define|error: refused")
    result = project.run("11.3.0", backend="versioned", extra=("--pcie-upgrade=fake://9.0.0", "-rs"))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*libvirt 9.0.0 refuses the define, so it stores nothing to upgrade"])


def test_upgrade_needs_a_backend_that_can_redefine(project: VersionedProject) -> None:
    project.case("q35/a")
    result = project.run("11.3.0", backend="reference", extra=("--pcie-upgrade=fake://9.0.0",))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--pcie-upgrade needs a backend that defines a stored XML unchanged: use --pcie-backend=libvirt"]
    )


def test_a_known_upgrade_failure_is_a_strict_xfail_of_the_upgrade_check_only(project: VersionedProject) -> None:
    folder = project.case("q35/a")
    (folder / "fake-upgrade@11.3.0.xml").write_text(domain(nic_bus=2))
    (project.root / "known.toml").write_text(
        '[[divergence]]\ncase = "q35/a"\nmachine = "q35"\nbackend = "upgrade"\nreason = "moves on 11.3.0"\n'
    )
    project.pytester.makepyprojecttoml(
        '[tool.pytest.ini_options]\npcie_cases = "cases"\npcie_known_divergences = "known.toml"\n'
    )
    upgrade = project.run("11.3.0", backend="versioned", extra=("--pcie-upgrade=fake://9.0.0",))
    upgrade.assert_outcomes(xfailed=1)
    # The golden run of the same case is not affected by the upgrade entry.
    project.run("9.0.0", backend="versioned", extra=("--pcie-update-goldens",)).assert_outcomes(passed=1)
    # Once the upgrade keeps the address, the strict xfail fails until the entry goes.
    (folder / "fake-upgrade@11.3.0.xml").unlink()
    project.run("11.3.0", backend="versioned", extra=("--pcie-upgrade=fake://9.0.0",)).assert_outcomes(failed=1)


def test_an_update_leaves_each_difference_said_once_whatever_order_versions_run_in(
    project: VersionedProject,
) -> None:
    project.case("q35/a", v11_3_0=domain(nic_bus=2), v12_8_0=domain(nic_bus=2))
    # Newest first: 12.8.0 writes its override before 11.3.0's exists, then it is redundant.
    result = project.run("9.0.0", "12.8.0", "11.3.0", extra=("--pcie-update-goldens",))
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["goldens: 2 created, 0 changed, 0 unchanged, 1 removed"])
    assert project.goldens() == ["q35/a/q35.xml", "q35/a/q35@11.3.0.xml"]
