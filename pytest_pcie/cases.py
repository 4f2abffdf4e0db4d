"""Reading and validating case folders.

A case folder is any folder holding a ``case.toml`` and an ``input.xml``.  ``case.toml`` says which
rule the case pins and what to do with the input::

    description = "q35 with no PCI controllers gets one root port per PCIe device plus a spare"
    machines = ["q35"]                  # machine families to run on: see pytest_pcie.machines
    operation = "attach-live"           # define | attach-offline | attach-live
    steps = [                           # attach operations only, applied in order
        { attach = "nic.xml" },
        { attach = "nic.xml" },
    ]
    expect-error = "No more available PCI slots"   # optional, see Case.expect_error
    # or, where libvirt's wording changed: { "9.0.0" = "old text", "11.3.0" = "new text" }
    # ("" for a version from which the run no longer fails)
    rules = ["policy.live-attach-never-adds"]      # optional: ids from rules.toml this case pins

Everything a user can get wrong is reported as a :class:`CaseError` naming the file and the fix, so
the plugin can show one clear line instead of a traceback.  Nothing here knows about pytest.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from lxml import etree

from pytest_pcie.machines import MACHINE_FAMILIES
from pytest_pcie.versions import BASE_VERSION, Version, VersionError, applicable

CASE_FILE = "case.toml"
INPUT_FILE = "input.xml"


class CaseError(Exception):
    """A case folder a user wrote is malformed; ``str()`` is one line naming the file and the fix."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class Operation(Enum):
    """What a case does with its input domain; the value is the spelling used in case.toml."""

    DEFINE = "define"
    ATTACH_OFFLINE = "attach-offline"
    ATTACH_LIVE = "attach-live"

    @property
    def live(self) -> bool:
        return self is Operation.ATTACH_LIVE


class Action(Enum):
    """One step of an attach operation."""

    ATTACH = "attach"
    DETACH = "detach"


# Which step actions each operation allows.  Live detach needs a guest OS that answers the unplug
# request, and the guests the libvirt backend starts run none, so it is not offered.
ALLOWED_ACTIONS: dict[Operation, frozenset[Action]] = {
    Operation.DEFINE: frozenset(),
    Operation.ATTACH_OFFLINE: frozenset({Action.ATTACH, Action.DETACH}),
    Operation.ATTACH_LIVE: frozenset({Action.ATTACH}),
}

KNOWN_KEYS = frozenset({"description", "machines", "operation", "steps", "expect-error", "rules"})


@dataclass(frozen=True)
class Step:
    """Attach or detach one device, read from a file of the case folder."""

    action: Action
    device_file: Path
    device_xml: str

    @property
    def label(self) -> str:
        """How reports and goldens name the step, e.g. ``attach nic.xml``."""
        return f"{self.action.value} {self.device_file.name}"


@dataclass(frozen=True)
class Case:
    """A validated case folder.

    ``case_id`` is the folder's path relative to the cases root, with ``/`` separators
    (``q35/no-controllers-adds-spare-port``); goldens live at ``<goldens>/<case_id>/<machine>.xml``.
    ``expect_error``, when set, states the author's intent independently of the golden: the run must
    fail and libvirt's message must contain this text.  ``expect_error_changes`` holds the texts of
    later libvirt versions that word the message differently, read "from this version on"; use
    :meth:`expect_error_for` to get the one a version must print.
    """

    folder: Path
    case_id: str
    description: str
    machines: tuple[str, ...]
    operation: Operation
    input_xml: str
    steps: tuple[Step, ...]
    expect_error: str | None
    rules: tuple[str, ...] = ()
    expect_error_changes: tuple[tuple[Version, str], ...] = ()

    def expect_error_for(self, version: Version, base: Version = BASE_VERSION) -> str | None:
        """The text libvirt ``version``'s message must contain, or None if the run need not fail."""
        texts: dict[Version, str] = dict(self.expect_error_changes)
        if self.expect_error is not None:
            texts[base] = self.expect_error
        found = applicable(texts, version)
        if found is None:
            return None
        return found[1] or None  # "" in a table: from that version on, the run need not fail


def load_case(folder: Path, root: Path) -> Case:
    """Read and validate the case in ``folder`` (a folder under ``root``)."""
    toml_path = folder / CASE_FILE
    input_path = folder / INPUT_FILE
    if not toml_path.is_file():
        raise CaseError(toml_path, f"missing {CASE_FILE}: every case folder needs one")
    if not input_path.is_file():
        raise CaseError(input_path, f"missing {INPUT_FILE}: every case folder needs the input domain XML")
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CaseError(toml_path, f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise CaseError(toml_path, "not UTF-8 text") from None

    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise CaseError(toml_path, f"unknown key {unknown[0]!r}; known keys are {', '.join(sorted(KNOWN_KEYS))}")

    description = _require_str(data, "description", toml_path)
    operation = _read_operation(data, toml_path)
    machines = _read_machines(data, toml_path)
    input_xml = read_xml_file(input_path, root_tag="domain")
    steps = _read_steps(data, operation, folder, toml_path)
    expect_error, expect_error_changes = _read_expect_error(data.get("expect-error"), toml_path)

    rules = data.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(rule, str) and rule for rule in rules):
        raise CaseError(toml_path, "'rules' must be a list of rule ids from rules.toml, e.g. [\"policy.spare-port\"]")

    case_id = folder.relative_to(root).as_posix()
    return Case(
        folder, case_id, description, machines, operation, input_xml, steps, expect_error, tuple(rules),
        expect_error_changes,
    )


