"""Declared deviations: the file, the predictions, and the plugin option driven through pytester.

The plugin tests run the reference backend and a "forked" one: the reference under
``spare_root_ports = 0``, standing in for a libvirt patched to add no spare root port (the real
one is built by scripts/build-patched-libvirt, docs/forks.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pcie.cases import load_case
from pytest_pcie.deviations import PARAMETERS, DeviationError, affected, explain, load_deviations, predict
from pytest_pcie.reference.policy import UPSTREAM, Policy

QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")

CONFTEST = """
from pytest_pcie.backends import register_backend
from pytest_pcie.backends.reference import ReferenceBackend
from pytest_pcie.reference.policy import Policy, using_policy


class Forked(ReferenceBackend):
    name = "forked"

    def header(self):
        return "pcie backend: forked (the reference with no spare root port)"

    def run(self, case, machine):
        with using_policy(Policy(spare_root_ports=0)):
            return super().run(case, machine)


register_backend("forked", lambda settings: Forked("9.0.0"))  # a fork of 9.0.0
"""

NIC = "<interface type='user'><model type='virtio'/></interface>"
RULES = """
[rules."policy.spare-port"]
title = "q35: exactly one spare root port"
text = "On q35 libvirt adds one extra empty pcie-root-port."
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_case(root: Path, case_id: str, machines: str = '"q35"', rules: str = "") -> Path:
    folder = root / "cases" / case_id
    write(folder / "case.toml", f'description = "{case_id}"\nmachines = [{machines}]\noperation = "define"\n{rules}')
    write(folder / "input.xml", f"<domain><devices>{NIC}</devices></domain>\n")
    return folder


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """Two cases: one the declared deviation changes (q35 NIC), one it cannot (pc NIC); goldens
    made by the plain reference in this throwaway project, rules.toml beside the cases."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\npcie_cases = "cases"\n')
    make_case(pytester.path, "spare/q35-nic", rules='rules = ["policy.spare-port"]\n')
    make_case(pytester.path, "spare/pc-nic", machines='"pc"')
    write(pytester.path / "rules.toml", RULES)
    write(pytester.path / "pcie-deviations.toml", "# ours: no spare hotplug port\nspare_root_ports = 0\n")
    result = pytester.runpytest(*QUIET, "--pcie-update-goldens", "--pcie-profile=9.0.0")  # the base goldens
    result.assert_outcomes(passed=2)
    return pytester


# -- the file -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spare_root_port = 0\n", "unknown deviation 'spare_root_port'; the parameters are: spare_root_ports,"),
        ('spare_root_ports = "0"\n', 'spare_root_ports = "0" has the wrong type; it takes an integer from 0 to 8'),
        ("spare_root_ports = true\n", "spare_root_ports = true has the wrong type"),
        ("pack_root_ports = 0\n", "pack_root_ports = 0 has the wrong type; it takes true or false"),
        ("default_usb_q35 = 3\n", 'it takes one of the strings "piix3-uhci"'),
        ('default_usb_q35 = "usb9"\n', "default_usb_q35 must be one of"),
        ("spare_root_ports = 9\n", "spare_root_ports must be an integer from 0 to 8, not 9; fix the value"),
        ("spare_root_ports =\n", "not valid TOML"),
    ],
)
def test_bad_deviation_files_are_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "pcie-deviations.toml", text)
    with pytest.raises(DeviationError) as caught:
        load_deviations(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DeviationError, match="deviations file not found; create it or fix --pcie-deviations"):
        load_deviations(tmp_path / "nope.toml")


def test_every_parameter_is_read_with_its_type(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.toml",
        'spare_root_ports = 3\npack_root_ports = false\npc_free_slots = 0\n'
        'default_usb_pc = "qemu-xhci"\ndefault_usb_q35 = "ich9-ehci1"\n',
    )
    deviations = load_deviations(path)
    assert deviations.policy == Policy(3, False, 0, "qemu-xhci", "ich9-ehci1")
    assert deviations.summary() == (
        'spare_root_ports = 3, pack_root_ports = false, pc_free_slots = 0, default_usb_pc = "qemu-xhci", '
        'default_usb_q35 = "ich9-ehci1"'
    )
    assert set(PARAMETERS) == set(deviations.policy.deviations())


def test_an_empty_file_declares_nothing(tmp_path: Path) -> None:
    deviations = load_deviations(write(tmp_path / "d.toml", "# nothing changed\n"))
    assert deviations.policy == UPSTREAM and deviations.summary() == "none"


# -- predictions ----------------------------------------------------------------------------------


def test_a_case_deviates_only_where_the_policy_changes_its_outcome(tmp_path: Path) -> None:
    q35 = load_case(make_case(tmp_path, "q35-nic"), tmp_path / "cases")
    pc = load_case(make_case(tmp_path, "pc-nic", machines='"pc"'), tmp_path / "cases")
    deviations = load_deviations(write(tmp_path / "d.toml", "spare_root_ports = 0\n"))
    assert deviations.expected(pc, "pc") is None
    fork = deviations.expected(q35, "q35")
    assert fork is not None
    ports = "devices/controller[@model='pcie-root-port']"
    assert len(fork.findall(ports)) == len(predict(q35, "q35", UPSTREAM).findall(ports)) - 1 == 3
    assert deviations.causes(q35, "q35") == ["spare_root_ports = 0"]
    assert affected([q35, pc], deviations.policy) == [("q35-nic", "q35")]


def test_explain_names_the_parameter_and_its_rule(tmp_path: Path) -> None:
    case = load_case(make_case(tmp_path, "q35-nic"), tmp_path / "cases")
    actual = predict(case, "q35", Policy(spare_root_ports=2))
    explanations = explain(case, "q35", actual)
    assert [(e.name, e.value) for e in explanations] == [("spare_root_ports", 2)]
    lines = explanations[0].lines({"policy.spare-port": "q35: exactly one spare root port"})
    assert lines[0] == (
        'this is what the reference predicts with spare_root_ports = 2 instead of 1: the libvirt under test breaks '
        'rule policy.spare-port ("q35: exactly one spare root port")'
    )
    assert explain(case, "q35", predict(case, "q35", UPSTREAM)) == []


# -- the plugin -----------------------------------------------------------------------------------


def test_the_forked_daemon_fails_naming_the_rule_in_its_words(project: pytest.Pytester) -> None:
    result = project.runpytest(*QUIET, "--pcie-backend=forked")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "spare/q35-nic on q35 with libvirt 9.0.0 differs from golden/spare/q35-nic/q35.xml:",
            "this is what the reference predicts with spare_root_ports = 0 instead of 1: the libvirt under test "
            'breaks rule policy.spare-port ("q35: exactly one spare root port")',
            "if it does so on purpose, declare `spare_root_ports = 0` in a deviations file *",
            'rules this case pins: policy.spare-port ("q35: exactly one spare root port")',
            "  controller pci index=4 (pcie-root-port): missing",
        ]
    )


def test_with_the_declared_deviation_the_forked_daemon_passes(project: pytest.Pytester) -> None:
    result = project.runpytest(*QUIET, "--pcie-backend=forked", "--pcie-deviations=pcie-deviations.toml")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "pcie declared deviations: spare_root_ports = 0 (*pcie-deviations.toml)",
            "*pcie declared deviations*",
            "pcie-deviations.toml: spare_root_ports = 0: 1 item(s) judged against the fork's expectation, "
            "every other one against the shipped goldens",
            "  spare/q35-nic[[]q35[]]: the reference's prediction with spare_root_ports = 0",
        ]
    )


def test_undeclared_rules_are_still_checked_against_the_shipped_goldens(project: pytest.Pytester) -> None:
    golden = project.path / "golden" / "spare" / "pc-nic" / "pc.xml"
    golden.write_text(golden.read_text().replace("slot=\"0x03\"", "slot=\"0x04\""))
    result = project.runpytest(*QUIET, "--pcie-backend=forked", "--pcie-deviations=pcie-deviations.toml")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["spare/pc-nic on pc with libvirt 9.0.0 differs from golden/spare/pc-nic/pc.xml:"])


def test_the_reference_models_the_fork_under_the_deviations(project: pytest.Pytester) -> None:
    project.runpytest(*QUIET, "--pcie-deviations=pcie-deviations.toml").assert_outcomes(passed=2)


def test_the_ini_key_names_the_file_relative_to_the_rootdir(project: pytest.Pytester) -> None:
    project.makepyprojecttoml(
        '[tool.pytest.ini_options]\npcie_cases = "cases"\npcie_deviations = "pcie-deviations.toml"\n'
    )
    project.runpytest(*QUIET, "--pcie-backend=forked").assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("spare_root_port = 0\n", "*pcie-deviations.toml: unknown deviation 'spare_root_port'; the parameters are: *"),
        ("spare_root_ports = 'none'\n", "*pcie-deviations.toml: spare_root_ports = \"none\" has the wrong type; *"),
        (None, "*missing.toml: deviations file not found; create it or fix --pcie-deviations or the ini key *"),
    ],
)
def test_bad_input_stops_the_run_with_one_line_before_any_case(
    project: pytest.Pytester, text: str | None, line: str
) -> None:
    name = "missing.toml" if text is None else "pcie-deviations.toml"
    if text is not None:
        write(project.path / name, text)
    for extra in ((), ("-n", "2")):
        result = project.runpytest(*QUIET, "--pcie-backend=forked", f"--pcie-deviations={name}", *extra)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: {line}"])
        assert "passed" not in result.stdout.str() and "failed" not in result.stdout.str()


def test_deviation_goldens_are_written_for_deviating_cases_only_and_then_judged_against(
    project: pytest.Pytester,
) -> None:
    shipped = sorted(p.as_posix() for p in (project.path / "golden").rglob("*.xml"))
    before = {path: Path(path).read_text() for path in shipped}
    args = ("--pcie-deviations=pcie-deviations.toml", "--pcie-deviation-goldens=fork-golden")
    project.runpytest(*QUIET, *args, "--pcie-update-goldens", "--pcie-profile=9.0.0").assert_outcomes(passed=2)
    written = sorted(p.relative_to(project.path).as_posix() for p in (project.path / "fork-golden").rglob("*"))
    assert written == ["fork-golden/spare", "fork-golden/spare/q35-nic", "fork-golden/spare/q35-nic/q35.xml"]
    assert {path: Path(path).read_text() for path in shipped} == before  # ours untouched
    result = project.runpytest(*QUIET, "--pcie-backend=forked", *args)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["  spare/q35-nic[[]q35[]]: fork-golden/spare/q35-nic/q35.xml (the fork's golden; deviates by *)"]
    )
    fork_golden = project.path / "fork-golden" / "spare" / "q35-nic" / "q35.xml"
    fork_golden.write_text(fork_golden.read_text().replace('model="qemu-xhci"', 'model="nec-xhci"'))
    result = project.runpytest(*QUIET, "--pcie-backend=forked", *args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["spare/q35-nic on q35 with libvirt 9.0.0 differs from fork-golden/spare/q35-nic/*"])


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("--pcie-deviation-goldens=fork",), "*--pcie-deviation-goldens (pcie_deviation_goldens) needs the *"),
        (
            ("--pcie-deviations=pcie-deviations.toml", "--pcie-deviation-goldens=golden"),
            "*golden: the deviation goldens must be a folder of the fork's own, not the shipped goldens; *",
        ),
    ],
)
def test_deviation_goldens_need_their_file_and_a_folder_of_their_own(
    project: pytest.Pytester, args: tuple[str, ...], line: str
) -> None:
    result = project.runpytest(*QUIET, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {line}"])


def test_the_forks_page_documents_every_parameter() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "forks.md").read_text()
    for name, parameter in PARAMETERS.items():
        assert f"### `{name}`" in page
        assert f"| {parameter.type_name} | `" in page


def test_a_daemon_that_does_not_follow_the_declaration_is_told_so(tmp_path: Path) -> None:
    case = load_case(make_case(tmp_path, "q35-nic"), tmp_path / "cases")
    declared = Policy(spare_root_ports=0)
    explanations = explain(case, "q35", predict(case, "q35", UPSTREAM), declared)
    assert [(e.name, e.value) for e in explanations] == [("spare_root_ports", 1)]
    assert explanations[0].lines({}, declared) == [
        "this is what the reference predicts with spare_root_ports = 1 instead of 0: the libvirt under test does "
        "not do what `spare_root_ports = 0` declares (rule policy.spare-port)",
        "if the declaration is wrong, remove it",
    ]
    two = explain(case, "q35", predict(case, "q35", Policy(spare_root_ports=2)), declared)
    assert two[0].lines({}, declared)[1] == "if the declaration is wrong, declare `spare_root_ports = 2` instead"
