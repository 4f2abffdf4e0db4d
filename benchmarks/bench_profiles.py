"""What a 200-device q35 define costs under each reference profile, as a multiple of lxml's own floor.

Run ``python benchmarks/bench_profiles.py [--repeat 15] [--devices 200]``.

Absolute times on a shared 2-core VM drift by 2x from minute to minute, so the figure of merit is a
ratio measured side by side: for every profile, ``pytest_pcie.reference.define`` of a q35 domain
with N virtio NICs (each gets a pcie-root-port of its own, so the result holds 2N+ devices)
against **lxml alone parsing and pretty-printing the very document that define returned** — the
least any XML-in, XML-out tool must pay.  Both are timed in this process's CPU time
(``time.process_time``), so the other processes of a loaded machine do not count; what load still
does (cache misses, frequency) hits both columns alike, as rounds are interleaved (every profile and
the floor in each round) and each column reports its minimum over the rounds.

The table ends with a verdict per profile against the issue #14 bound (at most 4x the floor).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_pcie.domain import prepare_domain
from pytest_pcie.reference import PROFILES, define

BOUND = 4.0
HEADER = f"{'profile':>8} {'define ms':>10} {'lxml floor ms':>14} {'ratio':>7} {'verdict':>8}"


def domain_xml(devices: int) -> str:
    nics = "<interface type='user'><model type='virtio'/></interface>" * devices
    return prepare_domain(
        f"<domain><devices><controller type='usb' model='none'/><memballoon model='none'/>{nics}</devices></domain>",
        "q35",
    )


def lxml_floor(document: str) -> None:
    """Parse and pretty-print ``document`` with lxml, as define's own input and output stages must."""
    parser = etree.XMLParser(remove_blank_text=True)
    etree.tostring(etree.fromstring(document.encode(), parser), pretty_print=True, encoding="unicode")


def best_of(function: Callable[[], object], into: list[float]) -> None:
    start = time.process_time()
    function()
    into.append((time.process_time() - start) * 1000)


def measure(devices: int, repeat: int) -> list[tuple[str, float, float]]:
    """(profile, define ms, floor ms) per profile: minimum over interleaved rounds."""
    xml = domain_xml(devices)
    outputs = {name: define(xml, profile=name) for name in PROFILES}  # also warms every cache
    defines: dict[str, list[float]] = {name: [] for name in PROFILES}
    floors: dict[str, list[float]] = {name: [] for name in PROFILES}
    for _ in range(repeat):
        for name in PROFILES:
            best_of(lambda name=name: define(xml, profile=name), defines[name])  # type: ignore[misc]
            best_of(lambda name=name: lxml_floor(outputs[name]), floors[name])  # type: ignore[misc]
    return [(name, min(defines[name]), min(floors[name])) for name in PROFILES]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="interleaved rounds (default 15); minimum reported")
    parser.add_argument("--devices", type=int, default=200, help="virtio NICs in the q35 domain (default 200)")
    args = parser.parse_args(argv)
    rows = measure(args.devices, args.repeat)
    print(f"q35 with {args.devices} virtio NICs, best of {args.repeat} interleaved rounds")
    print(HEADER)
    for name, define_ms, floor_ms in rows:
        ratio = define_ms / floor_ms
        verdict = "ok" if ratio <= BOUND else "OVER"
        print(f"{name:>8} {define_ms:>10.2f} {floor_ms:>14.2f} {ratio:>6.2f}x {verdict:>8}")
    print(f"bound: define at most {BOUND:g}x lxml's parse + pretty-print of the same result")
    return 0


if __name__ == "__main__":
    sys.exit(main())
