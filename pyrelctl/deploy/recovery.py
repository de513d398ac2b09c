"""What an interrupted operation left behind, cleaned away before the next one.

Every mutating operation holds the app's lock and begins with
:func:`recover`: incomplete release directories go, a ``current`` that
points to a missing release is pointed to the newest good one, and an
overlap deploy cut short leaves exactly one release serving (overlap.py).
"""

from __future__ import annotations

import shutil

from pyrelctl.deploy.host import Host
from pyrelctl.hostfiles import symlink_atomic
from pyrelctl.layout import AppPaths, Mark


def recover(host: Host, app: AppPaths) -> list[str]:
    """Clean up after an interrupted operation; return what was done."""
    done = []
    for path in app.incomplete_dirs():
        shutil.rmtree(path)
        done.append(f"removed incomplete {path.name}")
    for link in (app.current, app.next_link):  # symlink_atomic's, cut short
        for tmp in app.base.glob(f".{link.name}.*.tmp"):
            tmp.unlink()
    current = app.current_version()
    if current is not None and not app.release(current).is_dir():
        good = [v for v in app.versions() if app.mark(v) is not Mark.FAILED]
        if good:
            symlink_atomic(f"releases/{good[-1]}", app.current)
            done.append(f"current pointed to missing {current}; now {good[-1]}")
        else:
            app.current.unlink()
            done.append(f"current pointed to missing {current}; removed")
    if host.online:
        from pyrelctl.deploy.overlap import Overlap

        stopped = Overlap(host, app).recover()
        if stopped is not None:
            done.append(stopped)
    for line in done:
        host.say(f"recovered: {line}")
    return done
