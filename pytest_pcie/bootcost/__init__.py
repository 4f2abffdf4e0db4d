"""``pcie-bootcost``: boot a tiny Debian guest with a domain's PCI topology and say where the boot time went.

The path, one module each: topology (a golden or a laid-out domain) -> qemu (-device arguments
from a table) -> guest + packages + kernel (Debian's kernel and busybox, from the cache) ->
initramfs + rdtsc (the guest's /init) -> boot (QEMU to power-off) -> parse (the console into a
breakdown) -> run (repeat and summarise) -> cli.  sweep and plot make docs/bootcost.md.
"""
