"""The plugin driven end to end through pytester, with fake backends written into the test project.

The fake backend returns whatever domain XML / failure the case folder holds in ``fake-output.xml``
and ``fake-failure.txt``, so each test states exactly what "the backend produced" and checks what
the plugin does with it: collection, ids, goldens, explanations, divergences, orphans, xdist.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

CONFTEST = """
from pathlib import Path

from pytest_pcie.backends import BackendUnavailable, register_backend
from pytest_pcie.outcome import Failure, Outcome

HERE = Path(__file__).parent
VERSIONED = {"pc": "pc-i440fx-7.2", "q35": "pc-q35-7.2"}


class FakeBackend:
    name = "fake"

    def header(self):
        return "pcie backend: fake 1.0"

    def run(self, case, machine):
        folder = case.folder
        if (folder / "fake-interrupt").exists():
            raise KeyboardInterrupt
        if (folder / "fake-crash").exists():
            raise NotImplementedError("the fake assigner cannot do this yet")
        if (folder / "fake-no-emulator").exists():
            raise BackendUnavailable(f"no QEMU emulator here, which machine {machine!r} needs; install one")
        failure = None
        if (folder / "fake-failure.txt").exists():
            step, label, message = (folder / "fake-failure.txt").read_text().strip().split("|")
            failure = Failure(int(step), label, message)
        output = folder / "fake-output.xml"
        domain = output.read_text().replace("MACHINE", VERSIONED[machine]) if output.exists() else None
        return Outcome(domain, failure)

    def close(self):
        with open(HERE / "closed.log", "a") as log:
            log.write("closed\\n")


def broken(settings):
    raise BackendUnavailable("cannot connect to qemu:///nowhere: no libvirtd here")


class UriEcho(FakeBackend):
    def __init__(self, uri):
        self.uri = uri

    def header(self):
        return f"pcie backend: uri-echo at {self.uri}"


register_backend("fake", lambda settings: FakeBackend())
register_backend("uri-echo", lambda settings: UriEcho(settings.libvirt_uri))
register_backend("broken", broken)
"""


def domain(nic_bus: int = 1, extra_port: bool = True) -> str:
    """A libvirt-like dumpxml with noise the normaliser must drop (uuid, mac, alias, emulator)."""
    port2 = (
        "<controller type='pci' index='2' model='pcie-root-port'><model name='pcie-root-port'/>"
        "<target chassis='2' port='0x11'/><alias name='pci.2'/>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x1'/></controller>"
        if extra_port
        else ""
    )
    return f"""<domain type='kvm'>
  <name>pcie-case</name><uuid>6f1c5b4e-0000-4000-8000-000000000001</uuid>
  <os><type arch='x86_64' machine='MACHINE'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'><model name='pcie-root-port'/>
      <target chassis='1' port='0x10'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0' multifunction='on'/></controller>
    {port2}
    <interface type='user'><mac address='52:54:00:12:34:56'/><model type='virtio'/><alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x{nic_bus:02x}' slot='0x00' function='0x0'/></interface>
    <input type='mouse' bus='ps2'/>
  </devices>
</domain>
"""


# Plugins that are slow to import and irrelevant here (pytester re-imports them on every inner run).
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


class Project:
    """A throwaway project in the pytester folder, with helpers to write cases and goldens."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.root = pytester.path
        pytester.makeconftest(CONFTEST)
        self.ini(pcie_cases="cases")

    def ini(self, **keys: str) -> None:
        lines = "".join(f'{key} = "{value}"\n' for key, value in keys.items())
        self.pytester.makepyprojecttoml(f"[tool.pytest.ini_options]\n{lines}")

    def case(
        self,
        case_id: str,
        machines: tuple[str, ...] = ("q35",),
        output: str | None = None,
        toml_extra: str = "",
        operation: str = "define",
    ) -> Path:
        folder = self.root / "cases" / case_id
        folder.mkdir(parents=True, exist_ok=True)
        machine_list = ", ".join(f'"{m}"' for m in machines)
        (folder / "case.toml").write_text(
            f'description = "{case_id}"\nmachines = [{machine_list}]\noperation = "{operation}"\n{toml_extra}'
        )
        (folder / "input.xml").write_text("<domain><devices/></domain>\n")
        (folder / "fake-output.xml").write_text(output if output is not None else domain())
        return folder

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest(*QUIET, "--pcie-backend=fake", *args)

    def goldens(self) -> list[str]:
        root = self.root / "golden"
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def closed_count(self) -> int:
        log = self.root / "closed.log"
        return log.read_text().count("closed") if log.exists() else 0


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


