"""Version profiles: one model of libvirt's PCI assignment, several libvirt + QEMU releases.

The reference started as a model of libvirt 9.0.0 with QEMU 7.2.  Later releases change a handful
of rules; a profile is the base rules with the changes of every release up to its own applied.
Each change is one row of :data:`RULE_CHANGES`: the rule (named as in ``rules.toml``), the libvirt
version that introduced it, a sentence for people, and the :class:`Rules` fields it sets.  The
algorithm modules read :func:`current_rules`; they never compare versions themselves, so a fork
that carries a change earlier or later than upstream is a different row, not a code change.

The active profile is a context variable, so the public API stays ``define(xml)`` and concurrent
callers (threads, the differential tester's workers) cannot see each other's profile.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pytest_pcie.reference.arches import DEFAULT_MODELS as ARCH_DEFAULT_MODELS
from pytest_pcie.reference.arches import NO_DEFAULT_MEMBALLOON
from pytest_pcie.versions import Version, VersionError


def _machine_versions(ranges: tuple[tuple[int, int, int], ...]) -> tuple[str, ...]:
    """Versioned machine suffixes from (major, first minor, last minor) ranges."""
    return tuple(f"{major}.{minor}" for major, first, last in ranges for minor in range(first, last + 1))


@dataclass(frozen=True)
class QemuMachines:
    """The x86_64 machine types one QEMU release offers (``virsh capabilities``) and the newest
    versioned name of each chipset, which libvirt stores for the aliases ``pc`` and ``q35``."""

    qemu: Version
    i440fx: tuple[str, ...]
    q35: tuple[str, ...]
    newest: str
    others: tuple[str, ...] = ("isapc", "microvm", "x-remote")

    @property
    def aliases(self) -> dict[str, str]:
        return {"pc": f"pc-i440fx-{self.newest}", "q35": f"pc-q35-{self.newest}"}

    @property
    def supported(self) -> frozenset[str]:
        return frozenset(
            ["pc", "q35", *self.others]
            + [f"pc-i440fx-{version}" for version in self.i440fx]
            + [f"pc-q35-{version}" for version in self.q35]
        )


_FROM_3_0 = ((3, 0, 1), (4, 0, 2), (5, 0, 2), (6, 0, 2), (7, 0, 2))
_FROM_8_0 = ((8, 0, 2), (9, 0, 2))

# Read off each daemon's `virsh capabilities` on 2026-12-03 (Debian 12, 13 and sid).
QEMU_MACHINES: dict[Version, QemuMachines] = {
    machines.qemu: machines
    for machines in (
        QemuMachines(
            Version(7, 2, 0),
            i440fx=_machine_versions(((1, 4, 7), (2, 0, 12), *_FROM_3_0)),
            q35=(*_machine_versions(((2, 4, 12), *_FROM_3_0)), "4.0.1"),
            newest="7.2",
        ),
        QemuMachines(
            Version(10, 0, 0),
            i440fx=_machine_versions(((2, 4, 12), *_FROM_3_0, *_FROM_8_0, (10, 0, 0))),
            q35=(*_machine_versions(((2, 4, 12), *_FROM_3_0, *_FROM_8_0, (10, 0, 0))), "4.0.1"),
            newest="10.0",
        ),
        QemuMachines(
            Version(11, 1, 0),
            i440fx=_machine_versions(((5, 2, 2), (6, 0, 2), (7, 0, 2), *_FROM_8_0, (10, 0, 2), (11, 0, 1))),
            q35=_machine_versions(((5, 2, 2), (6, 0, 2), (7, 0, 2), *_FROM_8_0, (10, 0, 2), (11, 0, 1))),
            newest="11.1",
            others=("isapc", "microvm", "nitro", "x-remote"),
        ),
    )
}


@dataclass(frozen=True)
class Rules:
    """Every fact of the model that differs between libvirt releases, with 9.0.0's values.

    A field is a value the algorithm looks up, not a version test: e.g. the kinds a domain may hold
    one of, or the word in a message.  :data:`RULE_CHANGES` says which release set which value.
    """

    # Controllers libvirt adds itself (PCI controllers filling index gaps, disk, virtio-serial and
    # other implicit controllers) go to the end of the controller list (False), or where libvirt's
    # controller insert puts them (True): before the first of their type with a higher index, else
    # after the last of their type.  Addresses are handed out in list order, so this decides who
    # gets the lower slots.
    added_controllers_inserted: bool = False
    # Kinds the parser allows once per domain, with the message for a second one.
    single_device_messages: Mapping[str, str] = field(
        default_factory=lambda: {
            "watchdog": "internal error: only a single watchdog device is supported",
            "memballoon": "internal error: only a single memory balloon device is supported",
            "iommu": "XML error: only a single IOMMU device is supported",
            "vsock": "XML error: only a single vsock device is supported",
        }
    )
    # Kinds an offline attach refuses a second one of, with the message.
    single_attach_messages: Mapping[str, str] = field(
        default_factory=lambda: {
            "watchdog": "Requested operation is not valid: domain already has a watchdog",
            "vsock": "Requested operation is not valid: domain already has a vsock device",
        }
    )
    # Kinds an offline attach refuses when a device with the same values of these attributes is
    # there already ("device is already in the domain configuration").
    duplicate_attach_attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Whether validation refuses watchdogs whose actions differ (only reachable with several).
    watchdog_actions_must_agree: bool = False
    # (chipset name, watchdog model) pairs validation refuses.
    refused_watchdogs: frozenset[tuple[str, str]] = frozenset()
    # Controller types that can be hot-plugged.
    hotpluggable_controllers: frozenset[str] = frozenset({"scsi"})
    # Disk buses a live attach refuses, checked before the medium (empty before 11.3.0: the
    # missing file name of an empty CD-ROM was the first complaint).
    unhotpluggable_disk_buses: frozenset[str] = frozenset()
    # The word in "a %s slot is needed to connect a PCI controller model=...".
    slot_needed_word: str = "PCI"
    # Whether a virtio console written with a virtio-serial address but no port takes a port (the
    # first free one above 0 of controller 0, whatever controller it names) before the channels do.
    console_address_takes_port: bool = True
    # A device's controller has no alias (a virtio-serial controller added during a live attach);
    # 9.0.0's message ends in a space.
    controller_alias_message: str = "internal error: Device alias was not set for {type} controller with index {index} "
    # Whether a SCSI controller without a model takes the model of the first one that names one
    # (instead of lsilogic).
    scsi_model_from_first_written: bool = False
    # (device kind, element, attribute, value) the parser does not know yet: "XML error: Invalid value
    # for attribute ... in element ...".
    unknown_values: frozenset[tuple[str, str, str, str]] = frozenset(
        {("sound", "sound", "model", "virtio"), ("filesystem", "driver", "type", "mtp")}
    )
    # Per arch other than x86_64: the model libvirt stores for a device written without one.
    arch_default_models: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: ARCH_DEFAULT_MODELS)
    # Arches whose domains get no default memballoon.
    no_default_memballoon_arches: frozenset[str] = NO_DEFAULT_MEMBALLOON
    # Whether growing the bus table for a device that needs a pcie-to-pci-bridge slot adds a
    # root port (instead of failing "Cannot automatically add a new PCI bus").
    pcie_to_pci_bridge_gets_port: bool = False


@dataclass(frozen=True)
class RuleChange:
    """One rule that a libvirt release changed.

    ``values`` maps :class:`Rules` fields to their new value, or to a :class:`Edit` of the value
    before it (so two releases can each take one kind off the same table).
    """

    rule: str
    since: Version
    summary: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Edit:
    """A change relative to the previous value of a field: keys dropped from a mapping, or members
    added to a set."""

    drop: tuple[Any, ...] = ()
    add: tuple[Any, ...] = ()
    description: str = ""

    def apply(self, previous: Any) -> Any:
        if isinstance(previous, Mapping):
            return {key: value for key, value in previous.items() if key not in self.drop}
        return frozenset(previous - set(self.drop)) | frozenset(self.add)


def _without(*keys: Any) -> Edit:
    return Edit(drop=keys)


def _adding(*members: Any) -> Edit:
    return Edit(add=members)


RULE_CHANGES: tuple[RuleChange, ...] = (
    RuleChange(
        "versions.controllers-addressed-by-index",
        Version(11, 3, 0),
        "Controllers libvirt adds (PCI controllers filling index gaps, implicit disk and virtio-serial "
        "controllers) are inserted among those of their type instead of appended, so they are addressed "
        "before the controllers of later types (9.0.0 addressed every named controller first).",
        {"added_controllers_inserted": True},
    ),
    RuleChange(
        "versions.virtio-sound-and-mtp",
        Version(11, 3, 0),
        "The parser knows <sound model='virtio'> (a virtio endpoint) and the mtp filesystem driver (a USB "
        "device, no PCI address), which 9.0.0 refuses as invalid values.",
        {"unknown_values": frozenset()},
    ),
    RuleChange(
        "versions.several-watchdogs",
        Version(11, 3, 0),
        "A domain may hold more than one watchdog, as long as their actions agree; an offline attach "
        "refuses only a watchdog of the same model and action as one already there.",
        {
            "single_device_messages": _without("watchdog"),
            "single_attach_messages": _without("watchdog"),
            "duplicate_attach_attributes": {"watchdog": ("model", "action")},
            "watchdog_actions_must_agree": True,
        },
    ),
    RuleChange(
        "versions.q35-refuses-ib700",
        Version(11, 3, 0),
        "q35 refuses the ISA ib700 watchdog.",
        {"refused_watchdogs": _adding(("q35", "ib700"))},
    ),
    RuleChange(
        "versions.virtio-serial-hotplug",
        Version(11, 3, 0),
        "A virtio-serial controller can be hot-plugged.",
        {"hotpluggable_controllers": _adding("virtio-serial")},
    ),
    RuleChange(
        "versions.sata-cdrom-hotplug-message",
        Version(11, 3, 0),
        "A live attach of a SATA disk is refused by its bus before libvirt looks at the medium.",
        {"unhotpluggable_disk_buses": _adding("sata")},
    ),
    RuleChange(
        "versions.controller-alias-wording",
        Version(11, 3, 0),
        "'Device alias was not set for <type> controller with index N' loses the trailing space of 9.0.0's message.",
        {
            "controller_alias_message": (
                "internal error: Device alias was not set for {type} controller with index {index}"
            )
        },
    ),
    RuleChange(
        "versions.pcie-slot-wording",
        Version(12, 8, 0),
        "'a PCIe slot is needed to connect a PCI controller' replaces 'a PCI slot is needed'.",
        {"slot_needed_word": "PCIe"},
    ),
    RuleChange(
        "versions.virtio-console-address-takes-no-port",
        Version(12, 8, 0),
        "A virtio console written with a virtio-serial address but no port no longer takes a port from "
        "the channels (11.3.0 gave it the first free port above 0 of controller 0).",
        {"console_address_takes_port": False},
    ),
    RuleChange(
        "versions.several-iommus",
        Version(12, 8, 0),
        "A domain may hold more than one IOMMU.",
        {"single_device_messages": _without("iommu")},
    ),
    RuleChange(
        "versions.scsi-model-from-first-controller",
        Version(12, 8, 0),
        "A SCSI controller written without a model, or added for a disk, takes the model of the first "
        "SCSI controller (by index) that names one; lsilogic only when none does.",
        {"scsi_model_from_first_written": True},
    ),
    RuleChange(
        "versions.virt-no-default-memballoon",
        Version(12, 8, 0),
        "riscv64 virt gets no default memballoon either (aarch64 virt never had one).",
        {"no_default_memballoon_arches": _adding("riscv64")},
    ),
    RuleChange(
        "versions.virt-scsi-default-virtio",
        Version(12, 8, 0),
        "On aarch64 and riscv64 virt a SCSI controller without a model is virtio-scsi (not lsilogic), and "
        "on riscv64 a USB controller without a model is qemu-xhci (not piix3-uhci).",
        {
            "arch_default_models": {
                "aarch64": {**ARCH_DEFAULT_MODELS["aarch64"], "controller:scsi": "virtio-scsi"},
                "riscv64": {
                    **ARCH_DEFAULT_MODELS["riscv64"], "controller:scsi": "virtio-scsi", "controller:usb": "qemu-xhci"
                },
            }
        },
    ),
    RuleChange(
        "versions.pcie-to-pci-bridge-gets-a-port",
        Version(12, 8, 0),
        "A pcie-to-pci-bridge with no free port gets a pcie-root-port added instead of failing.",
        {"pcie_to_pci_bridge_gets_port": True},
    ),
)


@dataclass(frozen=True)
class Profile:
    """A libvirt release and the QEMU it runs with, as the reference models them."""

    libvirt: Version
    qemu: Version
    suite: str  # the Debian suite whose packages were measured

    @property
    def name(self) -> str:
        return str(self.libvirt)

    @property
    def changes(self) -> tuple[RuleChange, ...]:
        """The rule changes in effect, oldest first."""
        return tuple(change for change in RULE_CHANGES if change.since <= self.libvirt)

    @property
    def rules(self) -> Rules:
        return rules_for(self.libvirt)

    @property
    def machines(self) -> QemuMachines:
        return QEMU_MACHINES[self.qemu]

    def describe(self) -> str:
        return f"libvirt {self.libvirt} + QEMU {self.qemu.major}.{self.qemu.minor} (Debian {self.suite})"


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(Version(9, 0, 0), Version(7, 2, 0), "12 bookworm"),
        Profile(Version(11, 3, 0), Version(10, 0, 0), "13 trixie"),
        Profile(Version(12, 8, 0), Version(11, 1, 0), "sid"),
    )
}
BASE_PROFILE = PROFILES["9.0.0"]
NEWEST_PROFILE = max(PROFILES.values(), key=lambda profile: profile.libvirt)


class UnknownProfile(ValueError):
    """No profile models the requested libvirt; ``str()`` lists the ones there are."""


@cache
def rules_for(libvirt: Version) -> Rules:
    """The rules of ``libvirt``: 9.0.0's with every change up to and including ``libvirt`` applied."""
    rules = Rules()
    for change in RULE_CHANGES:
        if change.since > libvirt:
            continue
        updates = {
            name: value.apply(getattr(rules, name)) if isinstance(value, Edit) else value
            for name, value in change.values.items()
        }
        rules = dataclasses.replace(rules, **updates)
    return rules


