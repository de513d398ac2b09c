"""Is a freshly started release really up? Restart, readiness, health, grace.

Up means: systemd's start job is done (for Type=notify: the release sent
READY=1), the health check passes (if there is one), and the unit then
stays running under the same invocation for the grace period. Anything else
is a :class:`Failure` that says why, with the failed invocation's own
journal lines, for the failure report.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyrelctl.defaults import DEFAULT_GRACE, DEFAULT_TIMEOUT
from pyrelctl.release import HealthCheck
from pyrelctl.systemd import Systemd, UnitState

if TYPE_CHECKING:
    from pyrelctl.deploy import health

#: How often the unit is polled while it must prove it stays up.
POLL_INTERVAL = 0.1
#: Longest pause between two failed health probes. The first retries come
#: sooner (FIRST_RETRY, doubling): a release is often up a few milliseconds
#: after a first probe that came too early.
HEALTH_INTERVAL = 0.25
FIRST_RETRY = 0.02
#: How long a release that kept running through a failed deploy has to answer
#: its health check before it is restarted (a few probes of
#: health.PER_TRY_TIMEOUT): it was serving a moment ago, so a healthy one
#: answers the first.
SERVING_TIMEOUT = 5.0


@dataclass(frozen=True)
class Readiness:
    """When a started release counts as up (see Watcher.restart_and_verify)."""

    timeout: float = DEFAULT_TIMEOUT
    grace: float = DEFAULT_GRACE
    health: HealthCheck | None = None

    def restoring(self, health: HealthCheck | None) -> Readiness:
        """How the release or configuration restored after a failure is verified:
        the same timeout, a grace of at most a second (it ran before), ``health``."""
        return Readiness(timeout=self.timeout, grace=min(self.grace, 1.0), health=health)


#: How long a failure report waits for the failed process's own journal lines
#: (journal.invocation_lines): a release that printed nothing costs this once.
JOURNAL_SETTLE = 1.0


@dataclass
class Failure:
    """Why a release did not come up (the body of the failure report)."""

    version: str
    reason: str
    job_result: str = ""
    exit: str = ""
    invocation_id: str = ""
    journal: list[str] = field(default_factory=list)
    hook_output: list[str] = field(default_factory=list)
    # Whose journal it is (unit, last main pid), to read it again; not reported.
    process: tuple[str, int] | None = None

    def summary(self) -> str:
        """The reason, with how the main process ended when it says more."""
        if self.exit in ("", "not started"):
            return self.reason
        return f"{self.reason} (main process {self.exit})"

    def to_json(self) -> dict[str, Any]:
        report = dataclasses.asdict(self)
        del report["process"]
        return report

    def reread_journal(self) -> None:
        """Read the failed start's journal again: lines journald filed late
        (journal.invocation_lines) are there once a restore took its time."""
        if self.invocation_id:
            lines = _journal_lines(self.invocation_id, self.process, settle=0.0)
            if len(lines) >= len(self.journal):
                self.journal = lines


def _journal_lines(
    invocation: str, process: tuple[str, int] | None, *, settle: float = JOURNAL_SETTLE
) -> list[str]:
    from pyrelctl import journal

    return journal.invocation_lines(invocation, settle=settle, process=process)


class Watcher:
    """Restarts a unit through systemd and watches it come up."""

    def __init__(self, systemd: Systemd, say: Callable[[str], None]) -> None:
        self.systemd = systemd
        self.say = say

    def restart_and_verify(
        self,
        unit: str,
        version: str,
        readiness: Readiness,
        run_command: health.CommandRunner,
        connect: health.Connect | None = None,
        *,
        action: str = "restarting",
    ) -> UnitState | Failure:
        """Restart the unit and wait until the release is really up, or say why not.

        Up means: systemd's start job is done (for Type=notify: READY=1 was
        sent), the health check passes (if there is one), and the unit then
        stays running under the same invocation for ``grace`` seconds. All of
        it within ``timeout`` seconds of the restart, the grace period aside.
        ``connect`` opens the health probes' connections (health.Connect);
        during an overlap it keeps only those ``unit`` accepted (owner.py).
        """
        timeout, grace, check = readiness.timeout, readiness.grace, readiness.health
        deadline = time.monotonic() + timeout
        self.say(f"{action} {unit} ({version})")
        # Deploys in quick succession (an install, its automatic rollback, the
        # next try) must not trip the unit's start rate limit, which is meant
        # for crash loops: StartLimitBurst=5 per 10 s gives "start-limit-hit".
        # Resetting the failed state also resets that counter.
        self.systemd.reset_failed(unit)
        queued = self.systemd.queue_restart(unit)
        # While systemd restarts the unit, load what watching it takes: the
        # deploy's own start stays as short as it can be (bench/, issue 7).
        from pyrelctl import journal  # noqa: F401

        job = self.systemd.wait_job(queued, unit, timeout=timeout)
        state = self.systemd.state(unit)
        if not job.ok:
            reason = (
                f"not ready within {timeout:g} s"
                if job.result == "timeout"
                else f"start job {job.result}"
            )
            if job.describe_wait():
                reason += f": {job.describe_wait()}"
            return self._failure(version, state, job.result, reason)
        if not state.running:
            return self._failure(version, state, job.result, "exited right after it started")
        invocation = state.invocation_id
        if check is not None:
            self.say(f"started (pid {state.main_pid}); waiting for health check {check.describe()}")
            error = self._wait_healthy(unit, check, run_command, deadline, invocation, connect)
            if error is not None:
                state = self.systemd.state(unit)
                return self._failure(version, state, job.result, error, invocation)
        if grace > 0:
            self.say(f"up (pid {state.main_pid}); watching it for {grace:g} s")
        grace_end = time.monotonic() + grace
        while (remaining := grace_end - time.monotonic()) > 0:
            time.sleep(min(POLL_INTERVAL, remaining))
            state = self.systemd.state(unit)
            if not state.running or state.invocation_id != invocation:
                return self._failure(
                    version, state, job.result, "crashed within the grace period", invocation
                )
        return state

    def verify_companions(
        self,
        units: Sequence[str],
        version: str,
        before: Mapping[str, str],
        grace: float,
        deadline: float,
    ) -> Failure | None:
        """After the web process is up: the release's other units, started or
        restarted with it (``PartOf=``, ``Wants=``), are up too, or say which is not.

        A process instance (``.service``) is up when it runs under an
        invocation other than ``before``'s (the one it had before the restart,
        running or not: it was started now, not left running on the old
        release, and an earlier run's end is not this one's), has not been
        restarted by systemd since (``NRestarts``: a crash that Restart=
        already repaired counts), and has stayed so for ``grace`` seconds
        since it became active. It must be running by ``deadline``. A timer
        (``.timer``) is up when active. Instances start in the web process's
        transaction, so usually the web process's own grace period has
        already covered theirs and this returns at the first look.
        """
        seen: dict[str, str] = {}
        while True:
            waiting = []
            now = time.time()
            for unit in units:
                state = self.systemd.state(unit)
                if unit.endswith(".timer"):
                    if state.active_state != "active":
                        return self._failure(
                            version, state, "", f"{unit} is {state.active_state}, not active"
                        )
                    continue
                first = seen.get(unit)
                if first is not None and (
                    state.invocation_id != first or not state.running or state.n_restarts
                ):
                    if state.has_job and not state.n_restarts:
                        # Not a crash: a job of the deploy's own transaction
                        # restarts it (below).
                        del seen[unit]
                    else:
                        return self._failure(
                            version, state, "", f"{unit} crashed within the grace period", first
                        )
                fresh = bool(state.invocation_id) and state.invocation_id != before.get(unit)
                ended = state.active_state in ("inactive", "failed") and not state.has_job
                if state.n_restarts or (fresh and ended):
                    return self._failure(version, state, "", f"{unit} exited after it started")
                if not (state.running and fresh):
                    waiting.append(unit)
                    continue
                seen[unit] = state.invocation_id
                if now - state.active_enter_usec / 1e6 < grace:
                    waiting.append(unit)
            if not waiting:
                return None
            if time.monotonic() >= deadline and not all(u in seen for u in waiting):
                unit = next(u for u in waiting if u not in seen)
                state = self.systemd.state(unit)
                now_in = f"{state.active_state}/{state.sub_state}"
                return self._failure(version, state, "", f"{unit} did not start: {now_in}")
            time.sleep(POLL_INTERVAL)

    def check_serving(
        self,
        unit: str,
        version: str,
        check: HealthCheck | None,
        run_command: health.CommandRunner,
        connect: health.Connect | None = None,
        *,
        timeout: float = SERVING_TIMEOUT,
    ) -> UnitState | Failure:
        """Evidence that the release running in ``unit``, not restarted, still
        serves: the unit runs, and its health check passes within ``timeout``
        (without one, the unit running is all there is: its start job said
        it was ready). For a release that a deploy said "kept running"."""
        state = self.systemd.state(unit)
        if not state.running:
            return self._failure(version, state, "", f"{unit} is {state.active_state}")
        if check is None:
            return state
        self.say(f"checking that {version} still serves: health check {check.describe()}")
        deadline = time.monotonic() + timeout
        invocation = state.invocation_id
        error = self._wait_healthy(unit, check, run_command, deadline, invocation, connect)
        if error is not None:
            state = self.systemd.state(unit)
            return self._failure(version, state, "", error, invocation)
        return state

    def _wait_healthy(
        self,
        unit: str,
        check: HealthCheck,
        run_command: health.CommandRunner,
        deadline: float,
        invocation: str,
        connect: health.Connect | None = None,
    ) -> str | None:
        """Probe until healthy; return why not if the deadline passes or the unit dies.

        The reason given is the last verdict the release itself gave, if any:
        a probe another release accepted (health.NoVerdict) says nothing of it.
        """
        from pyrelctl.deploy import health

        pause = FIRST_RETRY
        verdict: str | None = None
        while True:
            error, died = self._probe_watching(unit, invocation, check, run_command, connect)
            if error is None and not died:
                return None
            if error is not None and not isinstance(error, health.NoVerdict):
                verdict = error
            if died:
                last = f" (last: {verdict or error})" if error else ""
                return f"exited before its health check passed{last}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"health check never passed: {verdict or error}"
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, HEALTH_INTERVAL)

    def _probe_watching(
        self,
        unit: str,
        invocation: str,
        check: HealthCheck,
        run_command: health.CommandRunner,
        connect: health.Connect | None = None,
    ) -> tuple[str | None, bool]:
        """One probe, while the unit is watched: (the probe's error, whether the unit died).

        The probe runs in a thread because it can block for its whole timeout
        on a unit that is already gone: with socket activation the kernel
        accepts the connection into the socket's backlog whether or not a
        process is left to answer it. A dead unit ends the wait at once (the
        abandoned probe ends with its own timeout).
        """
        from pyrelctl.deploy import health

        outcome: list[str | None] = []

        def run_probe() -> None:
            try:
                if connect is None:
                    outcome.append(health.probe(check, run_command))
                else:
                    outcome.append(health.probe(check, run_command, connect=connect))
            except Exception as e:  # a probe that raises counts as a failed probe
                outcome.append(f"{check.describe()}: {e}")

        thread = threading.Thread(target=run_probe, name="health-probe", daemon=True)
        thread.start()
        while True:
            thread.join(POLL_INTERVAL)
            state = self.systemd.state(unit)
            alive = state.running and state.invocation_id == invocation
            if outcome:
                return outcome[0], not alive and outcome[0] is not None
            if not alive:
                return None, True

    def _failure(
        self,
        version: str,
        state: UnitState,
        job_result: str,
        reason: str,
        invocation: str | None = None,
    ) -> Failure:
        invocation = invocation or state.invocation_id
        # The last main process is this invocation's only if no later start came.
        process = (state.name, state.exec_main_pid) if invocation == state.invocation_id else None
        return Failure(
            version=version,
            reason=reason,
            job_result=job_result,
            exit=state.exit_description(),
            invocation_id=invocation,
            journal=_journal_lines(invocation, process),
            process=process,
        )
