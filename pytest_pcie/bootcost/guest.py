"""The guest's files, assembled once per kernel package in the cache: vmlinux, modules, busybox.

Unpacking the kernel package takes a few seconds and ~400 MB of scratch space, so it is done once:
the cache keeps the vmlinux and only the modules the device table can ask for (with
their dependencies), listed in a manifest.  A later run whose table asks for a module the
manifest lacks unpacks the package again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pytest_pcie.bootcost import kernel, packages
from pytest_pcie.bootcost.packages import GuestUnavailable, PackageSpec

# Pinned so that docs/bootcost.md can be reproduced: the kernel of Debian 12's point release.
DEFAULT_KERNEL = PackageSpec("linux-image-6.1.0-50-amd64", "6.1.176-1")
DEFAULT_BUSYBOX = PackageSpec("busybox-static", "1:1.35.0-4+deb12u1+b1")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 2  # 2: dependency names as the kernel spells module names, signatures stripped


@dataclass(frozen=True)
class Guest:
    """Everything a boot needs from the packages, as files in the cache."""

    kernel_package: str  # "name version", for reports
    busybox_package: str
    release: str  # uname -r of the guest kernel
    vmlinux: Path
    busybox: Path
    modules: dict[str, Path]  # module name -> .ko
    depends: dict[str, tuple[str, ...]]
    builtin: frozenset[str]  # modules compiled into the kernel: nothing to load

    def load_order(self, wanted: Iterable[str]) -> list[str]:
        """The modules to insmod, dependencies first, for drivers ``wanted`` (built-in ones need nothing)."""
        return kernel.load_order((name for name in wanted if name not in self.builtin), self.depends)

    def missing(self, wanted: Iterable[str]) -> list[str]:
        """Drivers in ``wanted`` that this kernel neither builds in nor ships as a module."""
        return sorted({name for name in wanted if name not in self.builtin and name not in self.modules})


def prepare_guest(
    cache_dir: Path,
    wanted_modules: Iterable[str],
    kernel_spec: PackageSpec = DEFAULT_KERNEL,
    busybox_spec: PackageSpec = DEFAULT_BUSYBOX,
) -> Guest:
    """The guest for ``kernel_spec``, downloading and unpacking what the cache does not hold yet."""
    wanted = sorted(set(wanted_modules))
    debs = cache_dir / "debs"
    kernel_deb = packages.fetch(kernel_spec, debs)
    busybox_deb = packages.fetch(busybox_spec, debs)
    kernel_dir = cache_dir / "guest" / kernel_deb.stem
    manifest = Manifest.read(kernel_dir / MANIFEST)
    if manifest is None or not set(wanted) <= set(manifest.wanted):
        manifest = _unpack_kernel(kernel_deb, kernel_dir, wanted)
    busybox = _unpack_busybox(busybox_deb, cache_dir / "guest" / busybox_deb.stem)
    return Guest(
        kernel_package=f"{kernel_spec.name} {packages.package_version(kernel_deb)}",
        busybox_package=f"{busybox_spec.name} {packages.package_version(busybox_deb)}",
        release=manifest.release,
        vmlinux=kernel_dir / "vmlinux",
        busybox=busybox,
        modules={name: kernel_dir / "modules" / f"{name}.ko" for name in manifest.depends},
        depends=manifest.depends,
        builtin=manifest.builtin,
    )


@dataclass(frozen=True)
class Manifest:
    """What the cache holds of one kernel package; ``wanted`` is the driver list it was cut for."""

    release: str
    wanted: tuple[str, ...]
    builtin: frozenset[str]
    depends: dict[str, tuple[str, ...]]  # every module kept -> the modules it needs first

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        """The manifest at ``path``, or None when it is missing, unreadable or of another format."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["format"] != MANIFEST_FORMAT:
                return None
            return cls(
                str(data["release"]),
                tuple(str(name) for name in data["wanted"]),
                frozenset(str(name) for name in data["builtin"]),
                {str(name): tuple(str(d) for d in deps) for name, deps in data["modules"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def write(self, path: Path) -> None:
        data = {
            "format": MANIFEST_FORMAT,
            "release": self.release,
            "wanted": list(self.wanted),
            "builtin": sorted(self.builtin),
            "modules": {name: list(deps) for name, deps in sorted(self.depends.items())},
        }
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _unpack_kernel(deb: Path, kernel_dir: Path, wanted: list[str]) -> Manifest:
    scratch = kernel_dir.with_name(f"{kernel_dir.name}.unpack-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        packages.unpack(deb, scratch / "root")
        vmlinuz = sorted((scratch / "root" / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise GuestUnavailable(f"{deb.name} has no /boot/vmlinuz-*: not a kernel image package")
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        roots = (scratch / "root" / "lib" / "modules", scratch / "root" / "usr" / "lib" / "modules")
        tree = next((root / release for root in roots if (root / release).is_dir()), None)
        if tree is None:
            raise GuestUnavailable(f"{deb.name} has no modules for {release}")
        try:
            vmlinux = kernel.extract_vmlinux(vmlinuz[0].read_bytes())
        except kernel.KernelImageError as exc:
            raise GuestUnavailable(f"{deb.name}: {exc}") from None
        infos: dict[str, tuple[Path, kernel.ModuleInfo]] = {}
        for ko in sorted(tree.rglob("*.ko")):
            info = kernel.read_modinfo(ko.read_bytes())
            infos[info.name] = (ko, info)
        keep = kernel.load_order(wanted, {name: info.depends for name, (_, info) in infos.items()})
        staged = scratch / "guest"
        (staged / "modules").mkdir(parents=True)
        (staged / "vmlinux").write_bytes(vmlinux)
        for name in keep:
            (staged / "modules" / f"{name}.ko").write_bytes(kernel.strip_signature(infos[name][0].read_bytes()))
        builtin_file = tree / "modules.builtin"
        lines = builtin_file.read_text(encoding="utf-8").split() if builtin_file.is_file() else []
        manifest = Manifest(
            release,
            tuple(wanted),
            frozenset(kernel.module_name(Path(line).name) for line in lines),
            {name: infos[name][1].depends for name in keep},
        )
        manifest.write(staged / MANIFEST)
        shutil.rmtree(kernel_dir, ignore_errors=True)
        kernel_dir.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(kernel_dir)
        return manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _unpack_busybox(deb: Path, target: Path) -> Path:
    busybox = target / "busybox"
    if busybox.is_file():
        return busybox
    scratch = target.with_name(f"{target.name}.unpack-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        packages.unpack(deb, scratch)
        found = [path for path in (scratch / "bin" / "busybox", scratch / "usr" / "bin" / "busybox") if path.is_file()]
        if not found:
            raise GuestUnavailable(f"{deb.name} has no /bin/busybox: not busybox-static")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found[0], busybox)
        return busybox
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
