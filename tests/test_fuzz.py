"""The differential fuzzer on fake backends: generator, differ, shrinker, writer and CLI.

The fakes share one toy assigner (every un-addressed device gets the next bus); one of them carries
a PLANTED bug, so each test knows exactly which disagreement must be found and how small it must
shrink.  Real backends are exercised by tests/test_differential.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from pytest_pcie.backends.base import BackendUnavailable
from pytest_pcie.cases import Action, Case, Operation, load_case
from pytest_pcie.domain import prepare_domain
from pytest_pcie.fuzz import cli
from pytest_pcie.fuzz.catalogue import HOTPLUG_TARGET_MODELS, KINDS, ROOT_MODELS
from pytest_pcie.fuzz.differ import Verdict, compare
from pytest_pcie.fuzz.example import PCI_CONTROLLER, Address, Device, Example, Step, as_case
from pytest_pcie.fuzz.runner import PassOptions, run_pass, summary_table
from pytest_pcie.fuzz.shared_memory import SharedMemory, shmem_names
from pytest_pcie.fuzz.shrink import shrink
from pytest_pcie.fuzz.strategies import CONTROLLER_WEIGHTS, SINGLETONS, VALID, examples
from pytest_pcie.fuzz.writer import write_disagreement
from pytest_pcie.golden import canonical_text
from pytest_pcie.machines import MACHINE_FAMILIES
from pytest_pcie.normalise import normalise
from pytest_pcie.outcome import Failure, Outcome

Capture = pytest.CaptureFixture[str]

# --- fake backends ---------------------------------------------------------------------------------


def _nic_models(domain: etree._Element) -> list[str]:
    return [str(nic.xpath("string(model/@type)")) for nic in
            domain.iterfind("devices/interface")]  # fmt: skip


def planted_bug(domain: etree._Element) -> bool:
    """The bug only one fake has: q35, an e1000 and more than two virtio NICs."""
    models = _nic_models(domain)
    machine = domain.find("os/type").get("machine")  # type: ignore[union-attr]
    return machine == "q35" and "e1000" in models and models.count("virtio") > 2


def common_bug(domain: etree._Element) -> bool:
    """A bug most examples hit: any NIC at all."""
    return bool(_nic_models(domain))


class FakeBackend:
    """Gives every device without an address the next free bus, slot 0 (the buggy one moves a NIC)."""

    def __init__(self, name: str, buggy: bool = False, crash: bool = False, bug: Callable[[etree._Element], bool]
                 = planted_bug, refuse: str | None = None) -> None:  # fmt: skip
        self.name = name
        self.refuse = refuse
        self.buggy = buggy
        self.bug = bug
        self.crash = crash
        self.runs = 0

    def header(self) -> str:
        return f"pcie backend: fake {self.name}"

    def run(self, case: Case, machine: str) -> Outcome:
        self.runs += 1
        if self.crash:
            raise NotImplementedError("the fake's define is not written yet")
        prepared = prepare_domain(case.input_xml, machine)
        domain = etree.fromstring(prepared.encode(), etree.XMLParser(remove_blank_text=True))
        devices = domain.find("devices")
        assert devices is not None
        if self.refuse is not None and devices.find(self.refuse) is not None:
            return Outcome(None, Failure(0, "define", f"unsupported configuration: no {self.refuse} here"))
        self._assign(domain)
        for number, step in enumerate(case.steps, start=1):
            device = etree.fromstring(step.device_xml.encode())
            if device.tag == self.refuse:
                refusal = f"unsupported configuration: no {self.refuse} here"
                return Outcome(_text(domain), Failure(number, step.label, refusal))
            if step.action is Action.ATTACH:
                devices.append(device)
            else:
                match = devices.find(device.tag)
                if match is None:
                    return Outcome(_text(domain), Failure(number, step.label, "XML error: no such device"))
                devices.remove(match)
            self._assign(domain)
        return Outcome(_text(domain))

    def _assign(self, domain: etree._Element) -> None:
        used = {int(a.get("bus", "0"), 16) for a in domain.iterfind("devices/*/address")}
        for device in domain.find("devices"):  # type: ignore[union-attr]
            if device.find("address") is None and device.get("model") != "none":
                bus = next(number for number in range(1, 256) if number not in used)
                used.add(bus)
                etree.SubElement(device, "address", type="pci", domain="0x0000", bus=f"0x{bus:02x}", slot="0x00",
                                 function="0x0")  # fmt: skip
        if self.buggy and self.bug(domain):
            first = domain.find("devices/interface/address")
            assert first is not None
            first.set("bus", f"0x{int(first.get('bus', '0'), 16) + 0x40:02x}")

    def close(self) -> None:
        pass


def _text(domain: etree._Element) -> str:
    return etree.tostring(domain, encoding="unicode")


def nic(model: str, n: int) -> Device:
    return Device(f"net-{model}", n)


def planted_example() -> Example:
    """A q35 define that triggers the planted bug, buried among devices that have nothing to do with it."""
    devices = (
        Device("sound-ich6", 0), nic("virtio", 1), Device("usb-none", 2), nic("rtl8139", 3), nic("virtio", 4),
        Device("rng", 5), nic("e1000", 6), Device(PCI_CONTROLLER, 7, model="pcie-root-port", index=3),
        nic("virtio", 8), Device("watchdog-i6300esb", 9, Address(0, 0, 5, 0)), nic("virtio", 10),
        Device("balloon-none", 11),
    )  # fmt: skip
    return Example("q35", Operation.DEFINE, devices)


def nic_heavy_q35_defines() -> st.SearchStrategy[Example]:
    """q35 defines of NICs and a few bystanders, so a short pass meets the planted bug."""
    kinds = st.lists(st.sampled_from(["net-e1000", "net-virtio", "net-virtio", "sound-ich6", "rng"]), max_size=10)
    return kinds.map(lambda drawn: Example("q35", Operation.DEFINE, tuple(Device(k, n) for n, k in enumerate(drawn))))


# --- shrinker and writer ---------------------------------------------------------------------------


def test_planted_disagreement_shrinks_to_a_minimal_case_folder_that_fails_the_same_way(tmp_path: Path) -> None:
    truth, buggy = FakeBackend("libvirt"), FakeBackend("reference", buggy=True)
    found = compare(planted_example(), buggy, truth)
    assert found.verdict is Verdict.DISAGREED and found.kind == "topology"

    small = shrink(found.example, lambda candidate: compare(candidate, buggy, truth).kind == found.kind)
    assert sorted(device.kind for device in small.devices) == ["net-e1000", "net-virtio", "net-virtio", "net-virtio"]

    folder = write_disagreement(compare(small, buggy, truth), tmp_path / "found", seed=7)
    case = load_case(folder, tmp_path / "found")
    assert case.machines == ("q35",) and case.operation is Operation.DEFINE
    assert "reference puts interface #" in case.description and "pcie-fuzz --seed 7" in case.description
    texts = {canonical_text(normalise(backend.run(case, "q35"), "q35")) for backend in (buggy, truth)}
    assert len(texts) == 2, "the written case must still disagree when re-run"


def test_shrinking_keeps_the_detach_step_with_the_device_it_detaches() -> None:
    kept = Device("net-e1000", 0)
    example = Example("pc", Operation.ATTACH_OFFLINE, (Device("sound-ac97", 1), kept),
                      (Step(Action.ATTACH, nic("virtio", 2)), Step(Action.DETACH, kept)))  # fmt: skip

    def needs_detach(candidate: Example) -> bool:
        return any(step.action is Action.DETACH for step in candidate.steps)

    small = shrink(example, needs_detach)
    assert small.devices == (kept,) and [step.action for step in small.steps] == [Action.DETACH]


def test_what_happens_after_the_first_refusal_does_not_change_the_kind_of_disagreement() -> None:
    reference, libvirt = FakeBackend("reference"), FakeBackend("libvirt", refuse="sound")
    devices = (Device("sound-ac97", 0),)
    fails_later = Example("pc", Operation.ATTACH_OFFLINE, devices, (Step(Action.DETACH, Device("net-e1000", 1)),))
    succeeds = Example("pc", Operation.ATTACH_OFFLINE, devices, (Step(Action.ATTACH, Device("net-e1000", 1)),))
    first, second = compare(fails_later, reference, libvirt), compare(succeeds, reference, libvirt)
    assert first.verdict is second.verdict is Verdict.DISAGREED
    assert first.kind == second.kind
    assert first.kind == "failure libvirt=define:unsupported configuration: no sound here reference=further"
    assert first.lines != second.lines


def test_earlier_steps_can_be_shrunk_away_from_a_failing_step() -> None:
    reference, libvirt = FakeBackend("reference"), FakeBackend("libvirt", refuse="sound")
    late = Step(Action.ATTACH, Device("sound-ac97", 9))
    example = Example("pc", Operation.ATTACH_OFFLINE, (),
                      (Step(Action.ATTACH, nic("virtio", 1)), Step(Action.ATTACH, nic("e1000", 2)), late))  # fmt: skip
    found = compare(example, reference, libvirt)
    assert found.kind.startswith("failure libvirt=attach sound:")
    small = shrink(example, lambda candidate: compare(candidate, reference, libvirt).kind == found.kind)
    assert small.steps == (late,)


def test_a_reference_crash_is_its_own_kind_not_a_disagreement() -> None:
    found = compare(planted_example(), FakeBackend("reference", crash=True), FakeBackend("libvirt"))
    assert found.verdict is Verdict.REFERENCE_CRASH
    assert found.kind == "crash NotImplementedError"
    assert found.lines[0].startswith("reference raised NotImplementedError: the fake's define is not written yet (at ")
    assert found.lines[1] == "libvirt succeeded"


def test_a_pass_finds_the_planted_bug_and_writes_one_folder_for_it(tmp_path: Path) -> None:
    buggy, truth = FakeBackend("reference", buggy=True), FakeBackend("libvirt")
    options = PassOptions(examples=200, seed=3, out=tmp_path, strategy=nic_heavy_q35_defines())
    result = run_pass(buggy, truth, options)
    total = result.total
    assert total.examples == 200 and 0 < total.disagreed < 200 and total.crashed == 0
    assert len(result.written) == 1
    (folder,) = result.written.values()
    case = load_case(folder, tmp_path)
    root = etree.fromstring(case.input_xml.encode())
    assert sorted(_nic_models(root)) == ["e1000", "virtio", "virtio", "virtio"]
    assert "define" in summary_table(result) and "q35" in summary_table(result)


class RecordingBackend(FakeBackend):
    """Remembers every input it ran, to compare two passes."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.inputs: list[str] = []

    def run(self, case: Case, machine: str) -> Outcome:
        steps = "".join(step.device_xml for step in case.steps)
        self.inputs.append(f"{machine} {case.operation.value}\n{case.input_xml}{steps}")
        return super().run(case, machine)


