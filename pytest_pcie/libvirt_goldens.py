"""libvirt's own qemuxml2xml goldens replayed through the reference model (issue #14).

libvirt's test suite pins, for thousands of input domains, the XML its parser and post-parse code
store: the pairs live in ``tests/qemuxml2argvdata`` (inputs) + ``tests/qemuxml2xmloutdata``
(outputs) up to 9.x and in ``tests/qemuxmlconfdata`` from 10.x on.  An output named
``NAME.x86_64-latest.xml`` was produced with the newest QEMU capabilities of that tree,
``NAME.x86_64-X.Y.Z.xml`` with QEMU X.Y.Z's, and a bare ``NAME.xml`` (old layout only) with a
hand-picked set of capability flags that no real QEMU has.

For each pair this module runs the matching reference profile's ``define`` on the input and
compares only what the reference model is about: the PCI controllers (type/index/model) and each
device's PCI address, with devices paired as golden comparisons pair them
(:func:`pytest_pcie.golden.identify` on :func:`pytest_pcie.normalise.normalise` documents).
Nothing of libvirt's is copied here: the files are read from a source tree outside the repository.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from lxml import etree

from pytest_pcie import reference
from pytest_pcie.golden import identify
from pytest_pcie.normalise import machine_family, normalise
from pytest_pcie.outcome import Outcome

X86 = "x86_64"
FAMILIES = frozenset({"pc", "q35"})
# The old layout's outputs: NAME.xml (flag caps), NAME.ARCH-latest.xml, NAME.ARCH-X.Y.Z[.suffix].xml
_OUTPUT = re.compile(r"^(?P<name>.+?)\.(?P<arch>[a-z0-9_]+)-(?P<caps>latest|\d+\.\d+\.\d+)(?P<extra>[.+][^/]*)?\.xml$")
_ARCHES = frozenset({
    "x86_64", "i686", "aarch64", "armv7l", "armv6l", "ppc64", "ppc", "ppc64le", "s390x", "riscv64",
    "mips", "mips64", "mipsel", "sparc", "loongarch64", "sh4", "m68k",
})  # fmt: skip


class Verdict(Enum):
    AGREE = "agree"
    DISAGREE = "disagree"
    REFUSED = "refused"
    SKIPPED = "skipped"
    CRASHED = "crashed"  # the reference raised something other than LibvirtError: a bug of ours


@dataclass(frozen=True)
class GoldenPair:
    """One qemuxml2xml test: its input, its expected output and the capabilities it was made with.

    ``caps`` is ``latest``, a QEMU version, or ``flags`` (a hand-picked capability set)."""

    name: str
    input: Path
    output: Path
    arch: str
    caps: str
    variant: str = ""  # e.g. ".abi-update"

    @property
    def label(self) -> str:
        suffix = "" if self.caps == "flags" else f".{self.arch}-{self.caps}"
        return f"{self.name}{suffix}{self.variant}"


@dataclass(frozen=True)
class Result:
    pair: GoldenPair
    verdict: Verdict
    detail: str = ""  # the first difference, the refusal message, or the skip reason


class SourceTreeError(Exception):
    """The directory given is not a libvirt source tree with qemuxml2xml test data."""


def discover(tree: Path) -> list[GoldenPair]:
    """Every input/output pair of the qemuxml2xml tests in the libvirt source tree ``tree``."""
    tests = tree / "tests"
    merged = tests / "qemuxmlconfdata"
    if merged.is_dir():
        return sorted(_pairs(merged, merged, flag_outputs=False), key=lambda pair: pair.label)
    inputs, outputs = tests / "qemuxml2argvdata", tests / "qemuxml2xmloutdata"
    if inputs.is_dir() and outputs.is_dir():
        return sorted(_pairs(inputs, outputs, flag_outputs=True), key=lambda pair: pair.label)
    raise SourceTreeError(
        f"{tree}: no tests/qemuxmlconfdata nor tests/qemuxml2argvdata + tests/qemuxml2xmloutdata; "
        "give the top directory of an unpacked libvirt source tree"
    )


def _pairs(inputs: Path, outputs: Path, *, flag_outputs: bool) -> Iterator[GoldenPair]:
    for output in sorted(outputs.glob("*.xml")):
        match = _OUTPUT.match(output.name)
        if match is not None and match["arch"] in _ARCHES:
            source = inputs / f"{match['name']}.xml"
            if source.is_file():
                yield GoldenPair(match["name"], source, output, match["arch"], match["caps"], match["extra"] or "")
        elif flag_outputs and match is None:
            name = output.name.removesuffix(".xml")
            source = inputs / output.name
            if source.is_file():
                yield GoldenPair(name, source, output, _arch_of(output) or "?", "flags")


def _arch_of(path: Path) -> str | None:
    try:
        domain = _parse(path.read_bytes())
    except etree.XMLSyntaxError:
        return None
    os_type = domain.find("os/type")
    return None if os_type is None else os_type.get("arch")


def _parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True))


# Inputs whose devices the reference does not model at all: (reason, XPath in the input).
OUT_OF_SCOPE: tuple[tuple[str, str], ...] = (
    ("domain type is not qemu/kvm", "self::domain[@type!='qemu' and @type!='kvm']"),
    ("PCI multi-domain (zPCI/pci domain != 0)", ".//devices//address[@type='pci'][@domain!='0' and @domain!='0x0000']"),
    ("zPCI address", ".//devices//address/zpci"),
)


def check(pair: GoldenPair, profile: str, *, include_flag_caps: bool = False) -> Result:
    """Replay ``pair`` through the reference under ``profile`` and say whether the PCI topology agrees."""
    if pair.arch != X86:
        return Result(pair, Verdict.SKIPPED, f"not x86_64 ({pair.arch})")
    if pair.caps == "flags" and not include_flag_caps:
        return Result(pair, Verdict.SKIPPED, "hand-picked capability flags (no real QEMU)")
    try:
        expected_domain = _parse(pair.output.read_bytes())
        source_text = pair.input.read_text(encoding="utf-8")
        input_domain = _parse(source_text.encode("utf-8"))
    except (etree.XMLSyntaxError, UnicodeDecodeError, ValueError) as error:
        return Result(pair, Verdict.SKIPPED, f"unreadable XML ({type(error).__name__})")
    family = machine_family(expected_domain)
    if family not in FAMILIES:
        return Result(pair, Verdict.SKIPPED, f"machine not pc/q35 ({family})")
    if expected_domain.find(".//devices//address[@type='pci']") is None:
        return Result(pair, Verdict.SKIPPED, "no PCI address in libvirt's output")
    for reason, xpath in OUT_OF_SCOPE:
        if input_domain.xpath(xpath):
            return Result(pair, Verdict.SKIPPED, reason)
    try:
        actual_xml = reference.define(source_text, profile=profile)
    except reference.LibvirtError as error:
        return Result(pair, Verdict.REFUSED, error.message)
    except Exception as error:  # a crash of the model is a finding, not a reason to stop
        return Result(pair, Verdict.CRASHED, f": {type(error).__name__}: {error}")
    expected_xml = etree.tostring(expected_domain, encoding="unicode")
    difference = first_difference(expected_xml, actual_xml)
    if difference is None:
        return Result(pair, Verdict.AGREE)
    return Result(pair, Verdict.DISAGREE, difference)


def topology(domain_xml: str) -> dict[tuple[str, ...], tuple[str, str]]:
    """The PCI topology of a domain XML: each device's pairing key -> (label, what is compared).

    What is compared is a PCI controller's model plus its PCI address, or any other device's PCI
    address ("-" when it has none).  Devices without a PCI address that are not PCI controllers
    are left out: where they go is not PCI topology."""
    document = normalise(Outcome(domain_xml), "?")
    devices = document.find("devices")
    assert devices is not None
    result: dict[tuple[str, ...], tuple[str, str]] = {}
    for device in identify(devices):
        element, key = device.element, device.key
        address = element.find("address")
        where = "-" if address is None else _address_text(address)
        if element.tag == "controller" and element.get("type") == "pci":
            result[key] = (device.label, f"model={element.get('model')} at {where}")
        elif address is None:
            continue
        elif key in result:
            # USB companions share their master's type+index (and 11.x prints the master first):
            # compare the set of addresses the controllers of one type+index take.
            label, taken = result[key]
            result[key] = (label, ", ".join(sorted([*taken.split(", "), where])))
        else:
            result[key] = (device.label, where)
    return result


def _address_text(address: etree._Element) -> str:
    text = "{}:{}:{}.{}".format(*(address.get(part, "?") for part in ("domain", "bus", "slot", "function")))
    return text + (" multifunction" if address.get("multifunction") == "on" else "")


def first_difference(expected_xml: str, actual_xml: str) -> str | None:
    """The first PCI-topology difference between libvirt's XML and the reference's, or None."""
    expected, actual = topology(expected_xml), topology(actual_xml)
    for key, (label, value) in expected.items():
        if key not in actual:
            return f"{label}: libvirt {value}, reference has no such device"
        if actual[key][1] != value:
            return f"{label}: libvirt {value}, reference {actual[key][1]}"
    for key, (label, value) in actual.items():
        if key not in expected:
            return f"{label}: reference {value}, libvirt has no such device"
    return None


@dataclass(frozen=True)
class Summary:
    version: str
    profile: str
    results: tuple[Result, ...]

    def count(self, verdict: Verdict) -> int:
        return sum(1 for result in self.results if result.verdict is verdict)

    def skipped_by_reason(self) -> Counter[str]:
        return Counter(_reason_class(r.detail) for r in self.results if r.verdict is Verdict.SKIPPED)

    def considered(self) -> int:
        return len(self.results) - self.count(Verdict.SKIPPED)


def _reason_class(detail: str) -> str:
    return re.sub(r" \(.*\)$", "", detail) if detail.startswith(("not x86_64", "machine not")) else detail


def run(tree: Path, version: str, profile: str, *, include_flag_caps: bool = False) -> Summary:
    results = tuple(check(pair, profile, include_flag_caps=include_flag_caps) for pair in discover(tree))
    return Summary(version, profile, results)


def table(summary: Summary) -> list[str]:
    """The per-version table: pairs, considered, agree, disagree, refused, then skips by reason."""
    lines = [
        f"libvirt {summary.version} goldens vs reference profile {summary.profile}",
        f"  pairs found       {len(summary.results)}",
        f"  considered        {summary.considered()}",
        f"  agree             {summary.count(Verdict.AGREE)}",
        f"  disagree          {summary.count(Verdict.DISAGREE)}",
        f"  reference refuses {summary.count(Verdict.REFUSED)}",
        f"  reference crashes {summary.count(Verdict.CRASHED)}",
        f"  skipped           {summary.count(Verdict.SKIPPED)}",
    ]
    lines += [f"    {count:5d}  {reason}" for reason, count in summary.skipped_by_reason().most_common()]
    return lines


def details(results: Iterable[Result], verdicts: Iterable[Verdict]) -> list[str]:
    wanted = set(verdicts)
    return [f"{r.verdict.value:9s} {r.pair.label}: {r.detail}" for r in results if r.verdict in wanted]
