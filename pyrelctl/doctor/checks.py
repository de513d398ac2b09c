"""The base of doctor's checks, shared by the host's and each app's."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from pyrelctl.appsetup import AppSetup
from pyrelctl.deploy.settings import release_of
from pyrelctl.doctor.findings import Finding, Severity
from pyrelctl.errors import PyrelctlError
from pyrelctl.layout import AppPaths, Layout
from pyrelctl.release import Release
from pyrelctl.systemd import OfflineSystemd, Systemd


def file_mode(st: os.stat_result) -> str:
    """A file's permission bits as ``chmod`` takes them, e.g. ``0755``."""
    return f"{stat.S_IMODE(st.st_mode):04o}"


class Checks:
    """What every check needs: the layout, systemd, and how to word a fix.

    ``connect`` returns the systemd client (online only); the host checks
    connect, and the app checks use the client when they did.
    """

    def __init__(
        self,
        layout: Layout,
        connect: Callable[[], Systemd],
        *,
        disk_free: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
        euid: Callable[[], int] = os.geteuid,
        which: Callable[[str], str | None] = shutil.which,
    ) -> None:
        self.layout = layout
        self._connect = connect
        self._disk_free = disk_free
        self._euid = euid
        self._which = which
        self._systemd: Systemd | None = None
        # Rendering never calls systemd: an offline client makes sure of it.
        self._setup = AppSetup(layout, OfflineSystemd())

    # -- helpers -------------------------------------------------------------

    def _cli(self, *args: str) -> str:
        """A pyrelctl command line, with --root when the checks run under one."""
        root = ["--root", str(self.layout.root)] if self.layout.offline else []
        return shlex.join(["pyrelctl", *root, *args])

    def _path(self, path: Path) -> str:
        return shlex.quote(str(path))

    def _reinstall(self, app: AppPaths, version: str) -> str:
        """Installing the current version again re-renders the unit and settings."""
        return self._cli("install", str(app.release(version)), "--app", app.name)

    def _release(self, app: AppPaths, version: str) -> Release | None:
        try:
            return release_of(app, version)
        except PyrelctlError:
            return None

    def _root_owned_dir(self, path: Path, subject: str, check: str) -> Iterator[Finding]:
        """A directory only root may change: owned by root, not group/other-writable."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            yield Finding(
                check,
                subject,
                Severity.PROBLEM,
                f"{path} is mode {file_mode(st)}, owner uid {st.st_uid}: users other than root "
                "could change what runs as a service",
                fix=f"chown root:root {self._path(path)} && chmod go-w {self._path(path)}",
            )
