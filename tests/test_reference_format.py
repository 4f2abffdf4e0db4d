"""How define() builds and formats its result: the fast paths must give what the plain ones give.

format_domain prints with libxml2's pretty-printer and falls back to ``etree.indent`` when the tree
holds text beside elements; controllers the assigner adds get their element only at the end.  Both
are shortcuts for speed, so each is checked against the long way round.
"""

from __future__ import annotations

import pytest
from lxml import etree

from pytest_pcie.reference import assign, define
from pytest_pcie.reference.define import define_domain
from pytest_pcie.reference.model import UNBUILT, Device, build_added_controllers
from pytest_pcie.reference.parse import load_domain
from pytest_pcie.reference.profiles import using_profile

NIC = "<interface type='user'><model type='virtio'/></interface>"
LEGACY_NIC = "<interface type='user'><model type='e1000'/></interface>"  # needs a PCI bus: a bridge is added
MACHINE = "<os><type arch='x86_64' machine='{machine}'>hvm</type></os>"


def indented(text: str) -> str:
    """``text`` re-indented the long way: blank text dropped, then etree.indent."""
    root = etree.fromstring(text.encode(), etree.XMLParser(remove_blank_text=True))
    for element in root.iter():
        if element.text is not None and not element.text.strip() and len(element):
            element.text = None
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode") + "\n"


@pytest.mark.parametrize(
    "devices",
    [
        "",  # nothing but what libvirt adds
        "\n    \n  ",  # blank text kept by the parser, as <devices> had no element children
        NIC * 3,
        f"\n  {NIC}\n  ",
    ],
    ids=["empty", "blank-devices", "nics", "nics-with-blanks"],
)
@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_output_is_indented_like_etree_indent(machine: str, devices: str) -> None:
    text = define(f"<domain><name>x</name>{MACHINE.format(machine=machine)}<devices>{devices}</devices></domain>")
    assert text == indented(text)
    assert "<devices>\n    <" in text  # libvirt's two spaces per level, blank text replaced


def test_stray_text_beside_elements_is_kept_as_written() -> None:
    text = define("<domain><name>x</name><devices>stray<memballoon model='none'/></devices></domain>")
    assert "stray" in text
    assert "\n  <devices>" in text  # the rest of the document is still indented


def _elements_only(added: list[Device], devices: etree._Element, after: etree._Element | None) -> None:
    """What write_addresses does when the added controllers are no single run: elements."""
    build_added_controllers(added, devices, after)


@pytest.mark.parametrize("profile", ["9.0.0", "11.3.0", "12.8.0"])
@pytest.mark.parametrize("devices", [NIC * 40 + LEGACY_NIC * 2, NIC * 3, "\n  " + NIC * 5 + "\n  "])
def test_added_controllers_spliced_as_text_equal_their_elements(
    profile: str, devices: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    xml = f"<domain><name>x</name>{MACHINE.format(machine='q35')}<devices>{devices}</devices></domain>"
    with using_profile(profile):
        spliced = define(xml)
        monkeypatch.setattr(assign, "place_added_block", _elements_only)
        built = define(xml)
    assert spliced == built
    assert "pytest-pcie" not in spliced  # no placeholder left
    assert spliced.count('model="pcie-root-port"') >= 4


def test_a_second_write_turns_the_block_into_elements() -> None:
    """An offline attach writes addresses again: the earlier block becomes elements first."""
    xml = f"<domain><name>x</name>{MACHINE.format(machine='q35')}<devices>{NIC * 6}</devices></domain>"
    domain = define_domain(load_domain(xml))
    assert domain.added_block is not None
    assign.write_addresses(domain)
    assert domain.added_block is None
    added = [c for c in domain.controllers if c.implicit and c.model == "pcie-root-port"]
    assert added and all(c.element is not UNBUILT and c.element.getparent() is domain.devices_element for c in added)
    assert [child.tag for child in added[0].element] == ["model", "target", "address"]
