"""Switch by strategy: from the pre_switch hook to a release that is up, or restored.

:func:`switch` is the one path by which a release becomes current and
serves: an install, a reinstall that must restart, ``pyrelctl rollback`` and
the watch's rollback (:func:`switch_back`) all take it. In order: the app's
settings directory, the pre_switch hook, the end of a running watch, the
overlap start beside the running release when the strategy says so
(strategy.py, overlap.py), the units, ``current``, the restart and its
verification (verify.py), the post_switch hook; then the release is marked
good, its watch window starts, the settings it ran with are remembered, the
history records it and old releases are pruned. A failure on the way goes
to restore.py, which brings the previous release back and raises.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, NoReturn

from pyrelctl.deploy import admission, hooks, strategy
from pyrelctl.deploy.host import Host
from pyrelctl.deploy.options import InstallOptions, Outcome
from pyrelctl.deploy.overlap import Overlap
from pyrelctl.deploy.readiness import Failure, Readiness
from pyrelctl.deploy.restore import restore
from pyrelctl.deploy.retention import prune
from pyrelctl.deploy.settings import readiness_for, release_of, remember, settings_for
from pyrelctl.deploy.strategy import Strategy
from pyrelctl.deploy.verify import verify
from pyrelctl.deploy.watch import WatchWindow
from pyrelctl.layout import AppPaths, Mark
from pyrelctl.release import Release
from pyrelctl.socketunit import effective_socket


def switch(
    host: Host,
    app: AppPaths,
    release: Release,
    previous: str | None,
    opts: InstallOptions,
    action: str,
    started_at: float,
    *,
    changed: bool,
    undo_config: Callable[[], None] | None = None,
) -> Outcome:
    """Run hooks, render units, move ``current``, restart, verify; restore on failure.

    ``undo_config`` undoes the configuration generation set with this deploy
    (``install --env``) when the previous release is restored.
    """
    host.setup.configure(app, release)
    settings = settings_for(app, opts)
    readiness = readiness_for(settings, release, opts.timeout)
    online_start = opts.start and host.online
    release_hooks = release.hooks if opts.run_hooks and online_start else {}

    def fail(failure: Failure, *, switched: bool = True) -> NoReturn:
        restore(
            host, app, release, previous, failure, readiness, action,
            switched=switched, undo_config=undo_config,
        )  # fmt: skip

    if "pre_switch" in release_hooks:
        failure = hooks.run_hook(host.layout.root, app, release, "pre_switch", host.say)
        if failure is not None:
            fail(failure, switched=False)
    if host.online:
        WatchWindow(host).end(app)
    overlap = None
    if online_start and _overlaps(host, app, release, previous, settings):
        overlap = _start_beside(host, app, release, previous, settings, readiness, fail)
    host.setup.write_units(app, release, settings)
    app.switch(release.version)
    host.say(f"current -> releases/{release.version}")
    if not online_start:
        app.update_index(release.version, widened=admission.widened(release, settings))
        if not host.online:
            host.setup.enable(app)
        remember(app, settings)
        app.record(action, previous, release.version, "switched, not started")
        pruned = prune(app, opts.keep, host.say)
        return Outcome(
            app=app.name,
            action=action,
            version=release.version,
            previous=previous,
            changed=changed,
            started=False,
            pruned=pruned,
            seconds=round(time.monotonic() - started_at, 3),
        )

    if overlap is None:
        result = verify(host, app, release, readiness)
    else:
        # It proved itself beside the old release: now it takes over the
        # service (the old one stops while the overlap unit serves), and
        # is verified again, without a second grace period.
        try:
            overlap.serve_alone()
            result = verify(
                host,
                app,
                release,
                dataclasses.replace(readiness, grace=0),
                alone=True,
                # The processes start only now: they get the whole grace period.
                companions_grace=readiness.grace,
            )
            reason = overlap.cannot_run_twice(result) if isinstance(result, Failure) else None
            if reason is not None:
                # It ran beside the old release, not beside itself.
                host.say(f"{release.version} cannot run twice: {reason}; restarting instead")
                overlap.stop(timeout=release.stop_timeout + readiness.timeout)
                result = verify(host, app, release, readiness)
            if isinstance(result, Failure):
                fail(result)
        finally:
            overlap.stop(timeout=release.stop_timeout + readiness.timeout)
    if isinstance(result, Failure):
        fail(result)
    if "post_switch" in release_hooks:
        failure = hooks.run_hook(host.layout.root, app, release, "post_switch", host.say)
        if failure is not None:
            fail(failure)
    app.update_index(
        release.version,
        mark=Mark.GOOD,
        last_good_at=time.time(),
        widened=admission.widened(release, settings),
    )
    _after_good(host, app, release, previous, settings, action)
    remember(app, settings)
    host.setup.enable(app)
    app.record(action, previous, release.version, "ok")
    pruned = prune(app, opts.keep, host.say)
    host.say(f"{app.name} {release.version} is up (pid {result.main_pid})")
    return Outcome(
        app=app.name,
        action=action,
        version=release.version,
        previous=previous,
        changed=changed,
        started=True,
        state=result.active_state,
        main_pid=result.main_pid,
        pruned=pruned,
        seconds=round(time.monotonic() - started_at, 3),
    )


def switch_back(host: Host, app: AppPaths, current: str, target: str, action: str) -> Outcome:
    """Make ``target`` current again in place of ``current``, a rollback pyrelctl
    decided on (the watch window): verified as a rollback is, no hooks."""
    release = release_of(app, target)
    opts = InstallOptions(keep=0, run_hooks=False)
    return switch(host, app, release, current, opts, action, time.monotonic(), changed=True)


def _overlaps(
    host: Host, app: AppPaths, release: Release, previous: str | None, settings: dict[str, Any]
) -> bool:
    """Whether this deploy starts ``release`` beside the running one (strategy.py)."""
    if strategy.chosen(settings, release) is not Strategy.OVERLAP:
        return False
    if previous is None or previous == release.version:
        return False  # nothing else serves: a plain (re)start
    if not host.systemd.state(app.service_name).running:
        return False  # nothing to overlap with
    blocker = strategy.overlap_blocker(settings, release, strategy.health_url(settings, release))
    if blocker is None and not host.setup.socket_unit(app).listening_as(
        effective_socket(settings, release)
    ):
        blocker = "its listening socket is not the one open now (new or changed)"
    if blocker is not None:
        host.say(f"{release.version} cannot overlap: {blocker}; restarting instead")
        return False
    return True


def _start_beside(
    host: Host,
    app: AppPaths,
    release: Release,
    previous: str | None,
    settings: dict[str, Any],
    readiness: Readiness,
    fail: Callable[..., NoReturn],
) -> Overlap | None:
    """Start ``release`` beside the running one (overlap.py): the proven overlap
    unit, None when the release cannot run twice (then it restarts), or raise
    the failed deploy through ``fail`` (the old release never stopped)."""
    overlap = Overlap(host, app)
    result = overlap.start(release, settings, readiness)
    if not isinstance(result, Failure):
        return overlap
    overlap.stop(timeout=release.stop_timeout + readiness.timeout)
    reason = overlap.cannot_run_twice(result)
    if reason is not None:
        host.say(f"{release.version} cannot run beside {previous}: {reason}; restarting instead")
        return None
    fail(result, switched=False)


def _after_good(
    host: Host,
    app: AppPaths,
    release: Release,
    previous: str | None,
    settings: dict[str, Any],
    action: str,
) -> None:
    """The release is up: its configuration generation is good, its watch begins."""
    from pyrelctl.appconfig.generations import mark_current_good

    mark_current_good(app)
    WatchWindow(host).start(app, release, previous, settings, action)
