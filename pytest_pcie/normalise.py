"""Reducing a backend's outcome to the part a golden pins: the PCI topology and the failure.

One normaliser serves every backend, so a golden is the same whichever backend produced it.  What
survives is what decides PCI placement or identifies a device to a reader; everything random
(uuid, MACs), run-dependent (aliases, live-only state) or version-dependent (emulator path,
versioned machine name) is dropped by not being copied, rather than by a list of things to delete
that would miss the next surprise.

The normalised document looks like this (see docs/case-format.md)::

    <outcome machine="q35">
      <devices>
        <controller type="pci" index="0" model="pcie-root"/>
        <controller type="pci" index="1" model="pcie-root-port">
          <model name="pcie-root-port"/>
          <target chassis="1" port="0x10"/>
          <address type="pci" domain="0x0000" bus="0x00" slot="0x02" function="0x0" multifunction="on"/>
        </controller>
        <interface type="user">
          <model type="virtio"/>
          <address type="pci" domain="0x0000" bus="0x01" slot="0x00" function="0x0"/>
        </interface>
      </devices>
      <failure step="1" label="attach nic.xml">internal error: No more available PCI slots</failure>
    </outcome>
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lxml import etree

from pytest_pcie.machines import X86_64, family_of
from pytest_pcie.outcome import Outcome

ROOT_TAG = "outcome"
DEVICES_TAG = "devices"
FAILURE_TAG = "failure"


@dataclass(frozen=True)
class Keep:
    """Copy the attributes ``attributes`` of the element at ``path`` (``.`` = the device itself).

    ``text`` also copies the element's text (``<node>0</node>``).
    """

    path: str
    attributes: tuple[str, ...] = ()
    text: bool = False


# What identifies each kind of device to a reader and to libvirt's placement rules.  A device whose
# tag is missing here is still kept when it has a PCI address, as the bare tag plus its address.
IDENTITY: dict[str, tuple[Keep, ...]] = {
    "controller": (Keep(".", ("type", "index", "model")), Keep("model", ("name",))),
    "disk": (Keep(".", ("device", "model")), Keep("target", ("dev", "bus"))),
    "filesystem": (Keep(".", ("type", "model")), Keep("driver", ("type",))),
    "interface": (Keep(".", ("type",)), Keep("model", ("type",))),
    "serial": (Keep("target", ("type",)), Keep("target/model", ("name",))),
    "input": (Keep(".", ("type", "bus", "model")),),
    "sound": (Keep(".", ("model",)),),
    "video": (Keep("model", ("type",)),),
    "hostdev": (Keep(".", ("mode", "type")), Keep("source/address", ("domain", "bus", "slot", "function"))),
    "watchdog": (Keep(".", ("model",)),),
    "memballoon": (Keep(".", ("model",)),),
    "rng": (Keep(".", ("model",)),),
    "shmem": (Keep(".", ("name",)), Keep("model", ("type",))),
    "memory": (Keep(".", ("model",)),),
    "iommu": (Keep(".", ("model",)),),
    "vsock": (Keep(".", ("model",)),),
    "crypto": (Keep(".", ("model",)),),
}

# Elements that are another device seen twice, not a device: libvirt prints the first <console> of
# an HVM guest as a copy of serial 0, address included (virDomainDefFormatInternal), and adds it on
# some paths (attach) but not others (define), so it would pin formatting, not placement.
ALIASES = frozenset({"console"})

# Only PCI controllers carry topology in <target>: chassis/port numbering and NUMA node of expander buses.
PCI_CONTROLLER_TARGET: tuple[Keep, ...] = (
    Keep("target", ("chassisNr", "chassis", "port", "busNr", "hotplug")),
    Keep("target/node", text=True),
)

# Canonical device order after the controllers: libvirt's own printing order of device classes.
DEVICE_ORDER: tuple[str, ...] = (
    "disk", "filesystem", "interface", "smartcard", "serial", "parallel", "channel", "input",
    "tpm", "graphics", "sound", "video", "hostdev", "redirdev", "hub", "watchdog", "memballoon", "rng",
    "nvram", "panic", "shmem", "memory", "iommu", "vsock", "crypto",
)  # fmt: skip

# How numbers are written, so "16", "0x10" and "0x0010" all normalise to what libvirt prints.
NUMBER_FORMAT: dict[str, Callable[[int], str]] = {
    "domain": lambda n: f"0x{n:04x}",
    "bus": lambda n: f"0x{n:02x}",
    "slot": lambda n: f"0x{n:02x}",
    "function": lambda n: f"0x{n:x}",
    "port": lambda n: f"0x{n:x}",
    "index": str,
    "chassis": str,
    "chassisNr": str,
    "busNr": str,
}
# libvirt reads an omitted address part as 0 and always writes all four back.
ADDRESS_DEFAULTS = {"domain": "0", "bus": "0", "slot": "0", "function": "0"}


def normalise(outcome: Outcome, machine: str) -> etree._Element:
    """Return the normalised document for ``outcome`` of a run on ``machine`` (a family name).

    The machine recorded is the family of the one in the domain XML (so a backend that silently ran
    another machine shows up as a difference); ``machine`` is used only when define failed.
    """
    root = etree.Element(ROOT_TAG)
    root.set("machine", machine)
    if outcome.domain_xml is not None:
        domain = etree.fromstring(outcome.domain_xml.encode("utf-8"), etree.XMLParser(remove_blank_text=True))
        root.set("machine", machine_family(domain) or machine)
        devices = etree.SubElement(root, DEVICES_TAG)
        devices.extend(_normalised_devices(domain))
    if outcome.failure is not None:
        failure = etree.SubElement(root, FAILURE_TAG)
        failure.set("step", str(outcome.failure.step))
        failure.set("label", outcome.failure.label)
        failure.text = outcome.failure.message
    return root


def machine_family(domain: etree._Element) -> str | None:
    """The family name of the domain's machine, its raw name if unknown, or None when it names none."""
    os_type = domain.find("os/type")
    name = os_type.get("machine") if os_type is not None else None
    if not name:
        return None
    arch = os_type.get("arch") if os_type is not None else None
    family = family_of(name, arch or X86_64)
    if family is not None:
        return family.name
    return name if arch in (None, X86_64) else f"{arch} {name}"


