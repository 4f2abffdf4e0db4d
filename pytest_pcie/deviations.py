"""Declared deviations: the topology rules a libvirt fork changes on purpose, written down once.

A fork keeps a small TOML file (``pcie-deviations.toml``, given by ``--pcie-deviations`` or the
ini key ``pcie_deviations``) that sets policy parameters of the reference model::

    # our libvirt adds no spare root port to a new q35 guest
    spare_root_ports = 0

Every key is a field of :class:`pytest_pcie.reference.policy.Policy`; docs/forks.md lists
each one with its type, default and the cases it affects.  The reference then predicts the fork's
topology: a case whose prediction under the fork's policy differs from the one under upstream's
*deviates* and is judged against that prediction (or against the fork's own golden for it), and
every other case is still judged against the shipped golden, so every rule the fork did not
declare is still checked against upstream.

This module reads the file and makes the predictions; it knows nothing of pytest.  Run it as
``python3 -m pytest_pcie.deviations FILE`` to list the cases a deviations file makes deviate.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from lxml import etree

from pytest_pcie import golden
from pytest_pcie.backends.reference import ReferenceBackend
from pytest_pcie.cases import Case, CaseError, find_case_folders, load_case
from pytest_pcie.normalise import normalise
from pytest_pcie.reference.policy import (
    DEFAULT_USB_MODELS,
    MAX_COUNT,
    PARAMETER_MACHINES,
    PARAMETER_RULES,
    UPSTREAM,
    Policy,
    using_policy,
)
from pytest_pcie.reference.profiles import current_profile

DEVIATIONS_FILE = "pcie-deviations.toml"
DOCS_PAGE = "docs/forks.md"


class DeviationError(Exception):
    """The deviations file is missing or malformed; ``str()`` is one line naming the file and the fix."""


@dataclass(frozen=True)
class Parameter:
    """One key of the deviations file: a :class:`Policy` field, described for people."""

    name: str
    kind: type
    rule: str
    machines: tuple[str, ...]  # the machine families where it can change anything
    # Values other than upstream's worth trying: to list the cases a parameter affects, and to
    # recognise a daemon that behaves as if it had been set.
    alternatives: tuple[object, ...]

    @property
    def default(self) -> object:
        return getattr(UPSTREAM, self.name)

    @property
    def type_name(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.kind is int:
            return f"an integer from 0 to {MAX_COUNT}"
        return "one of the strings " + ", ".join(f'"{model}"' for model in DEFAULT_USB_MODELS)

    @property
    def doc(self) -> str:
        """The field's docstring in :mod:`policy`, joined into one line."""
        return " ".join(_FIELD_DOCS.get(self.name, "").split())


def _alternatives(name: str) -> tuple[object, ...]:
    default = getattr(UPSTREAM, name)
    if isinstance(default, bool):
        return (not default,)
    if isinstance(default, int):
        return tuple(value for value in range(0, 5) if value != default)
    return tuple(model for model in DEFAULT_USB_MODELS if model != default)


PARAMETERS: dict[str, Parameter] = {
    f.name: Parameter(
        f.name, type(getattr(UPSTREAM, f.name)), PARAMETER_RULES[f.name], PARAMETER_MACHINES[f.name],
        _alternatives(f.name),
    )
    for f in fields(Policy)
}


def _field_docs() -> dict[str, str]:
    """The attribute docstrings of :class:`Policy` (the string after each field), by field name."""
    import ast
    import inspect

    from pytest_pcie.reference import policy as module

    tree = ast.parse(inspect.getsource(module))
    docs: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Policy":
            body = node.body
            for first, second in itertools.pairwise(body):
                if (
                    isinstance(first, ast.AnnAssign) and isinstance(first.target, ast.Name)
                    and isinstance(second, ast.Expr) and isinstance(second.value, ast.Constant)
                    and isinstance(second.value.value, str)
                ):
                    docs[first.target.id] = second.value.value
    return docs


_FIELD_DOCS = _field_docs()


