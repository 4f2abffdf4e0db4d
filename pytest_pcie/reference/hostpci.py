"""Is a host PCI device PCI Express?  libvirt asks the host's sysfs when it places a VFIO hostdev.

This is the one place the reference looks at the machine it runs on, because libvirt does too:
a ``<hostdev type='pci'>`` on q35 with no guest address goes to a root port when the host device
has a PCI Express capability (or does not exist at all), and behind a PCI bridge otherwise.
"""

from __future__ import annotations

from pathlib import Path

SYSFS_PCI = Path("/sys/bus/pci/devices")
CAPABILITY_LIST_BIT = 0x10  # status register: capabilities list present
CAPABILITIES_POINTER = 0x34
PCI_EXPRESS_CAPABILITY = 0x10


def is_pci_express(domain: int, bus: int, slot: int, function: int) -> bool:
    """True when libvirt would treat the host device as PCIe (including when it does not exist)."""
    config = SYSFS_PCI / f"{domain:04x}:{bus:02x}:{slot:02x}.{function}" / "config"
    try:
        data = config.read_bytes()
    except OSError:
        return True
    if len(data) < 0x40 or not data[0x06] & CAPABILITY_LIST_BIT:
        return False
    pointer = data[CAPABILITIES_POINTER] & 0xFC
    seen: set[int] = set()
    while pointer and pointer not in seen and pointer + 1 < len(data):
        seen.add(pointer)
        if data[pointer] == PCI_EXPRESS_CAPABILITY:
            return True
        pointer = data[pointer + 1] & 0xFC
    return False
