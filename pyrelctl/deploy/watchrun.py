"""The watch unit's work (``pyrelctl _watch``): watch the release, roll it back if it fails.

watch.py decides (the loop) and starts or ends the window; this module runs
it against the app's service and the instances of its processes and, when
the release fails in its window, rolls back through the same switch as
``pyrelctl rollback`` (switch.py), under the app's lock, and publishes the
outcome (publish.py).
"""

from __future__ import annotations

import time

from pyrelctl.deploy.host import Host
from pyrelctl.deploy.publish import failed, publish
from pyrelctl.deploy.switch import switch_back
from pyrelctl.deploy.watch import INDEX_KEY, loop, restore_target
from pyrelctl.errors import BadInput, DeployFailed, NotInstalled
from pyrelctl.layout import AppPaths, Mark, app_lock
from pyrelctl.procs import files as procs_files


def run(
    host: Host, name: str, version: str, until: float, max_restarts: int, previous: str | None
) -> str:
    """Watch ``name``'s ``version`` until ``until``; how it ended (watch.loop)."""
    app = host.layout.app(name).require()
    result = loop(
        app,
        version,
        until,
        max_restarts,
        state=lambda: host.systemd.state(app.service_name),
        companions=lambda: [
            host.systemd.state(link.name)
            for link in procs_files.own_links(app)
            if link.name.endswith(".service")  # instances, not timers
        ],
        rollback=lambda reason: _rollback(host, app, version, previous, reason),
        say=host.say,
    )
    if result == "ok":
        app.record("watch", version, version, "ok: stayed up")
    if app.read_index().get(INDEX_KEY, {}).get("watch") is not None:
        app.update_index(INDEX_KEY, watch=None)
    return result


def _rollback(host: Host, app: AppPaths, version: str, previous: str | None, reason: str) -> None:
    """Roll ``app`` back from ``version``, which the watch saw failing, to
    ``previous`` (see :func:`~pyrelctl.deploy.watch.restore_target`)."""
    from pyrelctl.notify import Event

    with app_lock(app, "watch rollback", wait=True, on_wait=host.say):
        current = app.current_version()
        if current != version:
            return  # someone deployed meanwhile
        app.update_index(version, mark=Mark.FAILED, failed_at=time.time())
        app.record("watch", version, None, f"failed: {reason}")
        try:
            target = restore_target(app, current, previous)
        except (BadInput, NotInstalled) as e:
            host.say(f"nothing to roll back to: {e.message}")
            return
        try:
            outcome = switch_back(host, app, current, target, "auto-rollback (watch)")
        except DeployFailed as e:
            failed(host, "watch", e)
            raise
    publish(
        host,
        Event(
            "rollback", "watch", app.name, version, outcome.version, "rolled-back", 3,
            summary=f"{app.name} {version}: {reason}; rolled back to {outcome.version}\n",
        ),
    )  # fmt: skip
