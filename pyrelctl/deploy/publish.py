"""Publish: tell the host what a deploy did, after the outcome.

The Prometheus textfile is rewritten (metrics.py), the host's notification
hooks run (notify.py) and, online, the current release's own ``on_*`` hook
(hooks.py). None of it changes the outcome: a failure here is a warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyrelctl.deploy import hooks
from pyrelctl.deploy.host import Host
from pyrelctl.deploy.options import Outcome
from pyrelctl.errors import DeployFailed, PyrelctlError

if TYPE_CHECKING:
    from pyrelctl import notify


def publish(host: Host, event: notify.Event | None = None) -> None:
    """After an outcome: rewrite the Prometheus textfile (metrics.py) and run the
    host's notification hooks (notify.py). Never changes the outcome."""
    try:
        from pyrelctl import metrics

        metrics.write_textfile(host.layout, host.systemd if host.online else None)
    except (PyrelctlError, OSError) as e:
        host.say(f"warning: metrics not written: {e}")
    if event is not None:
        from pyrelctl import notify

        notify.notify(host.layout, event, host.say)
        if host.online:
            hooks.notify_release(host, event)


def published(host: Host, action: str, outcome: Outcome) -> Outcome:
    """``outcome``, once its success is published."""
    from pyrelctl.notify import Event

    publish(host, Event("success", action, outcome.app, outcome.version, outcome.previous, "ok", 0))
    return outcome


def failed(host: Host, action: str, error: DeployFailed) -> DeployFailed:
    """``error``, once the failure it reports is published."""
    from pyrelctl.notify import failure_event

    publish(host, failure_event(action, error))
    return error
