"""Unpack and prepare: a release onto the disk, complete or not at all.

The artifact is extracted into an ``.incomplete-`` directory, prepared there
(a python release's venv is built, its bytecode compiled: pyrelease.py),
synced, and only then renamed to ``releases/VERSION``: a release directory
under its own name is always complete (recovery.py removes the others).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from pyrelctl.archive import Artifact
from pyrelctl.deploy.host import Host
from pyrelctl.hostfiles import ensure_dir, fsync_dir, remove_tree
from pyrelctl.layout import AppPaths, Mark
from pyrelctl.release import Kind, Release, release_to_json


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def unpack(host: Host, app: AppPaths, artifact: Artifact, release: Release) -> None:
    """Unpack into an incomplete directory, then rename it into place."""
    final = app.release(release.version)
    staging = app.new_incomplete_dir(release.version)
    ensure_dir(app.releases)
    host.say(f"unpacking {artifact.source.name} into {final}")
    try:
        artifact.extract(staging, host.progress)
        if release.kind is Kind.MIX:
            cookie = staging / "releases/COOKIE"
            if cookie.is_file() and not cookie.is_symlink():
                # The build's cookie is replaced by the app's own (see
                # AppSetup.configure); never leave one readable by other users.
                cookie.chmod(0o600)
        if release.kind is Kind.PYTHON:
            # The venv is made for the path the release has once renamed,
            # on the running system (no --root prefix): venvs are not movable.
            from pyrelctl import pyrelease

            pyrelease.prepare(
                staging,
                Path("/", final.relative_to(host.layout.root)),
                app=app.name,
                name=release.name,
                version=release.version,
                say=host.say,
                online=host.online,
            )
        # Everything must be on disk before the rename makes the release
        # "complete"; one sync(2) beats an fsync per file of a big release.
        os.sync()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # else recovery does it next time
        raise
    if final.exists():
        remove_tree(final)
    os.rename(staging, final)
    fsync_dir(app.releases)
    app.update_index(
        release.version,
        installed_at=time.time(),
        size=_dir_size(final),
        mark=Mark.NEW,
        release=release_to_json(release),
        artifact=artifact.source.name,
    )
