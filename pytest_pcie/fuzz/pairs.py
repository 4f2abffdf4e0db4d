"""Two define problems in one domain: the reference must name the one libvirt names first.

A domain with several problems fails with one message, and which one depends on the order in which
libvirt parses, post-parses, assigns addresses and validates.  The corpus already holds, per
machine, every define a release refuses (a case with ``expect-error`` and no steps); joining the
devices of two of them gives a domain with (at least) two problems.  Running each such pair on the
reference and on a daemon checks the order over every pair of known problems instead of the few
a person thought of (e.g. a USB input with USB disabled together with a bad PCI address).
"""

from __future__ import annotations

import itertools
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from pytest_pcie.backends.base import Backend
from pytest_pcie.cases import CASE_FILE, INPUT_FILE, CaseError, Operation, load_case
from pytest_pcie.fuzz.differ import Judgement, judge


@dataclass(frozen=True)
class Problem:
    """A refused define of the corpus: its case id, machine and the device elements of its input."""

    case_id: str
    machine: str
    devices: tuple[bytes, ...]


@dataclass(frozen=True)
class PairResult:
    first: Problem
    second: Problem
    judgement: Judgement

    def line(self) -> str:
        said = "; ".join(self.judgement.lines) or self.judgement.kind
        return f"{self.first.machine}: {self.first.case_id} + {self.second.case_id}: {said}"


# Domain children that only name the domain; the harness renames it anyway.
NAMING = frozenset({"name", "uuid"})


def corpus_problems(cases_root: Path) -> list[Problem]:
    """Every define-only case with an expected error whose input is nothing but ``<devices>``
    (domain-level settings such as ``<features>`` would not combine meaningfully)."""
    problems: list[Problem] = []
    for toml in sorted(cases_root.rglob("case.toml")):
        try:
            case = load_case(toml.parent, cases_root)
        except CaseError:
            continue
        if case.operation is not Operation.DEFINE or case.steps or case.expect_error is None:
            continue
        root = etree.fromstring(case.input_xml.encode())
        if [child.tag for child in root if isinstance(child.tag, str) and child.tag not in NAMING] != ["devices"]:
            continue
        devices_element = root.find("devices")
        assert devices_element is not None
        devices = tuple(etree.tostring(child) for child in devices_element if isinstance(child.tag, str))
        problems.extend(Problem(case.case_id, machine, devices) for machine in case.machines)
    return problems


def pairs(problems: list[Problem], count: int, seed: int) -> list[tuple[Problem, Problem]]:
    """``count`` ordered pairs of problems of one machine, drawn without repetition by ``seed``
    (every pair when ``count`` is at least their number)."""
    by_machine: dict[str, list[Problem]] = {}
    for problem in problems:
        by_machine.setdefault(problem.machine, []).append(problem)
    every = [pair for group in by_machine.values() for pair in itertools.permutations(group, 2)]
    random.Random(seed).shuffle(every)
    return every[:count]


def joined_input(first: Problem, second: Problem) -> str:
    """A domain holding the devices of both, each distinct element once, first's before second's."""
    seen: dict[bytes, None] = dict.fromkeys((*first.devices, *second.devices))
    return "<domain><devices>" + "".join(element.decode() for element in seen) + "</devices></domain>"


def run_pairs(
    chosen: list[tuple[Problem, Problem]], reference: Backend, libvirt: Backend
) -> Iterator[PairResult]:
    """Judge each pair on both backends, through a real case folder as every other run does."""
    with tempfile.TemporaryDirectory(prefix="pcie-pairs-") as root:
        folder = Path(root) / "pair"
        folder.mkdir()
        for first, second in chosen:
            (folder / INPUT_FILE).write_text(joined_input(first, second), encoding="utf-8")
            (folder / CASE_FILE).write_text(
                f'description = "{first.case_id} + {second.case_id}"\n'
                f'machines = ["{first.machine}"]\noperation = "define"\n',
                encoding="utf-8",
            )
            case = load_case(folder, Path(root))
            yield PairResult(first, second, judge(case, first.machine, reference, libvirt))
