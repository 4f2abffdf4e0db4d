"""One random example: a machine, an operation, the input devices and the steps, as plain data.

Examples are data rather than XML so that the shrinker can drop a device, a step or an address and
render again.  An example becomes a case folder (:func:`write_case_folder`) in exactly the format
the plugin reads, and is run through :func:`load_case` on that folder, so every example the fuzzer
runs is a case folder the plugin would accept.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pytest_pcie.cases import CASE_FILE, INPUT_FILE, Action, Case, Operation, load_case
from pytest_pcie.fuzz.catalogue import HOTPLUG_TARGET_MODELS, KINDS, render

PCI_CONTROLLER = "pci-controller"
DOMAIN_NAME = "pcie-fuzz"


@dataclass(frozen=True)
class Address:
    """A PCI address as the user writes it: any attribute may be left out (libvirt reads 0)."""

    domain: int | None = None
    bus: int | None = None
    slot: int | None = None
    function: int | None = None

    def xml(self) -> str:
        parts = (("domain", self.domain, 4), ("bus", self.bus, 2), ("slot", self.slot, 2),
                 ("function", self.function, 1))  # fmt: skip
        attributes = "".join(f" {name}='0x{value:0{width}x}'" for name, value, width in parts if value is not None)
        return f"<address type='pci'{attributes}/>"

    def short(self) -> str:
        """``bb:ss.f`` with ``?`` for what the user left out, for descriptions."""

        def part(value: int | None, width: int) -> str:
            return "?" * width if value is None else f"{value:0{width}x}"

        prefix = "" if self.domain in (None, 0) else f"{part(self.domain, 4)}:"
        return f"{prefix}{part(self.bus, 2)}:{part(self.slot, 2)}.{part(self.function, 1)}"


@dataclass(frozen=True)
class Device:
    """One device: a row of the catalogue (``kind``), or a PCI controller (``kind == PCI_CONTROLLER``).

    ``n`` is unique within an example and makes MACs, disk targets and names unique.  ``model``,
    ``index`` and ``hotplug_off`` are used by PCI controllers only.
    """

    kind: str
    n: int
    address: Address | None = None
    model: str | None = None
    index: int | None = None
    hotplug_off: bool = False

    def xml(self) -> str:
        address = self.address.xml() if self.address is not None else ""
        if self.kind != PCI_CONTROLLER:
            return render(KINDS[self.kind], self.n, address)
        index = f" index='{self.index}'" if self.index is not None else ""
        target = "<target hotplug='off'/>" if self.hotplug_off else ""
        return f"<controller type='pci' model='{self.model}'{index}>{target}{address}</controller>"

    @property
    def tag(self) -> str:
        """The element name, for file names and descriptions."""
        return self.xml()[1:].split(" ", 1)[0].split(">", 1)[0].rstrip("/")

    def label(self) -> str:
        """How descriptions name it: ``net-e1000 at 00:03.0``, ``pcie-root-port index 3``."""
        name = f"{self.model}" if self.kind == PCI_CONTROLLER else self.kind
        if self.index is not None:
            name += f" index {self.index}"
        if self.hotplug_off:
            name += " hotplug=off"
        return name + (f" at {self.address.short()}" if self.address is not None else "")


@dataclass(frozen=True)
class Step:
    action: Action
    device: Device


@dataclass(frozen=True)
class Example:
    """What one differential run does: define ``devices`` on ``machine``, then apply ``steps``."""

    machine: str
    operation: Operation
    devices: tuple[Device, ...] = ()
    steps: tuple[Step, ...] = field(default=())

    def input_xml(self) -> str:
        body = "\n".join(f"    {device.xml()}" for device in self.devices)
        inner = f"\n{body}\n  " if body else ""
        return f"<domain type='kvm'>\n  <name>{DOMAIN_NAME}</name>\n  <devices>{inner}</devices>\n</domain>\n"

    def step_files(self) -> list[tuple[str, Step]]:
        """The file name each step's device XML is written to, in step order."""
        return [(f"step-{number}-{step.device.tag}.xml", step) for number, step in enumerate(self.steps, start=1)]

    def summary(self) -> str:
        """One line naming what is in the example, for progress output and descriptions."""
        devices = ", ".join(device.label() for device in self.devices) or "no devices"
        steps = "; ".join(f"{step.action.value} {step.device.label()}" for step in self.steps)
        return f"{self.machine} {self.operation.value}: {devices}" + (f"; then {steps}" if steps else "")


def hotplug_target_allowed(model: str) -> bool:
    """Whether libvirt accepts ``<target hotplug>`` on a PCI controller of ``model``."""
    return model in HOTPLUG_TARGET_MODELS


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (JSON's escapes are a subset TOML reads the same way)."""
    return json.dumps(text)


def write_case_folder(example: Example, folder: Path, description: str, expect_error: str | None = None) -> Path:
    """Write ``example`` as a case folder (case.toml, input.xml, one file per step) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INPUT_FILE).write_text(example.input_xml(), encoding="utf-8")
    lines = [
        f"description = {toml_string(description)}",
        f'machines = ["{example.machine}"]',
        f'operation = "{example.operation.value}"',
    ]
    files = example.step_files()
    if files:
        lines.append("steps = [")
        lines += [f'    {{ {step.action.value} = "{name}" }},' for name, step in files]
        lines.append("]")
    if expect_error:
        lines.append(f"expect-error = {toml_string(expect_error)}")
    for name, step in files:
        (folder / name).write_text(step.device.xml() + "\n", encoding="utf-8")
    (folder / CASE_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def as_case(example: Example, description: str = "random differential example") -> Case:
    """The :class:`Case` the plugin would read from ``example``'s case folder.

    Going through a real folder and :func:`load_case` keeps the fuzzer honest: it can only run
    what a case folder can express.
    """
    with tempfile.TemporaryDirectory(prefix="pcie-fuzz-") as root:
        folder = write_case_folder(example, Path(root) / "example", description)
        return load_case(folder, Path(root))
