"""PCI controller settings: the defaults libvirt fills in after placement, and their validation.

After pass 2 every PCI controller gets its ``<model name>`` and the ``<target>`` values derived from
its index and address (chassis, port, chassisNr, busNr); validation then checks which options each
model requires or forbids, with libvirt's three message shapes (required / not valid / invalid value).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

from pytest_pcie.reference.elements import element_text, make_elements, quoted
from pytest_pcie.reference.errors import LibvirtError
from pytest_pcie.reference.model import CHILD_BREAK, SETTINGS, UNBUILT, Device, Element, PciAddress, child, parse_int
from pytest_pcie.reference.parse import Domain
from pytest_pcie.reference.tables import CONTROLLER_MODELS, MODEL_NAMES, Target

# <target> attributes in the order libvirt formats them, and whether it writes them in hex.
TARGET_ATTRIBUTES: tuple[tuple[str, bool], ...] = (
    ("chassisNr", False), ("chassis", False), ("port", True), ("busNr", False), ("index", False), ("hotplug", False),
)
# Which option each target attribute is, in validation messages.
OPTION_OF_ATTRIBUTE: dict[str, str] = {"index": "targetIndex"}
# Options validation requires per model (beyond modelName, which every non-root model needs).
REQUIRED_OPTIONS: dict[Target, tuple[str, ...]] = {
    Target.NONE: (),
    Target.CHASSIS_NR: ("chassisNr",),
    Target.ROOT_PORT: ("chassis", "port"),
    Target.DOWNSTREAM: ("chassis", "port"),
    Target.BUS_NR: ("busNr",),
}
# Order in which libvirt checks the options (first problem wins).
CHECK_ORDER: tuple[str, ...] = (
    "targetIndex", "pcihole64", "busNr", "numaNode", "chassisNr", "chassis", "port", "hotplug",
)
MODEL_NAME_ALTERNATIVES: dict[str, frozenset[str]] = {"pcie-root-port": frozenset({"pcie-root-port", "ioh3420"})}


@dataclass
class Options:
    """The settings of one PCI controller as written in its XML."""

    model_name: str | None
    values: dict[str, int | str]

    @classmethod
    def read(cls, controller: Device) -> Options:
        model = child(controller.element, "model")
        name = model.get("name") if model is not None else None
        if name is not None and name not in MODEL_NAMES:
            raise LibvirtError(f"XML error: Invalid value for attribute 'name' in element 'model': '{name}'.")
        values: dict[str, int | str] = {}
        target = child(controller.element, "target")
        if target is not None:
            for attribute, _ in TARGET_ATTRIBUTES:
                raw = target.get(attribute)
                if raw is None:
                    continue
                option = OPTION_OF_ATTRIBUTE.get(attribute, attribute)
                values[option] = raw if attribute == "hotplug" else (parse_int(raw, f"{attribute} attribute") or 0)
            node = child(target, "node")
            if node is not None and node.text:
                values["numaNode"] = int(node.text.strip())
        if child(controller.element, "pcihole64") is not None:
            values["pcihole64"] = 1
        return cls(name, values)


# The Target members apply_defaults tests for every PCI controller, read off the class once: in
# Python 3.11 each ``Target.X`` is a descriptor call, a visible cost over hundreds of root ports.
_CHASSIS_NR, _ROOT_PORT, _DOWNSTREAM, _BUS_NR = Target.CHASSIS_NR, Target.ROOT_PORT, Target.DOWNSTREAM, Target.BUS_NR
_NO_TARGET = Target.NONE


def apply_defaults(domain: Domain) -> None:
    """Fill in model names and target defaults for every PCI controller, then the bridge index check."""
    pending: list[tuple[Device, Options]] = []
    for controller in list(domain.pci_controllers()):
        row = CONTROLLER_MODELS.get(controller.model)
        if row is None:
            continue
        if controller.element is UNBUILT:  # added by the assigner: its element is built later, in full
            settings = _added_settings(controller, row.target, row.model_name)
            if settings is not None:
                controller.extra[SETTINGS] = settings
                _check_bridge_index(controller)
                continue
        # controllers the assigner created have no settings yet: nothing to read back
        options = Options(None, {}) if controller.implicit else Options.read(controller)
        if options.model_name is None and row.model_name is not None:
            options.model_name = row.model_name
        address = controller.address
        values = options.values  # what the user wrote wins over every default below
        target = row.target
        if target is _CHASSIS_NR:
            values.setdefault("chassisNr", controller.index or 0)
        elif (target is _ROOT_PORT or target is _DOWNSTREAM) and address is not None:
            values.setdefault("chassis", controller.index or 0)
            values.setdefault("port", _default_port(target, address))
        elif target is _BUS_NR and "busNr" not in values:
            bus_nr = _new_bus_nr(domain)
            if bus_nr is None:
                raise LibvirtError(
                    "unsupported configuration: No free busNr lower than current lowest busNr is available to "
                    f"auto-assign to bus {address.bus if address else 0}. Must be manually assigned"
                )
            values["busNr"] = bus_nr
        if controller.element is UNBUILT:  # added by the assigner: its element is built later, in full
            controller.extra[SETTINGS] = _settings_text(options)
        elif target is _BUS_NR:
            _write_settings([(controller, options)])  # the next expander's default busNr reads it
        else:
            pending.append((controller, options))
        _check_bridge_index(controller)
    _write_settings(pending)


def _check_bridge_index(controller: Device) -> None:
    """A pci-bridge must have a higher index than the bus it sits on."""
    address = controller.address
    if controller.model == "pci-bridge" and address is not None and (controller.index or 0) <= address.bus:
        index = controller.index or 0
        raise LibvirtError(
            f"unsupported configuration: PCI controller at index {index} (0x{index:02x}) has "
            f"bus='0x{address.bus:02x}', but index must be larger than bus"
        )


def _new_bus_nr(domain: Domain) -> int | None:
    """Two below the lowest busNr any PCI controller has (256 when none): room for the expander and its bridge."""
    lowest = 256
    for controller in domain.pci_controllers():
        target = controller.element.find("target")
        raw = target.get("busNr") if target is not None else None
        if raw is not None:
            lowest = min(lowest, parse_int(raw, "busNr attribute") or 0)
    return None if lowest <= 2 else lowest - 2


# (attribute, option it holds, written in hex) in libvirt's order, resolved once.
_TARGET_OPTIONS: tuple[tuple[str, str, bool], ...] = tuple(
    (attribute, OPTION_OF_ATTRIBUTE.get(attribute, attribute), hexadecimal)
    for attribute, hexadecimal in TARGET_ATTRIBUTES
)


class _SettingsPlan(NamedTuple):
    """What :func:`_write_settings` does to one controller once the new elements are built."""

    controller: Device
    new_model: bool
    new_target: bool
    old_model: Element | None
    old_target: Element | None
    node: Element | None


def _write_settings(items: list[tuple[Device, Options]]) -> None:
    """Store the model name and ``<target>`` options of each controller in its element, as libvirt
    formats them.  The new ``<model>`` and ``<target>`` elements are built in one batch (see
    :mod:`elements`): a large domain has one per auto-added root port."""
    texts: list[str] = []
    plans: list[_SettingsPlan] = []
    for controller, options in items:
        element = controller.element
        # an element the assigner added has no children yet: no need to look
        old_model = None if controller.implicit else child(element, "model")
        old_target = None if controller.implicit else child(element, "target")
        node = child(old_target, "node") if old_target is not None else None
        new_model = options.model_name is not None and old_model is None
        if new_model:
            texts.append(_model_text(options.model_name))
        elif options.model_name is not None and old_model is not None:
            old_model.set("name", options.model_name)
        attributes = _target_attributes(options.values)
        new_target = bool(attributes) or node is not None
        if new_target:
            texts.append(f"<target{attributes}/>")
        plans.append(_SettingsPlan(controller, new_model, new_target, old_model, old_target, node))
    built = iter(make_elements(texts))
    for plan in plans:
        element = plan.controller.element
        model = plan.old_model
        if plan.new_model:
            model = next(built)
            element.insert(0, model)
        if not plan.new_target:
            continue
        target = next(built)
        if plan.node is not None:
            target.append(plan.node)
        if plan.old_target is not None:
            plan.old_target.addprevious(target)
            element.remove(plan.old_target)
        elif model is not None:
            model.addnext(target)
        else:
            element.insert(0, target)


def _default_port(target: Target, address: PciAddress) -> int:
    """The port libvirt gives a root port (slot and function) or a downstream port (slot)."""
    return (address.slot << 3) + address.function if target is _ROOT_PORT else address.slot


def _added_settings(controller: Device, target: Target, model_name: str | None) -> str | None:
    """The ``<model>`` and ``<target>`` text of a controller the assigner added, straight from its
    index and address: the defaults of :func:`apply_defaults` when nothing was written, with no
    :class:`Options` to fill (hundreds of root ports in a large domain).  None for the targets whose
    defaults depend on other controllers (busNr)."""
    index = controller.index or 0
    address = controller.address
    if (target is _ROOT_PORT or target is _DOWNSTREAM) and address is not None:
        spelled = f' chassis="{index}" port="0x{_default_port(target, address):x}"'
    elif target is _CHASSIS_NR:
        spelled = f' chassisNr="{index}"'
    elif target is _NO_TARGET:
        spelled = ""
    else:
        return None
    model = "" if model_name is None else _model_text(model_name)
    return _children(model, f"<target{spelled}/>" if spelled else "")


def _settings_text(options: Options) -> str:
    """The ``<model>`` and ``<target>`` of a controller with no element yet, as element text."""
    attributes = _target_attributes(options.values)
    model = "" if options.model_name is None else _model_text(options.model_name)
    return _children(model, f"<target{attributes}/>" if attributes else "")


def _children(*texts: str) -> str:
    """Child element texts, one per line (model.CHILD_BREAK), the empty ones left out."""
    return CHILD_BREAK.join([text for text in texts if text])


@cache
def _model_text(name: str) -> str:
    """``<model name=...>`` as element text (one per model name, made once)."""
    return element_text("model", {"name": name})


def _target_attributes(values: dict[str, int | str]) -> str:
    """The ``<target>`` attributes for ``values`` as element text, in libvirt's order and number
    spelling ("" when there are none).  A plain loop: it runs once per PCI controller, and a
    comprehension calling a helper per attribute measured 1.6x slower."""
    spelled = ""
    for attribute, option, hexadecimal in _TARGET_OPTIONS:
        value = values.get(option)
        if value is None:
            continue
        if isinstance(value, str):
            spelled += f" {attribute}={quoted(value)}"  # only hotplug, as the user wrote it
        else:
            spelled += f' {attribute}="0x{value:x}"' if hexadecimal else f' {attribute}="{value}"'
    return spelled


def validate_controller(controller: Device) -> None:
    """libvirt's qemuValidateDomainDeviceDefControllerPCI for one PCI controller."""
    row = CONTROLLER_MODELS[controller.model]
    options = Options.read(controller)
    name = options.model_name or "none"
    index = -1 if controller.index is None else controller.index

    def missing(option: str) -> LibvirtError:
        return LibvirtError(
            f"internal error: Required option '{option}' is not set for PCI controller with index '{index}', "
            f"model '{controller.model}' and modelName '{name}'"
        )

    def invalid(option: str) -> LibvirtError:
        return LibvirtError(
            f"unsupported configuration: Option '{option}' is not valid for PCI controller with index '{index}', "
            f"model '{controller.model}' and modelName '{name}'"
        )

    is_root = row.model_name is None
    if is_root and options.model_name is not None:
        raise invalid("modelName")
    if not is_root and options.model_name is None:
        raise missing("modelName")
    own_name = frozenset({row.model_name}) if row.model_name else frozenset()
    allowed_names = MODEL_NAME_ALTERNATIVES.get(row.model, own_name)
    if options.model_name is not None and options.model_name not in allowed_names:
        raise LibvirtError(
            f"unsupported configuration: Option 'modelName' has invalid value for PCI controller with index "
            f"'{index}', model '{controller.model}' and modelName '{name}'"
        )
    if not is_root and index == 0:
        raise LibvirtError(f"unsupported configuration: Index for '{controller.model}' controllers must be > 0")
    if is_root and index != 0:
        raise LibvirtError(f"unsupported configuration: Index for '{controller.model}' controllers must be 0")
    required = REQUIRED_OPTIONS[row.target]
    for option in CHECK_ORDER:
        present = option in options.values
        if option == "numaNode":
            if present and row.target is not Target.BUS_NR:
                raise invalid(option)
            continue
        if option == "pcihole64":
            if present and not is_root:
                raise invalid(option)
            continue
        if option == "hotplug":
            if present and "hotplug" not in row.options:
                raise invalid(option)
            continue
        if option in required and not present:
            raise missing(option)
        if option not in required and present:
            raise invalid(option)