def test_a_seed_replays_the_same_examples_and_another_seed_does_not() -> None:
    runs = []
    for seed in (5, 5, 6):
        recorder = RecordingBackend("reference")
        run_pass(recorder, FakeBackend("libvirt"), PassOptions(examples=25, seed=seed))
        runs.append(recorder.inputs)
    assert len(runs[0]) == 25
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


# --- shared memory ---------------------------------------------------------------------------------


class ShmemBackend(FakeBackend):
    """Creates ``<shm>/<name>`` for every shmem device it runs, as QEMU does in /dev/shm for a live guest."""

    def __init__(self, name: str, shm: Path) -> None:
        super().__init__(name)
        self.shm = shm

    def run(self, case: Case, machine: str) -> Outcome:
        for text in (case.input_xml, *(step.device_xml for step in case.steps)):
            for shmem in etree.fromstring(text.encode()).iter("shmem"):
                (self.shm / shmem.get("name", "")).write_bytes(b"\0" * 64)
        return super().run(case, machine)


def shmem(n: int) -> Device:
    return Device("shmem-ivshmem-plain", n)


def test_a_pass_removes_the_shared_memory_files_its_guests_created_and_only_those(tmp_path: Path) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    (shm / "pcie-fuzz-1").write_text("left by an earlier run")  # a name the pass uses, but not its file
    (shm / "someone-else").write_text("not the fuzzer's")
    drawn = st.sampled_from([
        Example("q35", Operation.ATTACH_LIVE, (shmem(1), nic("virtio", 2)), (Step(Action.ATTACH, shmem(3)),)),
        Example("pc", Operation.DEFINE, (shmem(4), shmem(5))),
    ])  # fmt: skip
    backend = ShmemBackend("libvirt", shm)
    result = run_pass(FakeBackend("reference"), backend, PassOptions(examples=4, seed=1, strategy=drawn, shm_dir=shm))
    assert backend.runs > 0
    created = {"pcie-fuzz-3", "pcie-fuzz-4", "pcie-fuzz-5"} & {path.name for path in result.shm_removed}
    assert created, "the examples drawn created no file: the test proves nothing"
    assert sorted(path.name for path in shm.iterdir()) == ["pcie-fuzz-1", "someone-else"]
    assert not result.shm_left


