"""Backends run a case on something that assigns PCI addresses: the reference model or real libvirt."""
