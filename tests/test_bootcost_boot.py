"""One real boot: a small q35 topology through pcie-bootcost's whole path, twice, under -icount.

It needs QEMU and the two Debian packages in the cache (``scripts/prepare-host`` downloads them).
Without them it skips, unless ``PCIE_REQUIRE_BOOTCOST=1`` (set by scripts/run-tests), where a
missing guest is a failure: CI must not pass by skipping its only boot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pytest_pcie.bootcost import boot, packages
from pytest_pcie.bootcost.packages import GuestUnavailable
from pytest_pcie.bootcost.run import Options, measure, prepare
from pytest_pcie.bootcost.topology import domain_topology

REQUIRE_ENV = "PCIE_REQUIRE_BOOTCOST"
DOMAIN = """<domain><devices>
  <controller type='usb' model='none'/><memballoon model='none'/>
  <controller type='pci' index='0' model='pcie-root'/>
  <controller type='pci' model='pcie-root-port'/><controller type='pci' model='pcie-root-port'/>
  <interface type='user'><model type='virtio'/></interface>
</devices></domain>"""


def unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but pcie-bootcost cannot boot here: {reason}")
    pytest.skip(reason)


def test_small_topology_boots_and_gives_the_same_guest_numbers_twice(tmp_path: Path) -> None:
    if shutil.which(boot.QEMU) is None:
        unavailable(f"{boot.QEMU} is not installed")
    options = Options(cache_dir=packages.default_cache_dir(), runs=2, console_dir=tmp_path)
    try:
        prepared = prepare(options)
    except GuestUnavailable as exc:
        unavailable(str(exc))
    topology = domain_topology(DOMAIN, "two-ports-one-nic", "q35")
    result = measure(topology, prepared, options)
    kept, again = (path.read_text(encoding="utf-8") for path in sorted(tmp_path.iterdir()))
    assert kept == again  # -icount: the two consoles are the same, byte for byte
    assert len(kept) < 20_000 and "Command line: " not in kept  # only the lines the parser reads reached it
    first, second = result.breakdowns
    for (name, one), (_, two) in zip(first.phases(), second.phases(), strict=True):
        assert one is not None and two is not None and abs(one - two) <= 0.1, (name, one, two)  # -icount
    functions = {function.ids: function for function in first.functions}
    ports = [function for function in first.functions if function.ids == "1b36:000c"]
    assert len(ports) == 2 and all(port.bridge and port.probed for port in ports)  # pcieport took both
    assert functions["1af4:1041"].probed  # the modern virtio NIC, bound by virtio_pci after insmod
    assert first.failed_modules == () and result.missing_modules == []
    assert first.firmware_ms is not None and 1 < first.firmware_ms < first.kernel_to_init_ms
    assert 0 < first.pci_enumeration_ms < first.kernel_to_init_ms
    assert first.driver_probe_ms > 0
    assert first.total_ms is not None and first.total_ms > first.kernel_to_init_ms + first.loading_drivers_ms / 2
