"""The one exception the reference assigner raises for input libvirt would reject."""

from __future__ import annotations


class LibvirtError(Exception):
    """libvirt would refuse this input or operation.

    ``str()`` is the message exactly as libvirt 9.0.0 reports it through virsh or libvirt-python,
    including its category prefix, e.g. ``internal error: No more available PCI slots`` or
    ``XML error: Attempted double use of PCI Address 0000:00:03.0``.  Goldens record that text,
    so the reference and the libvirt backend are compared on the same string.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
