"""Hypothesis strategies for random domains and operation sequences.

Mostly valid inputs, some invalid on purpose: a wrong root model, an address out of range, a second
watchdog, a PCI controller attached live.  Both backends must then refuse with the same message,
which is as much a part of the contract as the addresses they assign.

Live examples hold only startable kinds (see :mod:`pytest_pcie.fuzz.catalogue`), so they run on any
host.  Frequencies are data (:data:`WEIGHTS`, :data:`CONTROLLER_WEIGHTS`, and a :class:`Profile` for
how often a mistake is made on purpose) rather than branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st

from pytest_pcie.cases import Action, Operation
from pytest_pcie.fuzz.catalogue import KINDS, PCI_CONTROLLER_MODELS, ROOT_MODELS, Kind
from pytest_pcie.fuzz.example import PCI_CONTROLLER, Address, Device, Example, Step, hotplug_target_allowed
from pytest_pcie.machines import MACHINE_FAMILIES

MACHINES = tuple(MACHINE_FAMILIES)
OPERATIONS = tuple(Operation)

# How often a kind is drawn relative to the others (default 1).  NICs dominate real domains.
WEIGHTS: dict[str, int] = {
    "net-virtio": 6, "net-e1000": 3, "net-e1000e": 3, "net-rtl8139": 2, "net-default": 2,
    "net-virtio-transitional": 2, "net-virtio-non-transitional": 2, "disk-virtio": 4,
    "scsi-virtio-scsi": 2, "usb-qemu-xhci": 2, "cdrom-ide": 0,
    "video-cirrus": 0, "video-vga": 0, "video-bochs": 0, "video-vmvga": 0, "video-qxl": 0, "video-virtio": 0,
    "watchdog-i6300esb": 0, "iommu-virtio": 0, "balloon": 0, "balloon-transitional": 0,
    "balloon-non-transitional": 0, "balloon-none": 0, "usb-none": 0, "vsock": 0, "vsock-transitional": 0,
    "vsock-non-transitional": 0,
}  # fmt: skip

# Singleton groups of which QEMU refuses two at start although a newer libvirt lets the define
# through: "QEMU does not support multiple vIOMMUs for x86 yet" (libvirt 12.8.0 + QEMU 11.1,
# pcie-fuzz --seed 20261204).  A live example is meant to start; that message holds a timestamp
# and the guest's name, which no model repeats.
TWO_REFUSED_AT_START: frozenset[tuple[str, ...]] = frozenset({("iommu-virtio",)})

# Devices a domain may hold once, by group: the chance in percent that the domain has one, and the
# kinds it is drawn from (a second one, on purpose, now and then: see Profile.duplicate_singleton).
SINGLETONS: dict[str, tuple[int, tuple[str, ...]]] = {
    "watchdog": (15, ("watchdog-i6300esb",)),
    "iommu": (5, ("iommu-virtio",)),
    "vsock": (10, ("vsock", "vsock", "vsock", "vsock-non-transitional", "vsock-transitional")),
    "ide": (5, ("cdrom-ide",)),
}
NIC_KINDS = ("net-virtio", "net-e1000", "net-e1000e", "net-rtl8139", "net-virtio-transitional")
PRIMARY_VIDEOS = ("video-cirrus", "video-vga", "video-qxl", "video-virtio", "video-bochs", "video-vmvga")
SECONDARY_VIDEOS = ("video-qxl", "video-virtio")
BALLOONS = ("balloon-none", "balloon", "balloon-transitional", "balloon-non-transitional")

# Which PCI controller models a machine's users write, by weight; the other machine's models are
# still drawn now and then (weight 1) to compare the refusal.
_PCIE_CONTROLLERS = {"pcie-root-port": 10, "pcie-to-pci-bridge": 3, "pcie-switch-upstream-port": 2,
                     "pcie-switch-downstream-port": 2, "pci-bridge": 2}
CONTROLLER_WEIGHTS: dict[str, dict[str, int]] = {
    "pc": {"pci-bridge": 8, "pci-expander-bus": 3},
    "q35": {**_PCIE_CONTROLLERS, "dmi-to-pci-bridge": 2, "pcie-expander-bus": 2},
    "aarch64-virt": _PCIE_CONTROLLERS,
    "riscv64-virt": _PCIE_CONTROLLERS,
}  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """How often inputs are invalid on purpose, in percent; ``avoid`` lists kinds never drawn, by machine.

    Random explicit addresses can still be refused under any profile (a slot on a root port's bus,
    a bus that does not take the device): those are not deliberate, and libvirt must agree on them.
    """

    name: str
    bad_address: int  # an address out of range for any bus
    foreign_controller: int  # a PCI controller model the machine's users would not write
    wrong_root: int  # of explicit root controllers, the other machine's
    hotplug_off_misplaced: int  # hotplug='off' on a model that does not take it
    odd_second_video: int  # a second video that may only be primary
    duplicate_singleton: int  # a second watchdog, vsock, iommu or IDE cdrom
    live_not_hotpluggable: int  # a live step of a kind libvirt cannot hotplug
    live_controller: int  # a live (or offline) step attaching a PCI controller
    avoid: dict[str, frozenset[str]] = field(default_factory=dict)


MIXED = Profile("mixed", bad_address=2, foreign_controller=10, wrong_root=15, hotplug_off_misplaced=2,
                odd_second_video=10, duplicate_singleton=10, live_not_hotpluggable=8, live_controller=3)
# No deliberate mistakes and none of the kinds libvirt refuses outright (IDE on q35, virtiofs without
# shared memory, usb none beside USB controllers): what disagrees is placement or a natural refusal.
VALID = Profile("valid", 0, 0, 0, 0, 0, 0, 0, 0,
                avoid={"pc": frozenset({"fs-virtiofs", "usb-none"}),
                       "q35": frozenset({"fs-virtiofs", "usb-none", "cdrom-ide"}),
                       "aarch64-virt": frozenset({"fs-virtiofs", "usb-none", "iommu-virtio"}),
                       "riscv64-virt": frozenset({"fs-virtiofs", "usb-none", "iommu-virtio"})})
PROFILES = {profile.name: profile for profile in (MIXED, VALID)}  # fmt: skip


def kinds_for(machine: str, *, live: bool, profile: Profile = MIXED) -> list[Kind]:
    """The catalogue rows that may appear in an example for ``machine`` (startable only when ``live``)."""
    avoid = profile.avoid.get(machine, frozenset())
    return [kind for kind in KINDS.values()
            if machine in kind.machines and (kind.startable or not live) and kind.name not in avoid]  # fmt: skip


def weighted(choices: Sequence[str], weights: dict[str, int], default: int = 1) -> st.SearchStrategy[str]:
    """Draw one of ``choices`` with the given relative weights (0 = never)."""
    pool = [choice for choice in choices for _ in range(weights.get(choice, default))]
    return st.sampled_from(pool)


def chance(percent: int) -> st.SearchStrategy[bool]:
    """True with about ``percent`` % probability (and shrinking towards False)."""
    return st.integers(0, 99).map(lambda roll: roll >= 100 - percent)


@st.composite
def addresses(draw: st.DrawFn, profile: Profile = MIXED) -> Address | None:
    """Mostly none; otherwise full, partial or (rarely) out-of-range PCI addresses."""
    roll = draw(st.integers(0, 99))
    if roll < 78:
        return None
    function = draw(st.sampled_from([0] * 6 + [1, 2, 7]))
    bus = draw(st.integers(0, 6))
    slot = draw(st.integers(0, 0x1F))
    if roll < 92:
        return Address(0, bus, slot, function)
    if roll < 100 - profile.bad_address:
        keep = draw(st.lists(st.sampled_from(["bus", "slot", "function"]), min_size=1, max_size=2, unique=True))
        return Address(
            bus=bus if "bus" in keep else None,
            slot=slot if "slot" in keep else None,
            function=function if "function" in keep else None,
        )
    return draw(st.sampled_from([Address(0, 0, 0x20, 0), Address(0, 0, 3, 8), Address(1, 0, 3, 0),
                                 Address(0, 0x20, 0, 0)]))  # fmt: skip


@st.composite
def pci_controllers(draw: st.DrawFn, machine: str, profile: Profile = MIXED) -> Device:
    """A user PCI controller: model, optional index, optional ``hotplug='off'`` and address."""
    weights = CONTROLLER_WEIGHTS[machine]
    foreign = draw(chance(profile.foreign_controller))
    model = draw(weighted(PCI_CONTROLLER_MODELS, weights, default=1 if foreign else 0))
    index = draw(st.one_of(st.none(), st.integers(1, 8)))
    hotplug_off = draw(chance(25 if hotplug_target_allowed(model) else profile.hotplug_off_misplaced))
    address = draw(addresses(profile)) if draw(chance(30)) else None
    return Device(PCI_CONTROLLER, 0, address, model=model, index=index, hotplug_off=hotplug_off)


@st.composite
def endpoints(draw: st.DrawFn, machine: str, *, live: bool, hotplug: bool = False, profile: Profile = MIXED) -> Device:
    """One non-controller device for ``machine``; ``hotplug`` favours kinds libvirt can hotplug."""
    rows = kinds_for(machine, live=live, profile=profile)
    if hotplug and not draw(chance(profile.live_not_hotpluggable)):
        rows = [kind for kind in rows if kind.hotplug]
    name = draw(weighted([kind.name for kind in rows], WEIGHTS))
    address = draw(addresses(profile)) if KINDS[name].addressable else None
    return Device(name, 0, address)


@st.composite
def domain_devices(draw: st.DrawFn, machine: str, *, live: bool, profile: Profile = MIXED) -> list[Device]:
    """The devices of an input domain, in the order they are written."""
    devices = draw(st.lists(endpoints(machine, live=live, profile=profile), max_size=10))
    if draw(chance(30)):  # a burst of one NIC model, as management applications write them
        model = draw(weighted([kind for kind in NIC_KINDS if kind in KINDS], WEIGHTS))
        devices += [Device(model, 0, draw(addresses(profile))) for _ in range(draw(st.integers(2, 8)))]
    devices += draw(st.lists(pci_controllers(machine, profile), max_size=3)) if draw(chance(35)) else []
    if draw(chance(8)):
        wrong = draw(chance(profile.wrong_root))
        model = draw(st.sampled_from(sorted(ROOT_MODELS.values()))) if wrong else ROOT_MODELS[machine]
        devices.append(Device(PCI_CONTROLLER, 0, None, model=model, index=0))
    allowed = {kind.name for kind in kinds_for(machine, live=live, profile=profile)}
    primary = [name for name in PRIMARY_VIDEOS if name in allowed]  # qxl is x86 only
    videos = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    if videos:
        devices.append(Device(draw(st.sampled_from(primary)), 0, draw(addresses(profile))))
    if videos > 1:
        second = primary if draw(chance(profile.odd_second_video)) else SECONDARY_VIDEOS
        second = [name for name in second if name in allowed]
        devices.append(Device(draw(st.sampled_from(second)), 0, draw(addresses(profile))))
    for percent, group in SINGLETONS.values():
        names = [name for name in group if name in allowed]
        if not names or not draw(chance(percent)):
            continue
        twice: bool = draw(chance(profile.duplicate_singleton)) and not (live and group in TWO_REFUSED_AT_START)
        for _ in range(2 if twice else 1):
            name: str = draw(st.sampled_from(names))
            devices.append(Device(name, 0, draw(addresses(profile)) if KINDS[name].addressable else None))
    if "usb-none" in allowed and draw(chance(45)):
        devices.append(Device("usb-none", 0))
    if draw(chance(60)):
        devices.append(Device(draw(st.sampled_from(BALLOONS)), 0, draw(addresses(profile))))
    return draw(st.permutations(devices)) if devices else []


@st.composite
def steps_for(
    draw: st.DrawFn, machine: str, operation: Operation, present: list[Device], profile: Profile = MIXED
) -> list[Step]:
    """Attach (and, offline, detach) steps; a detach names a device the domain holds at that point."""
    if operation is Operation.DEFINE:
        return []
    live = operation.live
    steps: list[Step] = []
    holding = [device for device in present if KINDS.get(device.kind) is not None and KINDS[device.kind].detachable]
    for _ in range(draw(st.integers(1, 4 if live else 5))):
        if not live and holding and draw(chance(25)):
            device = draw(st.sampled_from(holding))
            holding = [held for held in holding if held is not device]
            steps.append(Step(Action.DETACH, device))
            continue
        if draw(chance(profile.live_controller)):
            device = draw(pci_controllers(machine, profile))
        else:
            device = draw(endpoints(machine, live=live, hotplug=live, profile=profile))
        steps.append(Step(Action.ATTACH, device))
        if KINDS.get(device.kind) is not None and KINDS[device.kind].detachable:
            holding.append(device)
    return steps


def numbered(devices: list[Device], steps: list[Step]) -> tuple[tuple[Device, ...], tuple[Step, ...]]:
    """Give every device a unique ordinal (MACs, disk targets, names), keeping detaches pointing at
    the device they detach."""
    renumbered: dict[int, Device] = {}
    out_devices = []
    for device in devices:
        renumbered[id(device)] = _with_n(device, len(renumbered))
        out_devices.append(renumbered[id(device)])
    out_steps = []
    for step in steps:
        if id(step.device) not in renumbered:
            renumbered[id(step.device)] = _with_n(step.device, len(renumbered))
        out_steps.append(Step(step.action, renumbered[id(step.device)]))
    return tuple(out_devices), tuple(out_steps)


def _with_n(device: Device, n: int) -> Device:
    return Device(device.kind, n, device.address, device.model, device.index, device.hotplug_off)


@st.composite
def examples(
    draw: st.DrawFn,
    machines: Sequence[str] = MACHINES,
    operations: Sequence[Operation] = OPERATIONS,
    profile: Profile = MIXED,
) -> Example:
    """A whole example: machine, operation, input devices and steps."""
    machine = draw(st.sampled_from(list(machines)))
    operation = draw(st.sampled_from(list(operations)))
    devices = draw(domain_devices(machine, live=operation.live, profile=profile))
    steps = draw(steps_for(machine, operation, devices, profile))
    numbered_devices, numbered_steps = numbered(devices, steps)
    return Example(machine, operation, numbered_devices, numbered_steps)
