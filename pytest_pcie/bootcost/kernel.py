"""Reading Debian's kernel package: the uncompressed vmlinux inside bzImage, and the modules' metadata.

Debian ships only ``/boot/vmlinuz`` (a bzImage).  Booting it makes the guest decompress ~60 MB of
kernel first, which under TCG costs seconds; QEMU can instead load the ELF ``vmlinux`` directly
and enter it through its PVH entry point (``CONFIG_PVH``, set in Debian's kernels).  The ELF is the
bzImage's payload: the setup header says where the payload starts and how long it is, and its
first bytes say how it is compressed.  Python's standard library decompresses all of Debian's
choices; zstd, which it lacks, goes through the ``zstd`` program if there is one.

A module names its dependencies in its ``.modinfo`` section (``depends=virtio,virtio_ring``).  The
package has no ``modules.dep`` (``depmod`` runs in its postinst), so the dependencies are read
from the modules themselves.
"""

from __future__ import annotations

import bz2
import lzma
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

SETUP_SECTS = 0x1F1
BOOT_MAGIC = 0x202
BOOT_VERSION = 0x206
PAYLOAD_OFFSET = 0x248
PAYLOAD_LENGTH = 0x24C
ELF_MAGIC = b"\x7fELF"
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point QEMU looks for
SIGNATURE_MAGIC = b"~Module signature appended~\n"
SIGNATURE_DESCRIPTOR = 12


class KernelImageError(ValueError):
    """The kernel package does not hold what a PVH or bzImage boot needs."""


def _zstd(data: bytes) -> bytes:
    if shutil.which("zstd") is None:
        raise KernelImageError(
            "the kernel payload is zstd-compressed and no zstd program is installed (apt-get install zstd)"
        )
    return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout


def _xz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _lzma(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)


def _gzip(data: bytes) -> bytes:
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(data)


def _bzip2(data: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(data)


# Payload magic -> (name, decompressor).  Each decompressor stops at the end of its stream: the
# payload may be followed by padding.  The kernel's own list (arch/x86/boot/compressed) has lz4
# and lzo too; Debian uses neither, and an image that does gets a clear error, not a wrong guess.
DECOMPRESSORS: tuple[tuple[bytes, str, Callable[[bytes], bytes]], ...] = (
    (b"\xfd7zXZ\x00", "xz", _xz),
    (b"\x1f\x8b", "gzip", _gzip),
    (b"\x28\xb5\x2f\xfd", "zstd", _zstd),
    (b"BZh", "bzip2", _bzip2),
    (b"\x5d\x00\x00", "lzma", _lzma),
)


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel compressed inside ``bzimage``; KernelImageError if it is not there or not PVH-bootable."""
    if len(bzimage) < 0x260 or bzimage[BOOT_MAGIC : BOOT_MAGIC + 4] != b"HdrS":
        raise KernelImageError("not a bzImage (no HdrS boot header)")
    if struct.unpack_from("<H", bzimage, BOOT_VERSION)[0] < 0x208:
        raise KernelImageError("bzImage boot protocol older than 2.08 does not say where its payload is")
    setup_sectors = bzimage[SETUP_SECTS] or 4
    offset, length = struct.unpack_from("<II", bzimage, PAYLOAD_OFFSET)
    start = (setup_sectors + 1) * 512 + offset
    payload = bzimage[start : start + length]
    for magic, name, decompress in DECOMPRESSORS:
        if payload.startswith(magic):
            try:
                vmlinux = decompress(payload)
            except (lzma.LZMAError, OSError, EOFError, ValueError, subprocess.CalledProcessError) as exc:
                raise KernelImageError(f"the {name} payload does not decompress: {exc}") from None
            break
    else:
        raise KernelImageError(f"unknown payload compression (first bytes {payload[:6].hex()})")
    if not vmlinux.startswith(ELF_MAGIC):
        raise KernelImageError("the decompressed payload is not an ELF file")
    if not has_pvh_entry(vmlinux):
        raise KernelImageError(
            "the kernel has no PVH entry point (CONFIG_PVH is off); pick a kernel package built with it"
        )
    return vmlinux


def has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit ELF kernel carries the Xen PHYS32_ENTRY note that QEMU's PVH loader needs."""
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + index * phentsize)
        if p_type == PT_NOTE and any(
            owner == b"Xen" and kind == XEN_ELFNOTE_PHYS32_ENTRY
            for owner, kind in _notes(elf[p_offset : p_offset + p_filesz])
        ):
            return True
    return False


