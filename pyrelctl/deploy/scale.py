"""``pyrelctl scale APP worker=4``: how many instances of a process run on this host.

The count is the host's, remembered in the app's settings
(``{"scale": {"worker": 4}}``, procs.files.SCALE_SETTING) as ``--listen``
is: every later release that declares ``worker`` runs 4, one that does not
ignores it and keeps it (procs.units.instance_counts). The instances are the
links in ``APP.service.wants/``, so scaling rewrites links, never a unit
file, and goes through the same code as a deploy (appsetup.write_units):
the surplus instances are stopped there (their ``stop_timeout``).

Only what changes is touched: new instances are started and verified as a
deploy verifies them (readiness.Watcher.verify_companions: running, not
restarted by systemd, for the grace period); the web process and the
instances that keep running are not restarted. When a new instance does not
come up, the scale is undone (the old count in the settings and links, the
new instances stopped) and the failure reported like a failed deploy's
(exit 3, its journal lines): the app runs as it did before.

Why not the Deployer: nothing of a release is installed or switched, and a
scale must never restart the web process, which the deploy's verify does.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pyrelctl.defaults import DEFAULT_TIMEOUT
from pyrelctl.deploy.host import Host
from pyrelctl.deploy.publish import failed
from pyrelctl.deploy.readiness import Failure, Watcher
from pyrelctl.deploy.settings import readiness_for, release_of
from pyrelctl.errors import BadInput, DeployFailed, ExitCode, HostError
from pyrelctl.layout import AppPaths, app_lock
from pyrelctl.procs import files as procs_files
from pyrelctl.procs.manifest import MAX_INSTANCES
from pyrelctl.procs.units import instance_counts
from pyrelctl.release import Release

#: NAME=N as typed: a name of the manifest's alphabet (checked against the
#: release after), a count of ASCII digits (int() would take " 4", "+4", "٤").
_ASSIGNMENT = re.compile(r"(?P<name>[^=]*)=(?P<count>-?[0-9]+)")


@dataclass(frozen=True)
class ScaleOutcome:
    """What a scale did, as ``--json`` prints it."""

    app: str
    version: str
    #: Each process's count before and after (every process of the release).
    previous: dict[str, int]
    counts: dict[str, int]
    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    #: The new instances ran and were verified (False: offline, or the app is stopped).
    applied: bool = False
    changed: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_counts(assignments: Sequence[str]) -> dict[str, int]:
    """``("worker=4", "mail=0")`` -> ``{"worker": 4, "mail": 0}``; a malformed one,
    a name given twice or a count outside 0-64 is refused (exit 2)."""
    if not assignments:
        raise BadInput("give at least one NAME=N", hint="e.g. pyrelctl scale APP worker=4")
    counts: dict[str, int] = {}
    for text in assignments:
        match = _ASSIGNMENT.fullmatch(text)
        if match is None or not match["name"]:
            raise BadInput(
                f"{text!r} is not NAME=N",
                hint="a process of the release and a count, e.g. worker=4",
            )
        name, count = match["name"], int(match["count"])
        if name in counts:
            raise BadInput(f"{name!r} is given twice")
        if not 0 <= count <= MAX_INSTANCES:
            raise BadInput(f"{name}={count}: the count must be 0 to {MAX_INSTANCES}")
        counts[name] = count
    return counts


class Scaler:
    """Changes how many instances of an app's processes run (module docstring)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def scale(
        self,
        name: str,
        counts: Mapping[str, int],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        grace: float | None = None,
        wait_lock: bool = True,
    ) -> ScaleOutcome:
        """Make ``counts`` the app's, remembered; start and verify what is added."""
        app = self.host.layout.app(name).require()
        self._check(app, counts)  # before the lock: a refusal writes nothing
        try:
            with app_lock(app, "scale", wait=wait_lock, on_wait=self.host.say):
                version, release = self._check(app, counts)
                return self._scale(app, version, release, counts, timeout, grace)
        except DeployFailed as e:
            raise failed(self.host, "scale", e) from None

    @staticmethod
    def _check(app: AppPaths, counts: Mapping[str, int]) -> tuple[str, Release]:
        version = app.current_version()
        if version is None:
            raise BadInput(
                f"{app.name} has no current release", hint=f"install a release of {app.name} first"
            )
        release = release_of(app, version)
        declared = [p.name for p in release.processes]
        for process in counts:
            if process in declared:
                continue
            timers = [t.name for t in release.timers]
            has = f"its processes: {', '.join(declared)}" if declared else "it has no processes"
            what = "a timer, not a process" if process in timers else "not a process of it"
            raise BadInput(
                f"{process!r} is {what} in {app.name} {version} ({has})",
                hint="a release declares processes in release.toml: [processes.NAME]",
            )
        return version, release

    def _scale(
        self,
        app: AppPaths,
        version: str,
        release: Release,
        counts: Mapping[str, int],
        timeout: float,
        grace: float | None,
    ) -> ScaleOutcome:
        old_settings = app.read_settings()
        remembered = procs_files.scaled(old_settings)
        new_settings = {**old_settings, procs_files.SCALE_SETTING: {**remembered, **counts}}
        previous = instance_counts(release, remembered)
        wanted = instance_counts(release, new_settings[procs_files.SCALE_SETTING])
        before = {link.name for link in procs_files.own_links(app)}
        running = self.host.online and self.host.systemd.state(app.service_name).running
        self.host.setup.write_units(app, release, new_settings)  # stops the surplus
        if new_settings != old_settings:
            app.write_settings(new_settings)
        after = {link.name for link in procs_files.own_links(app)}
        added = tuple(sorted(after - before))
        outcome = ScaleOutcome(
            app=app.name,
            version=version,
            previous=previous,
            counts=wanted,
            stopped=tuple(sorted(before - after)),
            changed=new_settings != old_settings or before != after,
        )
        summary = _describe(previous, wanted, counts)
        if not running:
            why = (
                "offline (--root)" if not self.host.online else f"{app.service_name} is not running"
            )
            note = f"{why}: the instances start with {app.name}"
            app.record("scale", None, summary, f"staged: {note}")
            return dataclasses.replace(outcome, notes=[note])
        started = self._start(app, release, added, timeout, grace)
        if isinstance(started, Failure):
            self._undo(app, release, old_settings, started, added, summary)
        app.record("scale", None, summary, "ok")
        return dataclasses.replace(outcome, started=added, applied=True)

    def _start(
        self,
        app: AppPaths,
        release: Release,
        units: Sequence[str],
        timeout: float,
        grace: float | None,
    ) -> Failure | None:
        """Start the new instances (no other unit) and verify them for the grace period."""
        if not units:
            return None
        readiness = readiness_for(app.read_settings(), release, timeout)
        started = time.monotonic()
        systemd = self.host.systemd
        # The invocation each had before (an earlier run's, ended): only a run
        # started now counts, as in a deploy's verify.
        before = {unit: systemd.state(unit).invocation_id for unit in units}
        for unit in units:
            self.host.say(f"starting {unit}")
            # An instance stopped by an earlier scale may have failed then: a
            # fresh start, and a fresh start-limit counter, as a deploy gives.
            systemd.reset_failed(unit)
            systemd.start(unit, timeout=timeout)
        watch = readiness.grace if grace is None else grace
        if watch > 0:
            self.host.say(f"watching {len(units)} new instance(s) for {watch:g} s")
        watcher = Watcher(systemd, self.host.say)
        return watcher.verify_companions(units, release.version, before, watch, started + timeout)

    def _undo(
        self,
        app: AppPaths,
        release: Release,
        old_settings: dict[str, Any],
        failure: Failure,
        added: Sequence[str],
        summary: str,
    ) -> NoReturn:
        """A new instance did not come up: the old count back (settings, links),
        the new instances stopped; the rest never stopped."""
        report: dict[str, Any] = {
            "app": app.name,
            "action": "scale",
            "failed": failure.to_json(),
            "previous": release.version,
            "started": list(added),
        }
        message = f"{app.name}: a new instance did not come up: {failure.summary()}"
        self.host.say(f"scale failed; stopping {', '.join(added)} and restoring the old count")
        try:
            app.write_settings(old_settings)
            self.host.setup.write_units(app, release, old_settings)  # stops the new ones
        except HostError as e:
            app.record("scale", None, summary, f"failed; restoring failed too: {e.message}")
            raise DeployFailed(
                message + f"; restoring the old count FAILED too: {e.message}",
                exit_code=ExitCode.ROLLBACK_FAILED,
                report=report,
                hint=f"see: pyrelctl status {app.name}",
            ) from e
        finally:
            failure.reread_journal()  # its last words, filed late (journal.invocation_lines)
            report["failed"] = failure.to_json()
        app.record("scale", None, summary, f"failed: {failure.reason}")
        raise DeployFailed(
            message,
            exit_code=ExitCode.ROLLED_BACK,
            report=report,
            hint=f"the old count was restored; the rest of {app.name} kept running; "
            f"see: pyrelctl logs {app.name} --process {_process_of(app, failure, added)}",
        )


def _process_of(app: AppPaths, failure: Failure, units: Sequence[str]) -> str:
    """The process whose instance the failure names (``APP-NAME@N.service`` -> NAME)."""
    for unit in units:
        if unit in failure.reason:
            return unit.removeprefix(f"{app.name}-").partition("@")[0]
    return "NAME"


def _describe(
    previous: Mapping[str, int], wanted: Mapping[str, int], asked: Mapping[str, int]
) -> str:
    """``worker=2->4`` for each process asked for: the history's TO column."""
    return " ".join(f"{name}={previous.get(name, 0)}->{wanted[name]}" for name in sorted(asked))
