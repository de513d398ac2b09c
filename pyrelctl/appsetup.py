"""An app's files outside its releases: its settings directory and its units.

``/etc/pyrelctl/APP`` (root-only, with a mix release's cookie), the service
unit and the socket unit in ``/etc/systemd/system`` (rendered from
``units/``, written only when their text changed: unitfiles.py), their
enablement, and their removal. Offline (``--root``) every change is made to
the files alone, as ``systemctl --root`` would.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from pyrelctl import mixcookie
from pyrelctl.hostfiles import symlink_atomic
from pyrelctl.layout import AppPaths, Layout
from pyrelctl.release import Kind, Release
from pyrelctl.socketunit import SocketUnit, effective_socket
from pyrelctl.systemd import Systemd
from pyrelctl.unitfiles import write_unit
from pyrelctl.units import ServiceSpec, UnitText, default_environment_files, service_unit


def _quiet(_: str) -> None:
    pass


class AppSetup:
    """Writes (and removes) an app's settings directory and units.

    ``systemd`` is never called when ``layout.offline``; ``say`` receives
    progress lines for the operator.
    """

    def __init__(
        self, layout: Layout, systemd: Systemd, say: Callable[[str], None] = _quiet
    ) -> None:
        self.layout = layout
        self.systemd = systemd
        self.say = say

    @property
    def online(self) -> bool:
        return not self.layout.offline

    def configure(self, app: AppPaths, release: Release) -> None:
        """Create the app's root-only settings directory (and a mix release's cookie)."""
        # /etc/pyrelctl too is root-only when pyrelctl creates it (doctor checks it).
        if not app.etc.parent.is_dir():
            app.etc.parent.mkdir(parents=True, exist_ok=True)
            app.etc.parent.chmod(0o700)
        app.etc.mkdir(parents=True, exist_ok=True, mode=0o700)
        app.etc.chmod(0o700)
        if release.kind is Kind.MIX:
            mixcookie.ensure(app.etc)

    def render(
        self, app: AppPaths, release: Release, settings: dict[str, Any] | None = None
    ) -> str:
        """The text of the app's service unit for ``release`` (``settings``: as
        remembered by default)."""
        return self._service_unit(app, release, settings).render()

    def _service_unit(
        self, app: AppPaths, release: Release, settings: dict[str, Any] | None
    ) -> UnitText:
        socket = effective_socket(app.read_settings() if settings is None else settings, release)
        return service_unit(
            ServiceSpec(
                app=app.name,
                release=release,
                # The same definition serves the transient units of hooks
                # and rpc/eval/remote (hooks.py, operate.py).
                environment_files=default_environment_files(app.name, release),
                credentials=tuple(app.secrets()),
                socket=socket,
            )
        )

    def socket_unit(self, app: AppPaths) -> SocketUnit:
        return SocketUnit(app, self.systemd, online=self.online, say=self.say)

    def write_units(
        self, app: AppPaths, release: Release, settings: dict[str, Any] | None = None
    ) -> bool:
        """Write the units whose content changed; daemon-reload only then.

        ``settings`` are the app's (default: as remembered); the host's socket
        setting among them wins over the release's ``[socket]``.
        """
        if settings is None:
            settings = app.read_settings()
        changed = self.socket_unit(app).write(effective_socket(settings, release))
        unit = self._service_unit(app, release, settings)
        changed |= write_unit(app, app.service_file, unit)
        if changed and self.online:
            self.say("units changed: systemctl daemon-reload")
            self.systemd.reload()
        if release.kind is Kind.MIX:
            # An older pyrelctl's unit read the cookie from release.env; the
            # one just written does not, so the copy can go.
            mixcookie.forget_legacy(app.etc)
        return changed

    def enable(self, app: AppPaths) -> None:
        """Enable the unit once, after its first good start; later installs respect a
        `systemctl disable` by the operator."""
        index = app.read_index()
        if index.get("_app", {}).get("enabled_once"):
            return
        if self.online:
            self.systemd.enable(app.service_name)
            self.systemd.reload()  # as `systemctl enable` does, so UnitFileState is current
        else:
            # What `systemctl --root=DIR enable` does: the [Install] symlink.
            wants = self.layout.unit_dir / "multi-user.target.wants"
            wants.mkdir(parents=True, exist_ok=True)
            link = wants / app.service_name
            if not link.is_symlink():
                symlink_atomic(f"/etc/systemd/system/{app.service_name}", link)
            if app.socket_file.exists():  # the service's Also=
                wants = self.layout.unit_dir / "sockets.target.wants"
                wants.mkdir(parents=True, exist_ok=True)
                link = wants / app.socket_name
                if not link.is_symlink():
                    symlink_atomic(f"/etc/systemd/system/{app.socket_name}", link)
        app.update_index("_app", enabled_once=True)

    def remove_units(self, app: AppPaths) -> list[str]:
        """Stop, disable and delete the app's units; return the files removed.

        Drop-ins (``<app>.service.d/``, ``<app>.socket.d/``) are the operator's
        and stay.
        """
        removed: list[str] = []
        overlap_dropins = app.overlap_file.with_name(f"{app.overlap_name}.d")
        if app.overlap_file.exists():  # stays between overlap deploys, stopped
            if self.online:
                self.systemd.stop(app.overlap_name)
            app.overlap_file.unlink()
            removed.append(str(app.overlap_file))
        if app.next_link.is_symlink():  # an interrupted overlap deploy's
            app.next_link.unlink()
        if overlap_dropins.is_dir() and not overlap_dropins.is_symlink():
            shutil.rmtree(overlap_dropins)  # links to the operator's drop-ins, not theirs
        sockets = self.socket_unit(app)
        if sockets.exists:
            sockets.remove()
            removed.append(str(app.socket_file))
        if self.online and app.service_file.exists():
            self.systemd.stop(app.service_name)
            self.systemd.disable(app.service_name)
        elif not self.online:
            wants = self.layout.unit_dir / "multi-user.target.wants" / app.service_name
            if wants.is_symlink():
                wants.unlink()
        if app.service_file.exists():
            app.service_file.unlink()
            removed.append(str(app.service_file))
        if self.online:
            self.systemd.reload()
        return removed
