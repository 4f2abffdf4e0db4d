"""A pure-Python model of how libvirt 9.0.0 lays out the PCI topology of a QEMU x86_64 guest.

Public API (stable):

* :func:`define` — the domain XML libvirt would store for a definition.
* :func:`start` — the live XML of a guest started from a stored definition.
* :func:`attach` — attach one device, offline (``--config``) or live (hotplug).
* :func:`detach` — detach one device from the persistent definition.
* :class:`LibvirtError` — raised, with libvirt's exact message text, where libvirt refuses.
* :class:`Policy` — the topology choices a fork may change (defaults: upstream's); every function
  takes ``policy=`` to apply one (see :mod:`pytest_pcie.reference.policy`).
"""

from __future__ import annotations

from pytest_pcie.reference import attach as _attach
from pytest_pcie.reference import define as _define
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.policy import Policy, current_policy, using_policy

__all__ = ["LibvirtError", "Policy", "attach", "current_policy", "define", "detach", "start", "using_policy"]


def define(domain_xml: str, *, policy: Policy | None = None) -> str:
    """Return the domain XML libvirt would store after ``virsh define``: defaults added, PCI
    controllers auto-added and every PCI address filled in."""
    with using_policy(policy):
        return _define.define(domain_xml)


def start(domain_xml: str, *, policy: Policy | None = None) -> str:
    """Return the live XML of a guest started from the stored definition ``domain_xml``: libvirt
    runs post-parse on it again (no address changes), then refuses what QEMU's command line cannot
    express, such as a USB companion without a master of its index."""
    with using_policy(policy):
        return _define.start(domain_xml)


def attach(domain_xml: str, device_xml: str, *, live: bool, policy: Policy | None = None) -> str:
    """Attach ``device_xml`` to ``domain_xml`` (a define output, or the running guest's XML when
    ``live``) and return the resulting XML."""
    with using_policy(policy):
        return _attach.attach(domain_xml, device_xml, live=live)


def detach(domain_xml: str, device_xml: str, *, policy: Policy | None = None) -> str:
    """Detach the device matching ``device_xml`` from the persistent definition ``domain_xml``."""
    with using_policy(policy):
        return _attach.detach(domain_xml, device_xml)
