"""pytest_pcie.libvirt_goldens and scripts/libvirt-goldens on tiny hand-made source trees.

The trees mimic the two layouts of libvirt's qemuxml2xml test data; the reference's define is
replaced by a stub where a test is about the comparison rather than the model.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_pcie import libvirt_goldens as lg
from pytest_pcie.reference import LibvirtError

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "libvirt-goldens"


def domain(devices: str, *, machine: str = "pc", arch: str = "x86_64", kind: str = "kvm") -> str:
    return (
        f"<domain type='{kind}'><name>t</name><memory>1</memory>"
        f"<os><type arch='{arch}' machine='{machine}'>hvm</type></os>"
        f"<devices>{devices}</devices></domain>"
    )


def pci(slot: int, function: int = 0, bus: int = 0, multifunction: bool = False) -> str:
    extra = " multifunction='on'" if multifunction else ""
    return f"<address type='pci' domain='0x0000' bus='{bus:#04x}' slot='{slot:#04x}' function='{function:#x}'{extra}/>"


ROOT = "<controller type='pci' index='0' model='pci-root'/>"
BALLOON_3 = f"<memballoon model='virtio'>{pci(3)}</memballoon>"
USB = f"<controller type='usb' index='0' model='piix3-uhci'>{pci(1, 2)}</controller>"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def merged(tmp_path: Path) -> Path:
    data = tmp_path / "tests" / "qemuxmlconfdata"
    write(data / "a.xml", domain(ROOT))
    write(data / "a.x86_64-latest.xml", domain(ROOT + BALLOON_3))
    write(data / "a.x86_64-9.2.0.xml", domain(ROOT + BALLOON_3))
    write(data / "a.x86_64-latest.abi-update.xml", domain(ROOT + BALLOON_3))
    write(data / "a.aarch64-latest.xml", domain("", machine="virt", arch="aarch64"))
    write(data / "a.x86_64-latest.args", "-machine pc")
    write(data / "orphan.x86_64-latest.xml", domain(ROOT))  # no input: not a pair
    return tmp_path


def test_discover_pairs_merged_layout_by_file_name(merged: Path) -> None:
    pairs = lg.discover(merged)
    assert [(p.label, p.arch, p.caps, p.variant) for p in pairs] == [
        ("a.aarch64-latest", "aarch64", "latest", ""),
        ("a.x86_64-9.2.0", "x86_64", "9.2.0", ""),
        ("a.x86_64-latest", "x86_64", "latest", ""),
        ("a.x86_64-latest.abi-update", "x86_64", "latest", ".abi-update"),
    ]
    assert {p.input.name for p in pairs} == {"a.xml"}


def test_discover_old_layout_marks_bare_outputs_as_flag_caps(tmp_path: Path) -> None:
    write(tmp_path / "tests/qemuxml2argvdata/b.xml", domain(ROOT))
    write(tmp_path / "tests/qemuxml2xmloutdata/b.xml", domain(ROOT + BALLOON_3))
    write(tmp_path / "tests/qemuxml2xmloutdata/b.x86_64-latest.xml", domain(ROOT + BALLOON_3))
    pairs = lg.discover(tmp_path)
    assert [(p.label, p.caps, p.arch) for p in pairs] == [
        ("b", "flags", "x86_64"),
        ("b.x86_64-latest", "latest", "x86_64"),
    ]


def test_discover_refuses_a_directory_that_is_no_libvirt_tree(tmp_path: Path) -> None:
    with pytest.raises(lg.SourceTreeError, match=str(tmp_path)):
        lg.discover(tmp_path)


def test_same_topology_agrees_even_with_other_non_pci_details() -> None:
    libvirt = domain(ROOT + USB + BALLOON_3 + "<input type='mouse' bus='ps2'/>")
    ours = domain(USB.replace("piix3-uhci", "piix3-uhci' ports='2") + ROOT + BALLOON_3)
    assert lg.first_difference(libvirt, ours) is None


@pytest.mark.parametrize(
    ("ours", "words"),
    [
        (
            domain(ROOT + USB + f"<memballoon model='virtio'>{pci(4)}</memballoon>"),
            "memballoon #1: libvirt 0x0000:0x00:0x03",
        ),
        (domain(ROOT + USB), "memballoon #1: libvirt 0x0000:0x00:0x03.0x0, reference has no such device"),
        (
            domain(ROOT.replace("pci-root", "pcie-root") + USB + BALLOON_3),
            "model=pci-root at -, reference model=pcie-root",
        ),
        (
            domain(
                ROOT + USB + BALLOON_3 + f"<controller type='pci' index='1' model='pci-bridge'>{pci(5)}</controller>"
            ),
            "controller pci index=1 (pci-bridge): reference model=pci-bridge at 0x0000:0x00:0x05.0x0, libvirt has no",
        ),
    ],
)
def test_first_difference_names_the_device_and_both_sides(ours: str, words: str) -> None:
    difference = lg.first_difference(domain(ROOT + USB + BALLOON_3), ours)
    assert difference is not None
    assert words in difference


def test_usb_companions_compare_as_a_set_whatever_their_printing_order() -> None:
    master = f"<controller type='usb' index='0' model='ich9-ehci1'>{pci(29, 7)}</controller>"
    companion = f"<controller type='usb' index='0' model='ich9-uhci1'>{pci(29, 0, multifunction=True)}</controller>"
    q35 = "<controller type='pci' index='0' model='pcie-root'/>"
    assert lg.first_difference(domain(q35 + master + companion), domain(q35 + companion + master)) is None
    moved = companion.replace("function='0x0'", "function='0x1'")
    assert lg.first_difference(domain(q35 + master + companion), domain(q35 + moved + master)) is not None


def pair_in(tmp_path: Path, libvirt_output: str, *, arch: str = "x86_64", caps: str = "latest") -> lg.GoldenPair:
    source = write(tmp_path / "in.xml", domain(ROOT))
    output = write(tmp_path / "out.xml", libvirt_output)
    return lg.GoldenPair("t", source, output, arch, caps)


@pytest.mark.parametrize(
    ("output", "arch", "caps", "reason"),
    [
        (domain(BALLOON_3, machine="virt", arch="aarch64"), "aarch64", "latest", "not x86_64 (aarch64)"),
        (domain(ROOT + BALLOON_3), "x86_64", "flags", "hand-picked capability flags"),
        (domain(BALLOON_3, machine="isapc"), "x86_64", "latest", "machine not pc/q35"),
        (domain(ROOT + "<memballoon model='none'/>"), "x86_64", "latest", "no PCI address"),
        (domain(ROOT + BALLOON_3, kind="xen"), "x86_64", "latest", "domain type is not qemu/kvm"),
    ],
)
def test_check_skips_with_a_reason(tmp_path: Path, output: str, arch: str, caps: str, reason: str) -> None:
    pair = pair_in(tmp_path, output, arch=arch, caps=caps)
    if "xen" in output:  # the input is what is out of scope
        write(pair.input, output)
    result = lg.check(pair, "9.0.0")
    assert result.verdict is lg.Verdict.SKIPPED
    assert result.detail.startswith(reason)


def test_check_verdicts_follow_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = pair_in(tmp_path, domain(ROOT + BALLOON_3))
    answers: list[object] = [
        domain(ROOT + BALLOON_3),
        domain(ROOT + f"<memballoon model='virtio'>{pci(2)}</memballoon>"),
        LibvirtError("internal error: No more available PCI slots"),
        KeyError("oops"),
    ]
    seen_profiles: list[object] = []

    def fake_define(xml: str, *, profile: object = None) -> str:
        seen_profiles.append(profile)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, str)
        return answer

    monkeypatch.setattr(lg.reference, "define", fake_define)
    results = [lg.check(pair, "11.3.0") for _ in range(4)]
    assert [r.verdict for r in results] == [
        lg.Verdict.AGREE,
        lg.Verdict.DISAGREE,
        lg.Verdict.REFUSED,
        lg.Verdict.CRASHED,
    ]
    assert "memballoon #1" in results[1].detail
    assert results[2].detail == "internal error: No more available PCI slots"
    assert "KeyError" in results[3].detail
    assert seen_profiles == ["11.3.0"] * 4


def test_check_runs_the_real_reference_on_a_tiny_input(tmp_path: Path) -> None:
    # The output is deliberately wrong (balloon on slot 0x1f): whatever the model places, it is
    # compared, so a defined tiny pc guest can only disagree here, never be skipped or refused.
    pair = pair_in(tmp_path, domain(ROOT + f"<memballoon model='virtio'>{pci(31)}</memballoon>"))
    write(pair.input, domain("<memballoon model='virtio'/>"))
    result = lg.check(pair, "9.0.0")
    assert result.verdict is lg.Verdict.DISAGREE, result
    assert result.detail.startswith("memballoon #1: libvirt 0x0000:0x00:0x1f.0x0, reference 0x0000:0x00:0x")


def test_table_counts_every_pair_once(merged: Path) -> None:
    summary = lg.run(merged, "11.3.0", "11.3.0")
    lines = lg.table(summary)
    assert lines[0] == "libvirt 11.3.0 goldens vs reference profile 11.3.0"
    counts = {line.split()[0]: int(line.split()[-1]) for line in lines[1:3]}
    assert counts == {"pairs": 4, "considered": summary.considered()}
    assert summary.considered() + summary.count(lg.Verdict.SKIPPED) == 4
    assert "not x86_64" in "\n".join(lines)


def test_script_prints_the_table_and_lists_on_request(merged: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--profile", "11.3.0", "--show", "skipped", str(merged)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pairs found       4" in done.stdout
    assert "skipped   a.aarch64-latest: not x86_64 (aarch64)" in done.stdout


def test_script_says_which_directory_is_wrong(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--profile", "9.0.0", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert str(tmp_path) in done.stderr and "unpacked libvirt source tree" in done.stderr
    assert done.stdout == ""
