"""The contract between the plugin and whatever runs a case."""

from __future__ import annotations

from typing import Protocol

from pytest_pcie.cases import Case
from pytest_pcie.outcome import Outcome


class BackendUnavailable(Exception):
    """The backend cannot run at all on this host; ``str()`` is one line saying what is missing and how to get it."""


class Backend(Protocol):
    """Runs cases.  One instance serves a whole pytest session (or one xdist worker)."""

    name: str

    def header(self) -> str:
        """One line for pytest's header, e.g. the libvirt and QEMU versions in use."""
        ...

    def run(self, case: Case, machine: str) -> Outcome:
        """Run ``case`` on ``machine``: define the prepared input, then apply its steps in order.

        A step libvirt refuses ends the run with ``Outcome.failure`` set; it is not an exception.
        Exceptions mean the backend itself broke.
        """
        ...

    def close(self) -> None:
        """Release what the backend holds (connections, leftover domains)."""
        ...
