"""Goldens on disk: where they live, their canonical text, atomic updates, and explaining a mismatch.

The verdict is exact equality of canonical text (parsed without blank text or comments, attributes
in sorted order, pretty-printed), so formatting can never make a test pass or fail.  The written
file keeps the normaliser's readable attribute order; only the comparison sorts.

The explanation is for people and never decides anything: devices are paired by identity
(controllers by type and index, other devices by tag and ordinal), missing and unexpected devices
are named whole, and xmldiff runs only on a pair of devices, whose edits are phrased in words.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from lxml import etree
from xmldiff import actions as xmldiff_actions
from xmldiff import main as xmldiff_main

from pytest_pcie.normalise import DEVICES_TAG, FAILURE_TAG
from pytest_pcie.tree import render_tree, summary_line
from pytest_pcie.versions import BASE_VERSION, Version, VersionError, applicable

GOLDEN_SUFFIX = ".xml"
VERSION_MARK = "@"  # golden/<case>/q35@11.3.0.xml: what q35 gives from libvirt 11.3.0 on
MAX_EXPLANATION_LINES = 40
MAX_TREE_LINES = 40
_PARSER = etree.XMLParser(remove_blank_text=True, remove_comments=True)


class GoldenError(Exception):
    """A golden file cannot be read; ``str()`` names the file and the fix."""


class UpdateStatus(Enum):
    """What writing one golden did, for the end-of-run summary."""

    CREATED = "created"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    REMOVED = "removed"  # a version's override that now says what the version inherits anyway


def golden_path(
    goldens_root: Path, case_id: str, machine: str, version: Version | None = None, base: Version = BASE_VERSION
) -> Path:
    """The file holding what ``version`` gives for ``case_id`` on ``machine``.

    The corpus's base version (and None) writes the plain ``<goldens>/<case id>/<machine>.xml``;
    any other version its override ``<machine>@<version>.xml``.
    """
    if version is None or version == base:
        return goldens_root / case_id / f"{machine}{GOLDEN_SUFFIX}"
    return goldens_root / case_id / f"{machine}{VERSION_MARK}{version}{GOLDEN_SUFFIX}"


def golden_versions(
    goldens_root: Path, case_id: str, machine: str, base: Version = BASE_VERSION
) -> dict[Version, Path]:
    """Every golden of ``case_id`` on ``machine``, keyed by the version it holds from.

    An override whose name does not spell a version is a :class:`GoldenError`, not a file quietly
    ignored: a typo there would make a version silently inherit an older answer.
    """
    folder = goldens_root / case_id
    found: dict[Version, Path] = {}
    plain = folder / f"{machine}{GOLDEN_SUFFIX}"
    if plain.is_file():
        found[base] = plain
    for path in sorted(folder.glob(f"{machine}{VERSION_MARK}*{GOLDEN_SUFFIX}")):
        found[_override_version(path)] = path
    return found


def _override_version(path: Path) -> Version:
    spelled = path.name[: -len(GOLDEN_SUFFIX)].split(VERSION_MARK, 1)[1]
    try:
        return Version.parse(spelled)
    except VersionError as exc:
        raise GoldenError(f"{path}: {exc}; name overrides <machine>{VERSION_MARK}<version>.xml") from None


def layered_versions(
    goldens_roots: Sequence[Path], case_id: str, machine: str, base: Version = BASE_VERSION
) -> dict[Version, Path]:
    """:func:`golden_versions` over several goldens folders stacked bottom first: a later folder's
    file replaces an earlier one's of the same version (an overlay overrides file by file)."""
    merged: dict[Version, Path] = {}
    for root in goldens_roots:
        merged.update(golden_versions(root, case_id, machine, base))
    return merged


def resolve_golden(
    goldens_root: Path | Sequence[Path], case_id: str, machine: str, version: Version, base: Version = BASE_VERSION
) -> tuple[Version, Path] | None:
    """The golden that holds for ``version``: its newest override not newer than it, else the plain
    golden; None when there is none that old.  Several folders (bottom first) are stacked as
    :func:`layered_versions` says."""
    roots = [goldens_root] if isinstance(goldens_root, Path) else goldens_root
    return applicable(layered_versions(roots, case_id, machine, base), version)


