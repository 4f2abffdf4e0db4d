"""Turning a case's input XML into a domain every backend can define.

Case inputs stay short (often just ``<domain><devices>…</devices></domain>``): the parts libvirt
insists on but that do not shape the PCI topology are filled in here, once, so that the reference
and libvirt backends start from exactly the same document.
"""

from __future__ import annotations

from lxml import etree

from pytest_pcie.machines import MACHINE_FAMILIES

DEFAULT_NAME = "pcie-case"
DEFAULT_MEMORY_KIB = "131072"


class DomainInputError(ValueError):
    """The input XML cannot be made into a domain for the requested machine."""


def prepare_domain(input_xml: str, machine: str) -> str:
    """Return ``input_xml`` completed for ``machine`` (a family from :data:`MACHINE_FAMILIES`).

    Filled in when absent: domain type ``kvm`` (the libvirt backend swaps in what the host offers),
    or the family's own (``qemu`` for the TCG-only families), a name, 128 MiB of memory,
    ``<os><type>`` and, on x86, ``<features><acpi/></features>`` — ACPI because QEMU refuses
    hotplug into the bus-0 slots of ``pc`` without it, and every management application enables
    it (libvirt allows ACPI on aarch64 only with UEFI firmware, which these runs do without).
    The machine is always set to the family's alias: a case names its machines in case.toml, so
    an input that names another machine family is an error.
    """
    family = MACHINE_FAMILIES[machine]
    try:
        root = etree.fromstring(input_xml.encode("utf-8"), etree.XMLParser(remove_blank_text=True))
    except etree.XMLSyntaxError as exc:
        raise DomainInputError(f"input is not well-formed XML: {exc}") from None
    if root.tag != "domain":
        raise DomainInputError(f"input root element is <{root.tag}>, expected <domain>")

    root.set("type", family.domain_type if family.domain_type is not None else str(root.get("type", "kvm")))
    _ensure_child(root, "name", text=DEFAULT_NAME)
    if root.find("memory") is None:
        memory = _ensure_child(root, "memory", text=DEFAULT_MEMORY_KIB)
        memory.set("unit", "KiB")
    os_element = _ensure_child(root, "os")
    os_type = os_element.find("type")
    if os_type is None:
        os_type = etree.Element("type")
        os_element.insert(0, os_type)
    named = os_type.get("machine")
    if named is not None and named != family.libvirt_alias and not family.versioned.match(named):
        raise DomainInputError(
            f"input names machine {named!r}, but this run is for {machine!r}; "
            "leave the machine out of input.xml and list machines in case.toml"
        )
    arch = os_type.get("arch") or family.arch
    if arch != family.arch:
        raise DomainInputError(
            f"input names arch {arch!r}, but machine {machine!r} is {family.arch}; "
            "leave the arch out of input.xml and list machines in case.toml"
        )
    os_type.set("arch", arch)
    os_type.set("machine", family.libvirt_alias)
    os_type.text = os_type.text or "hvm"
    if family.cpu_model is not None and root.find("cpu") is None:
        cpu = etree.Element("cpu", mode="custom")
        etree.SubElement(cpu, "model").text = family.cpu_model
        os_element.addnext(cpu)
    if family.acpi and root.find("features") is None:
        features = etree.Element("features")
        etree.SubElement(features, "acpi")
        os_element.addnext(features)
    _ensure_child(root, "devices")
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def _ensure_child(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    child = parent.find(tag)
    if child is None:
        child = etree.SubElement(parent, tag)
        child.text = text
    return child