# --- collection and ids ------------------------------------------------------------------------------


def test_one_item_per_machine_with_case_id_and_machine(project: Project) -> None:
    project.case("q35/spare-port")
    project.case("policy/both", machines=("pc", "q35"))
    result = project.run("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "cases/policy/both/case.toml::policy/both[[]pc[]]",
            "cases/policy/both/case.toml::policy/both[[]q35[]]",
            "cases/q35/spare-port/case.toml::q35/spare-port[[]q35[]]",
            "3 tests collected*",
        ]
    )


def test_path_and_keyword_select_cases(project: Project) -> None:
    project.case("q35/spare-port")
    project.case("policy/both", machines=("pc", "q35"))
    project.case("policy/other")
    by_path = project.run("--collect-only", "-q", "cases/policy")
    by_path.stdout.fnmatch_lines(["3 tests collected*"])
    assert "spare-port" not in by_path.stdout.str()
    by_keyword = project.run("--collect-only", "-q", "-k", "both and pc and not q35")
    by_keyword.stdout.fnmatch_lines(["cases/policy/both/case.toml::policy/both[[]pc[]]", "1/4 tests collected*"])


def test_dormant_without_pcie_option_or_ini(project: Project) -> None:
    project.ini()  # no pcie_cases
    project.case("q35/spare-port")
    result = project.pytester.runpytest(*QUIET, "cases")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert "pcie backend" not in result.stdout.str()
    assert project.closed_count() == 0


def test_a_pcie_option_enables_collection_from_the_default_folder(project: Project) -> None:
    project.ini()
    project.case("q35/spare-port")
    project.run("--collect-only", "-q").stdout.fnmatch_lines(["1 test collected*"])


def test_ini_folders_are_relative_to_the_rootdir(project: Project) -> None:
    project.ini(pcie_cases="suite/cases", pcie_goldens="suite/expected")
    folder = project.root / "suite" / "cases" / "q35" / "a"
    folder.parent.mkdir(parents=True)
    project.case("q35/a").rename(folder)
    result = project.run("--pcie-update-goldens")
    result.assert_outcomes(passed=1)
    assert (project.root / "suite" / "expected" / "q35" / "a" / "q35.xml").is_file()


def test_header_names_the_backend(project: Project) -> None:
    project.case("q35/a")
    project.run("--pcie-update-goldens").stdout.fnmatch_lines(["pcie backend: fake 1.0"])


def test_the_libvirt_uri_reaches_the_backend(project: Project) -> None:
    project.case("q35/a")
    result = project.pytester.runpytest(*QUIET, "--pcie-backend=uri-echo", "--pcie-libvirt-uri=qemu+ssh://host/system")
    result.stdout.fnmatch_lines(["pcie backend: uri-echo at qemu+ssh://host/system"])


# --- broken case folders: one collection error line each ----------------------------------------------

