"""Making many small XML elements at once.

A large definition makes the assigner write hundreds of elements (an ``<address>`` per device, a
``<controller>`` with ``<model>`` and ``<target>`` per auto-added port).  lxml's element API sets
attributes one by one through Python, which made element building the largest single cost of a
200-device define; libxml2 parses the same elements from text three to four times faster.  So the
assigner describes the elements it needs and :func:`make_elements` builds them with one parse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lxml import etree

Element = etree._Element

# Characters that must be escaped inside a double-quoted attribute value.
_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("\n", "&#10;"), ("\t", "&#9;"))
_SPECIAL = frozenset(character for character, _ in _ESCAPES) | {"\r"}


def quoted(value: str) -> str:
    """``value`` as a double-quoted attribute value (escaped only when it needs to be: values the
    assigner writes itself are plain numbers and model names)."""
    if _SPECIAL.isdisjoint(value):
        return f'"{value}"'
    for character, escape in _ESCAPES:
        value = value.replace(character, escape)
    return '"' + value.replace("\r", "&#13;") + '"'


def element_text(tag: str, attributes: Mapping[str, str], children: Sequence[str] = ()) -> str:
    """The text of one element with ``attributes`` (in their order) and already-built ``children``."""
    spelled = "".join([f" {name}={quoted(value)}" for name, value in attributes.items()])
    if not children:
        return f"<{tag}{spelled}/>"
    return f"<{tag}{spelled}>{''.join(children)}</{tag}>"


def make_elements(texts: Sequence[str]) -> list[Element]:
    """Parse the element texts made by :func:`element_text` in one go, in the same order.

    The elements belong to a scratch document until they are inserted into the domain, which moves
    them (lxml keeps the scratch document alive as long as any of its elements is referenced)."""
    if not texts:
        return []
    holder = etree.fromstring("<elements>" + "".join(texts) + "</elements>")
    return list(holder)
