"""Reading Debian's kernel package and fetching packages, on files built here (no download, no boot)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from pytest_pcie.bootcost import guest, kernel, packages
from pytest_pcie.bootcost.packages import GuestUnavailable, PackageSpec


def elf_with_note(owner: bytes, kind: int) -> bytes:
    """A 64-bit ELF whose only program header is a PT_NOTE holding one note."""
    name = owner + b"\x00"
    note = struct.pack("<III", len(name), 4, kind) + name + b"\x00" * (-len(name) % 4) + b"\x00" * 4
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    struct.pack_into("<Q", header, 0x20, 64)  # program headers right after
    struct.pack_into("<HH", header, 0x36, 56, 1)
    program = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(note), len(note), 4)
    return bytes(header) + program + note


def bzimage(payload: bytes, setup_sectors: int = 2) -> bytes:
    image = bytearray((setup_sectors + 1) * 512)
    image[0x1F1] = setup_sectors
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x20F)
    struct.pack_into("<II", image, 0x248, 16, len(payload))
    return bytes(image) + b"\x00" * 16 + payload + b"\x00" * 100  # padding after the payload, as real images have


def module(fields: dict[str, str]) -> bytes:
    """A 64-bit ELF object with a .modinfo section and a section-name table."""
    modinfo = b"".join(f"{key}={value}".encode() + b"\x00" for key, value in fields.items())
    names = b"\x00.modinfo\x00.shstrtab\x00"
    data_offset = 64
    names_offset = data_offset + len(modinfo)
    sections_offset = names_offset + len(names)
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    struct.pack_into("<Q", header, 0x28, sections_offset)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
    section = "<IIQQQQIIQQ"
    table = struct.pack(section, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    table += struct.pack(section, 1, 1, 0, 0, data_offset, len(modinfo), 0, 0, 1, 0)
    table += struct.pack(section, 10, 3, 0, 0, names_offset, len(names), 0, 0, 1, 0)
    return bytes(header) + modinfo + names + table


def test_vmlinux_comes_out_of_a_gzip_bzimage() -> None:
    vmlinux = elf_with_note(b"Xen", kernel.XEN_ELFNOTE_PHYS32_ENTRY)
    assert kernel.extract_vmlinux(bzimage(gzip.compress(vmlinux))) == vmlinux


def test_kernel_without_pvh_entry_is_refused_clearly() -> None:
    other = elf_with_note(b"GNU", kernel.XEN_ELFNOTE_PHYS32_ENTRY)
    with pytest.raises(kernel.KernelImageError, match="no PVH entry point"):
        kernel.extract_vmlinux(bzimage(gzip.compress(other)))


def test_not_a_bzimage_and_unknown_compression() -> None:
    with pytest.raises(kernel.KernelImageError, match="not a bzImage"):
        kernel.extract_vmlinux(b"\x00" * 4096)
    with pytest.raises(kernel.KernelImageError, match="unknown payload compression"):
        kernel.extract_vmlinux(bzimage(b"\x02\x21\x4c\x18" + b"\x00" * 32))


def test_modinfo_names_and_dependencies_use_the_kernels_spelling() -> None:
    info = kernel.read_modinfo(module({"license": "GPL", "depends": "usb-common,scsi_mod", "name": "usbcore"}))
    assert info == kernel.ModuleInfo("usbcore", ("usb_common", "scsi_mod"))
    assert kernel.read_modinfo(module({"name": "virtio", "depends": ""})).depends == ()
    with pytest.raises(kernel.KernelImageError, match="no name"):
        kernel.read_modinfo(module({"license": "GPL"}))


def test_signature_is_stripped_and_unsigned_modules_are_left_alone() -> None:
    body = module({"name": "x"})
    signature = b"S" * 300
    signed = body + signature + b"\x00" * 8 + struct.pack(">I", len(signature)) + kernel.SIGNATURE_MAGIC
    assert kernel.strip_signature(signed) == body
    assert kernel.strip_signature(body) == body


def test_load_order_puts_dependencies_first_and_leaves_out_unknown_names() -> None:
    depends = {"virtio_net": ("net_failover", "virtio"), "net_failover": ("failover",), "failover": (), "virtio": ()}
    order = kernel.load_order(["virtio_net", "ghost", "virtio"], depends)
    assert order == ["failover", "net_failover", "virtio", "virtio_net"]


def test_guest_knows_builtin_and_missing_drivers(tmp_path: Path) -> None:
    files = guest.Guest("k 1", "b 1", "6.1", tmp_path / "vmlinux", tmp_path / "busybox",
                        {"virtio_net": tmp_path / "virtio_net.ko", "virtio": tmp_path / "v.ko"},
                        {"virtio_net": ("virtio",), "virtio": ()}, frozenset({"ahci"}))  # fmt: skip
    assert files.load_order(["ahci", "virtio_net"]) == ["virtio", "virtio_net"]
    assert files.missing(["ahci", "virtio_net", "bochs"]) == ["bochs"]


def test_manifest_round_trips_and_another_format_is_ignored(tmp_path: Path) -> None:
    manifest = guest.Manifest("6.1.0-50-amd64", ("a",), frozenset({"b"}), {"a": ("c",), "c": ()})
    manifest.write(tmp_path / "m.json")
    assert guest.Manifest.read(tmp_path / "m.json") == manifest
    (tmp_path / "old.json").write_text('{"format": 1, "release": "x"}')
    assert guest.Manifest.read(tmp_path / "old.json") is None
    assert guest.Manifest.read(tmp_path / "absent.json") is None


def test_package_spec_parses_and_matches_apt_file_names() -> None:
    spec = PackageSpec.parse("busybox-static=1:1.35.0-4+deb12u1+b1")
    assert spec.matches(Path("busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"))
    assert not spec.matches(Path("busybox-static_1%3a1.36.0-1_amd64.deb"))
    assert PackageSpec.parse("linux-image-amd64").matches(Path("linux-image-amd64_6.1.176-1_amd64.deb"))
    assert str(spec) == "busybox-static=1:1.35.0-4+deb12u1+b1"
    assert packages.package_version(Path("busybox-static_1%3a1.35.0-4_amd64.deb")) == "1:1.35.0-4"


def test_cached_deb_is_used_without_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deb = tmp_path / "linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb"
    deb.write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert packages.fetch(guest.DEFAULT_KERNEL, tmp_path) == deb


def test_missing_kernel_package_says_what_failed_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text("#!/bin/sh\necho \"E: Can't select candidate version from package $3 as it has no candidate\" >&2\n"
                    "exit 100\n")  # fmt: skip
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(GuestUnavailable, match=r"apt-get download linux-image-6.1.0-50-amd64=6.1.176-1 failed \(E: Ca"):
        packages.fetch(guest.DEFAULT_KERNEL, tmp_path / "debs")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(GuestUnavailable, match="apt-get not found"):
        packages.fetch(guest.DEFAULT_KERNEL, tmp_path / "debs")


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(packages.CACHE_VARIABLE, str(tmp_path / "c"))
    assert packages.default_cache_dir() == tmp_path / "c"
