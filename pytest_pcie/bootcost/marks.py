"""The lines the guest's init writes to the kernel log, shared by the init script and the log parser.

Writing them to ``/dev/kmsg`` rather than to the console gives each one the kernel's own timestamp,
on the same clock as every kernel message, and keeps the console quiet while the boot is timed.
"""

from __future__ import annotations

PREFIX = "bootcost:"
INIT = f"{PREFIX} init"  # the first thing /init does
LOAD_FAILED = f"{PREFIX} insmod-failed"  # + module name
DRIVERS_LOADED = f"{PREFIX} drivers-loaded"  # every module on bootcost.load= is in: the guest is ready
TSC_BEFORE = f"{PREFIX} tsc-before"
TSC_AFTER = f"{PREFIX} tsc-after"
TSC = f"{PREFIX} tsc"  # + the counter read between the two marks above
END = f"{PREFIX} end"  # written to the console after the log: the log is complete

LOAD_PARAMETER = "bootcost.load"  # kernel command line: modules to insmod, in order, comma-separated
