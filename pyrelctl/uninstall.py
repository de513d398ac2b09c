"""Removing an app: its units, releases and link; with ``--purge`` everything it had.

Every step keeps the host consistent through a crash: a second uninstall
finishes what an interrupted one began (tests/system/test_crash_safety.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from pyrelctl.appsetup import AppSetup
from pyrelctl.hostfiles import remove_tree
from pyrelctl.layout import Layout, app_lock


def uninstall(
    layout: Layout,
    setup: AppSetup,
    say: Callable[[str], None],
    name: str,
    *,
    purge: bool = False,
    wait_lock: bool = True,
) -> list[str]:
    """Stop and remove the app; with ``purge`` its settings, state and history too.

    Drop-ins (``<app>.service.d/``, ``<app>.socket.d/``) are the operator's and
    stay unless purged.
    """
    app = layout.app(name)
    if not app.base.is_dir():  # (a half-finished uninstall still has opt/APP)
        app.require()
    removed: list[str] = []
    with app_lock(app, "uninstall", wait=wait_lock, on_wait=say):
        removed.extend(setup.remove_units(app))
        # current first: a crash past this point leaves no link to a
        # half-deleted release; each release goes with an atomic rename,
        # so a second uninstall finishes what a crash interrupted.
        if app.current.is_symlink():
            app.current.unlink()
        for version in app.versions():
            remove_tree(app.release(version))
        # releases/ goes last: while it exists, a second uninstall knows
        # the app and finishes the job.
        for leftover in app.base.iterdir():
            if leftover != app.releases:
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
        if app.releases.is_dir():
            shutil.rmtree(app.releases)
        app.base.rmdir()
        removed.append(str(app.base))
        app.record("uninstall", None, None, "ok")
        if purge:
            for path in (
                app.etc,
                app.state,
                app.dropin_dir,
                layout.unit_dir / f"{app.socket_name}.d",
                layout.root / "var/lib" / app.name,
                layout.root / "var/lib/private" / app.name,
                layout.root / "var/log" / app.name,
                # LogsDirectory= of a DynamicUser= service (systemd.exec(5)):
                # the symlink above points here.
                layout.root / "var/log/private" / app.name,
            ):
                if path.is_symlink():
                    path.unlink()
                    removed.append(str(path))
                elif path.exists():
                    remove_tree(path)
                    removed.append(str(path))
    return removed
