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
from pathlib import Path
from typing import Any

from pyrelctl import mixcookie
from pyrelctl.hostfiles import symlink_atomic
from pyrelctl.layout import AppPaths, Layout
from pyrelctl.procs import failed as procs_failed
from pyrelctl.procs import files as procs_files
from pyrelctl.release import Kind, Release
from pyrelctl.socketunit import SocketUnit, effective_socket
from pyrelctl.systemd import Systemd
from pyrelctl.unitfiles import write_unit
from pyrelctl.units import ServiceSpec, UnitText, default_environment_files, service_unit

#: How long stopping a unit the release no longer runs may hold the deploy:
#: only a bound; systemd itself kills what is left at the unit's
#: TimeoutStopSec (its process's stop_timeout).
STOP_WAIT = 900.0


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
        return service_unit(self._spec(app, release, settings))

    def _spec(
        self, app: AppPaths, release: Release, settings: dict[str, Any] | None
    ) -> ServiceSpec:
        socket = effective_socket(app.read_settings() if settings is None else settings, release)
        return ServiceSpec(
            app=app.name,
            release=release,
            # The same definition serves the transient units of hooks
            # and rpc/eval/remote (hooks.py, operate.py), and the units of
            # the release's processes and timers (procs/units.py).
            environment_files=default_environment_files(app.name, release),
            credentials=tuple(app.secrets()),
            socket=socket,
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
        spec = self._spec(app, release, settings)
        changed |= write_unit(app, app.service_file, service_unit(spec))
        changed |= self._write_processes(app, spec, settings)
        if changed and self.online:
            self.say("units changed: systemctl daemon-reload")
            self.systemd.reload()
        if release.kind is Kind.MIX:
            # An older pyrelctl's unit read the cookie from release.env; the
            # one just written does not, so the copy can go.
            mixcookie.forget_legacy(app.etc)
        return changed

    def _write_processes(self, app: AppPaths, spec: ServiceSpec, settings: dict[str, Any]) -> bool:
        """The units and links of the release's processes and timers (procs/files.py).

        What the release no longer runs stops first: an instance of a process
        it dropped (or beyond its count), the timer of a job it dropped (a run
        in progress finishes: the job unit is not stopped). Its files go
        after, so systemd still knows the units it stops.
        """
        planned = procs_files.plan(app, spec, procs_files.scaled(settings))
        if self.online:
            for unit in planned.gone:
                self.say(f"stopping {unit}: no longer started with {app.name}")
                self.systemd.stop(unit, timeout=STOP_WAIT)
        changed = False
        if spec.release.timers:
            # Host-wide and root's: the OnFailure= of every job (procs/failed.py).
            changed = procs_failed.write(self.layout)
        return procs_files.apply(app, planned) or changed

    def _remove_processes(self, app: AppPaths) -> list[Path]:
        """Stop the app's process instances, its timers and any job that runs
        (the app is going away: each gets its stop timeout), then remove their
        units, links and the timers' stamps (procs/files.py)."""
        if self.online:
            jobs = [f"{p.stem}.service" for p in procs_files.own_units(app) if p.suffix == ".timer"]
            for unit in [link.name for link in procs_files.own_links(app)] + jobs:
                if self.systemd.state(unit).active_state not in ("inactive", "failed"):
                    self.say(f"stopping {unit}")
                    self.systemd.stop(unit, timeout=STOP_WAIT)
        return procs_files.remove(app)

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
        removed: list[str] = [str(p) for p in self._remove_processes(app)]
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
