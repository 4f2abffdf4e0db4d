"""Getting Debian packages for the guest: ``apt-get download`` into a cache, ``dpkg-deb -x`` out of it.

The guest is built from two packages of the host's own archive (the kernel and busybox-static),
so nothing is downloaded from anywhere else and nothing is installed on the host.  A package
already in the cache is used as it is, which keeps later runs offline and their numbers stable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class GuestUnavailable(Exception):
    """What the guest needs cannot be had on this host; ``str()`` is the one line to print."""


@dataclass(frozen=True)
class PackageSpec:
    """A package as ``apt-get download`` takes it: a name, optionally pinned to one version."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> PackageSpec:
        name, _, version = text.partition("=")
        if not name:
            raise ValueError(f"{text!r} is not a package name (NAME or NAME=VERSION)")
        return cls(name, version or None)

    def __str__(self) -> str:
        return f"{self.name}={self.version}" if self.version else self.name

    def matches(self, deb: Path) -> bool:
        """Whether ``deb`` (a file apt-get download wrote) is this package; ':' is spelled %3a there."""
        name, _, rest = deb.name.partition("_")
        if name != self.name or not deb.name.endswith(".deb"):
            return False
        return self.version is None or rest.split("_")[0] == self.version.replace(":", "%3a")


SYSTEM_CACHE = Path("/var/cache/pytest-pcie/bootcost")  # what scripts/prepare-host fills
CACHE_VARIABLE = "PCIE_BOOTCOST_CACHE"


def default_cache_dir() -> Path:
    """$PCIE_BOOTCOST_CACHE; else the host's cache if prepare-host made it; else the user's cache."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    if SYSTEM_CACHE.is_dir() and os.access(SYSTEM_CACHE, os.W_OK):
        return SYSTEM_CACHE
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-pcie" / "bootcost"


def fetch(spec: PackageSpec, debs: Path) -> Path:
    """The .deb of ``spec`` in ``debs``, downloaded with apt-get only when no matching file is there yet."""
    cached = sorted(deb for deb in debs.glob(f"{spec.name}_*.deb") if spec.matches(deb))
    if cached:
        return cached[-1]
    if shutil.which("apt-get") is None:
        raise GuestUnavailable(
            f"apt-get not found: cannot download {spec}; put its .deb into {debs} or run on a Debian host"
        )
    debs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["apt-get", "download", "-q", str(spec)], cwd=debs, capture_output=True, text=True, check=False
    )
    downloaded = sorted(deb for deb in debs.glob(f"{spec.name}_*.deb") if spec.matches(deb))
    if result.returncode != 0 or not downloaded:
        errors = [line for line in result.stderr.splitlines() if line.startswith("E:")] or [result.stderr.strip()]
        raise GuestUnavailable(
            f"apt-get download {spec} failed ({errors[0]}); run apt-get update, or pick another package "
            "(--kernel-package linux-image-amd64: the numbers then differ from docs/bootcost.md)"
        )
    return downloaded[-1]


def unpack(deb: Path, target: Path) -> None:
    """Extract the files of ``deb`` under ``target`` (no maintainer scripts run, nothing installed)."""
    if shutil.which("dpkg-deb") is None:
        raise GuestUnavailable(f"dpkg-deb not found: cannot unpack {deb.name}; run on a Debian host")
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GuestUnavailable(
            f"dpkg-deb -x {deb} failed: {result.stderr.strip()}; delete the file to download it again"
        )


def package_version(deb: Path) -> str:
    """The version a .deb declares (the file name spells the epoch as %3a)."""
    return deb.name.split("_")[1].replace("%3a", ":")
