"""Keeping ``<app>.socket`` in step with the app, without closing its listener needlessly.

The listener is the point of socket activation (sockets.py): as long as the
socket unit runs, connections queue while the service restarts. So a deploy
only *starts* the socket unit when it is not running, and *restarts* it only
when its unit file changed since it was last started: a restart closes the
listener for a moment (and stops the service, which may hold the port
itself when it ran without socket activation before). Which file was last
started is remembered as a digest in the app's index, so a crash between
writing the file and restarting the unit is caught up by the next deploy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from pyrelctl.layout import AppPaths
from pyrelctl.release import Release
from pyrelctl.sockets import DEFAULT_NAME, Socket
from pyrelctl.systemd import Systemd
from pyrelctl.unitfiles import forget_unit, write_unit
from pyrelctl.units import socket_unit

#: The key of the host's socket setting (``install --listen``) in settings.json.
SETTING = "socket"
_APPLIED = "socket_applied"


def effective_socket(settings: Mapping[str, Any], release: Release) -> Socket | None:
    """The release's ``[socket]``, with the addresses the host set for the app
    (``install --listen``) if it did. The descriptor name stays the release's:
    it is what the release's code looks for."""
    listen = settings.get(SETTING, {}).get("listen")
    if not listen:
        return release.socket
    name = release.socket.name if release.socket else DEFAULT_NAME
    return Socket(listen=tuple(listen), name=name)


class SocketUnit:
    """The socket unit of one app. ``systemd`` is not called when offline."""

    def __init__(
        self, app: AppPaths, systemd: Systemd, *, online: bool, say: Callable[[str], None]
    ) -> None:
        self.app = app
        self.systemd = systemd
        self.online = online
        self.say = say

    @property
    def exists(self) -> bool:
        return self.app.socket_file.exists()

    def write(self, socket: Socket | None) -> bool:
        """Write the unit file for ``socket`` (None: remove it); True if it changed."""
        if socket is None:
            if not self.exists:
                return False
            self.remove()
            return True
        return write_unit(self.app, self.app.socket_file, socket_unit(self.app.name, socket))

    def listening_as(self, socket: Socket | None) -> bool:
        """Whether the unit listens now exactly as ``socket`` says, so that a deploy
        with ``socket`` leaves it alone (what an overlap deploy needs: both
        releases on the listener that is open now)."""
        if socket is None or not self.exists or not self.online:
            return False
        text = self.app.socket_file.read_bytes()
        applied = self.app.read_index().get("_app", {}).get(_APPLIED)
        if hashlib.sha256(text).hexdigest() != applied:
            return False
        if socket_unit(self.app.name, socket).render().encode() != text:
            return False
        return self.systemd.state(self.app.socket_name).active_state == "active"

    def remove(self) -> None:
        """Stop and disable the unit, then delete its file (the caller reloads systemd)."""
        name = self.app.socket_name
        if self.online:
            # Stopping the socket stops the service too (its Requires=): the
            # next start runs without socket activation, or not at all.
            self.say(f"stopping {name}: the app no longer uses socket activation")
            self.systemd.stop(name)
            self.systemd.disable(name)
        else:
            wants = self.app.layout.unit_dir / "sockets.target.wants" / name
            if wants.is_symlink():
                wants.unlink()
        self.app.socket_file.unlink(missing_ok=True)
        forget_unit(self.app, self.app.socket_file)
        self.app.update_index("_app", **{_APPLIED: None})

    def ensure_running(self, *, timeout: float) -> str | None:
        """Make the socket unit listen with its current file; return why it could not.

        Does nothing when it already listens with that file, so a deploy
        that leaves the socket settings alone never closes the listener.
        """
        if not self.exists or not self.online:
            return None
        name = self.app.socket_name
        digest = hashlib.sha256(self.app.socket_file.read_bytes()).hexdigest()
        applied = self.app.read_index().get("_app", {}).get(_APPLIED)
        if digest != applied:
            if self.systemd.state(name).active_state == "active":
                self.say(f"{name} changed: restarting it (its listener closes for a moment)")
            else:
                self.say(f"starting {name}")
            # The service first: a release that bound the port itself (no
            # socket activation before) must let go of it.
            self.systemd.stop(self.app.service_name, timeout=timeout)
            self.systemd.reset_failed(name)
            job = self.systemd.restart(name, timeout=timeout)
        else:
            state = self.systemd.state(name)
            if state.active_state == "active":
                return None
            self.say(f"starting {name} (it was {state.active_state})")
            self.systemd.reset_failed(name)
            job = self.systemd.start(name, timeout=timeout)
        if not job.ok:
            return f"{name} did not start (job {job.result}); see: journalctl -u {name}"
        if digest != applied:
            self._enable_with_service()
        self.app.update_index("_app", **{_APPLIED: digest})
        return None

    def _enable_with_service(self) -> None:
        """Enable the socket when the service is enabled (its ``Also=``), as
        ``systemctl enable APP`` would have: the socket then listens from
        early boot on. A service the operator disabled stays as it is."""
        if self.systemd.state(self.app.service_name).unit_file_state == "enabled":
            self.systemd.enable(self.app.socket_name)
            self.systemd.reload()
