"""A 200-byte static x86-64 program that writes the time-stamp counter to stdout, for the guest's init.

The kernel stamps its log with a clock that starts at zero early in its own boot, so the log alone
cannot say how long the firmware ran before it.  The time-stamp counter can: QEMU starts it at zero
when the machine starts (under ``-icount`` it counts the guest's instructions, under KVM the time
since the vCPU was created).  The init script reads it once, between two kernel-log marks, and the
difference between the counter and the kernel clock at that moment is the time spent before the
kernel's clock started.

Busybox has no applet that executes ``rdtsc``, and ``/dev/cpu/0/msr`` cannot be used instead:
busybox's ``dd``/``od`` skip by reading, and reading the msr device at offset 0 returns MSR 0, not
MSR 0x10.  So the program is assembled here, from a table of instructions, into a minimal ELF
executable with one loadable segment: nothing to download, nothing to compile.
"""

from __future__ import annotations

import struct

LOAD_ADDRESS = 0x400000
ELF_HEADER_SIZE = 64
PROGRAM_HEADER_SIZE = 56

# (machine code, what it does).  The counter arrives in edx:eax; it is combined into rax, pushed,
# and the eight bytes on the stack are written to fd 1 (little-endian, as ``od -tu8`` reads them).
INSTRUCTIONS: tuple[tuple[bytes, str], ...] = (
    (b"\x0f\x31", "rdtsc"),
    (b"\x48\xc1\xe2\x20", "shl rdx, 32"),
    (b"\x48\x09\xd0", "or rax, rdx"),
    (b"\x50", "push rax"),
    (b"\xb8\x01\x00\x00\x00", "mov eax, 1 (write)"),
    (b"\xbf\x01\x00\x00\x00", "mov edi, 1 (stdout)"),
    (b"\x48\x89\xe6", "mov rsi, rsp"),
    (b"\xba\x08\x00\x00\x00", "mov edx, 8"),
    (b"\x0f\x05", "syscall"),
    (b"\xb8\x3c\x00\x00\x00", "mov eax, 60 (exit)"),
    (b"\x31\xff", "xor edi, edi"),
    (b"\x0f\x05", "syscall"),
)


def rdtsc_program() -> bytes:
    """The ELF executable: header, one PT_LOAD program header (R+X) and the code right after them."""
    code = b"".join(instruction for instruction, _ in INSTRUCTIONS)
    entry = LOAD_ADDRESS + ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE
    size = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE + len(code)
    elf_header = struct.pack(
        "<4sBBBBB7xHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0, 0,  # 64-bit, little-endian, version 1, System V ABI
        2, 0x3E, 1,  # ET_EXEC, x86-64, version 1
        entry, ELF_HEADER_SIZE, 0,  # entry point, program headers right after this header, no sections
        0, ELF_HEADER_SIZE, PROGRAM_HEADER_SIZE, 1, 0, 0, 0,  # flags, sizes, one program header
    )  # fmt: skip
    program_header = struct.pack(
        "<IIQQQQQQ",
        1, 5,  # PT_LOAD, readable and executable
        0, LOAD_ADDRESS, LOAD_ADDRESS, size, size, 0x1000,  # the whole file, mapped at LOAD_ADDRESS
    )  # fmt: skip
    return elf_header + program_header + code
