"""The policy parameters of the reference: the choices a libvirt fork may make differently.

Upstream libvirt hard-codes a few topology choices that the 2016 design thread debated and that a
fork or a distribution may change on purpose: how many spare root ports a fresh q35 guest gets,
whether root ports are packed as functions of one slot, how many pci-root slots pc keeps free for a
future bridge, and the default USB controller.  :class:`Policy` holds them, its defaults are
upstream's (libvirt 9.0.0), and the algorithm modules read them from :func:`current_policy` where
they would otherwise use a constant.  A fork declares its values once, in a deviations file
(:mod:`pytest_pcie.deviations`), and the reference then predicts the fork's topology.

The policy travels in a :class:`contextvars.ContextVar`, so it needs no new argument through the
assigner and two threads (or two xdist workers) may run different policies at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields

# USB controller models a fork may make its default (the USB models libvirt 9.0.0 accepts on x86
# that take a PCI slot, or "none" for no USB at all).
DEFAULT_USB_MODELS: tuple[str, ...] = (
    "piix3-uhci", "piix4-uhci", "ehci", "ich9-ehci1", "vt82c686b-uhci", "pci-ohci", "nec-xhci", "qemu-xhci", "none",
)


@dataclass(frozen=True)
class Policy:
    """libvirt's topology choices; the defaults are upstream libvirt 9.0.0's."""

    spare_root_ports: int = 1
    """Empty pcie-root-ports added for hotplug to a new q35 guest that needed a bus (rule policy.spare-port)."""
    pack_root_ports: bool = True
    """Auto-placed root ports share a pcie-root slot, eight functions to a slot (rule q35.root-ports-aggregate)."""
    pc_free_slots: int = 1
    """pci-root slots pc keeps free while planning, so a pci-bridge is added before bus 0 is full
    (rule pc.free-slot-kept)."""
    default_usb_pc: str = "piix3-uhci"
    """The USB controller added to a pc guest that names none (rule defaults.usb-model)."""
    default_usb_q35: str = "qemu-xhci"
    """The USB controller added to a q35 guest that names none (rule defaults.usb-model)."""

    def __post_init__(self) -> None:
        for name in ("spare_root_ports", "pc_free_slots"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
                raise ValueError(f"{name} must be an integer from 0 to {MAX_COUNT}, not {value!r}")
        if not isinstance(self.pack_root_ports, bool):
            raise ValueError(f"pack_root_ports must be true or false, not {self.pack_root_ports!r}")
        for name in ("default_usb_pc", "default_usb_q35"):
            value = getattr(self, name)
            if value not in DEFAULT_USB_MODELS:
                raise ValueError(f"{name} must be one of {', '.join(DEFAULT_USB_MODELS)}, not {value!r}")

    def deviations(self) -> dict[str, object]:
        """The parameters that differ from upstream's, by name, in declaration order."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(UPSTREAM, f.name)
        }


# A bound that keeps a typo (spare_root_ports = 100) from looking like a policy: 8 is more than any
# value the 2016 thread proposed, and a q35 slot holds eight packed root ports.
MAX_COUNT = 8

UPSTREAM = Policy()

# The rule of rules.toml each parameter changes (docs/forks.md lists the cases it changes).
PARAMETER_RULES: dict[str, str] = {
    "spare_root_ports": "policy.spare-port",
    "pack_root_ports": "q35.root-ports-aggregate",
    "pc_free_slots": "pc.free-slot-kept",
    "default_usb_pc": "defaults.usb-model",
    "default_usb_q35": "defaults.usb-model",
}

# The machine families on which each parameter can change anything (spare and packed root ports
# exist only under a pcie-root; the bridge placeholder only on a pci-root).
PARAMETER_MACHINES: dict[str, tuple[str, ...]] = {
    "spare_root_ports": ("q35",),
    "pack_root_ports": ("q35",),
    "pc_free_slots": ("pc",),
    "default_usb_pc": ("pc",),
    "default_usb_q35": ("q35",),
}

_CURRENT: ContextVar[Policy] = ContextVar("pytest_pcie_policy", default=UPSTREAM)


def current_policy() -> Policy:
    """The policy the reference applies in this context (upstream's unless :func:`using_policy`)."""
    return _CURRENT.get()


@contextmanager
def using_policy(policy: Policy | None) -> Iterator[Policy]:
    """Apply ``policy`` (None: keep the current one) to the reference inside the ``with`` block."""
    if policy is None:
        yield current_policy()
        return
    token = _CURRENT.set(policy)
    try:
        yield policy
    finally:
        _CURRENT.reset(token)
