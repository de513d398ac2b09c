"""How a deploy decides that a release's process instances and timers came up with
it (readiness.Watcher.verify_companions), over scripted unit states.

The states are what systemd reports through the sequence of a restart; the
system test (tests/system/test_procs_units.py) runs the real thing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from pyrelctl.deploy import readiness
from pyrelctl.deploy.readiness import Failure, Watcher
from pyrelctl.systemd import UnitState

NOW = time.time()


def running(unit: str, invocation: str, *, since: float = 60.0, restarts: int = 0) -> UnitState:
    return UnitState(
        name=unit,
        load_state="loaded",
        active_state="active",
        sub_state="running",
        invocation_id=invocation,
        n_restarts=restarts,
        active_enter_usec=int((time.time() - since) * 1e6),
    )


def state(
    unit: str, active: str, sub: str, invocation: str = "", restarts: int = 0, job: bool = False
) -> UnitState:
    return UnitState(
        has_job=job,
        name=unit,
        load_state="loaded",
        active_state=active,
        sub_state=sub,
        invocation_id=invocation,
        n_restarts=restarts,
    )


class Scripted:
    """A systemd whose units go through the given states, one per look; the
    last state of each stays."""

    def __init__(self, script: Mapping[str, Sequence[UnitState]]) -> None:
        self._states: dict[str, Iterator[UnitState]] = {u: iter(s) for u, s in script.items()}
        self._last: dict[str, UnitState] = {}

    def state(self, unit: str) -> UnitState:
        self._last[unit] = next(self._states[unit], self._last.get(unit)) or self._last[unit]
        return self._last[unit]


@pytest.fixture(autouse=True)
def no_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "_journal_lines", lambda *a, **k: [])
    monkeypatch.setattr(readiness, "POLL_INTERVAL", 0.01)


def verify(
    script: Mapping[str, Sequence[UnitState]],
    before: dict[str, str],
    *,
    grace: float = 1.0,
    timeout: float = 0.5,
) -> Failure | None:
    watcher = Watcher(Scripted(script), lambda _: None)  # type: ignore[arg-type]
    return watcher.verify_companions(
        list(script), "2.0.0", before, grace, time.monotonic() + timeout
    )


W1, W2, T = "a-w@1.service", "a-w@2.service", "a-t.timer"


def test_restarted_instances_up_for_the_grace_period_and_an_active_timer_pass() -> None:
    script: dict[str, Any] = {
        W1: [running(W1, "new1", since=5)],
        W2: [state(W2, "activating", "start"), running(W2, "new2", since=5)],
        T: [state(T, "active", "waiting")],
    }
    assert verify(script, {W1: "old1", W2: ""}) is None


def test_an_instance_not_restarted_is_not_up() -> None:
    # Still the invocation it had before the deploy: it runs the old release.
    failure = verify({W1: [running(W1, "old1")]}, {W1: "old1"})
    assert isinstance(failure, Failure)
    assert failure.reason == f"{W1} did not start: active/running"


def test_an_instance_that_systemd_restarted_failed_even_if_it_runs_now() -> None:
    failure = verify({W1: [running(W1, "new2", restarts=1)]}, {W1: "old"})
    assert isinstance(failure, Failure) and failure.reason == f"{W1} exited after it started"


def test_an_instance_that_exited_failed_without_waiting_for_the_deadline() -> None:
    started = time.monotonic()
    failure = verify({W1: [state(W1, "failed", "failed", "new1")]}, {W1: "old"}, timeout=30)
    assert isinstance(failure, Failure) and failure.reason == f"{W1} exited after it started"
    assert time.monotonic() - started < 5


def test_an_instance_stopped_before_the_deploy_is_not_taken_for_one_that_exited() -> None:
    # Inactive under the invocation it had before: not started yet, then up.
    script = {W1: [state(W1, "inactive", "dead", "old"), running(W1, "new", since=5)]}
    assert verify(script, {W1: "old"}) is None


def test_the_stop_half_of_a_restart_is_not_an_exit() -> None:
    # Starting the web process starts the instance (Wants=) and restarts it
    # (PartOf=) in one transaction: it runs, stops with its start still queued,
    # and runs again (seen in systemd 252 on a first install).
    script = {
        W1: [
            running(W1, "first", since=0),
            state(W1, "inactive", "dead", "first", job=True),
            running(W1, "second", since=5),
        ]
    }
    assert verify(script, {W1: ""}) is None


def test_a_crash_within_the_grace_period_fails() -> None:
    script = {
        W1: [
            running(W1, "new1", since=0),
            running(W1, "new1", since=0),
            state(W1, "activating", "auto-restart", "new1"),
        ]
    }
    failure = verify(script, {W1: "old"}, grace=5)
    assert isinstance(failure, Failure)
    assert failure.reason == f"{W1} crashed within the grace period"


def test_an_instance_waits_out_its_grace_period() -> None:
    started = time.monotonic()
    assert verify({W1: [running(W1, "new1", since=0)]}, {W1: "old"}, grace=0.3) is None
    assert time.monotonic() - started >= 0.25


def test_an_inactive_timer_fails() -> None:
    failure = verify({T: [state(T, "inactive", "dead")]}, {})
    assert isinstance(failure, Failure) and failure.reason == f"{T} is inactive, not active"