BROKEN: dict[str, tuple[Callable[[Path], object], str]] = {
    "input-without-case-toml": (lambda f: (f / "case.toml").unlink(), "*case.toml: missing case.toml*"),
    "case-toml-without-input": (lambda f: (f / "input.xml").unlink(), "*input.xml: missing input.xml*"),
    "toml-syntax": (lambda f: (f / "case.toml").write_text("machines = [\n"), "*case.toml: not valid TOML*"),
    "unknown-key": (
        lambda f: _append(f / "case.toml", "colour = 'blue'\n"),
        "*case.toml: unknown key 'colour'*",
    ),
    "unknown-operation": (
        lambda f: (f / "case.toml").write_text('description = "x"\nmachines = ["q35"]\noperation = "dance"\n'),
        "*unknown operation 'dance'*",
    ),
    "unknown-machine": (
        lambda f: (f / "case.toml").write_text('description = "x"\nmachines = ["virt"]\noperation = "define"\n'),
        "*unknown machine 'virt'*",
    ),
    "missing-device-file": (
        lambda f: (f / "case.toml").write_text(
            'description = "x"\nmachines = ["q35"]\noperation = "attach-offline"\nsteps = [{ attach = "nic.xml" }]\n'
        ),
        "*device file 'nic.xml' does not exist*",
    ),
    "malformed-input": (lambda f: (f / "input.xml").write_text("<domain>"), "*input.xml: not well-formed XML*"),
}


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_a_broken_case_folder_is_one_collection_error_line(project: Project, breakage: str) -> None:
    project.case("q35/good")
    break_it, expected = BROKEN[breakage]
    break_it(project.case(f"q35/{breakage}"))
    result = project.run()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting cases/q35/*", expected, "*1 error*"])
    output = result.stdout.str()
    assert "Traceback" not in output and "plugin.py" not in output
    others_run = project.run("--continue-on-collection-errors")
    others_run.assert_outcomes(passed=0, failed=1, errors=1)  # q35/good ran (and lacks its golden)


# --- goldens: missing, update, compare -----------------------------------------------------------------


def test_missing_golden_fails_with_the_update_hint(project: Project) -> None:
    project.case("q35/a")
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*no golden for libvirt 9.0.0: golden/q35/a/q35.xml (or one of an older version) is missing; "
         "create it from real libvirt 9.0.0 with pytest --pcie-backend=libvirt --pcie-update-goldens cases/q35/a"]
    )  # fmt: skip


def test_update_reports_created_changed_unchanged_and_writes_only_changes(project: Project) -> None:
    project.case("q35/a")
    folder_b = project.case("q35/b", machines=("pc", "q35"))
    first = project.run("--pcie-update-goldens")
    first.assert_outcomes(passed=3)
    first.stdout.fnmatch_lines(
        ["*pcie goldens updated*", "goldens: 3 created, 0 changed, 0 unchanged, 0 removed",
         "  created: golden/q35/a/q35.xml",
         "*review them before committing: git diff golden/",
         "written by backend 'fake': confirm with --pcie-backend=libvirt"]
    )  # fmt: skip
    assert project.goldens() == ["q35/a/q35.xml", "q35/b/pc.xml", "q35/b/q35.xml"]
    golden_a = project.root / "golden" / "q35" / "a" / "q35.xml"
    text = golden_a.read_text()
    assert '<outcome machine="q35">' in text and "52:54:00" not in text and "uuid" not in text
    assert 'bus="0x01" slot="0x00" function="0x0"' in text

    stamp = golden_a.stat().st_mtime_ns
    (folder_b / "fake-output.xml").write_text(domain(nic_bus=2))
    second = project.run("--pcie-update-goldens")
    second.stdout.fnmatch_lines(
        ["goldens: 0 created, 2 changed, 1 unchanged, 0 removed", "  changed: golden/q35/b/pc.xml"]
    )
    assert golden_a.stat().st_mtime_ns == stamp  # unchanged goldens are not rewritten
    (folder_b / "fake-output.xml").write_text(domain(nic_bus=2))
    quiet = project.run("--pcie-update-goldens")
    quiet.stdout.fnmatch_lines(["goldens: 0 created, 0 changed, 3 unchanged, 0 removed"])
    assert "review them" not in quiet.stdout.str() and "written by backend" not in quiet.stdout.str()
    assert not list((project.root / "golden").rglob("*.tmp"))
    project.run().assert_outcomes(passed=3)


def test_whitespace_and_attribute_order_do_not_matter(project: Project) -> None:
    project.case("q35/a")
    project.run("--pcie-update-goldens")
    golden_a = project.root / "golden" / "q35" / "a" / "q35.xml"
    reordered = golden_a.read_text().replace(
        'type="pci" domain="0x0000" bus="0x01"', 'bus="0x01"   type="pci"\n domain="0x0000"'
    )
    golden_a.write_text(reordered)
    project.run().assert_outcomes(passed=1)


def test_a_mismatch_is_explained_per_device_with_trees(project: Project) -> None:
    folder = project.case("q35/a")
    project.run("--pcie-update-goldens")
    (folder / "fake-output.xml").write_text(domain(nic_bus=2, extra_port=False))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ q35/a[[]q35[]] _*",
            "q35/a on q35 with libvirt 9.0.0 differs from golden/q35/a/q35.xml:",
            "  controller pci index=2 (pcie-root-port): missing",
            "  interface #1: bus 0x01 expected, got 0x02",
            "expected topology:",
            "  pcie-root (bus 0x00)",
            "*01:00.0 interface user virtio",
            "actual topology:",
            "*(devices on buses that do not exist)",
            "*02:00.0 interface user virtio",
            "if real libvirt 9.0.0 agrees with the actual result: pytest --pcie-backend=libvirt"
            " --pcie-update-goldens cases/q35/a",
        ]
    )
    output = result.stdout.str()
    assert "UpdateAttrib" not in output and "Traceback" not in output


def test_damaged_golden_is_one_line(project: Project) -> None:
    project.case("q35/a")
    (project.root / "golden" / "q35" / "a").mkdir(parents=True)
    (project.root / "golden" / "q35" / "a" / "q35.xml").write_text("<outcome>")
    project.run().stdout.fnmatch_lines(["*golden/q35/a/q35.xml: not well-formed XML*--pcie-update-goldens"])


def test_a_backend_exception_is_an_error_with_traceback_not_a_diff(project: Project) -> None:
    folder = project.case("q35/a")
    project.run("--pcie-update-goldens")
    (folder / "fake-crash").write_text("")
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*raise NotImplementedError*", "E*NotImplementedError: the fake assigner*"])
    assert "differs from" not in result.stdout.str()


def test_a_host_without_the_machines_emulator_is_one_line_per_case(project: Project) -> None:
    folder = project.case("q35/a")
    (folder / "fake-no-emulator").write_text("")
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["no QEMU emulator here, which machine 'q35' needs; install one"])
    assert "Traceback" not in result.stdout.str() and "raise BackendUnavailable" not in result.stdout.str()


# --- expect-error --------------------------------------------------------------------------------------

NO_SLOTS = "internal error: No more available PCI slots"


def test_expect_error_passes_when_the_run_fails_with_that_message(project: Project) -> None:
    folder = project.case("q35/full", toml_extra='expect-error = "No more available PCI slots"\n')
    (folder / "fake-failure.txt").write_text(f"0|define|{NO_SLOTS}")
    (folder / "fake-output.xml").unlink()
    project.run("--pcie-update-goldens").assert_outcomes(passed=1)
    text = (project.root / "golden" / "q35" / "full" / "q35.xml").read_text()
    assert f'<failure step="0" label="define">{NO_SLOTS}</failure>' in text
    assert "<devices" not in text
    project.run().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("failure", "complaint"),
    [
        (None, "*expect-error = 'No more available PCI slots' for libvirt 9.0.0, but the run succeeded"),
        ("1|attach nic.xml|internal error: something else", "*but it failed with: internal error: something else"),
    ],
)
def test_expect_error_fails_otherwise_even_with_a_matching_golden(
    project: Project, failure: str | None, complaint: str
) -> None:
    folder = project.case("q35/full", toml_extra='expect-error = "No more available PCI slots"\n')
    if failure:
        (folder / "fake-failure.txt").write_text(failure)
    result = project.run("--pcie-update-goldens")  # the golden now matches; expect-error still fails
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([complaint])
    project.run().stdout.fnmatch_lines([complaint])


def test_a_failure_difference_is_shown_side_by_side(project: Project) -> None:
    folder = project.case("q35/a")
    project.run("--pcie-update-goldens")
    (folder / "fake-failure.txt").write_text(f"1|attach nic.xml|{NO_SLOTS}")
    project.run().stdout.fnmatch_lines(
        ["  failure differs:", "    expected: no failure", f"    got:      step 1 (attach nic.xml): {NO_SLOTS}"]
    )


# --- known divergences ---------------------------------------------------------------------------------


def _divergences(project: Project, case: str, machine: str = "q35", backend: str = "fake") -> None:
    project.ini(pcie_cases="cases", pcie_known_divergences="known-divergences.toml")
    (project.root / "known-divergences.toml").write_text(
        textwrap.dedent(f"""\
            [[divergence]]
            case = "{case}"
            machine = "{machine}"
            backend = "{backend}"
            reason = "fake places the NIC elsewhere"
        """)
    )


def test_known_divergence_is_a_strict_xfail_for_that_backend_only(project: Project) -> None:
    folder = project.case("q35/a")
    project.run("--pcie-update-goldens")
    (folder / "fake-output.xml").write_text(domain(nic_bus=2))
    _divergences(project, "q35/a")
    diverging = project.run("-rx")
    diverging.assert_outcomes(xfailed=1)
    diverging.stdout.fnmatch_lines(["pcie known divergences for fake: 1"])
    diverging.stdout.fnmatch_lines(["pcie: 1 known divergence(s) for fake (xfail, not passes)",
                                    "*known divergence: fake places the NIC elsewhere*"])  # fmt: skip
    (folder / "fake-output.xml").write_text(domain())
    fixed = project.run()
    fixed.assert_outcomes(failed=1)
    fixed.stdout.fnmatch_lines(["*XPASS(strict)*known divergence*"])

    _divergences(project, "q35/a", backend="libvirt")
    project.run().assert_outcomes(passed=1)


def test_known_divergence_is_not_written_by_update(project: Project) -> None:
    folder = project.case("q35/a")
    project.run("--pcie-update-goldens")
    before = (project.root / "golden" / "q35" / "a" / "q35.xml").read_text()
    (folder / "fake-output.xml").write_text(domain(nic_bus=2))
    _divergences(project, "q35/a")
    project.run("--pcie-update-goldens").assert_outcomes(xfailed=1)
    assert (project.root / "golden" / "q35" / "a" / "q35.xml").read_text() == before


@pytest.mark.parametrize(
    ("case", "machine", "complaint"),
    [
        ("q35/gone", "q35", "*divergence #1: case 'q35/gone' does not exist under*; remove the entry"),
        ("q35/a", "pc", "*divergence #1: case 'q35/a' does not run on machine 'pc'; remove the entry"),
        ("q35/a@refrence", "q35", "*divergence #1: unknown backend 'refrence'; use one of: *fake*libvirt*reference*"),
    ],
)
def test_a_stale_divergence_entry_stops_the_run(project: Project, case: str, machine: str, complaint: str) -> None:
    project.case("q35/a")
    case, _, backend = case.partition("@")
    _divergences(project, case, machine, backend or "fake")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *known-divergences.toml: " + complaint.lstrip("*")])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


# --- orphan goldens ------------------------------------------------------------------------------------


def _with_orphan(project: Project) -> Path:
    project.case("q35/a")
    project.case("policy/b")
    project.run("--pcie-update-goldens")
    orphan = project.root / "golden" / "q35" / "removed-case" / "q35.xml"
    orphan.parent.mkdir(parents=True)
    orphan.write_text((project.root / "golden" / "q35" / "a" / "q35.xml").read_text())
    stale_machine = project.root / "golden" / "q35" / "a" / "pc.xml"
    stale_machine.write_text(orphan.read_text())
    return orphan


def test_orphan_goldens_are_reported_on_a_full_run(project: Project) -> None:
    _with_orphan(project)
    result = project.run()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*pcie orphan goldens*", "  no case produces: golden/q35/a/pc.xml",
         "  no case produces: golden/q35/removed-case/q35.xml", "delete them with --pcie-prune-goldens*"]
    )  # fmt: skip


def test_orphans_are_judged_when_other_paths_run_beside_the_cases(project: Project) -> None:
    orphan = _with_orphan(project)
    project.pytester.makepyfile(test_other="def test_other():\n    pass\n")
    result = project.run("--pcie-prune-goldens", "test_other.py", "cases")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["  deleted: golden/q35/removed-case/q35.xml"])
    assert not orphan.exists()


@pytest.mark.parametrize(
    "selection",
    [["cases/policy"], ["-k", "a"], ["-m", "not pcie"], ["cases/q35/a/case.toml"], ["--deselect", "cases/q35"]],
)
def test_orphans_are_not_judged_on_a_partial_run(project: Project, selection: list[str]) -> None:
    orphan = _with_orphan(project)
    result = project.run("--pcie-prune-goldens", *selection)
    assert "no case produces" not in result.stdout.str() and "deleted:" not in result.stdout.str()
    result.stdout.fnmatch_lines(["pcie: --pcie-prune-goldens deleted nothing: only a full run*"])
    assert orphan.exists()


def test_prune_deletes_orphans_on_a_full_run(project: Project) -> None:
    orphan = _with_orphan(project)
    result = project.run("--pcie-prune-goldens")
    result.stdout.fnmatch_lines(["  deleted: golden/q35/removed-case/q35.xml"])
    assert not orphan.exists()
    assert project.goldens() == ["policy/b/q35.xml", "q35/a/q35.xml"]


def test_no_orphan_judgement_after_a_collection_error(project: Project) -> None:
    orphan = _with_orphan(project)
    (project.root / "cases" / "policy" / "b" / "case.toml").write_text("broken = [")
    result = project.run("--pcie-prune-goldens")
    assert "no case produces" not in result.stdout.str() and "deleted:" not in result.stdout.str()
    assert orphan.exists()


# --- xdist ---------------------------------------------------------------------------------------------


def test_xdist_runs_updates_and_merges_the_summary(project: Project) -> None:
    for name in ("a", "b", "c", "d"):
        project.case(f"q35/{name}", machines=("pc", "q35"))
    created = project.run("-n", "2", "--pcie-update-goldens")
    created.assert_outcomes(passed=8)
    created.stdout.fnmatch_lines(["goldens: 8 created, 0 changed, 0 unchanged, 0 removed"])
    assert len(project.goldens()) == 8
    orphan = project.root / "golden" / "q35" / "old" / "pc.xml"
    orphan.parent.mkdir()
    orphan.write_text("<outcome/>")
    compared = project.run("-n", "2")
    compared.assert_outcomes(passed=8)
    compared.stdout.fnmatch_lines(["pcie backend: fake (one per xdist worker)"])
    compared.stdout.fnmatch_lines(
        ["xdist workers ran pcie backend: fake 1.0", "*no case produces: golden/q35/old/pc.xml"]
    )
    _divergences(project, "q35/a")
    (project.root / "cases" / "q35" / "a" / "fake-output.xml").write_text(domain(nic_bus=2))
    diverging = project.run("-n", "2")
    diverging.assert_outcomes(passed=6, failed=1, xfailed=1)  # the entry covers q35/a on q35, not on pc
    diverging.stdout.fnmatch_lines(["pcie: 1 known divergence(s) for fake (xfail, not passes)"])
    assert project.closed_count() == 2 + 2 + 2  # one backend per worker, per run


# --- backend lifetime ----------------------------------------------------------------------------------


def test_an_unavailable_backend_stops_the_run_with_one_line(project: Project) -> None:
    for name in "abc":
        project.case(f"q35/{name}")
    result = project.pytester.runpytest(*QUIET, "--pcie-backend=broken")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: pcie backend 'broken' is unavailable: cannot connect to qemu:///nowhere: no libvirtd here"]
    )
    assert "Traceback" not in result.stderr.str()
    assert "passed" not in result.stdout.str() and "failed" not in result.stdout.str()


def test_an_unavailable_backend_stops_an_xdist_run(project: Project) -> None:
    for name in "abcdefgh":
        project.case(f"q35/{name}")
    result = project.pytester.runpytest(*QUIET, "--pcie-backend=broken", "-n", "2")
    result.stdout.fnmatch_lines(["*Interrupted: pcie backend 'broken' is unavailable: cannot connect*"])
    assert result.parseoutcomes().get("failed", 0) <= 2  # at most the first case of each worker


def test_an_unknown_backend_name_lists_the_known_ones(project: Project) -> None:
    project.case("q35/a")
    result = project.pytester.runpytest(*QUIET, "--pcie-backend=nope")
    result.stderr.fnmatch_lines(
        ["ERROR: pcie backend 'nope' is unavailable: unknown pcie backend 'nope'; choose*fake*"]
    )


@pytest.mark.parametrize("marker", [None, "fake-crash", "fake-interrupt"])
def test_close_is_called_once_whatever_happens(project: Project, marker: str | None) -> None:
    folder = project.case("q35/a")
    if marker:
        (folder / marker).write_text("")
    project.pytester.runpytest(*QUIET, "--pcie-backend=fake", no_reraise_ctrlc=True)
    assert project.closed_count() == 1


def test_the_pcie_backend_fixture_is_the_session_backend(project: Project) -> None:
    project.pytester.makepyfile(
        test_uses_backend="""
        def test_header(pcie_backend):
            assert pcie_backend.header() == "pcie backend: fake 1.0"
        """
    )
    result = project.run("test_uses_backend.py")
    result.assert_outcomes(passed=1)
    assert project.closed_count() == 1


def test_goldens_are_orphans_when_no_case_is_left(project: Project) -> None:
    project.case("q35/a")
    project.run("--pcie-update-goldens")
    (project.root / "cases" / "q35" / "a" / "case.toml").unlink()
    (project.root / "cases" / "q35" / "a" / "input.xml").unlink()
    result = project.run("--pcie-prune-goldens")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["  deleted: golden/q35/a/q35.xml"])
    assert project.goldens() == []


def test_the_plugin_runs_without_xdist_installed(project: Project) -> None:
    # A fresh `pip install pytest-pcie` has no xdist: its hooks must not be required (pluggy rejects
    # a plugin implementing hooks nobody declared).
    project.case("q35/a")
    result = project.run("-p", "no:xdist", "--pcie-update-goldens")
    result.assert_outcomes(passed=1)
    assert "INTERNALERROR" not in result.stdout.str()
    project.run("-p", "no:xdist").assert_outcomes(passed=1)
