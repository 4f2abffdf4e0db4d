"""How long the reference assigner takes to define q35 domains, next to real libvirt.

Run ``python benchmarks/bench_reference.py``.  Prints one row per domain size: the best of several
runs of ``reference.define`` (the minimum is the least disturbed by other load on the machine),
time per device, and — when libvirtd answers at qemu:///system — the round trip of
``virsh define`` + ``dumpxml --inactive`` + ``undefine`` for the same XML (domain ``exp-bench-*``).

The domains are ``q35`` with the default USB and balloon removed and N virtio NICs, each needing a
root port of its own; 239 is the most libvirt 9.0.0 accepts (240 leave no bus-0 slot for the
root ports), and 500 uses e1000 NICs instead, which share pci-bridges behind one root port
(691 e1000 is libvirt's limit).  Cost should grow linearly with the device count.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

from pytest_pcie.domain import prepare_domain
from pytest_pcie.reference import define

MIN = "<controller type='usb' model='none'/><memballoon model='none'/>"
SIZES: tuple[tuple[int, str], ...] = ((10, "virtio"), (100, "virtio"), (200, "virtio"), (239, "virtio"),
                                      (500, "e1000"), (691, "e1000"))


def domain_xml(count: int, model: str) -> str:
    nics = f"<interface type='user'><model type='{model}'/></interface>" * count
    return prepare_domain(f"<domain><devices>{MIN}{nics}</devices></domain>", "q35")


def best_of(repeat: int, call: Callable[[], object]) -> float:
    """The fastest of ``repeat`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def libvirt_round_trip(xml: str, repeat: int) -> float | None:
    """Best define + dumpxml + undefine time on libvirtd, or None when it cannot be reached."""
    try:
        import libvirt
    except ImportError:
        return None
    try:
        connection = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        return None

    def once() -> None:
        named = xml.replace("<name>pcie-case</name>", f"<name>exp-bench-{uuid.uuid4().hex[:8]}</name>")
        domain = connection.defineXML(named)
        try:
            domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        finally:
            domain.undefine()

    try:
        return best_of(repeat, once)
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per size; the best is reported")
    parser.add_argument("--no-libvirt", action="store_true", help="skip the libvirtd comparison")
    options = parser.parse_args()
    print(f"{'devices':>8} {'model':>7} {'reference ms':>13} {'us/device':>10} {'libvirt ms':>11} {'us/device':>10}")
    for count, model in SIZES:
        xml = domain_xml(count, model)
        mine = best_of(options.repeat, lambda xml=xml: define(xml))  # type: ignore[misc]
        theirs = None if options.no_libvirt else libvirt_round_trip(xml, options.repeat)
        libvirt_columns = (f"{theirs * 1000:11.2f} {theirs * 1e6 / count:10.1f}" if theirs is not None
                           else f"{'-':>11} {'-':>10}")
        print(f"{count:8d} {model:>7} {mine * 1000:13.2f} {mine * 1e6 / count:10.1f} {libvirt_columns}")


if __name__ == "__main__":
    main()
