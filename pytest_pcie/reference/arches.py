"""What differs between the guest architectures the reference models, as tables.

x86_64 is the base (its machines are in :mod:`machine`, its model defaults in :mod:`parse`); the
rows here say where the ``virt`` machine of aarch64 and riscv64 differs, each checked on
libvirtd 9.0.0 with QEMU 7.2 under TCG (docs/aarch64.md).  Kept apart from the per-release
profiles: an arch row holds for every release unless a profile says otherwise.
"""

from __future__ import annotations

from contextvars import ContextVar

X86_64 = "x86_64"
ARCHES = (X86_64, "aarch64", "riscv64")

EMULATORS: dict[str, str] = {arch: f"/usr/bin/qemu-system-{arch}" for arch in ARCHES}

# Aliases libvirt expands on the other arches (riscv64's virt has no versioned names).
ALIASES: dict[str, dict[str, str]] = {"aarch64": {"virt": "virt-7.2"}, "riscv64": {}}


def _virt_versions() -> list[str]:
    ranges = ((2, 6, 12), (3, 0, 1), (4, 0, 2), (5, 0, 2), (6, 0, 2), (7, 0, 2))
    return [f"virt-{major}.{minor}" for major, first, last in ranges for minor in range(first, last + 1)]


# The machines QEMU 7.2 offers there that can hold PCI (the many board machines are left out).
SUPPORTED: dict[str, frozenset[str]] = {
    "aarch64": frozenset(["virt", "sbsa-ref", *_virt_versions()]),
    "riscv64": frozenset({"virt", "spike", "sifive_u", "sifive_e", "shakti_c", "microchip-icicle-kit"}),
}

# Model libvirt stores for a device written without one, where it is not x86's (parse.DEFAULT_MODELS).
# riscv64 keeps the generic piix3-uhci for a USB controller without a model.
DEFAULT_MODELS: dict[str, dict[str, str]] = {
    "aarch64": {"interface": "virtio", "video": "virtio", "controller:usb": "qemu-xhci"},
    "riscv64": {"interface": "virtio", "video": "virtio"},
}

# Arches on which libvirt 9.0.0 adds no default memballoon (aarch64 on every release; 12.8.0 adds
# none on riscv64 either: profiles.RULE_CHANGES, versions.virt-no-default-memballoon).
NO_DEFAULT_MEMBALLOON: frozenset[str] = frozenset({"aarch64"})

# The arch of the domain being read, for devices read later on its behalf (defaults, attach):
# set by parse.load_domain, which every entry point of the reference calls first.
current_arch: ContextVar[str] = ContextVar("current_arch", default=X86_64)


def arch_default_model(key: str) -> str | None:
    """The current arch's own default model for ``key`` under the current profile (9.0.0's are
    :data:`DEFAULT_MODELS`), or None where x86's holds."""
    from pytest_pcie.reference.profiles import current_rules  # profiles reads this module's tables

    return current_rules().arch_default_models.get(current_arch.get(), {}).get(key)
