"""What to boot: the laid-out PCI topology of a golden, or of a domain XML run through a backend.

Both inputs end as the same thing, the normalised ``<outcome>`` document a golden holds, in which
every controller and device already has its PCI address.  A golden is used as it is: it records
what libvirt (or the reference) did.  A domain XML may lack addresses, as a case input does, so
it is first defined on a backend (the reference by default, real libvirt with ``--backend
libvirt``), exactly as ``pcie-assign`` would, and the outcome is normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from pytest_pcie.backends import BackendSettings, BackendUnavailable, create_backend
from pytest_pcie.cases import Case, Operation
from pytest_pcie.domain import DomainInputError, prepare_domain
from pytest_pcie.machines import MACHINE_FAMILIES
from pytest_pcie.normalise import DEVICES_TAG, FAILURE_TAG, ROOT_TAG, machine_family, normalise

PROGRAM = "pcie-bootcost"


class TopologyError(Exception):
    """The input cannot be made into a topology to boot; ``str()`` is the one line to print."""


@dataclass(frozen=True)
class Topology:
    """A laid-out topology: the normalised document and the machine family it is for."""

    label: str  # what reports call it: a file path, or a sweep point's name
    machine: str
    document: etree._Element

    @property
    def devices(self) -> list[etree._Element]:
        found = self.document.find(DEVICES_TAG)
        return [] if found is None else [child for child in found if isinstance(child.tag, str)]


def load_topology(
    path: Path, machine: str | None = None, backend: str = "reference", settings: BackendSettings | None = None
) -> Topology:
    """The topology in ``path``: a golden ``<outcome>`` or a ``<domain>`` laid out by ``backend``."""
    try:
        text = path.read_text(encoding="utf-8")
        root = etree.fromstring(text.encode("utf-8"), etree.XMLParser(remove_blank_text=True))
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read it ({exc.strerror})") from None
    except (UnicodeDecodeError, etree.XMLSyntaxError) as exc:
        raise TopologyError(f"{path}: not well-formed XML ({exc})") from None
    if root.tag == ROOT_TAG:
        return golden_topology(root, str(path), machine)
    if root.tag == "domain":
        return domain_topology(text, str(path), machine or _named_machine(root, path), backend, settings)
    raise TopologyError(f"{path}: root element is <{root.tag}>; expected a golden <{ROOT_TAG}> or a <domain>")


def golden_topology(document: etree._Element, label: str, machine: str | None = None) -> Topology:
    """A golden as it is; its own machine attribute must agree with ``machine`` when both are given."""
    recorded = document.get("machine")
    if recorded not in MACHINE_FAMILIES:
        raise TopologyError(f"{label}: golden names machine {recorded!r}; known: {', '.join(sorted(MACHINE_FAMILIES))}")
    if machine is not None and machine != recorded:
        raise TopologyError(f"{label}: golden is for {recorded!r} but --machine is {machine!r}; drop --machine")
    if document.find(DEVICES_TAG) is None:
        failure = document.find(FAILURE_TAG)
        why = f": {failure.text}" if failure is not None and failure.text else ""
        raise TopologyError(f"{label}: golden records a refused define, so there is no topology to boot{why}")
    return Topology(label, recorded, document)


def domain_topology(
    input_xml: str, label: str, machine: str, backend: str = "reference", settings: BackendSettings | None = None
) -> Topology:
    """``input_xml`` defined on ``backend`` for ``machine``, normalised like a golden."""
    try:
        prepare_domain(input_xml, machine)
    except DomainInputError as exc:
        raise TopologyError(f"{label}: {exc}") from None
    case = Case(Path(label).parent, Path(label).stem, PROGRAM, (machine,), Operation.DEFINE, input_xml, (), None)
    try:
        runner = create_backend(backend, settings or BackendSettings())
    except BackendUnavailable as exc:
        raise TopologyError(f"backend {backend!r} is unavailable: {exc}") from None
    try:
        outcome = runner.run(case, machine)
    finally:
        runner.close()
    if outcome.failure is not None:
        raise TopologyError(f"{label}: {backend} refused the domain: {outcome.failure.message}")
    return Topology(label, machine, normalise(outcome, machine))


def _named_machine(domain: etree._Element, path: Path) -> str:
    named = machine_family(domain)
    if named is None:
        raise TopologyError(
            f"{path}: names no machine in <os><type machine=...>; pass --machine "
            f"({', '.join(sorted(MACHINE_FAMILIES))})"
        )
    if named not in MACHINE_FAMILIES:
        raise TopologyError(f"{path}: machine {named!r} is not one pytest-pcie knows; pass --machine")
    return named