def golden_key(goldens_root: Path, path: Path) -> str:
    """The (case, machine) a golden file belongs to, whatever version it holds for:
    ``devices/x/q35@11.3.0.xml`` → ``devices/x/q35.xml``."""
    relative = path.relative_to(goldens_root)
    stem = relative.name[: -len(GOLDEN_SUFFIX)].split(VERSION_MARK, 1)[0]
    return relative.with_name(f"{stem}{GOLDEN_SUFFIX}").as_posix()


def find_goldens(goldens_root: Path) -> Iterator[Path]:
    """Every golden file under ``goldens_root``, in a stable order."""
    if goldens_root.is_dir():
        yield from sorted(goldens_root.rglob(f"*{GOLDEN_SUFFIX}"))


def render(document: etree._Element) -> str:
    """The text a golden file holds: pretty-printed, attribute order as the normaliser built it."""
    return etree.tostring(document, pretty_print=True, encoding="unicode")


def canonical_text(document: etree._Element) -> str:
    """The text the verdict compares: blank text dropped, attributes sorted, pretty-printed."""
    copy = etree.fromstring(etree.tostring(document), _PARSER)
    for element in copy.iter():
        attributes = sorted(element.attrib.items())
        element.attrib.clear()
        for name, value in attributes:
            element.set(name, value)
    return etree.tostring(copy, pretty_print=True, encoding="unicode")


def read_golden(path: Path) -> etree._Element:
    """Parse the golden at ``path``; a damaged file is a :class:`GoldenError`, not a traceback."""
    try:
        return etree.fromstring(path.read_bytes(), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise GoldenError(f"{path}: not well-formed XML ({exc}); regenerate it with --pcie-update-goldens") from None


def update_golden(path: Path, document: etree._Element) -> UpdateStatus:
    """Write ``document`` to ``path`` unless its canonical text is already there.

    Written through a temporary file in the same folder and ``os.replace``, so an interrupted run
    never leaves a half-written golden behind.
    """
    status = UpdateStatus.CREATED
    if path.is_file():
        if _same(path, document):
            return UpdateStatus.UNCHANGED
        status = UpdateStatus.CHANGED
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(render(document))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return status


def update_versioned_golden(
    goldens_root: Path,
    case_id: str,
    machine: str,
    version: Version,
    document: etree._Element,
    base: Version = BASE_VERSION,
    below: Sequence[Path] = (),
) -> tuple[UpdateStatus, Path]:
    """Record that ``version`` gives ``document``, touching only ``version``'s own file.

    An override is written only where ``document`` differs from what ``version`` would get without
    it (an older golden, or the file of the folders ``below``, which an overlay stacks on); an
    override that no longer differs is removed, so the corpus keeps saying each difference once.
    """
    own = golden_path(goldens_root, case_id, machine, version, base)
    others = layered_versions([*below, goldens_root], case_id, machine, base)
    lower = layered_versions(below, case_id, machine, base)
    if version in lower:
        others[version] = lower[version]
    else:
        others.pop(version, None)
    fallback = applicable(others, version)
    if fallback is not None and _same(fallback[1], document):
        if own.is_file():
            own.unlink()
            return UpdateStatus.REMOVED, own
        return UpdateStatus.UNCHANGED, own
    return update_golden(own, document), own


def drop_redundant_overrides(
    goldens_root: Path, case_id: str, machine: str, base: Version = BASE_VERSION, below: Sequence[Path] = ()
) -> list[Path]:
    """Remove every override of ``case_id`` on ``machine`` that says what the golden before it says
    (in ``goldens_root`` or in the folders ``below`` it).

    An update run over several versions at once may write a newer version's override before the
    older version's (xdist, or URIs given newest first); once all are written, this leaves each
    difference said once, whatever order they came in.  Returns the files removed.  The plain
    golden is removed only when a folder below holds the same one.
    """
    lower = layered_versions(below, case_id, machine, base)
    kept: dict[Version, Path] = {}
    removed: list[Path] = []
    for version, path in sorted(golden_versions(goldens_root, case_id, machine, base).items()):
        fallback = applicable({**lower, **kept}, version)
        try:
            redundant = (
                fallback is not None
                and (version != base or version in lower)
                and _same(fallback[1], read_golden(path))
            )
        except GoldenError:
            redundant = False
        if redundant:
            path.unlink()
            removed.append(path)
        else:
            kept[version] = path
    return removed


def _same(path: Path, document: etree._Element) -> bool:
    try:
        return canonical_text(read_golden(path)) == canonical_text(document)
    except GoldenError:
        return False


# --- explaining a mismatch -------------------------------------------------------------------------

ADDRESS_TAG = "address"


def describe_mismatch(expected: etree._Element, actual: etree._Element) -> list[str]:
    """The indented report of a mismatch: what differs in words, then both topologies as trees."""
    explanation = explain(expected, actual) or ["(the documents differ only in ways not explained)"]
    lines = ["  " + line for line in _clip(explanation, MAX_EXPLANATION_LINES)]
    for heading, document in (("expected topology:", expected), ("actual topology:", actual)):
        lines += [heading, *_summary(document)] + ["  " + line for line in _clip(render_tree(document), MAX_TREE_LINES)]
    return lines


def _summary(document: etree._Element) -> list[str]:
    """The summary line first, so the counts survive when the tree below is clipped."""
    line = summary_line(document)
    return [f"  {line}"] if line else []


def _clip(lines: list[str], limit: int) -> list[str]:
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"... {len(lines) - limit} more line(s)"]


