"""Backends run a case on something that assigns PCI addresses: the reference model or real libvirt.

The registry maps a name (what ``--pcie-backend`` and ``pcie-assign --backend`` accept) to a factory.
Factories import their backend lazily, so choosing ``reference`` never needs libvirt-python, and a
backend module that is broken or still being written only hurts the runs that ask for it.

Other backends plug in two ways: call :func:`register_backend` (from a ``conftest.py``, which is how
the plugin's own tests add fakes), or publish an entry point in the ``pytest_pcie.backends`` group
whose object is a factory taking :class:`BackendSettings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from pytest_pcie.backends.base import Backend, BackendUnavailable

ENTRY_POINT_GROUP = "pytest_pcie.backends"
DEFAULT_BACKEND = "reference"
DEFAULT_LIBVIRT_URI = "qemu:///system"


@dataclass(frozen=True)
class BackendSettings:
    """Everything a factory may need from the command line; backends ignore what they do not use."""

    libvirt_uri: str = DEFAULT_LIBVIRT_URI
    reference_profile: str | None = None  # the reference backend's profile; None is the newest


BackendFactory = Callable[[BackendSettings], Backend]


def _reference(settings: BackendSettings) -> Backend:
    from pytest_pcie.backends.reference import ReferenceBackend

    return ReferenceBackend(settings.reference_profile)


def _libvirt(settings: BackendSettings) -> Backend:
    try:
        from pytest_pcie.backends import libvirt as libvirt_backend
    except ImportError as exc:
        raise BackendUnavailable(
            f"the libvirt backend cannot be loaded ({exc}); install pytest-pcie[libvirt]"
        ) from None
    backend: Backend = libvirt_backend.LibvirtBackend(settings.libvirt_uri)
    return backend


_REGISTRY: dict[str, BackendFactory] = {"reference": _reference, "libvirt": _libvirt}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``factory`` available as ``--pcie-backend=name`` (replacing an earlier one of that name)."""
    _REGISTRY[name] = factory


def backend_names() -> list[str]:
    """Every name a backend can be chosen by: built-ins, registered ones and entry points."""
    return sorted(set(_REGISTRY) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def create_backend(name: str, settings: BackendSettings | None = None) -> Backend:
    """Build the backend called ``name``.

    Raises :class:`BackendUnavailable` (one line) for an unknown name or a backend that cannot run
    on this host, so callers can stop with that line instead of a traceback.
    """
    factory = _REGISTRY.get(name) or _entry_point_factory(name)
    if factory is None:
        raise BackendUnavailable(f"unknown pcie backend {name!r}; choose one of: {', '.join(backend_names())}")
    return factory(settings or BackendSettings())


def _entry_point_factory(name: str) -> BackendFactory | None:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        factory: BackendFactory = entry_point.load()
        return factory
    return None


__all__ = [
    "DEFAULT_BACKEND",
    "DEFAULT_LIBVIRT_URI",
    "Backend",
    "BackendFactory",
    "BackendSettings",
    "BackendUnavailable",
    "backend_names",
    "create_backend",
    "register_backend",
]