def test_a_shared_memory_file_stays_while_a_process_maps_it(tmp_path: Path) -> None:
    shm, proc = tmp_path / "shm", tmp_path / "proc"
    shm.mkdir()
    (proc / "4242").mkdir(parents=True)
    maps = proc / "4242" / "maps"
    maps.write_text(f"7f8f79431000-7f8f79831000 rw-s 00000000 00:1b 111                        {shm}/pcie-fuzz-7\n")
    shared = SharedMemory(shm, proc)
    absent = shared.before([f"<domain><devices>{shmem(7).xml()}{shmem(8).xml()}</devices></domain>"])
    assert absent == {"pcie-fuzz-7", "pcie-fuzz-8"}
    for name in absent:
        (shm / name).write_text("")
    shared.after(absent)
    removed, left = shared.remove(wait=0)
    assert (removed, left) == ([shm / "pcie-fuzz-8"], [shm / "pcie-fuzz-7"])  # its guest is still running
    maps.unlink()  # the guest is gone
    assert shared.remove(wait=0) == ([shm / "pcie-fuzz-7"], [])
    assert not any(shm.iterdir())


def test_only_shmem_names_the_fuzzer_generates_are_ever_candidates() -> None:
    xml = ("<domain><devices><shmem name='pcie-fuzz-2'/><shmem name='pcie-test'/><shmem name='pcie-fuzz-/x'/>"
           "<memballoon model='none'/></devices></domain>")  # fmt: skip
    assert shmem_names([xml, shmem(9).xml(), "<shmem name='pcie-fuzz-3'", "<rng model='virtio'/>"]) == {
        "pcie-fuzz-2", "pcie-fuzz-9"
    }  # fmt: skip


