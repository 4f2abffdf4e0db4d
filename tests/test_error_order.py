"""Define errors in libvirt's order: two of the corpus's refused defines joined in one domain must
fail with the same message on the reference and on libvirt (pytest_pcie.fuzz.pairs).

``pytest tests/test_error_order.py --pcie-error-pairs N [--pcie-libvirt-uri URI]`` runs N pairs
against a daemon, under the reference profile of its release; the unit tests below need no libvirt.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_pcie.backends.base import BackendUnavailable
from pytest_pcie.backends.reference import ReferenceBackend
from pytest_pcie.fuzz.pairs import Problem, corpus_problems, joined_input, pairs, run_pairs

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_ENV = "PCIE_REQUIRE_LIBVIRT"
SEED = 20261203


def test_the_corpus_offers_problems_on_both_machines() -> None:
    problems = corpus_problems(ROOT / "cases")
    machines = {problem.machine for problem in problems}
    assert {"pc", "q35"} <= machines
    assert any(problem.case_id == "fuzz-found/pc-usb-disabled-before-slot-range" for problem in problems)


def test_pairs_are_of_one_machine_distinct_and_reproducible() -> None:
    problems = corpus_problems(ROOT / "cases")
    chosen = pairs(problems, 50, SEED)
    assert len(chosen) == 50 and chosen == pairs(problems, 50, SEED)
    assert all(first.machine == second.machine and first != second for first, second in chosen)


def test_joined_input_keeps_each_element_once_in_order() -> None:
    first = Problem("a", "q35", (b"<a/>", b"<b/>"))
    second = Problem("b", "q35", (b"<b/>", b"<c/>"))
    assert joined_input(first, second) == "<domain><devices><a/><b/><c/></devices></domain>"


def test_a_pair_whose_order_differs_between_releases_is_caught() -> None:
    """The check can fail: 9.0.0 refuses a second watchdog while parsing, 11.3.0 accepts it and
    the other problem of the pair speaks first."""
    problems = {(p.case_id, p.machine): p for p in corpus_problems(ROOT / "cases")}
    watchdogs = problems[("fuzz-found/pc-second-watchdog", "pc")]
    duplicate = problems[("rejections/duplicate-address", "pc")]
    older, newer = ReferenceBackend("9.0.0"), ReferenceBackend("11.3.0")
    [result] = run_pairs([(watchdogs, duplicate)], older, newer)
    assert not result.judgement.agreed
    assert "only a single watchdog device is supported" in result.line()
    [same] = run_pairs([(watchdogs, duplicate)], newer, ReferenceBackend("12.8.0"))
    assert same.judgement.agreed


def test_reference_names_the_problem_libvirt_names_first(request: pytest.FixtureRequest) -> None:
    count: int = request.config.option.pcie_error_pairs
    if count <= 0:
        pytest.skip("error-order pass not requested: add --pcie-error-pairs N")
    uris = request.config.getoption("pcie_libvirt_uri", default=None) or ["qemu:///system"]
    try:
        from pytest_pcie.backends.libvirt import LibvirtBackend

        libvirt = LibvirtBackend(uris[0])
    except BackendUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but the libvirt backend is unavailable: {exc}", pytrace=False)
        pytest.skip(f"libvirt backend unavailable: {exc}")
    reference = ReferenceBackend.matching(libvirt.version)
    chosen = pairs(corpus_problems(ROOT / "cases"), count, SEED)
    try:
        results = list(run_pairs(chosen, reference, libvirt))
    finally:
        libvirt.close()
    wrong = [result.line() for result in results if not result.judgement.agreed]
    print(f"{len(results) - len(wrong)} of {len(results)} pairs agree (libvirt {libvirt.version}, seed {SEED})")
    assert not wrong, "\n".join(wrong)
