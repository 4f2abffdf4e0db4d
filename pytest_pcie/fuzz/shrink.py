"""Cut a disagreeing example down to a minimal one that still disagrees the same way.

Greedy delta debugging over the example's parts: drop chunks of devices (halves first, then single
devices), drop steps, then simplify what is left (remove addresses, indexes, ``hotplug='off'``).
The first candidate that still fails is kept and the search restarts from it, until no candidate
fails or the budget of runs is spent.  Hypothesis' own shrinker is not used because a real libvirt
run costs up to a second and a half: a bounded budget matters more than the last byte.

"Fails the same way" is the caller's predicate, normally "the differ gives the same kind" (see
:class:`pytest_pcie.fuzz.differ.Comparison`), so shrinking never wanders to another disagreement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from pytest_pcie.cases import Action, Operation
from pytest_pcie.fuzz.example import Device, Example, Step

DEFAULT_BUDGET = 80


def shrink(example: Example, still_fails: Callable[[Example], bool], budget: int = DEFAULT_BUDGET) -> Example:
    """The smallest example reached from ``example`` for which ``still_fails`` holds."""
    current = example
    runs = 0
    progressed = True
    while progressed and runs < budget:
        progressed = False
        for candidate in candidates(current):
            if runs >= budget:
                break
            runs += 1
            if still_fails(candidate):
                current = candidate
                progressed = True
                break
    return current


def candidates(example: Example) -> Iterator[Example]:
    """Smaller or simpler variants of ``example``, the biggest cuts first; each one a valid case.

    An attach operation keeps at least one step: the operation is part of what disagreed (a live
    disagreement turned into a define one would be a different finding).
    """
    for candidate in _cuts(example):
        if candidate.steps or candidate.operation is Operation.DEFINE:
            yield candidate


def _cuts(example: Example) -> Iterator[Example]:
    devices = list(example.devices)
    size = len(devices) // 2
    while size >= 1:
        for start in range(0, len(devices), size):
            yield _without_devices(example, devices[start : start + size])
        size //= 2
    for number in reversed(range(len(example.steps))):
        yield replace(example, steps=example.steps[:number] + example.steps[number + 1 :])
    step_devices = [step.device for step in example.steps if step.action is Action.ATTACH]
    for device in devices + step_devices:
        for simpler in _simplified(device):
            yield _replace_device(example, device, simpler)


def _without_devices(example: Example, removed: list[Device]) -> Example:
    """``example`` without ``removed``, and without the detach steps that named them."""
    gone = {id(device) for device in removed}
    return replace(
        example,
        devices=tuple(device for device in example.devices if id(device) not in gone),
        steps=tuple(step for step in example.steps if not (step.action is Action.DETACH and id(step.device) in gone)),
    )


def _replace_device(example: Example, old: Device, new: Device) -> Example:
    """Swap ``old`` for ``new`` wherever it appears: input, the step attaching it, steps detaching it."""
    return replace(
        example,
        devices=tuple(new if device is old else device for device in example.devices),
        steps=tuple(Step(step.action, new) if step.device is old else step for step in example.steps),
    )


def _simplified(device: Device) -> Iterator[Device]:
    if device.address is not None:
        yield replace(device, address=None)
    if device.index is not None and device.index != 0:
        yield replace(device, index=None)
    if device.hotplug_off:
        yield replace(device, hotplug_off=False)