# --- generator ---------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(examples())
def test_generated_examples_are_case_folders_prepare_domain_accepts(example: Example) -> None:
    case = as_case(example)
    for machine in case.machines:
        prepared = etree.fromstring(prepare_domain(case.input_xml, machine).encode())
        os_type = prepared.find("os/type")
        assert os_type is not None
        family = MACHINE_FAMILIES[machine]
        assert (os_type.get("machine"), os_type.get("arch")) == (family.libvirt_alias, family.arch)
    for step in case.steps:
        etree.fromstring(step.device_xml.encode())
    if example.operation.live:
        drawn = [*example.devices, *(step.device for step in example.steps)]
        assert all(device.kind == PCI_CONTROLLER or KINDS[device.kind].startable for device in drawn)
        assert all(step.action is Action.ATTACH for step in example.steps)
    if example.operation is Operation.DEFINE:
        assert not example.steps
    holding = [device for device in example.devices]
    for drawn_step in example.steps:
        if drawn_step.action is Action.DETACH:
            assert any(held is drawn_step.device for held in holding), "a detach must name a device present"
            holding = [held for held in holding if held is not drawn_step.device]
        else:
            holding.append(drawn_step.device)
    macs = [device.xml() for device in example.devices if device.kind.startswith("net-")]
    assert len(set(macs)) == len(macs)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(examples(profile=VALID))
def test_the_valid_profile_makes_no_deliberate_mistake(example: Example) -> None:
    drawn = [*example.devices, *(step.device for step in example.steps if step.action is Action.ATTACH)]
    for device in drawn:
        address = device.address
        if address is not None:
            assert (address.domain or 0) == 0 and (address.bus or 0) < 0x20
            assert (address.slot or 0) <= 0x1F and (address.function or 0) <= 7
        if device.kind == PCI_CONTROLLER:
            assert device.model is not None
            wanted = CONTROLLER_WEIGHTS[example.machine].get(device.model, 0) > 0
            assert wanted or (device.index == 0 and device.model == ROOT_MODELS[example.machine])
            assert not device.hotplug_off or device.model in HOTPLUG_TARGET_MODELS
        else:
            assert device.kind not in VALID.avoid[example.machine]
    for _percent, group in SINGLETONS.values():
        assert sum(device.kind in group for device in example.devices) <= 1
    if example.operation.live:
        assert all(step.device.kind != PCI_CONTROLLER and KINDS[step.device.kind].hotplug for step in example.steps)


# --- command line ------------------------------------------------------------------------------------


def _factories(reference: FakeBackend, libvirt: FakeBackend) -> dict[str, cli.BackendFactory]:
    return {"reference_factory": lambda _uri: reference, "libvirt_factory": lambda _uri: libvirt}


