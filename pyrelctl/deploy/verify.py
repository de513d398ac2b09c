"""Verify: restart the service through systemd and wait until the release is really up.

What "up" means is readiness.py's (the start job, READY=1 or the health
check, the grace period); this module points it at the app's service. A
deploy, a rollback, a restore, ``pyrelctl restart`` and a configuration
change (appconfig/apply.py) are all verified here.
"""

from __future__ import annotations

import time

from pyrelctl.deploy import hooks
from pyrelctl.deploy.host import Host
from pyrelctl.deploy.readiness import SERVING_TIMEOUT, Failure, Readiness, Watcher
from pyrelctl.deploy.settings import health_for, release_of
from pyrelctl.errors import PyrelctlError
from pyrelctl.layout import AppPaths
from pyrelctl.procs import files as procs_files
from pyrelctl.release import Release
from pyrelctl.systemd import UnitState


def verify(
    host: Host,
    app: AppPaths,
    release: Release,
    readiness: Readiness,
    *,
    alone: bool = False,
    companions_grace: float | None = None,
) -> UnitState | Failure:
    """Restart the unit and wait until the release is really up (readiness.py);
    a configuration change is verified so too (appconfig/apply.py).

    The socket unit, if any, keeps listening through the restart. With
    ``alone``, health probes count only when the service's own processes
    accepted them (owner.py): another release serves the same socket.

    The release's processes and timers (procs/) restart with the service:
    each instance must come up and stay up for the grace period
    (``companions_grace``, by default the readiness's), each timer must be
    active; the health check stays the web process's.
    """
    started = time.monotonic()
    problem = host.setup.socket_unit(app).ensure_running(timeout=readiness.timeout)
    if problem is not None:
        return Failure(version=release.version, reason=problem, exit="not started")
    watcher = Watcher(host.systemd, host.say)
    companions = [link.name for link in procs_files.own_links(app)]
    before = {}
    for unit in companions:
        state = host.systemd.state(unit)
        before[unit] = state.invocation_id
        if not state.running and state.load_state == "loaded":
            # A crash-looping instance of the release that failed: its start
            # limit and restart count must not carry over (as for the web
            # process in readiness.Watcher.restart_and_verify).
            host.systemd.reset_failed(unit)
    runner = hooks.command_runner(host.layout.root, app, release)
    connect = None
    if alone:
        from pyrelctl.deploy import owner

        unit, other = app.service_name, app.overlap_name
        connect = owner.connector(
            unit, lambda: host.systemd.unit_pids(unit), lambda: host.systemd.unit_pids(other)
        )
    result = watcher.restart_and_verify(
        app.service_name, release.version, readiness, runner, connect
    )
    if isinstance(result, Failure) or not companions:
        return result
    grace = readiness.grace if companions_grace is None else companions_grace
    failure = watcher.verify_companions(
        companions, release.version, before, grace, started + readiness.timeout
    )
    return result if failure is None else failure


def check_serving(
    host: Host, app: AppPaths, version: str, readiness: Readiness
) -> UnitState | Failure:
    """Evidence that ``version``, left running in the service by a failed
    deploy, serves: its health check (the one it ran with), accepted by
    the service's own processes, or else the unit running."""
    from pyrelctl.deploy import owner

    try:
        old = release_of(app, version)
    except PyrelctlError as e:
        return Failure(version=version, reason=e.message)
    unit, other = app.service_name, app.overlap_name
    connect = owner.connector(
        unit, lambda: host.systemd.unit_pids(unit), lambda: host.systemd.unit_pids(other)
    )
    return Watcher(host.systemd, host.say).check_serving(
        unit,
        version,
        health_for(app.read_settings(), old),
        hooks.command_runner(host.layout.root, app, old),
        connect,
        timeout=min(readiness.timeout, SERVING_TIMEOUT),
    )
