"""``virsh define`` in the reference: parse, add default devices, assign addresses, validate, format."""

from __future__ import annotations

import operator

from lxml import etree

from pytest_pcie.reference.assign import assign_addresses
from pytest_pcie.reference.defaults import add_defaults
from pytest_pcie.reference.model import FORMAT_RANK, build_added_block, splice_added_block
from pytest_pcie.reference.parse import Domain, load_domain
from pytest_pcie.reference.tables import FORMAT_ORDER
from pytest_pcie.reference.validate import validate_domain, validate_start


def define(domain_xml: str) -> str:
    """The domain XML libvirt stores for ``domain_xml`` (see :func:`pytest_pcie.reference.define`)."""
    return format_domain(define_domain(load_domain(domain_xml)))


def start(domain_xml: str) -> str:
    """The live XML of a guest started from the stored definition ``domain_xml`` (see
    :func:`pytest_pcie.reference.start`)."""
    domain = define_domain(load_domain(domain_xml))
    validate_start(domain)
    return format_domain(domain)


def define_domain(domain: Domain) -> Domain:
    """Run libvirt's post-parse (defaults, addresses) and validation on a parsed domain."""
    add_defaults(domain)
    assign_addresses(domain)
    validate_domain(domain)
    return domain


def format_domain(domain: Domain) -> str:
    """The document as text, devices in libvirt's element order, indented like libvirt's output.

    libxml2's own pretty-printer indents exactly like ``etree.indent`` (two spaces) at half the
    cost, as long as no element with element children also holds text: it leaves such an element
    as written, while ``indent`` replaces its blank text.  Blank text survives the parse in an
    element that had no children (``<devices>\n</devices>``) and gets children added, and stray
    text is rare: only then does formatting pay for ``indent``."""
    block = domain.added_block
    needs_indent = bool(_TEXT_BESIDE_ELEMENTS(domain.root))  # the order of the devices does not change it
    if needs_indent and block is not None:  # etree.indent knows nothing of the block: elements first
        build_added_block(block)
        domain.added_block = block = None
    _sort_devices(domain)
    if needs_indent:
        etree.indent(domain.root, space="  ")
        return etree.tostring(domain.root, encoding="unicode") + "\n"
    text = etree.tostring(domain.root, encoding="unicode", pretty_print=True)
    return text if block is None else splice_added_block(text, block)


# A text node whose parent also has element children (a blank one to replace, or mixed content).
_TEXT_BESIDE_ELEMENTS = etree.XPath("boolean(//text()[../*])")


def _sort_devices(domain: Domain) -> None:
    """libvirt formats devices grouped by kind (tables.FORMAT_ORDER), each kind in its list order
    (controllers grouped by type, disks sorted by target, the primary video first)."""
    rank = FORMAT_RANK
    # keyed by the elements themselves (lxml elements hash by identity, and each device holds its
    # own, so the proxies stay the same): no id() call per device
    list_rank = {device.element: number for number, device in enumerate(domain.all_devices())}
    last = len(FORMAT_ORDER)
    children = list(domain.devices_element)
    keys = [(rank.get(child.tag, last), list_rank.get(child, 0)) for child in children]
    # a stable sort changes nothing when the keys already never decrease, the usual case: look
    # before paying for re-inserting every child
    if all(map(operator.le, keys, keys[1:])):
        return
    order = sorted(range(len(children)), key=keys.__getitem__)
    domain.devices_element[:] = [children[position] for position in order]
