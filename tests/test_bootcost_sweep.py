"""The sweep's points, table, comparison and plot (no boot: the points are laid out by the reference)."""

from __future__ import annotations

import pytest
from lxml import etree

from pytest_pcie.bootcost import plot, sweep
from pytest_pcie.bootcost.topology import domain_topology


def root_ports(point: sweep.Point) -> int:
    topology = domain_topology(point.xml, point.name, point.machine)
    return sum(1 for device in topology.devices if device.get("model") == "pcie-root-port")


def test_points_get_the_ports_they_stand_for() -> None:
    found = {point.name: point for point in sweep.points()}
    for count in sweep.EMPTY_PORTS:
        assert root_ports(found[f"q35-ports-{count}"]) == count  # naming controllers means no spare
    for count in sweep.NIC_COUNTS:
        assert root_ports(found[f"q35-nics-{count}"]) == count
        assert root_ports(found[f"q35-nics-{count}-spare"]) == count + 1  # libvirt's spare
        assert root_ports(found[f"pc-nics-{count}"]) == 0


def row(name: str, ports: int, kernel: float, firmware: float | None = 48.0) -> sweep.Row:
    phases = dict.fromkeys(sweep.COLUMNS, 1.0)
    phases.update({"kernel to init": kernel, "firmware": firmware})
    return sweep.Row(name, "q35", ports, max(ports, 0), ports + 4, phases)


def test_table_rounds_to_a_tenth_and_marks_unknown_values() -> None:
    text = sweep.table([row("q35-ports-0", 0, 788.64, None)])
    assert text.splitlines()[2] == "| q35-ports-0 | q35 | 0 | 4 | n/a | 788.6 | 1.0 | 1.0 | 1.0 | 1.0 |"


def test_differences_within_a_tenth_of_a_millisecond_are_none() -> None:
    first = [row("a", 0, 800.00), row("b", 1, 802.0)]
    assert sweep.differences(first, [row("a", 0, 800.05), row("b", 1, 802.0)]) == []
    assert sweep.differences(first, [row("a", 0, 800.2), row("b", 1, 802.0)]) == ["a kernel to init: 800.0 vs 800.2 ms"]
    assert sweep.differences(first, first[:1]) == ["the two sweeps measured different points"]
    assert sweep.differences(first, [row("a", 0, 800.0, None), row("b", 1, 802.0)]) == ["a firmware: 48.0 vs n/a ms"]


def test_rows_survive_the_json_file() -> None:
    rows = [row("q35-ports-0", 0, 788.6, None), row("pc-nics-1", -1, 796.3)]
    assert sweep.load(sweep.dump(rows)) == rows


def test_plot_draws_one_line_per_phase_through_every_empty_port_point() -> None:
    rows = [row(f"q35-ports-{n}", n, 800.0 + 3 * n) for n in (0, 1, 2, 8)] + [row("pc-nics-1", -1, 5000.0)]
    picture = etree.fromstring(plot.render(rows).encode())
    lines = picture.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == len(plot.SERIES)
    kernel = lines[0].get("points", "").split()
    assert len(kernel) == 4  # the pc point is not an empty-port point
    heights = [float(point.split(",")[1]) for point in kernel]
    assert heights == sorted(heights, reverse=True)  # more ports, more time: the line rises
    assert plot.render(rows) == plot.render(list(rows))


def test_plot_needs_the_point_without_ports() -> None:
    with pytest.raises(ValueError, match="q35-ports-0"):
        plot.render([row("q35-ports-1", 1, 800.0)])
