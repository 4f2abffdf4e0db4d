"""How define() builds and formats its result: the fast paths must give what the plain ones give.

format_domain prints with libxml2's pretty-printer and falls back to ``etree.indent`` when the tree
holds text beside elements; controllers the assigner adds get their element only at the end.  Both
are shortcuts for speed, so each is checked against the long way round.
"""

from __future__ import annotations

import pytest
from lxml import etree

from pytest_pcie.reference import define
from pytest_pcie.reference.define import define_domain
from pytest_pcie.reference.model import UNBUILT
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


@pytest.mark.parametrize("profile", ["9.0.0", "11.3.0", "12.8.0"])
def test_added_controllers_are_built_complete_and_in_the_tree(profile: str) -> None:
    xml = f"<domain>{MACHINE.format(machine='q35')}<devices>{NIC * 40}{LEGACY_NIC * 2}</devices></domain>"
    with using_profile(profile):
        domain = define_domain(load_domain(xml))
    added = [
        controller
        for controller in domain.controllers
        if controller.implicit and controller.ctype == "pci" and controller.model != "pcie-root"
    ]
    assert len(added) > 40
    assert "pcie-to-pci-bridge" in {controller.model for controller in added}
    for controller in added:
        assert controller.element is not UNBUILT
        assert controller.element.getparent() is domain.devices_element
        assert [child.tag for child in controller.element][-1] == "address"
        if controller.model == "pcie-root-port":
            assert [child.tag for child in controller.element] == ["model", "target", "address"]
            target = controller.element[1]
            assert target.get("chassis") == str(controller.index)
            assert controller.address is not None
            assert int(target.get("port") or "", 16) == controller.address.slot * 8 + controller.address.function
    assert UNBUILT.getparent() is None and len(UNBUILT) == 0 and not UNBUILT.attrib  # never used as an element
