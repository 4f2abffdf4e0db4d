"""pytest-pcie: executable conformance suite for libvirt's PCI/PCIe topology choices.

The package is layered so that data flows one way: a case folder (:mod:`pytest_pcie.cases`) is
prepared into a domain (:mod:`pytest_pcie.domain`), run by a backend (:mod:`pytest_pcie.backends`)
into an :class:`~pytest_pcie.outcome.Outcome`, normalised and compared with a golden
(:mod:`pytest_pcie.golden`), and reported by the thin pytest layer (:mod:`pytest_pcie.plugin`).
The reference assigner (:mod:`pytest_pcie.reference`) knows nothing of pytest.
"""

__version__ = "0.1.0"