def profile_named(name: str) -> Profile:
    """The profile for a version spelled ``name`` (``"12.8.0"``), or UnknownProfile."""
    try:
        return PROFILES[str(Version.parse(name))]
    except (KeyError, VersionError):
        known = ", ".join(PROFILES)
        raise UnknownProfile(f"no reference profile {name!r}; the profiles are {known}") from None


def profile_for(libvirt: Version) -> Profile:
    """The profile to compare a daemon of version ``libvirt`` with: the newest not newer than it
    (a 10.0.0 daemon is compared with 9.0.0's profile, as it reads 9.0.0's goldens)."""
    older = [profile for profile in PROFILES.values() if profile.libvirt <= libvirt]
    if not older:
        raise UnknownProfile(f"libvirt {libvirt} is older than every reference profile ({', '.join(PROFILES)})")
    return max(older, key=lambda profile: profile.libvirt)


_ACTIVE: contextvars.ContextVar[Profile] = contextvars.ContextVar("pcie_reference_profile", default=NEWEST_PROFILE)


def current_profile() -> Profile:
    """The profile the model is running under (the newest unless :func:`using_profile` says otherwise)."""
    return _ACTIVE.get()


def current_rules() -> Rules:
    return rules_for(_ACTIVE.get().libvirt)


@contextmanager
def using_profile(profile: Profile | str | None) -> Iterator[Profile]:
    """Run the model under ``profile`` (a Profile, a version name, or None for the current one)."""
    if profile is None:
        yield _ACTIVE.get()
        return
    chosen = profile_named(profile) if isinstance(profile, str) else profile
    token = _ACTIVE.set(chosen)
    try:
        yield chosen
    finally:
        _ACTIVE.reset(token)