def _notes(segment: bytes) -> Iterable[tuple[bytes, int]]:
    position = 0
    while position + 12 <= len(segment):
        namesz, descsz, kind = struct.unpack_from("<III", segment, position)
        name = segment[position + 12 : position + 12 + namesz].rstrip(b"\x00")
        yield name, kind
        position += 12 + _aligned(namesz) + _aligned(descsz)


def _aligned(size: int) -> int:
    return (size + 3) & ~3


@dataclass(frozen=True)
class ModuleInfo:
    """What ``modinfo`` would say about one .ko: its name and the modules it needs loaded first."""

    name: str
    depends: tuple[str, ...]


def read_modinfo(ko: bytes) -> ModuleInfo:
    """The name and dependencies in a 64-bit module's .modinfo section."""
    if not ko.startswith(ELF_MAGIC):
        raise KernelImageError("not an ELF module")
    (shoff,) = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", ko, shoff + index * shentsize) for index in range(shnum)]
    names_offset, names_size = sections[shstrndx][4], sections[shstrndx][5]
    names = ko[names_offset : names_offset + names_size]
    fields: dict[str, str] = {}
    for sh_name, _, _, _, offset, size in sections:
        if names[sh_name:].split(b"\x00", 1)[0] == b".modinfo":
            for entry in ko[offset : offset + size].split(b"\x00"):
                key, _, value = entry.decode("utf-8", "replace").partition("=")
                fields.setdefault(key, value)
    if "name" not in fields:
        raise KernelImageError("module has no name in .modinfo")
    # depends= spells names as the files are named (usb-common); the kernel's own name is usb_common.
    depends = tuple(module_name(name) for name in fields.get("depends", "").split(",") if name)
    return ModuleInfo(module_name(fields["name"]), depends)


def strip_signature(ko: bytes) -> bytes:
    """``ko`` without its appended signature, so that the guest does not spend boot time checking it.

    Debian signs its modules; a kernel that does not enforce signatures loads an unsigned one and
    only notes the taint.  The trailer is the signature, a 12-byte descriptor whose last four
    bytes are the signature's length (big-endian), and a fixed magic string.
    """
    if not ko.endswith(SIGNATURE_MAGIC):
        return ko
    descriptor_end = len(ko) - len(SIGNATURE_MAGIC)
    (length,) = struct.unpack_from(">I", ko, descriptor_end - 4)
    end = descriptor_end - SIGNATURE_DESCRIPTOR - length
    if end < len(ELF_MAGIC):
        raise KernelImageError("module signature trailer is longer than the module")
    return ko[:end]


def module_name(file_name: str) -> str:
    """``snd-hda-intel.ko`` -> ``snd_hda_intel``: the kernel treats - and _ in module names alike."""
    return file_name.removesuffix(".ko").replace("-", "_")


def load_order(wanted: Iterable[str], depends: Mapping[str, tuple[str, ...]]) -> list[str]:
    """``wanted`` and everything they depend on, dependencies first; names ``depends`` lacks are left out.

    Order among independent modules follows ``wanted``, so the same topology always loads its
    drivers in the same order.
    """
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in depends:
            return
        seen.add(name)
        for dependency in depends[name]:
            visit(dependency)
        order.append(name)

    for name in wanted:
        visit(name)
    return order
