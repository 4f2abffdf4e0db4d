"""The default backend: the pure-Python reference assigner, needing nothing installed."""

from __future__ import annotations

from pytest_pcie import reference
from pytest_pcie.cases import Action, Case
from pytest_pcie.domain import prepare_domain
from pytest_pcie.outcome import Failure, Outcome
from pytest_pcie.reference.profiles import NEWEST_PROFILE, Profile, profile_for, profile_named, using_profile
from pytest_pcie.versions import Version


class ReferenceBackend:
    """Runs cases through :mod:`pytest_pcie.reference` under one profile, mirroring what the
    libvirt backend does; the profile's libvirt version picks the goldens, as a daemon's would."""

    name = "reference"

    def __init__(self, profile: str | None = None) -> None:
        self.profile: Profile = NEWEST_PROFILE if profile is None else profile_named(profile)

    @classmethod
    def matching(cls, libvirt: Version) -> ReferenceBackend:
        """The reference to compare a daemon of version ``libvirt`` with: the profile of that
        release, or of the newest release before it (UnknownProfile when it is older than all)."""
        return cls(profile_for(libvirt).name)

    @property
    def version(self) -> Version:
        return self.profile.libvirt

    def header(self) -> str:
        return f"pcie backend: reference (pure-Python model of {self.profile.describe()})"

    def run(self, case: Case, machine: str) -> Outcome:
        with using_profile(self.profile):
            return self._run(case, machine)

    def _run(self, case: Case, machine: str) -> Outcome:
        try:
            domain = reference.define(prepare_domain(case.input_xml, machine))
        except reference.LibvirtError as exc:
            return Outcome(None, Failure(0, "define", exc.message))
        if case.operation.live:
            # The libvirt backend starts a transient guest from exactly what define stored; libvirt
            # runs post-parse on it again, which on a stored definition changes no address (checked
            # on 64 random guests: the live topology at start equals the inactive one).
            try:
                domain = reference.start(domain)
            except reference.LibvirtError as exc:
                return Outcome(domain, Failure(0, "start", exc.message))
        for number, step in enumerate(case.steps, start=1):
            try:
                if step.action is Action.ATTACH:
                    domain = reference.attach(domain, step.device_xml, live=case.operation.live)
                else:
                    domain = reference.detach(domain, step.device_xml)
            except reference.LibvirtError as exc:
                return Outcome(domain, Failure(number, step.label, exc.message))
        return Outcome(domain)

    def close(self) -> None:
        pass
