"""A pure-Python model of how libvirt lays out the PCI topology of a QEMU x86_64 guest.

One model, several releases: a *profile* names a libvirt version and the QEMU it runs with
(:data:`PROFILES`: 9.0.0 + QEMU 7.2, 11.3.0 + QEMU 10.0, 12.8.0 + QEMU 11.1), and each rule that a
release changed is a row of :data:`pytest_pcie.reference.profiles.RULE_CHANGES`.  Without
``profile=`` the functions model the newest profile.  Independently, a *policy* holds the topology
choices a fork may change on purpose (spare root ports, ...; upstream's by default).

Public API (stable):

* :func:`define` — the domain XML libvirt would store for a definition.
* :func:`start` — the live XML of a guest started from a stored definition.
* :func:`attach` — attach one device, offline (``--config``) or live (hotplug).
* :func:`detach` — detach one device from the persistent definition.
* :class:`LibvirtError` — raised, with libvirt's exact message text, where libvirt refuses.
* :data:`PROFILES`, :class:`Profile` — the releases modelled; every function takes ``profile=``.
* :class:`Policy` — the topology choices a fork may change (defaults: upstream's); every function
  takes ``policy=`` to apply one (see :mod:`pytest_pcie.reference.policy`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pytest_pcie.reference import attach as _attach
from pytest_pcie.reference import define as _define
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.policy import Policy, current_policy, using_policy
from pytest_pcie.reference.profiles import NEWEST_PROFILE, PROFILES, Profile, UnknownProfile, using_profile

__all__ = [
    "NEWEST_PROFILE", "PROFILES", "LibvirtError", "Policy", "Profile", "UnknownProfile", "attach", "current_policy",
    "define", "detach", "start", "using_policy",
]

ProfileChoice = Profile | str | None


@contextmanager
def _under(profile: ProfileChoice, policy: Policy | None) -> Iterator[None]:
    with using_profile(profile), using_policy(policy):
        yield


def define(domain_xml: str, *, profile: ProfileChoice = None, policy: Policy | None = None) -> str:
    """Return the domain XML libvirt would store after ``virsh define``: defaults added, PCI
    controllers auto-added and every PCI address filled in.  ``profile`` is a :class:`Profile` or
    a version name (``"11.3.0"``); None keeps the current one (the newest by default)."""
    with _under(profile, policy):
        return _define.define(domain_xml)


def start(domain_xml: str, *, profile: ProfileChoice = None, policy: Policy | None = None) -> str:
    """Return the live XML of a guest started from the stored definition ``domain_xml``: libvirt
    runs post-parse on it again (no address changes), then refuses what QEMU's command line cannot
    express, such as a USB companion without a master of its index."""
    with _under(profile, policy):
        return _define.start(domain_xml)


def attach(
    domain_xml: str, device_xml: str, *, live: bool, profile: ProfileChoice = None, policy: Policy | None = None
) -> str:
    """Attach ``device_xml`` to ``domain_xml`` (a define output, or the running guest's XML when
    ``live``) and return the resulting XML."""
    with _under(profile, policy):
        return _attach.attach(domain_xml, device_xml, live=live)


def detach(domain_xml: str, device_xml: str, *, profile: ProfileChoice = None, policy: Policy | None = None) -> str:
    """Detach the device matching ``device_xml`` from the persistent definition ``domain_xml``."""
    with _under(profile, policy):
        return _attach.detach(domain_xml, device_xml)
