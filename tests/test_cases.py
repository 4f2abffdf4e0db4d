"""Reading case folders: what a valid folder becomes, and the one-line error for each mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_pcie.cases import Action, CaseError, Operation, find_case_folders, load_case

GOOD_TOML = """\
description = "two NICs hotplugged"
machines = ["q35", "pc"]
operation = "attach-live"
steps = [{ attach = "nic.xml" }, { attach = "nic.xml" }]
expect-error = "No more available PCI slots"
rules = ["attach-live.never-adds"]
"""


def write_case(folder: Path, toml: str = GOOD_TOML, input_xml: str = "<domain><devices/></domain>") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "case.toml").write_text(toml)
    (folder / "input.xml").write_text(input_xml)
    (folder / "nic.xml").write_text("<interface type='user'/>")
    return folder


def test_a_valid_folder_becomes_a_case(tmp_path: Path) -> None:
    case = load_case(write_case(tmp_path / "attach-live" / "two-nics"), tmp_path)
    assert case.case_id == "attach-live/two-nics"
    assert case.machines == ("q35", "pc")
    assert case.operation is Operation.ATTACH_LIVE and case.operation.live
    assert [(step.action, step.label) for step in case.steps] == [(Action.ATTACH, "attach nic.xml")] * 2
    assert case.expect_error == "No more available PCI slots"
    assert case.rules == ("attach-live.never-adds",)


def test_find_case_folders_in_stable_order(tmp_path: Path) -> None:
    for name in ("b/x", "a/y", "a/x/deeper"):
        write_case(tmp_path / name)
    (tmp_path / "c").mkdir()
    assert [p.relative_to(tmp_path).as_posix() for p in find_case_folders(tmp_path)] == ["a/x/deeper", "a/y", "b/x"]


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("machines = [", "case.toml: not valid TOML"),
        (GOOD_TOML + "colour = 1\n", "case.toml: unknown key 'colour'"),
        (
            GOOD_TOML.replace('"attach-live"', '"dance"'),
            "unknown operation 'dance'; use one of: define, attach-offline",
        ),
        (GOOD_TOML.replace('"q35", "pc"', '"virt"'), "unknown machine 'virt'; use one of: pc, q35"),
        (GOOD_TOML.replace('"q35", "pc"', '"pc", "pc"'), "'machines' lists a machine twice"),
        (GOOD_TOML.replace("nic.xml", "gone.xml"), "step 1: device file 'gone.xml' does not exist"),
        (GOOD_TOML.replace("attach =", "detach ="), "step 1: detach is not possible with operation 'attach-live'"),
        (GOOD_TOML.replace('"attach-live"', '"define"'), "operation 'define' takes no 'steps'"),
        (GOOD_TOML.replace('expect-error = "No more available PCI slots"', "expect-error = 3"), "'expect-error' must"),
    ],
)
def test_each_mistake_is_one_line_naming_the_file(tmp_path: Path, toml: str, problem: str) -> None:
    folder = write_case(tmp_path / "q35" / "bad", toml=toml)
    with pytest.raises(CaseError) as error:
        load_case(folder, tmp_path)
    message = str(error.value)
    assert problem in message and "\n" not in message
    assert message.startswith(str(folder))


@pytest.mark.parametrize(
    ("input_xml", "problem"),
    [
        ("<domain>", "input.xml: not well-formed XML"),
        ("<interface/>", "root element is <interface>, expected <domain>"),
    ],
)
def test_a_bad_input_is_one_line(tmp_path: Path, input_xml: str, problem: str) -> None:
    folder = write_case(tmp_path / "q35" / "bad", input_xml=input_xml)
    with pytest.raises(CaseError, match=re.escape(problem)):
        load_case(folder, tmp_path)


def test_missing_files_are_named(tmp_path: Path) -> None:
    folder = write_case(tmp_path / "q35" / "bad")
    (folder / "input.xml").unlink()
    with pytest.raises(CaseError, match=r"input\.xml: missing input\.xml"):
        load_case(folder, tmp_path)
    (folder / "case.toml").unlink()
    with pytest.raises(CaseError, match=r"case\.toml: missing case\.toml"):
        load_case(folder, tmp_path)
