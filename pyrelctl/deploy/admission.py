"""What the host must agree to before a release runs as an app (issue 15).

Run before the first write of an install (and before a rollback switches):
the app name claims nothing of the host's (hostclaims.py), the release's
sockets are the app's to bind (sockets.py), and every widening of the
sandbox it asks for is one the host allowed (allowances.py). A signed
release is not an older one in disguise (:func:`refuse_downgrade`).
"""

from __future__ import annotations

from typing import Any

from pyrelctl import allowances, hostclaims
from pyrelctl.deploy.host import Host
from pyrelctl.errors import BadInput
from pyrelctl.layout import AppPaths
from pyrelctl.procs.host import check_units_free
from pyrelctl.release import Release
from pyrelctl.sockets import check_nothing_at, check_paths_for, check_release_socket
from pyrelctl.socketunit import SETTING as SOCKET_SETTING
from pyrelctl.socketunit import effective_socket


def check_host(host: Host, app: AppPaths, release: Release, settings: dict[str, Any]) -> None:
    """Refuse (BadInput) a release the host has not agreed to run as ``app``;
    ``settings``: the app's, with what this command sets."""
    loaded: list[str] = []
    if host.online and not hostclaims.manages(app):
        loaded = [
            unit
            for unit in (app.service_name, app.socket_name)
            if host.systemd.state(unit).load_state not in ("not-found", "")
        ]
    hostclaims.check_free(app, loaded_units=loaded)
    check_units_free(app, release)  # the units of its processes and timers
    host_socket = bool(settings.get(SOCKET_SETTING))
    socket = effective_socket(settings, release)
    check_paths_for(socket, app.name)
    if not host_socket:
        check_release_socket(release.socket, app.name)
    check_nothing_at(socket, host.layout.root)
    widened = allowances.check(app.name, release, settings, host_socket=host_socket)
    if widened:
        host.say(
            f"sandbox widened for {app.name}, as the host allows: "
            + ", ".join(w.describe() for w in widened)
        )


def check_rollback(app: AppPaths, release: Release) -> Release:
    """``release``, if the host's allowances as they are now let it run: one
    withdrawn since it was installed keeps it from coming back."""
    settings = app.read_settings()
    host_socket = bool(settings.get(SOCKET_SETTING))
    if not host_socket:
        check_release_socket(release.socket, app.name)
    allowances.check(app.name, release, settings, host_socket=host_socket)
    check_units_free(app, release)  # the host may have taken a name since
    return release


def widened(release: Release, settings: dict[str, Any]) -> list[str]:
    """The allowances the release runs with (``status`` shows them from the index)."""
    host_socket = bool(settings.get(SOCKET_SETTING))
    return [w.allowance for w in allowances.requested(release, host_socket=host_socket)]


def refuse_downgrade(app: AppPaths, release: Release, previous: str | None) -> None:
    """A signed release older than the current one needs ``--allow-downgrade``:
    an old release keeps its good signature after its flaws are known."""
    from pyrelctl.signatures import version_key

    if previous is None or version_key(release.version) >= version_key(previous):
        return
    raise BadInput(
        f"{release.version} is older than the current {previous} of {app.name}; "
        "a signed release is not downgraded without --allow-downgrade",
        hint=f"go back with: pyrelctl rollback {app.name} (or install --allow-downgrade)",
    )
