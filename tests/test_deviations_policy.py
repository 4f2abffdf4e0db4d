"""The policy parameters of the reference: each changes what it should, and nothing else."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from pytest_pcie import reference
from pytest_pcie.reference.policy import DEFAULT_USB_MODELS, MAX_COUNT, UPSTREAM, Policy, current_policy, using_policy
from tests.reference_support import MIN, domain, nic


def controllers(xml: str) -> list[tuple[int, str, str]]:
    """(index, model, bb:ss.f) of every pci controller above index 0, in index order."""
    found = []
    for element in etree.fromstring(xml.encode()).iterfind("devices/controller[@type='pci']"):
        index = int(element.get("index", "0"))
        if index == 0:
            continue
        address = element.find("address")
        assert address is not None
        where = f"{int(address.get('bus', '0'), 16):02x}:{int(address.get('slot', '0'), 16):02x}." + str(
            int(address.get("function", "0"), 16)
        )
        found.append((index, str(element.get("model")), where))
    return sorted(found)


def device_addresses(xml: str) -> list[tuple[str, str]]:
    """(tag, bus:slot.function) of every device that is not a PCI controller, in document order."""
    found = []
    devices = etree.fromstring(xml.encode()).find("devices")
    assert devices is not None
    for element in devices:
        if element.tag == "controller" and element.get("type") == "pci":
            continue
        address = element.find("address[@type='pci']")
        if address is not None:
            found.append((str(element.tag), f"{address.get('bus')}:{address.get('slot')}.{address.get('function')}"))
    return found


def usb_models(xml: str) -> list[str | None]:
    return [e.get("model") for e in etree.fromstring(xml.encode()).iterfind("devices/controller[@type='usb']")]


def nics(count: int) -> str:
    return nic() * count


# -- spare_root_ports -----------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(devices=st.integers(1, 6), spare=st.integers(0, MAX_COUNT))
def test_spare_root_ports_adds_that_many_empty_ports_and_moves_nothing(devices: int, spare: int) -> None:
    xml = domain("q35", MIN + nics(devices))
    upstream = reference.define(xml)
    fork = reference.define(xml, policy=Policy(spare_root_ports=spare))
    ports = [c for c in controllers(fork) if c[1] == "pcie-root-port"]
    assert len(ports) == devices + spare
    assert device_addresses(fork) == device_addresses(upstream)
    # the ports both have are where upstream has them: only the spares come or go
    shared = min(len(controllers(upstream)), len(controllers(fork)))
    assert controllers(fork)[:shared] == controllers(upstream)[:shared]


def test_spare_root_ports_changes_nothing_on_pc() -> None:
    xml = domain("pc", MIN + nics(3))
    assert reference.define(xml, policy=Policy(spare_root_ports=0)) == reference.define(xml)
    assert reference.define(xml, policy=Policy(spare_root_ports=3)) == reference.define(xml)


def test_spare_root_ports_needs_a_bus_to_have_been_added() -> None:
    # every device already addressed on bus 0: nothing to add, so no spare either, whatever the count
    xml = domain("q35", "<controller type='usb' model='none'/><memballoon model='none'/>")
    assert controllers(reference.define(xml, policy=Policy(spare_root_ports=4))) == []


# -- pack_root_ports ------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(devices=st.integers(1, 12))
def test_unpacked_root_ports_take_one_slot_each_and_move_nothing_else(devices: int) -> None:
    xml = domain("q35", MIN + nics(devices))
    upstream = reference.define(xml)
    fork = reference.define(xml, policy=Policy(pack_root_ports=False))
    packed, unpacked = controllers(upstream), controllers(fork)
    assert [c[:2] for c in unpacked] == [c[:2] for c in packed]  # same controllers, same indexes
    assert device_addresses(fork) == device_addresses(upstream)
    assert all(where.endswith(".0") for _, _, where in unpacked)
    assert len({where for _, _, where in unpacked}) == len(unpacked)
    assert any(not where.endswith(".0") for _, _, where in packed) == (len(packed) > 1)


def test_pack_root_ports_changes_nothing_on_pc() -> None:
    xml = domain("pc", MIN + nics(4))
    assert reference.define(xml, policy=Policy(pack_root_ports=False)) == reference.define(xml)


# -- pc_free_slots --------------------------------------------------------------------------------


def fits_on_pci_root(policy: Policy) -> int:
    """How many NICs a pc guest takes before libvirt adds a pci-bridge."""
    for count in range(20, 32):
        if controllers(reference.define(domain("pc", MIN + nics(count)), policy=policy)):
            return count - 1
    raise AssertionError("no bridge within 31 NICs")


@pytest.mark.parametrize("free", [0, 1, 2, 3])
def test_pc_free_slots_is_how_many_pci_root_slots_planning_keeps(free: int) -> None:
    assert fits_on_pci_root(Policy(pc_free_slots=free)) == fits_on_pci_root(UPSTREAM) + UPSTREAM.pc_free_slots - free


def test_pc_free_slots_changes_nothing_on_q35() -> None:
    xml = domain("q35", MIN + nics(5))
    assert reference.define(xml, policy=Policy(pc_free_slots=0)) == reference.define(xml)


# -- default USB models ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", DEFAULT_USB_MODELS)
def test_default_usb_models_pick_the_controller_added_and_only_on_their_machine(model: str) -> None:
    pc, q35 = domain("pc", "<memballoon model='none'/>"), domain("q35", "<memballoon model='none'/>")
    ich9_companions = ["ich9-uhci1", "ich9-uhci2", "ich9-uhci3"] if model == "ich9-ehci1" else []
    assert usb_models(reference.define(pc, policy=Policy(default_usb_pc=model))) == [model, *ich9_companions]
    assert usb_models(reference.define(q35, policy=Policy(default_usb_q35=model))) == [model, *ich9_companions]
    assert reference.define(q35, policy=Policy(default_usb_pc=model)) == reference.define(q35)
    assert reference.define(pc, policy=Policy(default_usb_q35=model)) == reference.define(pc)


def test_a_usb_controller_the_user_wrote_is_kept() -> None:
    xml = domain("q35", "<controller type='usb' model='nec-xhci'/><memballoon model='none'/>")
    assert usb_models(reference.define(xml, policy=Policy(default_usb_q35="ich9-ehci1"))) == ["nec-xhci"]


# -- the policy itself ----------------------------------------------------------------------------


def test_upstream_defaults_are_the_reference_without_a_policy() -> None:
    xml = domain("q35", nics(3))
    assert reference.define(xml, policy=UPSTREAM) == reference.define(xml) == reference.define(xml, policy=None)
    assert UPSTREAM.deviations() == {}


def test_using_policy_is_scoped_and_restored() -> None:
    fork = Policy(spare_root_ports=0)
    assert current_policy() is UPSTREAM
    with using_policy(fork):
        assert current_policy() is fork
        with using_policy(None):
            assert current_policy() is fork
    assert current_policy() is UPSTREAM


def test_policy_keyword_on_attach_and_start() -> None:
    fork = Policy(spare_root_ports=0)
    defined = reference.define(domain("q35", MIN + nics(1)), policy=fork)
    assert reference.start(defined, policy=fork) == reference.start(defined)  # start adds nothing
    # offline attach re-runs assignment: with no spare left the new NIC needs a new root port
    attached = reference.attach(defined, nic(), live=False, policy=fork)
    assert len(controllers(attached)) == 2
    with pytest.raises(reference.LibvirtError, match="No more available PCI slots"):
        reference.attach(reference.start(defined), nic(), live=True, policy=fork)


def test_deviations_lists_only_what_differs() -> None:
    assert Policy(spare_root_ports=0, pack_root_ports=True).deviations() == {"spare_root_ports": 0}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"spare_root_ports": -1}, "spare_root_ports must be an integer from 0 to 8, not -1"),
        ({"spare_root_ports": MAX_COUNT + 1}, "not 9"),
        ({"pc_free_slots": True}, "pc_free_slots must be an integer"),
        ({"pack_root_ports": 1}, "pack_root_ports must be true or false"),
        ({"default_usb_q35": "usb3"}, "default_usb_q35 must be one of"),
    ],
)
def test_bad_values_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(UPSTREAM, **changes)  # type: ignore[arg-type]