def test_cli_exits_0_and_prints_seed_first_and_table_when_all_agree(tmp_path: Path, capsys: Capture) -> None:
    code = cli.main(["--examples", "20", "--seed", "11", "--out", str(tmp_path / "out")],
                    **_factories(FakeBackend("reference"), FakeBackend("libvirt")))  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == "pcie-fuzz seed 11 (replay with --seed 11)"
    assert "operation" in out and "rate" in out and "100.0%" in out
    assert "all" in out.splitlines()[-3] and " 20 " in out.splitlines()[-3]
    assert not (tmp_path / "out").exists()


def test_cli_exits_1_and_writes_folders_when_backends_disagree(tmp_path: Path, capsys: Capture) -> None:
    out_dir = tmp_path / "out"
    argv = ["--examples", "40", "--seed", "3", "--out", str(out_dir), "--machine", "q35", "--operation", "define"]
    buggy = FakeBackend("reference", buggy=True, bug=common_bug)
    code = cli.main(argv, **_factories(buggy, FakeBackend("libvirt")))
    out = capsys.readouterr().out
    assert code == 1
    assert len(list(out_dir.iterdir())) == 1 and "case folder(s) written" in out
    table = [line for line in out.splitlines() if line.startswith("define")]
    assert len(table) == 1 and "q35" in table[0] and "pc" not in table[0].split()


def test_cli_counts_reference_crashes_apart(tmp_path: Path, capsys: Capture) -> None:
    code = cli.main(["--examples", "5", "--seed", "1", "--out", str(tmp_path), "--max-written", "1"],
                    **_factories(FakeBackend("reference", crash=True), FakeBackend("libvirt")))  # fmt: skip
    out = capsys.readouterr().out
    total = out.splitlines()[[line.startswith("all") for line in out.splitlines()].index(True)].split()
    assert code == 1 and total[1:6] == ["5", "0", "0", "5", "0.0%"]


BAD_USAGE = [["--examples", "0", "--out", "x"], ["--out", "x", "--machine", "virt"], ["--examples", "many"]]


@pytest.mark.parametrize("argv", BAD_USAGE)
def test_cli_exits_2_on_bad_usage(argv: list[str], capsys: Capture) -> None:
    assert cli.main(argv, **_factories(FakeBackend("reference"), FakeBackend("libvirt"))) == 2
    assert "usage: pcie-fuzz" in capsys.readouterr().err


def test_cli_exits_2_with_one_line_without_an_out_folder(capsys: Capture) -> None:
    assert cli.main(["--examples", "3"], **_factories(FakeBackend("reference"), FakeBackend("libvirt"))) == 2
    (line,) = capsys.readouterr().out.splitlines()
    assert line == "pcie-fuzz: error: name a folder for what is found with --out DIR (or use --recheck DIR)"


def test_cli_recheck_says_which_written_folders_still_disagree(tmp_path: Path, capsys: Capture) -> None:
    buggy, truth = FakeBackend("reference", buggy=True), FakeBackend("libvirt")
    write_disagreement(compare(planted_example(), buggy, truth), tmp_path)
    assert cli.main(["--recheck", str(tmp_path)], **_factories(buggy, truth)) == 1
    still = capsys.readouterr().out.splitlines()
    assert still[0].startswith("disagrees  q35-define-topology-") and still[-1] == "0 agree, 1 still disagree"
    assert cli.main(["--recheck", str(tmp_path)], **_factories(FakeBackend("reference"), truth)) == 0
    fixed = capsys.readouterr().out.splitlines()
    assert fixed[0].startswith("agrees     q35-define-topology-") and fixed[-1] == "1 agree, 0 still disagree"


def test_cli_exits_2_with_one_line_when_libvirt_is_unavailable(tmp_path: Path, capsys: Capture) -> None:
    def unavailable(uri: str) -> FakeBackend:
        raise BackendUnavailable(f"libvirtd is not reachable at {uri}: no socket")

    code = cli.main(["--out", str(tmp_path), "--libvirt-uri", "qemu:///nowhere"],
                    reference_factory=lambda _uri: FakeBackend("reference"), libvirt_factory=unavailable)  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert code == 2
    assert lines[1] == "pcie-fuzz: error: libvirtd is not reachable at qemu:///nowhere: no socket"
    assert len(lines) == 2
