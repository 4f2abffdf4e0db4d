"""The contract between the plugin and whatever runs a case."""

from __future__ import annotations

from typing import Protocol

from pytest_pcie.cases import Case
from pytest_pcie.outcome import Outcome
from pytest_pcie.versions import BASE_VERSION, Version


class BackendUnavailable(Exception):
    """The backend cannot run at all on this host; ``str()`` is one line saying what is missing and how to get it."""


class Backend(Protocol):
    """Runs cases.  One instance serves a whole pytest session (or one xdist worker)."""

    name: str
    # The libvirt version whose behaviour the backend shows: the daemon's own for real libvirt, the
    # modelled one for the reference.  It picks the goldens a run is compared with.  A backend
    # without the attribute is taken to show the corpus's base version (see backend_version).

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


def backend_version(backend: Backend) -> Version:
    """The libvirt version ``backend`` shows; the corpus's base version if it does not say."""
    version = getattr(backend, "version", None)
    return version if isinstance(version, Version) else BASE_VERSION
