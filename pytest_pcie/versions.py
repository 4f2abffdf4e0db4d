"""libvirt versions: spelling, ordering, and which of several version-keyed values applies.

A golden (or an expected error) records what one libvirt version does.  The corpus keeps one value
for its oldest version and adds an override only where a later version differs; an override keyed
``11.3.0`` reads "from 11.3.0 on".  :func:`applicable` is that rule, in one place, for goldens and
expected errors alike: the newest key not newer than the version under test wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

BASE_VERSION_TEXT = "9.0.0"  # the libvirt the corpus started from; plain goldens are "from 9.0.0 on"
_SPELLING = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")

T = TypeVar("T")


class VersionError(ValueError):
    """A version is spelled wrongly; ``str()`` says how it should look."""


@dataclass(frozen=True, order=True)
class Version:
    """A libvirt (or QEMU) release, ordered numerically: 9.0.0 < 11.3.0 < 12.8.0."""

    major: int
    minor: int
    micro: int

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _SPELLING.match(text.strip())
        if match is None:
            raise VersionError(f"{text!r} is not a version; write it as MAJOR.MINOR.MICRO, e.g. 11.3.0")
        major, minor, micro = (int(part) for part in match.groups())
        return cls(major, minor, micro)

    @classmethod
    def from_number(cls, number: int) -> Version:
        """From libvirt's API encoding, ``major * 1,000,000 + minor * 1,000 + micro``."""
        return cls(number // 1_000_000, number // 1000 % 1000, number % 1000)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.micro}"


BASE_VERSION = Version.parse(BASE_VERSION_TEXT)


def applicable(values: Mapping[Version, T], version: Version) -> tuple[Version, T] | None:
    """The value that holds for ``version``: the one keyed by the newest version not newer than it.

    None when every key is newer than ``version`` (nothing is known for so old a libvirt).
    """
    older = [key for key in values if key <= version]
    if not older:
        return None
    key = max(older)
    return key, values[key]
