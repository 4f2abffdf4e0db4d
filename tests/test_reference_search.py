"""The next-free search pauses where it last found a slot (addresses._search); these tests check it
against libvirt's plain scan from bus 0, for any sequence of searches and explicit reservations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_pcie.reference.addresses import AddressSet, Bus, flags_compatible
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.flags import PCI_FLAGS, PCIE_FLAGS
from pytest_pcie.reference.model import PciAddress
from pytest_pcie.reference.tables import CONTROLLER_MODELS, Connect

BUS_MODELS = ("pci-root", "pcie-root", "pci-bridge", "pcie-root-port", "pcie-to-pci-bridge", "dmi-to-pci-bridge",
              "pcie-switch-upstream-port", "pcie-switch-downstream-port")
# What devices ask the search for: endpoints, and the connect flags of each controller model.
DEVICE_FLAGS = (PCI_FLAGS, PCIE_FLAGS, *(CONTROLLER_MODELS[model].needs for model in BUS_MODELS[2:]))

Search = tuple[int, int | None]  # (index into DEVICE_FLAGS, function or None)
Reserve = tuple[int, int, int, int]  # (index into DEVICE_FLAGS, bus, slot, function)


def scan(buses: list[Bus], functions: list[list[int]], aggregate: list[int], flags: Connect,
         function: int | None) -> PciAddress | None:
    """libvirt's search, from bus 0 every time, on state kept apart from the table's."""
    for number, bus in enumerate(buses):
        if flags_compatible(PciAddress(0, number, bus.min_slot, 0), Connect(bus.flags), flags, False) is not None:
            continue
        for slot in range(bus.min_slot, bus.max_slot + 1):
            used = functions[number][slot]
            if not used:
                return PciAddress(0, number, slot, function or 0)
            if flags & Connect.AGGREGATE_SLOT and aggregate[number] >> slot & 1:
                free = [n for n in range(8) if not used >> n & 1]
                if function is None and free:
                    return PciAddress(0, number, slot, free[0])
                if function is not None and function in free:
                    return PciAddress(0, number, slot, function)
    return None


def take(functions: list[list[int]], aggregate: list[int], address: PciAddress, flags: Connect) -> None:
    if not functions[address.bus][address.slot] and flags & Connect.AGGREGATE_SLOT:
        aggregate[address.bus] |= 1 << address.slot
    functions[address.bus][address.slot] |= 1 << address.function


searches = st.tuples(st.integers(0, len(DEVICE_FLAGS) - 1), st.none() | st.integers(0, 7))
reserves = st.tuples(st.integers(0, len(DEVICE_FLAGS) - 1), st.integers(0, 5), st.integers(0, 31), st.integers(0, 7))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(BUS_MODELS), st.booleans()), min_size=1, max_size=6),
    st.lists(searches | reserves, max_size=120),
)
def test_paused_search_finds_what_a_scan_from_bus_0_finds(
    models: list[tuple[str, bool]], steps: list[Search | Reserve]
) -> None:
    buses = [Bus.of_model(model, hotplug) for model, hotplug in models]
    table = AddressSet(buses, dry_run=False)
    functions = [[0] * 32 for _ in buses]
    aggregate = [0] * len(buses)
    for step in steps:
        flags = DEVICE_FLAGS[step[0]]
        if len(step) == 4:  # an explicit reservation between searches
            address = PciAddress(0, step[1], step[2], step[3])
            try:
                table.reserve(address, flags)
            except LibvirtError:
                continue
            take(functions, aggregate, address, flags)
            continue
        function = step[1]
        expected = scan(buses, functions, aggregate, flags, function)
        try:
            found: PciAddress | None = table.reserve_next(flags, function)
        except LibvirtError as error:
            assert str(error) == "internal error: No more available PCI slots"
            found = None
        assert found == expected
        if expected is not None:
            take(functions, aggregate, expected, flags)
    assert [bus.functions for bus in buses] == functions
