"""The order of release versions that tells a signed downgrade (issue 15, finding 9)."""

from __future__ import annotations

import pytest

from pyrelctl.signatures import version_key


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.9.0", "1.10.0"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.0~rc1", "1.0"),
        ("1.0", "1.0.1"),
        ("2", "10"),
        ("1.0.0-rc.2", "1.0.0-rc.10"),
        ("0.9", "1.0.0-beta"),
    ],
)
def test_version_order_for_downgrades(older: str, newer: str) -> None:
    assert version_key(older) < version_key(newer)