@dataclass(frozen=True)
class Device:
    """A device of a normalised document with the identity it is paired by."""

    key: tuple[str, ...]
    label: str
    element: etree._Element


def explain(expected: etree._Element, actual: etree._Element) -> list[str]:
    """Lines saying in words how ``actual`` differs from ``expected`` (two normalised documents)."""
    lines: list[str] = []
    if expected.get("machine") != actual.get("machine"):
        lines.append(f"machine: {expected.get('machine')} expected, got {actual.get('machine')}")
    lines += _explain_devices(expected.find(DEVICES_TAG), actual.find(DEVICES_TAG))
    lines += _explain_failure(expected.find(FAILURE_TAG), actual.find(FAILURE_TAG))
    return lines


def _explain_devices(expected: etree._Element | None, actual: etree._Element | None) -> list[str]:
    if expected is None and actual is None:
        return []
    if expected is None:
        return ["devices: none expected (define should fail), got a defined domain"]
    if actual is None:
        return ["devices: a defined domain expected, got none (define failed)"]
    lines = []
    for pair in pair_devices(expected, actual):
        if pair.expected is not None and pair.actual is not None:
            lines += [f"{pair.label}: {change}" for change in describe_changes(pair.expected, pair.actual)]
        else:
            lines.append(f"{pair.label}: {'missing' if pair.actual is None else 'unexpected'}")
    return lines


@dataclass(frozen=True)
class Pair:
    """One device identity and its element on each side; None on the side that lacks it.

    ``label`` is the expected side's when both have the device (a controller's label names its
    model, which may be the very thing that differs).
    """

    label: str
    expected: etree._Element | None
    actual: etree._Element | None


def pair_devices(expected: etree._Element, actual: etree._Element) -> list[Pair]:
    """Pair the devices of two ``<devices>`` elements by identity (see :func:`identify`).

    One pairing serves every explanation of two documents (a golden against a run here, libvirt
    against the reference in :mod:`pytest_pcie.fuzz.differ`), so the two can never disagree on
    which devices are "the same" and only their wording differs.  Report order: ``expected``'s
    devices in document order, paired or not, then ``actual``'s unpaired ones in theirs.
    """
    wanted = {device.key: device for device in identify(expected)}
    got = {device.key: device for device in identify(actual)}
    pairs = []
    for key, device in wanted.items():
        other = got.pop(key, None)
        pairs.append(Pair(device.label, device.element, None if other is None else other.element))
    return pairs + [Pair(device.label, None, device.element) for device in got.values()]


def identify(devices: etree._Element) -> list[Device]:
    """Give each device its pairing identity: controllers by type+index, others by tag+ordinal."""
    ordinals: dict[str, int] = {}
    identified = []
    for element in devices:
        if element.tag == "controller":
            kind, index, model = element.get("type", "?"), element.get("index", "?"), element.get("model")
            label = f"controller {kind} index={index}" + (f" ({model})" if model else "")
            identified.append(Device(("controller", kind, index), label, element))
        else:
            ordinals[element.tag] = ordinals.get(element.tag, 0) + 1
            ordinal = ordinals[element.tag]
            identified.append(Device((element.tag, str(ordinal)), f"{element.tag} #{ordinal}", element))
    return identified