def find_case_folders(root: Path) -> Iterator[Path]:
    """Yield every folder under ``root`` that holds a case.toml, in a stable order."""
    for toml_path in sorted(root.rglob(CASE_FILE)):
        yield toml_path.parent


def read_xml_file(path: Path, root_tag: str | None = None) -> str:
    """Return the text of an XML file after checking it is well-formed (and its root element)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CaseError(path, "not UTF-8 text") from None
    try:
        element = etree.fromstring(text.encode("utf-8"))
    except etree.XMLSyntaxError as exc:
        raise CaseError(path, f"not well-formed XML: {exc}") from None
    if root_tag is not None and element.tag != root_tag:
        raise CaseError(path, f"root element is <{element.tag}>, expected <{root_tag}>")
    return text


def _require_str(data: dict[str, object], key: str, path: Path) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CaseError(path, f"'{key}' must be a non-empty string")
    return value.strip()


def _read_expect_error(raw: object, path: Path) -> tuple[str | None, tuple[tuple[Version, str], ...]]:
    """``expect-error``: one text for every version, or a table of texts keyed by the version they
    hold from; returns the base version's text and the later versions' ones."""
    if raw is None:
        return None, ()
    if isinstance(raw, str) and raw:
        return raw, ()
    shape = "'expect-error' must be a non-empty string (text libvirt's message contains)"
    if not isinstance(raw, dict) or not raw:
        raise CaseError(path, f"{shape} or a table of them by version, e.g. {{ \"9.0.0\" = \"...\" }}")
    texts: dict[Version, str] = {}
    for spelled, text in raw.items():
        try:
            version = Version.parse(spelled)
        except VersionError as exc:
            raise CaseError(path, f"'expect-error' key {exc}") from None
        if not isinstance(text, str):
            raise CaseError(path, f"'expect-error' for {version}: {shape}, or \"\" for none")
        texts[version] = text
    base_text = texts.pop(BASE_VERSION, None)
    return base_text, tuple(sorted(texts.items()))


def _read_operation(data: dict[str, object], path: Path) -> Operation:
    spelling = _require_str(data, "operation", path)
    try:
        return Operation(spelling)
    except ValueError:
        known = ", ".join(op.value for op in Operation)
        raise CaseError(path, f"unknown operation {spelling!r}; use one of: {known}") from None


def _read_machines(data: dict[str, object], path: Path) -> tuple[str, ...]:
    machines = data.get("machines")
    if not isinstance(machines, list) or not machines or not all(isinstance(m, str) for m in machines):
        raise CaseError(path, "'machines' must be a non-empty list of machine names, e.g. [\"pc\", \"q35\"]")
    for machine in machines:
        if machine not in MACHINE_FAMILIES:
            known = ", ".join(MACHINE_FAMILIES)
            raise CaseError(path, f"unknown machine {machine!r}; use one of: {known}")
    if len(set(machines)) != len(machines):
        raise CaseError(path, "'machines' lists a machine twice")
    return tuple(machines)


def _read_steps(data: dict[str, object], operation: Operation, folder: Path, path: Path) -> tuple[Step, ...]:
    raw_steps = data.get("steps", [])
    allowed = ALLOWED_ACTIONS[operation]
    if not allowed:
        if raw_steps:
            raise CaseError(path, f"operation {operation.value!r} takes no 'steps'")
        return ()
    if not isinstance(raw_steps, list) or not raw_steps:
        raise CaseError(path, f"operation {operation.value!r} needs 'steps', e.g. steps = [{{ attach = \"nic.xml\" }}]")
    steps = []
    for number, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict) or len(raw) != 1:
            raise CaseError(path, f"step {number} must be a table with one key, e.g. {{ attach = \"nic.xml\" }}")
        ((key, file_name),) = raw.items()
        try:
            action = Action(key)
        except ValueError:
            raise CaseError(path, f"step {number}: unknown action {key!r}; use attach or detach") from None
        if action not in allowed:
            raise CaseError(path, f"step {number}: {action.value} is not possible with operation {operation.value!r}")
        if not isinstance(file_name, str) or not file_name:
            raise CaseError(path, f"step {number}: {action.value} needs a device file name")
        device_path = folder / file_name
        if not device_path.is_file():
            raise CaseError(path, f"step {number}: device file {file_name!r} does not exist in {folder}")
        steps.append(Step(action, device_path, read_xml_file(device_path)))
    return tuple(steps)
