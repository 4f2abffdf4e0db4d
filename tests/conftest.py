import random
from typing import Any

import pytest

from pytest_pcie.fuzz.strategies import MIXED, PROFILES

pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pcie-fuzz", "pytest-pcie: bounded differential pass (tests/test_differential.py)")
    group.addoption("--pcie-fuzz-examples", dest="pcie_fuzz_examples", type=int, default=0, metavar="N",
                    help="run N random examples on the reference and on libvirt (default 0: the pass is skipped)")
    group.addoption("--pcie-fuzz-seed", dest="pcie_fuzz_seed", type=int, default=None, metavar="SEED",
                    help="replay the pass of an earlier run (its seed is in the report header)")
    group.addoption("--pcie-fuzz-out", dest="pcie_fuzz_out", default=None, metavar="DIR",
                    help="write shrunk disagreements here (default: a temporary folder named in the failure)")
    group.addoption("--pcie-fuzz-time-limit", dest="pcie_fuzz_time_limit", type=float, default=None,
                    metavar="SECONDS", help="stop drawing new examples after this many seconds")
    group.addoption("--pcie-error-pairs", dest="pcie_error_pairs", type=int, default=0, metavar="N",
                    help="tests/test_error_order.py: run N pairs of the corpus's refused defines joined in one "
                    "domain on the reference and on libvirt (default 0: skipped)")
    group.addoption("--pcie-fuzz-profile", dest="pcie_fuzz_profile", choices=sorted(PROFILES), default=MIXED.name,
                    help="mixed: some inputs invalid on purpose (default); valid: none invalid on purpose")


def pytest_configure(config: pytest.Config) -> None:
    # The seed is chosen once, on the controller, and handed to xdist workers (pytest_configure_node).
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        config.option.pcie_fuzz_seed = workerinput.get("pcie_fuzz_seed", config.option.pcie_fuzz_seed)
    elif config.option.pcie_fuzz_seed is None:
        config.option.pcie_fuzz_seed = random.SystemRandom().randrange(2**32)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput["pcie_fuzz_seed"] = node.config.option.pcie_fuzz_seed


def pytest_report_header(config: pytest.Config) -> str | None:
    if not config.option.pcie_fuzz_examples:
        return None
    seed = config.option.pcie_fuzz_seed
    return (
        f"pcie-fuzz: {config.option.pcie_fuzz_examples} examples, profile {config.option.pcie_fuzz_profile}, "
        f"seed {seed} (replay with --pcie-fuzz-seed {seed})"
    )
