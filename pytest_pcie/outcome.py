"""What running a case produced, in a form every backend can give and every golden can record."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    """A step libvirt (or the reference) refused.

    ``step`` is 0 for the define itself and n for the n-th attach/detach step; ``label`` names it
    for people (``define``, ``attach nic.xml``); ``message`` is libvirt's full error text, e.g.
    ``internal error: No more available PCI slots``.
    """

    step: int
    label: str
    message: str


@dataclass(frozen=True)
class Outcome:
    """The domain XML after the last step that succeeded, and the failure that stopped the run.

    ``domain_xml`` is None only when the define itself failed.  For live operations it is the live
    XML of the running guest; otherwise the persistent (inactive) definition.
    """

    domain_xml: str | None
    failure: Failure | None = None
