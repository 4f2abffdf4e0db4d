"""Domain-level checks libvirt makes after address assignment (qemu_validate.c) that concern PCI."""

from __future__ import annotations

from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.machine import unsupported_message
from pytest_pcie.reference.parse import Domain


def validate_domain(domain: Domain) -> None:
    """Raise libvirt's error for a domain it would refuse at validation."""
    message = unsupported_message(domain.machine)
    if message is not None:
        raise LibvirtError(message)
    for device in domain.devices:
        if device.kind == "iommu" and device.model == "virtio" and not domain.acpi:
            raise LibvirtError("unsupported configuration: IOMMU device: 'virtio' requires ACPI")
    balloons = [device for device in domain.devices if device.kind == "memballoon"]
    if len(balloons) > 1:
        raise LibvirtError("internal error: only a single memory balloon device is supported")
