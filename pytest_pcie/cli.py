"""``pcie-assign``: run one domain and a list of attach/detach steps through a backend, from a shell.

Scripts of other projects call this, so its interface is kept stable (docs/options.md)::

    pcie-assign INPUT.xml [--machine M] [--attach DEV.xml | --detach DEV.xml ...] [--live]
                [--backend B] [--libvirt-uri URI] [--normalize | --tree] [--svg FILE]

Steps run in the order given on the command line.  The command builds the same :class:`Case` the
plugin reads from a folder and hands it to the same backend, so there is one code path for running
steps.  Exit status: 0 success, 1 a step (or the define) was refused, with libvirt's message on
stderr, 2 bad input, 3 backend unavailable.  ``--svg`` writes its picture even when a step was
refused (the refusal is drawn as a banner), since that is when a picture helps most.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lxml import etree

from pytest_pcie import golden, svg
from pytest_pcie.backends import (
    DEFAULT_BACKEND,
    DEFAULT_LIBVIRT_URI,
    BackendSettings,
    BackendUnavailable,
    backend_names,
    create_backend,
)
from pytest_pcie.cases import Action, Case, CaseError, Operation, Step, read_xml_file
from pytest_pcie.domain import DomainInputError, prepare_domain
from pytest_pcie.machines import MACHINE_FAMILIES
from pytest_pcie.normalise import machine_family, normalise
from pytest_pcie.outcome import Outcome
from pytest_pcie.reference.profiles import (
    NEWEST_PROFILE,
    PROFILES,
    RULE_CHANGES,
    UnknownProfile,
    profile_named,
)
from pytest_pcie.tree import render_tree, summary_line

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
PROGRAM = "pcie-assign"


class InputProblem(Exception):
    """Something wrong with what the user passed; ``str()`` is the one line to print."""


class _AppendStep(argparse.Action):
    """Collect --attach and --detach (``const`` says which) into one list, in command-line order."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        steps: list[tuple[Action, Path]] = [*(getattr(namespace, self.dest) or []), (self.const, Path(values))]
        setattr(namespace, self.dest, steps)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Show the PCI topology libvirt gives a QEMU domain (x86_64 pc/q35, aarch64 and riscv64 virt) "
        "after attach/detach steps.",
    )
    parser.add_argument(
        "input", metavar="INPUT.xml", nargs="?", help="domain XML (may be as short as <domain><devices/></domain>)"
    )
    parser.add_argument(
        "--machine",
        choices=sorted(MACHINE_FAMILIES),
        help="machine family; default: the one INPUT.xml names",
    )
    parser.add_argument(
        "--attach",
        dest="steps",
        action=_AppendStep,
        const=Action.ATTACH,
        metavar="DEV.xml",
        help="attach a device (repeatable)",
    )
    parser.add_argument(
        "--detach",
        dest="steps",
        action=_AppendStep,
        const=Action.DETACH,
        metavar="DEV.xml",
        help="detach a device (repeatable)",
    )
    parser.add_argument("--live", action="store_true", help="attach to the running guest (hotplug) instead of --config")
    parser.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        help=f"reference (default) or libvirt; known: {', '.join(backend_names())}",
    )
    parser.add_argument("--libvirt-uri", default=DEFAULT_LIBVIRT_URI, help=f"default {DEFAULT_LIBVIRT_URI}")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="VERSION",
        help=f"libvirt release the reference models: {', '.join(PROFILES)} (default {NEWEST_PROFILE.name})",
    )
    parser.add_argument(
        "--profiles", action="store_true", help="list the reference profiles and the rule changes of each, then exit"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--normalize", action="store_true", help="print the normalised form goldens use")
    output.add_argument(
        "--tree", action="store_true", help="print the topology as a text tree, with a summary line last"
    )
    parser.add_argument("--svg", metavar="FILE", type=Path, help="also write the topology as an SVG picture to FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.profiles:
        sys.stdout.write(describe_profiles())
        return EXIT_OK
    if arguments.input is None:
        parser.error("name the domain XML to run (INPUT.xml), or ask for --profiles")
    if arguments.profile is not None:
        if arguments.backend != DEFAULT_BACKEND:
            return _fail(EXIT_BAD_INPUT, f"--profile chooses what the reference models; --backend {arguments.backend} "
                         "is a real libvirt, whose own version counts (drop --profile)")  # fmt: skip
        try:
            profile_named(arguments.profile)
        except UnknownProfile as exc:
            return _fail(EXIT_BAD_INPUT, str(exc))
    try:
        case, machine = build_case(Path(arguments.input), arguments.machine, arguments.steps or [], arguments.live)
    except InputProblem as exc:
        return _fail(EXIT_BAD_INPUT, str(exc))
    try:
        settings = BackendSettings(libvirt_uri=arguments.libvirt_uri, reference_profile=arguments.profile)
        backend = create_backend(arguments.backend, settings)
    except BackendUnavailable as exc:
        return _fail(EXIT_UNAVAILABLE, f"backend {arguments.backend!r} is unavailable: {exc}")
    try:
        outcome = backend.run(case, machine)
    finally:
        backend.close()
    if arguments.svg is not None:
        try:
            write_svg(arguments.svg, normalise(outcome, machine))
        except OSError as exc:
            return _fail(
                EXIT_BAD_INPUT, f"{arguments.svg}: cannot write the SVG ({exc.strerror}); pick a writable path"
            )
    if outcome.failure is not None:
        failure = outcome.failure
        return _fail(EXIT_REFUSED, f"step {failure.step} ({failure.label}) refused: {failure.message}")
    sys.stdout.write(render_outcome(outcome, machine, normalised=arguments.normalize, tree=arguments.tree))
    return EXIT_OK


def describe_profiles() -> str:
    """The profiles, newest last, each with the rule changes it brings over the one before."""
    lines: list[str] = []
    for profile in PROFILES.values():
        default = " (default)" if profile is NEWEST_PROFILE else ""
        lines.append(f"{profile.name}: {profile.describe()}{default}")
        for change in RULE_CHANGES:
            if change.since == profile.libvirt:
                lines.append(f"  {change.rule}: {change.summary}")
    return "\n".join(lines) + "\n"


def build_case(input_path: Path, machine: str | None, steps: list[tuple[Action, Path]], live: bool) -> tuple[Case, str]:
    """The throwaway case the command runs, and the machine to run it on."""
    if live and any(action is Action.DETACH for action, _ in steps):
        raise InputProblem("--detach cannot be combined with --live: live detach needs a guest OS to answer the unplug")
    input_xml = _read(input_path, root_tag="domain")
    named = machine_family(etree.fromstring(input_xml.encode("utf-8")))
    if machine is not None and named is not None and named != machine:
        raise InputProblem(f"{input_path}: names machine {named!r} but --machine is {machine!r}; drop one of them")
    machine = machine or _machine_named_in(input_path, named)
    try:
        prepare_domain(input_xml, machine)
    except DomainInputError as exc:
        raise InputProblem(f"{input_path}: {exc}") from None
    operation = Operation.ATTACH_LIVE if live else Operation.ATTACH_OFFLINE if steps else Operation.DEFINE
    case_steps = tuple(Step(action, path, _read(path)) for action, path in steps)
    case = Case(input_path.parent, input_path.stem, PROGRAM, (machine,), operation, input_xml, case_steps, None)
    return case, machine


def render_outcome(outcome: Outcome, machine: str, *, normalised: bool = False, tree: bool = False) -> str:
    """What the command prints for a successful run: domain XML, normalised form, or tree."""
    if normalised or tree:
        document = normalise(outcome, machine)
        return golden.render(document) if normalised else "\n".join(_tree_lines(document)) + "\n"
    return outcome.domain_xml or ""


def write_svg(path: Path, document: etree._Element) -> None:
    """Write the SVG picture of a normalised document to ``path``."""
    path.write_text(svg.render_svg(document), encoding="utf-8")


def _tree_lines(document: etree._Element) -> list[str]:
    summary = summary_line(document)
    return [*render_tree(document), *([summary] if summary else [])]


def _read(path: Path, root_tag: str | None = None) -> str:
    if not path.is_file():
        raise InputProblem(f"{path}: no such file")
    try:
        return read_xml_file(path, root_tag=root_tag)
    except CaseError as exc:
        raise InputProblem(str(exc)) from None


def _machine_named_in(input_path: Path, named: str | None) -> str:
    known = ", ".join(sorted(MACHINE_FAMILIES))
    if named is None:
        raise InputProblem(f"{input_path}: names no machine in <os><type machine=...>; pass --machine ({known})")
    if named not in MACHINE_FAMILIES:
        raise InputProblem(f"{input_path}: machine {named!r} is not one pytest-pcie knows; pass --machine ({known})")
    return named


def _fail(status: int, message: str) -> int:
    print(f"{PROGRAM}: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
