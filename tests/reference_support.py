"""Helpers for the reference assigner's tests: build small domains, read addresses back."""

from __future__ import annotations

from lxml import etree

from pytest_pcie.domain import prepare_domain

# Keep the default USB controller and balloon out of the way (the notes' "MIN").
MIN = "<controller type='usb' model='none'/><memballoon model='none'/>"


def domain(machine: str, devices: str = "", extra: str = "") -> str:
    """A prepared domain for ``machine`` holding ``devices`` (XML text of device elements)."""
    return prepare_domain(f"<domain>{extra}<devices>{devices}</devices></domain>", machine)


def nic(model: str | None = "virtio", address: str = "", mac: str = "") -> str:
    parts = [f"<mac address='{mac}'/>" if mac else "", f"<model type='{model}'/>" if model else "", address]
    return f"<interface type='user'>{''.join(parts)}</interface>"


def pci(bus: int, slot: int, function: int = 0) -> str:
    return f"<address type='pci' domain='0x0000' bus='{bus:#04x}' slot='{slot:#04x}' function='{function:#x}'/>"


def controller(model: str, index: int | None = None, inner: str = "") -> str:
    index_attribute = f" index='{index}'" if index is not None else ""
    return f"<controller type='pci'{index_attribute} model='{model}'>{inner}</controller>"


def addresses(xml: str) -> dict[str, str]:
    """Every PCI address in ``xml``: controllers keyed ``<type><index>`` (``pci1``, ``usb0``; ich9 USB2
    controllers ``usb0-ich9-ehci1``), other
    devices ``<tag>#<ordinal>``; values ``bb:ss.f`` with ``+m`` when multifunction is on."""
    result: dict[str, str] = {}
    ordinals: dict[str, int] = {}
    devices = etree.fromstring(xml.encode()).find("devices")
    assert devices is not None
    for element in devices:
        tag = str(element.tag)
        if tag == "controller":
            key = f"{element.get('type')}{element.get('index')}"
            if element.get("type") == "usb" and element.get("model", "").startswith("ich9-"):
                key += f"-{element.get('model')}"  # USB2 companions share one index
        else:
            ordinal = ordinals.get(tag, 0)
            ordinals[tag] = ordinal + 1
            key = f"{tag}#{ordinal}"
        address = element.find("address")
        if address is None or address.get("type") != "pci":
            continue
        bus, slot, function = (int(address.get(name) or "0", 0) for name in ("bus", "slot", "function"))
        text = f"{bus:02x}:{slot:02x}.{function:x}"
        result[key] = text + ("+m" if address.get("multifunction") == "on" else "")
    return result


def targets(xml: str) -> dict[str, dict[str, str]]:
    """``<target>`` attributes and ``<model name>`` of every PCI controller, keyed ``pci<index>``."""
    result: dict[str, dict[str, str]] = {}
    for element in etree.fromstring(xml.encode()).iter("controller"):
        if element.get("type") != "pci":
            continue
        values = {"model": element.get("model") or ""}
        name = element.find("model")
        if name is not None and name.get("name"):
            values["name"] = name.get("name") or ""
        target = element.find("target")
        if target is not None:
            values.update({str(key): str(value) for key, value in target.attrib.items()})
        result[f"pci{element.get('index')}"] = values
    return result
