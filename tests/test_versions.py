"""Version spelling, ordering and the "newest not newer" rule goldens and expected errors share."""

from __future__ import annotations

import pytest

from pytest_pcie.versions import Version, VersionError, applicable


def test_versions_order_numerically_not_as_text() -> None:
    assert Version.parse("9.0.0") < Version.parse("11.3.0") < Version.parse("12.8.0")
    assert Version.from_number(11_003_000) == Version(11, 3, 0)
    assert str(Version.from_number(12_008_000)) == "12.8.0"


@pytest.mark.parametrize("text", ["11.3", "v11.3.0", "11.3.0-1", ""])
def test_a_misspelled_version_says_how_to_write_it(text: str) -> None:
    with pytest.raises(VersionError, match=r"write it as MAJOR\.MINOR\.MICRO"):
        Version.parse(text)


def test_the_newest_value_not_newer_than_the_version_applies() -> None:
    values = {Version(9, 0, 0): "base", Version(11, 3, 0): "new"}
    assert applicable(values, Version(9, 0, 0)) == (Version(9, 0, 0), "base")
    assert applicable(values, Version(10, 10, 0)) == (Version(9, 0, 0), "base")
    assert applicable(values, Version(11, 3, 0)) == (Version(11, 3, 0), "new")
    assert applicable(values, Version(12, 8, 0)) == (Version(11, 3, 0), "new")
    assert applicable(values, Version(8, 5, 0)) is None
