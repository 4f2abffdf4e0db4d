"""The bounded differential pass CI runs: ``pytest tests/test_differential.py --pcie-fuzz-examples 300``.

Random examples run on the reference model and on the libvirtd this host offers; the test fails if
any of them disagree (or the reference crashes), naming the seed and the shrunk case folders.
Without ``--pcie-fuzz-examples`` the pass is not requested and the test skips saying so; when it is
requested and libvirtd is unreachable, it skips too, unless ``PCIE_REQUIRE_LIBVIRT=1`` (set by CI)
makes that a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_pcie.backends.base import BackendUnavailable
from pytest_pcie.backends.reference import ReferenceBackend
from pytest_pcie.fuzz.runner import PassOptions, run_pass, summary_table
from pytest_pcie.fuzz.strategies import PROFILES

REQUIRE_ENV = "PCIE_REQUIRE_LIBVIRT"
DEFAULT_URI = "qemu:///system"


def test_reference_agrees_with_libvirt_on_random_examples(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = request.config
    examples: int = config.option.pcie_fuzz_examples
    if examples <= 0:
        pytest.skip("differential pass not requested: add --pcie-fuzz-examples N")
    seed: int = config.option.pcie_fuzz_seed
    uris = config.getoption("pcie_libvirt_uri", default=None) or [DEFAULT_URI]
    if len(uris) > 1:
        pytest.fail("the differential pass talks to one libvirtd: give --pcie-libvirt-uri once", pytrace=False)
    uri = uris[0]
    try:
        from pytest_pcie.backends.libvirt import LibvirtBackend

        libvirt = LibvirtBackend(uri)
    except BackendUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but the libvirt backend is unavailable: {exc}", pytrace=False)
        pytest.skip(f"libvirt backend unavailable: {exc}")
    out = Path(config.option.pcie_fuzz_out) if config.option.pcie_fuzz_out else tmp_path_factory.mktemp("pcie-fuzz")
    profile = PROFILES[config.option.pcie_fuzz_profile]
    options = PassOptions(
        examples=examples, seed=seed, out=out, time_limit=config.option.pcie_fuzz_time_limit, profile=profile
    )
    reference = ReferenceBackend.matching(libvirt.version)  # the daemon's release, or the newest before it
    print(f"pcie-fuzz seed {seed}, profile {profile.name} (replay with --pcie-fuzz-seed {seed})")
    try:
        result = run_pass(reference, libvirt, options, say=print)
    finally:
        libvirt.close()
    table = summary_table(result)
    print(table)
    assert result.total.examples > 0, f"no example ran within the time limit (seed {seed})"
    if not result.all_agreed and libvirt.version != reference.version:
        # A daemon between two profiles (a fork, say) is compared with the older: drift to report.
        pytest.xfail(
            f"libvirt {libvirt.version} disagrees with the reference model of {reference.version} on "
            f"{result.total.disagreed} of {result.total.examples} examples "
            f"(seed {seed}): version drift, reported, not failed"
        )
    if not result.all_agreed:
        folders = "\n".join(f"  {folder}" for folder in result.written.values()) or "  (none written)"
        pytest.fail(
            f"reference and libvirt disagree (seed {seed}, replay with --pcie-fuzz-seed {seed}):\n{table}\n"
            f"shrunk case folders:\n{folders}",
            pytrace=False,
        )
