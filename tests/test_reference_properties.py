"""Invariants of the reference assigner over random device mixes (pc and q35), with hypothesis.

These hold for libvirt by construction, and the contracts applications rely on are among them:
define is a fixed point, bare controllers added to an addressed domain move nothing, a live attach
never adds a controller, an offline attach adds only controllers the new device sits behind.
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lxml import etree
from reference_support import addresses, domain, nic

from pytest_pcie.reference import LibvirtError, attach, define

DEVICES: tuple[str, ...] = (
    nic("virtio"), nic("e1000"), nic("e1000e"), nic(None), nic("virtio-transitional"),
    "<disk type='file' device='disk'><source file='/tmp/a'/><target dev='vd{n}' bus='virtio'/></disk>",
    "<disk type='file' device='disk'><source file='/tmp/a'/><target dev='sd{n}' bus='scsi'/></disk>",
    "<sound model='ich6'/>", "<sound model='ich9'/>", "<controller type='scsi' model='virtio-scsi'/>",
    "<controller type='virtio-serial'/>", "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
    "<input type='tablet' bus='virtio'/>", "<shmem name='s{n}'><model type='ivshmem-plain'/></shmem>",
    "<filesystem type='mount' accessmode='passthrough'><source dir='/tmp'/><target dir='t{n}'/></filesystem>",
    "<controller type='pci' model='pcie-root-port'/>", "<controller type='pci' model='pci-bridge'/>",
    "<controller type='usb' model='qemu-xhci'/>", "<controller type='usb' model='ich9-ehci1'/>",
)
SINGLE: tuple[str, ...] = (
    "<video><model type='vga'/></video>", "<video><model type='virtio'/></video>", "<watchdog model='i6300esb'/>",
    "<memballoon model='none'/>", "<controller type='usb' index='0' model='none'/>",
)
# Slots a bus of each controller model offers (independent of the assigner's own tables).
SLOTS: dict[str, range] = {
    "pci-root": range(1, 32), "pcie-root": range(1, 32), "pci-bridge": range(1, 32),
    "pcie-to-pci-bridge": range(1, 32), "dmi-to-pci-bridge": range(32), "pcie-root-port": range(1),
    "pcie-switch-downstream-port": range(1), "pcie-switch-upstream-port": range(32),
}
LEGACY_PARENTS = frozenset({"pci-root", "pci-bridge", "pcie-to-pci-bridge", "dmi-to-pci-bridge"})


@st.composite
def inputs(draw: st.DrawFn) -> tuple[str, str]:
    machine = draw(st.sampled_from(["pc", "q35"]))
    chosen = draw(st.lists(st.sampled_from(DEVICES), max_size=14))
    singles = draw(st.lists(st.sampled_from(SINGLE), max_size=3, unique=True))
    if machine == "pc":
        chosen = [device for device in chosen if "pcie-root-port" not in device]
    if any("usb" in device and "none" in device for device in singles):
        chosen = [device for device in chosen if "type='usb'" not in device]
    devices = "".join(device.replace("{n}", "abcdefghijklmnopqrstuvwxyz"[n]) for n, device in enumerate(chosen))
    return machine, devices + "".join(singles)


def _define(machine: str, devices: str) -> str:
    try:
        return define(domain(machine, devices))
    except LibvirtError:
        assume(False)
        raise


def _controllers(xml: str) -> dict[int, tuple[str, str | None]]:
    """PCI controllers: index -> (model, 'bb:ss.f' of its own address)."""
    found: dict[int, tuple[str, str | None]] = {}
    for element in etree.fromstring(xml.encode()).iter("controller"):
        if element.get("type") == "pci":
            index = int(element.get("index") or "-1")
            assert index not in found, f"controller index {index} used twice"
            found[index] = (element.get("model") or "", addresses_of(element))
    return found


def addresses_of(element: etree._Element) -> str | None:
    address = element.find("address")
    if address is None or address.get("type") != "pci":
        return None
    return ":".join(f"{int(address.get(name) or '0', 0):02x}" for name in ("bus", "slot", "function"))


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


@SETTINGS
@given(inputs())
def test_addresses_are_unique_and_on_existing_buses_with_room(case: tuple[str, str]) -> None:
    xml = _define(*case)
    placed = addresses(xml)
    plain = [value.removesuffix("+m") for value in placed.values()]
    assert len(plain) == len(set(plain)), "two devices share an address"
    controllers = _controllers(xml)
    for key, value in placed.items():
        bus, slot = int(value[0:2], 16), int(value[3:5], 16)
        assert bus in controllers, f"{key} at {value} is on a bus no controller provides"
        model = controllers[bus][0]
        assert slot in SLOTS[model], f"{key} at {value}: slot outside a {model}"
        if key.startswith(("sound#", "shmem#")) and not value.startswith("00:1b"):
            assert model in LEGACY_PARENTS, f"legacy {key} at {value} sits on a {model}"


@SETTINGS
@given(inputs())
def test_define_is_a_fixed_point(case: tuple[str, str]) -> None:
    once = _define(*case)
    assert addresses(define(once)) == addresses(once)
    assert _controllers(define(once)) == _controllers(once)


@SETTINGS
@given(inputs(), st.integers(min_value=1, max_value=4))
def test_bare_controllers_added_to_an_addressed_domain_move_nothing(case: tuple[str, str], extra: int) -> None:
    machine, _ = case
    once = _define(*case)
    model = "pcie-root-port" if machine == "q35" else "pci-bridge"
    grown = once.replace("</devices>", f"<controller type='pci' model='{model}'/>" * extra + "</devices>")
    try:
        again = define(grown)
    except LibvirtError:
        assume(False)
        raise
    before, after = addresses(once), addresses(again)
    # multifunction may switch on where a new root port joins a slot; the address itself stays
    assert {key: after[key].removesuffix("+m") for key in before} == {
        key: value.removesuffix("+m") for key, value in before.items()}


@SETTINGS
@given(inputs(), st.sampled_from([nic("virtio"), nic("e1000"), nic("e1000e"), DEVICES[5].replace("{n}", "z")]))
def test_live_attach_never_changes_the_controllers(case: tuple[str, str], device: str) -> None:
    once = _define(*case)
    try:
        after = attach(once, device, live=True)
    except LibvirtError:
        return
    assert _controllers(after) == _controllers(once)


@SETTINGS
@given(inputs(), st.sampled_from([nic("virtio"), nic("e1000"), nic("e1000e"), DEVICES[5].replace("{n}", "z")]))
def test_offline_attach_adds_only_controllers_the_device_sits_behind(case: tuple[str, str], device: str) -> None:
    once = _define(*case)
    try:
        after = attach(once, device, live=False)
    except LibvirtError:
        return
    old, new = _controllers(once), _controllers(after)
    assert {index: new[index] for index in old} == old, "an existing controller changed"
    before = addresses(once)
    # A device joining a slot turns multifunction on at its function 0 (libvirtd does: 6 virtio NICs
    # on q35, then an e1000 adds a root port at 00:02.1 and 00:02.0 gets multifunction='on').
    moved = {key: addresses(after)[key].removesuffix("+m") for key in before}
    assert moved == {key: value.removesuffix("+m") for key, value in before.items()}, "an existing device moved"
    kind = "interface#" if device.startswith("<interface") else "disk#"
    new_keys = [key for key in addresses(after) if key.startswith(kind) and key not in before]
    assume(len(new_keys) == 1)  # e.g. a disk sorted before existing disks shifts their ordinals
    placed = addresses(after)[new_keys[0]]
    ancestors: set[int] = set()
    bus = int(placed[0:2], 16)
    while bus and bus not in ancestors:
        ancestors.add(bus)
        parent = new[bus][1]
        bus = int(parent[0:2], 16) if parent else 0
    unneeded = set(new) - set(old) - ancestors
    # The exceptions, both verified on libvirtd: a definition without PCI controllers gets one spare
    # root port, as at define; and when pass 1 adds a root port + pcie-to-pci-bridge pair, pass 2 may
    # put the bridge into an already free root port, leaving the new port empty.
    assert len(unneeded) <= 1, "a controller was added that the new device does not sit behind"
    if unneeded:
        (index,) = unneeded
        assert new[index][0] == "pcie-root-port"
        assert not any(value.startswith(f"{index:02x}:") for value in addresses(after).values())
