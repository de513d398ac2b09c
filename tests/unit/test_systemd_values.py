"""Values read from systemd over D-Bus, converted at the client's boundary."""

from __future__ import annotations

import pytest

from pyrelctl.systemd import UnitState, _uint64


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (2**64 - 1, None), (0, 0), (12 * 1024**2, 12 * 1024**2)],
    ids=["absent", "not-set", "zero", "bytes"],
)
def test_cgroup_counters_not_set_are_none(value: int | None, expected: int | None) -> None:
    # systemd sends UINT64_MAX for a counter it does not keep ("[not set]" in
    # systemctl show), such as MemoryCurrent without a memory controller.
    assert _uint64(value) == expected


def test_exit_descriptions() -> None:
    assert UnitState("a", exec_main_code=1, exec_main_status=3).exit_description() == (
        "exited with status 3"
    )
    assert UnitState("a", exec_main_code=2, exec_main_status=9).exit_description() == (
        "killed by SIGKILL"
    )
    assert UnitState("a", exec_main_code=3, exec_main_status=11).exit_description() == (
        "killed by SIGSEGV (core dumped)"
    )
    assert UnitState("a").exit_description() == "not started"