def _normalised_devices(domain: etree._Element) -> list[etree._Element]:
    controllers: list[etree._Element] = []
    others: dict[str, list[etree._Element]] = {}
    for device in domain.iterfind("devices/*"):
        if not isinstance(device.tag, str) or device.tag in ALIASES:
            continue
        if device.tag == "controller":
            controllers.append(_normalised_device(device))
        elif _pci_address(device) is not None:
            others.setdefault(device.tag, []).append(_normalised_device(device))
    controllers.sort(key=_controller_key)
    known = [tag for tag in DEVICE_ORDER if tag in others]
    unknown = [tag for tag in others if tag not in DEVICE_ORDER]
    return controllers + [device for tag in known + unknown for device in others[tag]]


def _controller_key(controller: etree._Element) -> tuple[str, int]:
    return controller.get("type", ""), _number(controller.get("index", "0")) or 0


def _normalised_device(device: etree._Element) -> etree._Element:
    copy = etree.Element(device.tag)
    rules = IDENTITY.get(device.tag, ())
    if device.tag == "controller" and device.get("type") == "pci":
        rules += PCI_CONTROLLER_TARGET
    for rule in rules:
        _apply(rule, device, copy)
    address = _pci_address(device)
    if address is not None:
        normalised = etree.SubElement(copy, "address")
        normalised.set("type", "pci")
        for name, default in ADDRESS_DEFAULTS.items():
            normalised.set(name, _format_value(name, address.get(name, default)))
        _copy_attributes(address, normalised, ("multifunction",))
    return copy


def _apply(rule: Keep, device: etree._Element, copy: etree._Element) -> None:
    source = device if rule.path == "." else device.find(rule.path)
    if source is None:
        return
    target = copy if rule.path == "." else _ensure_path(copy, rule.path)
    _copy_attributes(source, target, rule.attributes)
    if rule.text and source.text and source.text.strip():
        target.text = source.text.strip()


def _ensure_path(parent: etree._Element, path: str) -> etree._Element:
    for tag in path.split("/"):
        child = parent.find(tag)
        parent = child if child is not None else etree.SubElement(parent, tag)
    return parent


def _copy_attributes(source: etree._Element, target: etree._Element, names: Iterable[str]) -> None:
    for name in names:
        value = source.get(name)
        if value is not None:
            target.set(name, _format_value(name, value))


def _format_value(name: str, value: str) -> str:
    formatter = NUMBER_FORMAT.get(name)
    number = _number(value) if formatter is not None else None
    return formatter(number) if formatter is not None and number is not None else value


def _number(value: str) -> int | None:
    for base in (0, 10):  # base 0 refuses leading zeros ("08"), which libvirt reads as decimal
        try:
            return int(value, base)
        except ValueError:
            pass
    return None


def _pci_address(device: etree._Element) -> etree._Element | None:
    return device.find("address[@type='pci']")