@dataclass(frozen=True)
class Deviations:
    """A fork's declared deviations: the file they came from and the policy they make."""

    path: Path
    policy: Policy
    # (case id, machine, profile) -> the fork's prediction, or None where it equals upstream's:
    # each item asks once, and the answer is the same for every backend of one release.
    _expected: dict[tuple[str, str, str], etree._Element | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def summary(self) -> str:
        """``spare_root_ports = 0`` (every declared parameter), or ``none`` for an empty file."""
        return ", ".join(f"{name} = {toml_value(value)}" for name, value in self.policy.deviations().items()) or "none"

    def applied(self) -> AbstractContextManager[Policy]:
        """A context in which the reference backend models the fork (the libvirt backend never
        consults the reference, so it is unaffected)."""
        return using_policy(self.policy)

    def expected(self, case: Case, machine: str) -> etree._Element | None:
        """What the reference predicts for the fork when the declared policy changes what ``case``
        gives on ``machine`` (the case deviates); None when it does not."""
        key = (case.case_id, machine, current_profile().name)  # one prediction per release
        if key not in self._expected:
            self._expected[key] = None
            if self.policy.deviations():
                fork = predict(case, machine, self.policy)
                if golden.canonical_text(fork) != golden.canonical_text(predict(case, machine, UPSTREAM)):
                    self._expected[key] = fork
        return self._expected[key]


    def causes(self, case: Case, machine: str) -> list[str]:
        """The declared parameters that, each alone on top of upstream's policy, change what
        ``case`` gives on ``machine``: what a deviating case's expectation is derived from."""
        found = []
        for name, value in self.policy.deviations().items():
            alone = replace(UPSTREAM, **{name: value})  # type: ignore[arg-type]  # a field and its value
            if golden.canonical_text(predict(case, machine, alone)) != golden.canonical_text(
                predict(case, machine, UPSTREAM)
            ):
                found.append(f"{name} = {toml_value(value)}")
        return found


def applied(deviations: Deviations | None) -> AbstractContextManager[object]:
    """``deviations.applied()``, or a context that changes nothing when none are declared."""
    return deviations.applied() if deviations is not None else nullcontext()


def load_deviations(path: Path, how: str = "--pcie-deviations or the ini key pcie_deviations") -> Deviations:
    """Read and check ``path``: every key a known parameter, every value of its type."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeviationError(f"{path}: deviations file not found; create it or fix {how}") from None
    except IsADirectoryError:
        raise DeviationError(f"{path}: is a folder; give {how} the deviations file itself") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeviationError(f"{path}: not valid TOML ({exc}); fix the file") from None
    values: dict[str, object] = {}
    for key, value in data.items():
        parameter = PARAMETERS.get(key)
        if parameter is None:
            known = ", ".join(PARAMETERS)
            raise DeviationError(f"{path}: unknown deviation {key!r}; the parameters are: {known} (see {DOCS_PAGE})")
        if (parameter.kind is int and (isinstance(value, bool) or not isinstance(value, int))) or (
            parameter.kind is not int and not isinstance(value, parameter.kind)
        ):
            raise DeviationError(
                f"{path}: {key} = {toml_value(value)} has the wrong type; it takes {parameter.type_name} "
                f"(upstream: {key} = {toml_value(parameter.default)})"
            )
        values[key] = value
    try:
        policy = Policy(**values)  # type: ignore[arg-type]  # each value's type was checked above
    except ValueError as exc:
        raise DeviationError(f"{path}: {exc}; fix the value") from None
    return Deviations(path, policy)


def predict(case: Case, machine: str, policy: Policy) -> etree._Element:
    """The normalised outcome of ``case`` on ``machine`` in the reference under ``policy``, for the
    release of the profile in effect (the plugin sets the one of the daemon under test)."""
    with using_policy(policy):
        return normalise(ReferenceBackend(current_profile().name).run(case, machine), machine)


@dataclass(frozen=True)
class Explanation:
    """A single parameter that, set to ``value``, makes the reference predict what a daemon gave."""

    name: str
    value: object

    def lines(self, rule_titles: dict[str, str], declared: Policy | None = None) -> list[str]:
        """Two lines for a failure report: the rule broken, in its words, and how to declare it."""
        declared = declared or UPSTREAM
        parameter = PARAMETERS[self.name]
        title = rule_titles.get(parameter.rule)
        rule = f"rule {parameter.rule}" + (f' ("{title}")' if title else "")
        was = getattr(declared, self.name)
        setting = f"{self.name} = {toml_value(self.value)}"
        first = f"this is what the reference predicts with {setting} instead of {toml_value(was)}: "
        if was == parameter.default:
            return [
                first + f"the libvirt under test breaks {rule}",
                f"if it does so on purpose, declare `{setting}` in a deviations file "
                "(--pcie-deviations, see docs/forks.md)",
            ]
        # the declaration itself is what the daemon does not follow
        fix = "remove it" if self.value == parameter.default else f"declare `{setting}` instead"
        return [
            first + f"the libvirt under test does not do what `{self.name} = {toml_value(was)}` declares ({rule})",
            f"if the declaration is wrong, {fix}",
        ]


def explain(case: Case, machine: str, actual: etree._Element, declared: Policy | None = None) -> list[Explanation]:
    """The single-parameter changes to ``declared`` (default: upstream's policy) under which the
    reference predicts ``actual``: how a daemon that fails a case would pass it."""
    declared = declared or UPSTREAM
    wanted = golden.canonical_text(actual)
    found = []
    for name, parameter in PARAMETERS.items():
        if machine not in parameter.machines:
            continue
        for value in (*parameter.alternatives, parameter.default):
            if value == getattr(declared, name):
                continue
            candidate = replace(declared, **{name: value})  # type: ignore[arg-type]  # a field and its type
            if golden.canonical_text(predict(case, machine, candidate)) == wanted:
                found.append(Explanation(name, value))
    return found


def load_rule_titles(path: Path) -> dict[str, str]:
    """The title of each rule in ``rules.toml`` (nothing when it is absent or unreadable: titles
    only decorate a failure report)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        return {}
    return {rule: str(body.get("title", "")) for rule, body in rules.items() if isinstance(body, dict)}


def iter_cases(cases_root: Path) -> Iterator[Case]:
    """Every case under ``cases_root``, in a stable order."""
    for folder in find_case_folders(cases_root):
        yield load_case(folder, cases_root)


def affected(cases: Sequence[Case], policy: Policy) -> list[tuple[str, str]]:
    """The (case id, machine) pairs whose reference outcome ``policy`` changes."""
    deviations = Deviations(Path(), policy)
    return [
        (case.case_id, machine)
        for case in cases
        for machine in case.machines
        if deviations.expected(case, machine) is not None
    ]


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m pytest_pcie.deviations",
        description="List the cases a deviations file makes deviate from upstream's goldens.",
    )
    parser.add_argument("file", type=Path, help=f"the deviations file (e.g. {DEVIATIONS_FILE})")
    parser.add_argument("--cases", type=Path, default=Path("cases"), help="folder of case folders (default: cases)")
    args = parser.parse_args(argv)
    try:
        deviations = load_deviations(args.file, "the command line")
        cases = list(iter_cases(args.cases.resolve()))
    except (DeviationError, CaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pairs = affected(cases, deviations.policy)
    print(f"{args.file}: {deviations.summary()}: {len(pairs)} of {sum(len(c.machines) for c in cases)} "
          "case/machine pairs deviate")
    for case_id, machine in pairs:
        print(f"  {case_id}[{machine}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
