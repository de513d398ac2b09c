"""After the deploy: a watch window that rolls back a release that starts crashing later.

The grace period catches a release that dies at once. A connection pool that
runs dry after a minute, a scheduled job that kills the node, a leak: those
show later, as systemd restarting the release (``Restart=on-failure``) again
and again. With ``install --watch 10m`` (or ``[service] watch = "10m"``,
remembered for the app like ``--grace``), the deploy that succeeded leaves
a *transient* unit behind, ``pyrelctl-watch-APP.service`` (systemd-run; no
resident daemon of pyrelctl's), that reads the service's state every
:data:`POLL` seconds until the window ends. When systemd has restarted the
release more than ``--watch-restarts`` times (``NRestarts``, default 2) or
the unit ended up failed, it rolls back by itself to the release that ran
before the deploy (what ``install`` replaced, which after a ``rollback`` is not
the newest older release; the newest older good one if that is gone or was
marked failed meanwhile), through the same path as ``pyrelctl rollback``
(watchrun.py, switch.py), under the app's lock: the release is marked
failed, ``auto-rollback (watch)`` goes into the history, the host's
notification hooks and the metrics hear of it.

A deploy, rollback or configuration change of the app ends a running watch
(a new window starts with the new release if it asks for one). The watch
lives in PID 1's memory: a SIGKILL of the ``pyrelctl install`` that started
it does not stop it; a reboot drops it (a rebooted host starts the release
afresh, and ``status`` no longer shows the watch).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyrelctl.layout import AppPaths

if TYPE_CHECKING:
    from pyrelctl.deploy.host import Host
    from pyrelctl.release import Release

#: Seconds between two looks at the service.
POLL = 2.0
DEFAULT_RESTARTS = 2
#: The app's remembered settings (settings.json).
SETTING = "watch"
RESTARTS_SETTING = "watch_restarts"
#: Where the index keeps the running watch (for status).
INDEX_KEY = "_app"


def unit_name(app: str) -> str:
    return f"pyrelctl-watch-{app}.service"


@dataclass(frozen=True)
class WatchState:
    version: str
    until: float
    max_restarts: int
    unit: str
    previous: str | None = None  # what ran before the deploy: what the watch restores

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous": self.previous,
            "until": self.until,
            "max_restarts": self.max_restarts,
            "unit": self.unit,
        }


def recorded(app: AppPaths, index: Mapping[str, Any] | None = None) -> WatchState | None:
    """The watch the index says runs, if its window has not ended (``index``: the
    app's, when the caller has read it already)."""
    data = (app.read_index() if index is None else index).get(INDEX_KEY, {}).get("watch")
    if not data or float(data.get("until", 0)) <= time.time():
        return None
    return WatchState(
        version=str(data["version"]),
        until=float(data["until"]),
        max_restarts=int(data.get("max_restarts", DEFAULT_RESTARTS)),
        unit=str(data.get("unit", unit_name(app.name))),
        previous=None if data.get("previous") is None else str(data["previous"]),
    )


def start_argv(
    app: str, version: str, seconds: float, max_restarts: int, previous: str | None = None
) -> list[str]:
    """``systemd-run`` for the watch of ``app``'s ``version`` for ``seconds``; a failure
    restores ``previous``, the release the deploy replaced."""
    until = time.time() + seconds
    return [
        "systemd-run",
        f"--unit={unit_name(app)}",
        f"--description=pyrelctl watch of {app} {version} (after its deploy)",
        "--quiet",
        "--collect",
        "--no-block",
        # Ends by itself at the deadline; RuntimeMaxSec= only if the loop hangs.
        f"--property=RuntimeMaxSec={int(seconds) + 300}",
        "--setenv=PYRELCTL_IN_WATCH=1",
        "--",
        sys.executable,
        "-I",
        "-m",
        "pyrelctl",
        "_watch",
        app,
        "--version",
        version,
        "--until",
        f"{until:.3f}",
        "--max-restarts",
        str(max_restarts),
        *(["--previous", previous] if previous else []),
    ]


def loop(
    app: AppPaths,
    version: str,
    until: float,
    max_restarts: int,
    *,
    state: Callable[[], Any],
    companions: Callable[[], Sequence[Any]] = lambda: (),
    rollback: Callable[[str], None],
    say: Callable[[str], None],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Watch until ``until``; return how it ended (``ok``, ``superseded``, ``rolled back``).

    ``state()`` reads the service (a :class:`~pyrelctl.systemd.UnitState`),
    ``companions()`` the instances of the release's processes (the units
    ``APP.service.wants/`` starts, procs/files.own_links; timers are not
    checked, a job's failure has its own report, procs/failed.py): one of
    them over the threshold or failed rolls the whole release back, as at
    the deploy. ``rollback(reason)`` rolls the app back.
    """
    while clock() < until:
        if app.current_version() != version:
            say(f"{app.name}: current is no longer {version}; the watch ends")
            return "superseded"
        reason = ""
        for unit in [state(), *companions()]:
            reason = _failing(unit, app.service_name, max_restarts)
            if reason:
                break
        if reason:
            say(f"{app.name} {version}: {reason}; rolling back")
            rollback(reason)
            return "rolled back"
        sleep(min(POLL, max(0.0, until - clock())))
    say(f"{app.name} {version} stayed up through its watch window")
    return "ok"


def _failing(unit: Any, service: str, max_restarts: int) -> str:
    """Why ``unit`` (a UnitState) fails the watch, or "" if it does not."""
    which = "it" if unit.name == service else unit.name
    if unit.n_restarts > max_restarts:
        return f"systemd restarted {which} {unit.n_restarts} times"
    if unit.active_state == "failed":
        what = "the service" if unit.name == service else unit.name
        return f"{what} failed ({unit.exit_description()})"
    return ""


def restore_target(app: AppPaths, current: str, previous: str | None) -> str:
    """The release the watch restores when ``current`` fails: ``previous``, the one
    the deploy replaced, while it is installed and good; else what ``rollback``
    would choose (the newest older good release)."""
    from pyrelctl.deploy.retention import rollback_target
    from pyrelctl.errors import BadInput, NotInstalled

    if previous is not None and previous != current:
        try:
            return rollback_target(app, current, previous)
        except (BadInput, NotInstalled):
            pass  # pruned or marked failed since: fall back to rollback's choice
    return rollback_target(app, current, None)


def running_in_watch() -> bool:
    """Whether this process is a watch unit (which must not stop itself)."""
    return os.environ.get("PYRELCTL_IN_WATCH") == "1"


class WatchWindow:
    """Starts and ends the watch of a host's apps (watchrun.py runs it)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def start(
        self,
        app: AppPaths,
        release: Release,
        previous: str | None,
        settings: dict[str, Any],
        action: str,
    ) -> None:
        """Leave a transient unit watching the release, if the app asks for a window;
        ``previous`` (the release it replaced) is what a failure restores."""
        seconds = float(settings.get(SETTING, release.watch) or 0)
        if seconds <= 0 or action not in ("install", "rollback") or running_in_watch():
            return
        restarts = int(settings.get(RESTARTS_SETTING, DEFAULT_RESTARTS))
        from pyrelctl.run import run

        argv = start_argv(app.name, release.version, seconds, restarts, previous)
        proc = run(argv, check=False)
        if proc.returncode != 0:
            self.host.say(f"warning: the watch did not start: {proc.stderr.strip()}")
            return
        until = float(argv[argv.index("--until") + 1])
        state = WatchState(release.version, until, restarts, unit_name(app.name), previous)
        app.update_index(INDEX_KEY, watch=state.to_json())
        self.host.say(
            f"watching {app.name} {release.version} for {seconds:g} s: more than {restarts} "
            "restarts roll it back"
        )

    def end(self, app: AppPaths) -> None:
        """A deploy or configuration change of the app ends the watch before it."""
        if running_in_watch() or recorded(app) is None:
            return
        unit = unit_name(app.name)
        systemd = self.host.systemd
        if systemd.state(unit).active_state in ("active", "activating"):
            systemd.stop(unit)
            self.host.say(f"the watch of {app.name} ends (a new deploy)")
        app.update_index(INDEX_KEY, watch=None)