def describe_changes(expected: etree._Element, actual: etree._Element) -> list[str]:
    """The differences between two paired devices, one phrase each.

    Attribute and text edits are phrased from xmldiff's actions.  Added, removed or moved elements
    are phrased by showing the affected child element of the device on both sides, because
    xmldiff's node edits (insert here, delete there) read like noise to a person.
    """
    if canonical_text(expected) == canonical_text(actual):
        return []
    left, right = _standalone(expected), _standalone(actual)
    phrases: list[str] = []
    children: list[str] = []
    for action in xmldiff_main.diff_trees(left, right):
        child = _touched_child(action)
        if child is not None:
            children += [child] if child not in children else []
        else:
            phrases += [_phrase(action, left)]
    phrases += [_child_phrase(tag, left, right) for tag in children]
    return [phrase for phrase in phrases if phrase] or ["differs"]


def _standalone(element: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(element), _PARSER)


def _phrase(action: object, left: etree._Element) -> str:
    if isinstance(action, xmldiff_actions.UpdateAttrib):
        old = _attribute(left, action.node, action.name)
        return f"{_where(action.node)}{action.name} {old} expected, got {action.value}"
    if isinstance(action, xmldiff_actions.InsertAttrib):
        return f"{_where(action.node)}{action.name}={action.value!r} unexpected"
    if isinstance(action, xmldiff_actions.DeleteAttrib):
        old = _attribute(left, action.node, action.name)
        return f"{_where(action.node)}{action.name}={old!r} missing"
    if isinstance(action, xmldiff_actions.UpdateTextIn):
        return f"{_where(action.node)}text {_text(left, action.node)!r} expected, got {action.text!r}"
    return ""


def _touched_child(action: object) -> str | None:
    """For an element-level edit, the tag of the device's direct child it happens in."""
    if isinstance(action, xmldiff_actions.InsertNode):
        return _top_tag(action.target) or action.tag
    if isinstance(action, xmldiff_actions.DeleteNode | xmldiff_actions.MoveNode | xmldiff_actions.RenameNode):
        return _top_tag(action.node)
    return None


def _top_tag(node_path: str) -> str | None:
    """``/controller/target[1]/node[1]`` → ``target``; the device itself → None."""
    parts = node_path.strip("/").split("/")
    return parts[1].split("[", 1)[0] if len(parts) > 1 else None


def _child_phrase(tag: str, left: etree._Element, right: etree._Element) -> str:
    want = " ".join(etree.tostring(child, encoding="unicode") for child in left.iterchildren(tag))
    got = " ".join(etree.tostring(child, encoding="unicode") for child in right.iterchildren(tag))
    if not want:
        return f"{got} unexpected"
    if not got:
        return f"{want} missing"
    return f"{want} expected, got {got}"


def _where(node_path: str) -> str:
    """``/interface/address[1]`` → ``""`` (addresses read fine bare), ``/controller/target[1]`` → ``target ``."""
    tag = _tag_of(node_path)
    depth = node_path.strip("/").count("/")
    return "" if depth == 0 or tag == ADDRESS_TAG else f"{tag} "


def _tag_of(node_path: str) -> str:
    return node_path.rstrip("/").rsplit("/", 1)[-1].split("[", 1)[0]


def _attribute(tree: etree._Element, node_path: str, name: str) -> str | None:
    found = _find(tree, node_path)
    return found.get(name) if found is not None else None


def _text(tree: etree._Element, node_path: str) -> str | None:
    found = _find(tree, node_path)
    return found.text if found is not None else None


def _find(tree: etree._Element, node_path: str) -> etree._Element | None:
    try:
        found = etree.ElementTree(tree).xpath(node_path)
    except etree.XPathError:
        return None
    return found[0] if isinstance(found, list) and found and isinstance(found[0], etree._Element) else None


def _explain_failure(expected: etree._Element | None, actual: etree._Element | None) -> list[str]:
    want, got = _failure_text(expected), _failure_text(actual)
    if want == got:
        return []
    return ["failure differs:", f"  expected: {want}", f"  got:      {got}"]


def _failure_text(failure: etree._Element | None) -> str:
    if failure is None:
        return "no failure"
    return f"step {failure.get('step')} ({failure.get('label')}): {failure.text or ''}"
