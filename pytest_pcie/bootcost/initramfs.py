"""The guest's initramfs, written in pure Python: busybox, the rdtsc program, modules and /init.

The archive is the kernel's ``newc`` cpio format (``cpio -H newc``), written here so that no cpio
program is needed and the same inputs always give the same bytes (every time stamp and owner is
0, inodes are numbered in order).  It is left uncompressed: the kernel then copies it instead of
decompressing it, which saves boot time under TCG and keeps the unpacking out of what is timed.

Every boot of one kernel gets the same archive, whatever the topology: the modules to load are
named on the kernel command line (``bootcost.load=``), so the work of unpacking the initramfs is
the same for every topology and cancels out when two topologies are compared.

At the end, init copies to the serial console only the lines of the kernel log that the parser
reads (``/etc/bootcost-kept`` holds them as one regular expression, from
:func:`pytest_pcie.bootcost.parse.kept_lines_pattern`).  That happens after the last timestamp the
parser uses, so it changes host time only.  The choice cannot be left to the kernel command line:
the kernel mixes its command line into its random state, and two command lines that differ in
one word give boots that differ by milliseconds.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping

from pytest_pcie.bootcost import marks, parse

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
CONSOLE_DEVICE = (5, 1)  # /dev/console: the kernel opens it for init's stdin/stdout/stderr
KEPT_PATTERN_FILE = "etc/bootcost-kept"

INIT_SCRIPT = f"""#!/bin/sh
# pcie-bootcost's /init.  Marks go to /dev/kmsg, so they carry the kernel's timestamps; the log
# goes to the serial console only at the end, after everything timed is done.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "{marks.INIT}" > /dev/kmsg
load=
for word in $(cat /proc/cmdline); do
    case "$word" in {marks.LOAD_PARAMETER}=*) load="${{word#{marks.LOAD_PARAMETER}=}}" ;; esac
done
IFS=,
for module in $load; do
    insmod "/lib/modules/$module.ko" || echo "{marks.LOAD_FAILED} $module" > /dev/kmsg
done
unset IFS
echo "{marks.DRIVERS_LOADED}" > /dev/kmsg
echo "{marks.TSC_BEFORE}" > /dev/kmsg
rdtsc > /tmp/tsc
echo "{marks.TSC_AFTER}" > /dev/kmsg
echo "{marks.TSC} $(od -An -tu8 /tmp/tsc)" > /dev/kmsg
dmesg | grep -E -f /{KEPT_PATTERN_FILE} > /dev/console
echo "{marks.END}" > /dev/console
poweroff -f
"""


class CpioWriter:
    """A newc archive built in memory; entries keep the order they were added in."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._inode = 0

    def directory(self, name: str) -> None:
        self._add(name, stat.S_IFDIR | 0o755, b"", links=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._add(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._add(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._add(name, stat.S_IFCHR | 0o600, b"", device=(major, minor))

    def finish(self) -> bytes:
        """The archive with its trailer; the writer can be used no further."""
        self._add(TRAILER, 0, b"", links=1, inode=0)
        return b"".join(self._parts)

    def _add(
        self,
        name: str,
        mode: int,
        data: bytes,
        links: int = 1,
        device: tuple[int, int] = (0, 0),
        inode: int | None = None,
    ) -> None:
        if inode is None:
            self._inode += 1
            inode = self._inode
        encoded = name.encode() + b"\x00"
        fields = (inode, mode, 0, 0, links, 0, len(data), 0, 0, device[0], device[1], len(encoded), 0)
        header = NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)
        self._parts.append(_padded(header + encoded))
        self._parts.append(_padded(data))


def _padded(data: bytes) -> bytes:
    """newc aligns every header+name and every file body to 4 bytes."""
    return data + b"\x00" * (-len(data) % 4)


def build_initramfs(busybox: bytes, rdtsc: bytes, modules: Mapping[str, bytes]) -> bytes:
    """The archive: /init, busybox with the applets the script uses, /bin/rdtsc, the modules, the kept-lines pattern."""
    archive = CpioWriter()
    for directory in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp"):
        archive.directory(directory)
    archive.char_device("dev/console", *CONSOLE_DEVICE)
    archive.file("bin/busybox", busybox, 0o755)
    for applet in APPLETS:
        archive.symlink(f"bin/{applet}", "busybox")
    archive.file("bin/rdtsc", rdtsc, 0o755)
    for name in sorted(modules):
        archive.file(f"lib/modules/{name}.ko", modules[name])
    archive.file(KEPT_PATTERN_FILE, parse.kept_lines_pattern().encode() + b"\n")
    archive.file("init", INIT_SCRIPT.encode(), 0o755)
    return archive.finish()


# The busybox applets INIT_SCRIPT runs, as symlinks (busybox picks the applet by its argv[0]).
APPLETS = ("sh", "mount", "cat", "insmod", "od", "dmesg", "grep", "poweroff")
