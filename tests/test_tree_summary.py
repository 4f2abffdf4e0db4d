"""The summary line under a tree: counts checked against the goldens' own elements and real hotplug facts."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from pytest_pcie import cli, golden
from pytest_pcie.backends import BackendUnavailable, create_backend
from pytest_pcie.tree import summarise, summary_line

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = ROOT / "golden"
CASES = ROOT / "cases"
EMPTY_Q35 = "4 PCI controllers, 3 devices, 1 free hotplug slot (1 on PCIe ports, 0 on PCI buses)"
AFTER_LIVE_NIC = "4 PCI controllers, 4 devices, 0 free hotplug slots (0 on PCIe ports, 0 on PCI buses)"


def read(name: str) -> etree._Element:
    return golden.read_golden(GOLDENS / f"{name}.xml")


@pytest.mark.parametrize(
    ("name", "free"),
    [
        ("defaults/empty-domain/q35", {"PCIe": 1, "PCI": 0}),  # libvirt's one spare root port
        ("policy/q35-no-controllers-one-spare-port/q35", {"PCIe": 1, "PCI": 0}),
        ("policy/q35-user-root-ports-more-than-needed/q35", {"PCIe": 2, "PCI": 0}),
        ("scenarios/03-q35-too-few-ports-bumped/q35", {"PCIe": 0, "PCI": 0}),
        ("attach-live/free-slot-used/q35", {"PCIe": 0, "PCI": 0}),  # the live NIC took the spare port
        ("attach-live/spare-port-then-no-slot/q35", {"PCIe": 0, "PCI": 0}),  # hence the refused second NIC
        ("attach-live/hotplug-off-port-skipped/q35", {"PCIe": 0, "PCI": 0}),  # a hotplug='off' port is no slot
        ("attach-live/virtio-prefers-root-port/q35", {"PCIe": 0, "PCI": 29}),  # bridge slots 0x03-0x1f
        ("defaults/empty-domain/pc", {"PCIe": 0, "PCI": 29}),  # pci-root 0x03-0x1f (0x01 piix3, 0x02 video)
        ("attach-live/pci-root-hotplug-off/pc", {"PCIe": 0, "PCI": 0}),  # QEMU refuses: no slot is free
    ],
)
def test_free_slots_of_goldens(name: str, free: dict[str, int]) -> None:
    summary = summarise(read(name))
    assert summary is not None
    assert summary.free == free


@pytest.mark.parametrize(
    "name",
    ["attach-live/downstream-port/q35", "policy/q35-ports-packed-eight-per-slot/q35", "defaults/empty-domain/pc"],
)
def test_controller_and_device_counts_match_the_golden_elements(name: str) -> None:
    document = read(name)
    controllers = len(document.findall("devices/controller[@type='pci']"))
    addressed = len(document.findall("devices/*/address"))
    summary = summarise(document)
    assert summary is not None
    assert (summary.controllers, summary.devices) == (controllers, addressed - (controllers - 1))


def test_a_failed_define_has_no_summary() -> None:
    assert (
        summarise(etree.fromstring('<outcome machine="pc"><failure step="0" label="define">x</failure></outcome>'))
        is None
    )


def run_tree(capsys: pytest.CaptureFixture[str], backend: str, *steps: str) -> list[str]:
    status = cli.main([str(CASES / "defaults/empty-domain/input.xml"), "--machine", "q35", "--backend", backend,
                       *steps, "--tree"])  # fmt: skip
    captured = capsys.readouterr()
    assert (status, captured.err) == (0, "")
    return captured.out.splitlines()


def test_pcie_assign_tree_ends_with_the_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lines = run_tree(capsys, "reference")
    assert lines[-1] == EMPTY_Q35 == summary_line(read("defaults/empty-domain/q35"))
    assert sum("free hotplug slot 0x00" in line for line in lines) == 1
    nic = tmp_path / "nic.xml"
    nic.write_text("<interface type='user'><model type='virtio'/></interface>")
    assert run_tree(capsys, "reference", "--live", "--attach", str(nic))[-1] == AFTER_LIVE_NIC


def test_the_same_counts_on_real_libvirt(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    try:
        create_backend("libvirt").close()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    assert run_tree(capsys, "libvirt")[-1] == EMPTY_Q35
    nic = tmp_path / "nic.xml"
    nic.write_text("<interface type='user'><model type='virtio'/></interface>")
    assert run_tree(capsys, "libvirt", "--live", "--attach", str(nic))[-1] == AFTER_LIVE_NIC


def test_pcie_assign_svg_writes_the_picture(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    picture = tmp_path / "empty.svg"
    input_xml = str(CASES / "defaults/empty-domain/input.xml")
    assert cli.main([input_xml, "--machine", "q35", "--svg", str(picture)]) == 0
    assert capsys.readouterr().out.startswith("<domain")  # --svg is in addition to the normal output
    svg = etree.parse(str(picture)).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert EMPTY_Q35 in [text.text for text in svg.iter("{http://www.w3.org/2000/svg}text")]


def test_pcie_assign_svg_draws_a_refusal_and_still_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    picture = tmp_path / "refused.svg"
    nic = tmp_path / "nic.xml"
    nic.write_text("<interface type='user'><model type='virtio'/></interface>")
    input_xml = str(CASES / "defaults/empty-domain/input.xml")
    steps = ["--live", "--attach", str(nic), "--attach", str(nic)]
    assert cli.main([input_xml, "--machine", "q35", *steps, "--svg", str(picture)]) == 1
    assert "No more available PCI slots" in capsys.readouterr().err
    assert "step 2 (attach nic.xml) refused" in picture.read_text()


def test_pcie_assign_svg_to_an_unwritable_path_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "missing-folder" / "x.svg"
    assert cli.main([str(CASES / "defaults/empty-domain/input.xml"), "--machine", "q35", "--svg", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pcie-assign: {target}: cannot write the SVG") and err.count("\n") == 1


# On q35 these NIC models are legacy PCI devices (a pcie-to-pci-bridge slot); other models are PCIe
# (a root or downstream port).  On pc every device takes a PCI slot.  None: no <model>, i.e. rtl8139.
Q35_LEGACY_NIC_MODELS = frozenset({"e1000", "rtl8139", None})
NO_SLOTS = "No more available PCI slots"


def refused_hotplugs() -> list[tuple[str, str, str]]:
    """(case id, machine, device file) of every golden where libvirt refused a hotplug for want of a slot."""
    found = []
    for path in sorted(GOLDENS.rglob("*.xml")):
        failure = golden.read_golden(path).find("failure")
        case_id = path.parent.relative_to(GOLDENS).as_posix()
        toml = (CASES / case_id / "case.toml").read_text()
        if failure is not None and NO_SLOTS in (failure.text or "") and 'operation = "attach-live"' in toml:
            found.append((case_id, path.stem, failure.get("label", "").removeprefix("attach ")))
    return found


def test_every_refused_hotplug_shows_no_free_slot_of_the_kind_it_needs() -> None:
    """Real libvirt said "no slot" in these goldens; the summary must agree there is none of that kind."""
    refused = refused_hotplugs()
    assert len(refused) >= 10  # the corpus has a dozen; an empty list would make this test vacuous
    for case_id, machine, device_file in refused:
        device = etree.parse(str(CASES / case_id / device_file)).getroot()
        assert device.tag == "interface", f"{case_id}: extend this test to {device.tag}"
        model = device.find("model")
        legacy = machine == "pc" or (model.get("type") if model is not None else None) in Q35_LEGACY_NIC_MODELS
        summary = summarise(read(f"{case_id}/{machine}"))
        assert summary is not None
        assert summary.free["PCI" if legacy else "PCIe"] == 0, f"{case_id} on {machine}: {summary.line()}"
