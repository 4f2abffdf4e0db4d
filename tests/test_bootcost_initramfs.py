"""The guest's initramfs and the programs in it, read back with a newc reader of the test's own."""

from __future__ import annotations

import stat
import struct

from hypothesis import given
from hypothesis import strategies as st

from pytest_pcie.bootcost import initramfs, marks, parse, rdtsc

BUSYBOX = b"\x7fELF-not-really-busybox"


def read_newc(archive: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """(name, mode, data, (rdev major, minor)) of every entry up to the trailer, checking alignment."""
    entries = []
    position = 0
    while True:
        assert position % 4 == 0
        header = archive[position : position + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * index : 14 + 8 * index], 16) for index in range(13)]
        mode, size, rmajor, rminor, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        name_start = position + 110
        name = archive[name_start : name_start + namesize - 1].decode()
        assert archive[name_start + namesize - 1] == 0
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        data = archive[data_start : data_start + size]
        position = data_start + size + (-size % 4)
        if name == "TRAILER!!!":
            assert position == len(archive)
            return entries
        entries.append((name, mode, data, (rmajor, rminor)))


def test_archive_holds_init_busybox_applets_rdtsc_and_modules() -> None:
    archive = initramfs.build_initramfs(BUSYBOX, b"RDTSC", {"virtio_net": b"NET", "failover": b"FO"})
    entries = {name: (mode, data, device) for name, mode, data, device in read_newc(archive)}
    init_mode, init_data, _ = entries["init"]
    assert stat.S_ISREG(init_mode) and init_mode & 0o111
    assert init_data.decode() == initramfs.INIT_SCRIPT
    assert entries["bin/busybox"][1] == BUSYBOX
    assert entries["bin/rdtsc"][1] == b"RDTSC"
    assert entries["lib/modules/virtio_net.ko"][1] == b"NET"
    assert entries["lib/modules/failover.ko"][1] == b"FO"
    for applet in initramfs.APPLETS:
        mode, target, _ = entries[f"bin/{applet}"]
        assert stat.S_ISLNK(mode) and target == b"busybox"
    assert entries[initramfs.KEPT_PATTERN_FILE][1] == parse.kept_lines_pattern().encode() + b"\n"
    console_mode, _, device = entries["dev/console"]
    assert stat.S_ISCHR(console_mode) and device == (5, 1)
    names = list(entries)
    assert names.index("bin") < names.index("bin/busybox")  # directories before what they hold


def test_same_inputs_give_the_same_bytes() -> None:
    modules = {"b": b"2", "a": b"1"}
    assert initramfs.build_initramfs(BUSYBOX, b"x", modules) == initramfs.build_initramfs(
        BUSYBOX, b"x", dict(reversed(modules.items()))
    )


@given(st.dictionaries(st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True), st.binary(max_size=64), max_size=6))
def test_any_modules_round_trip(modules: dict[str, bytes]) -> None:
    entries = {name: data for name, _, data, _ in read_newc(initramfs.build_initramfs(BUSYBOX, b"", modules))}
    assert {name: entries[f"lib/modules/{name}.ko"] for name in modules} == modules


def test_init_script_uses_only_the_applets_it_links() -> None:
    commands = {"mount", "cat", "insmod", "od", "dmesg", "grep", "poweroff", "rdtsc"}
    for command in commands - {"rdtsc"}:
        assert command in initramfs.APPLETS
    script = initramfs.INIT_SCRIPT
    for mark in (marks.INIT, marks.DRIVERS_LOADED, marks.TSC_BEFORE, marks.TSC_AFTER, marks.TSC, marks.END):
        assert mark in script
    assert marks.LOAD_PARAMETER + "=" in script
    assert script.index(marks.TSC_BEFORE) < script.index("rdtsc >") < script.index(marks.TSC_AFTER)
    assert script.index(marks.END) < script.index("poweroff")


def test_rdtsc_program_is_a_static_elf_whose_entry_is_its_code() -> None:
    program = rdtsc.rdtsc_program()
    assert program[:4] == b"\x7fELF" and program[4] == 2 and program[5] == 1  # 64-bit little-endian
    e_type, e_machine = struct.unpack_from("<HH", program, 16)
    assert (e_type, e_machine) == (2, 0x3E)
    (entry,) = struct.unpack_from("<Q", program, 24)
    p_type, p_flags, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", program, 64)
    assert (p_type, p_offset, p_vaddr, p_filesz) == (1, 0, rdtsc.LOAD_ADDRESS, len(program))
    assert p_flags & 1  # executable
    code = program[entry - rdtsc.LOAD_ADDRESS :]
    assert code.startswith(b"\x0f\x31")  # rdtsc first
    assert code.endswith(b"\x0f\x05")  # and the exit syscall last


def test_init_copies_only_the_kept_lines_and_after_the_last_timestamp() -> None:
    script = initramfs.INIT_SCRIPT
    copy = f"dmesg | grep -E -f /{initramfs.KEPT_PATTERN_FILE} > /dev/console"
    assert copy in script and script.count("dmesg") == 1
    assert script.index(marks.TSC_AFTER) < script.index(copy) < script.index(marks.END)
