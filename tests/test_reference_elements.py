"""The batch element builder must give exactly the elements lxml's API would, whatever the values."""

from __future__ import annotations

import pytest
from lxml import etree

from pytest_pcie.reference.elements import element_text, make_elements


@pytest.mark.parametrize(
    "value",
    ["plain", "0x1f", "", 'say "on"', "a&b", "<tag>", "tab\there", "line\nbreak", "cr\rhere", "'single'", "ü"],
)
def test_attribute_values_survive_unchanged(value: str) -> None:
    built = make_elements([element_text("target", {"hotplug": value, "chassis": "1"})])
    assert built[0].get("hotplug") == value
    assert list(built[0].attrib) == ["hotplug", "chassis"]  # libvirt's attribute order is kept


def test_elements_come_back_in_order_with_children() -> None:
    texts = [
        element_text("model", {"name": "pcie-root-port"}),
        element_text("controller", {"type": "pci"}, [element_text("address", {"type": "pci"})]),
    ]
    model, controller = make_elements(texts)
    assert etree.tostring(model) == b'<model name="pcie-root-port"/>'
    assert etree.tostring(controller) == b'<controller type="pci"><address type="pci"/></controller>'


def test_built_elements_move_into_another_document() -> None:
    domain = etree.fromstring("<devices><interface/></devices>")
    (address,) = make_elements([element_text("address", {"type": "pci", "bus": "0x01"})])
    domain[0].append(address)
    assert etree.tostring(domain) == b'<devices><interface><address type="pci" bus="0x01"/></interface></devices>'


def test_nothing_to_build() -> None:
    assert make_elements([]) == []
