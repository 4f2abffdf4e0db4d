"""The backend registry: built-in names, registration, entry points, and one-line unavailability."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pytest_pcie import backends
from pytest_pcie.backends import BackendSettings, BackendUnavailable, create_backend, register_backend
from pytest_pcie.cases import Case
from pytest_pcie.outcome import Outcome


@dataclass
class Dummy:
    uri: str
    name: str = "dummy"

    def header(self) -> str:
        return f"pcie backend: dummy at {self.uri}"

    def run(self, case: Case, machine: str) -> Outcome:
        return Outcome(None)

    def close(self) -> None:
        pass


def test_reference_is_built_in_and_needs_nothing() -> None:
    backend = create_backend("reference")
    assert backend.name == "reference"
    backend.close()


def test_a_registered_factory_gets_the_settings() -> None:
    register_backend("dummy-registered", lambda settings: Dummy(settings.libvirt_uri))
    backend = create_backend("dummy-registered", BackendSettings(libvirt_uri="test:///default"))
    assert backend.header() == "pcie backend: dummy at test:///default"
    assert "dummy-registered" in backends.backend_names()


def test_an_entry_point_provides_a_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    class EntryPoint:
        name = "from-entry-point"

        def load(self) -> object:
            return lambda settings: Dummy("ep")

    def fake_entry_points(group: str, name: str | None = None) -> list[EntryPoint]:
        assert group == "pytest_pcie.backends"
        return [EntryPoint()] if name in (None, "from-entry-point") else []

    monkeypatch.setattr(backends, "entry_points", fake_entry_points)
    assert create_backend("from-entry-point").header() == "pcie backend: dummy at ep"
    assert "from-entry-point" in backends.backend_names()


def test_an_unknown_name_is_one_line_listing_the_known_ones() -> None:
    with pytest.raises(BackendUnavailable) as error:
        create_backend("no-such-backend")
    message = str(error.value)
    assert message.startswith("unknown pcie backend 'no-such-backend'; choose one of: ")
    assert "libvirt" in message and "reference" in message and "\n" not in message
