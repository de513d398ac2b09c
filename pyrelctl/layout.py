"""The host layout of DESIGN.md: where each app's releases, units, settings and
state live below ``--root``, and the app's lock.

Every change to these paths goes through :mod:`pyrelctl.hostfiles` (atomic
writes and symlink swaps, state files that refuse a planted link): this
module says *where*, that one *how*. The history, the release index and
the settings are read and written here, through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pyrelctl.errors import HostError, Locked, NotInstalled
from pyrelctl.hostfiles import (
    DOOMED_PREFIX,
    ensure_dir,
    open_state,
    read_json,
    read_state,
    symlink_atomic,
    write_json,
)
from pyrelctl.names import VERSION_RE, check_app_name, check_version

#: Prefix of a release directory that is still being unpacked or prepared.
INCOMPLETE_PREFIX = ".incomplete-"


class Mark(StrEnum):
    """What pyrelctl knows of a release."""

    NEW = "new"  # unpacked, never started (or installed offline)
    GOOD = "good"  # came up and stayed up
    FAILED = "failed"  # failed to come up; never chosen by rollback


@dataclass(frozen=True)
class Layout:
    """The directories pyrelctl manages on one host, below ``root``."""

    root: Path = Path("/")

    @property
    def offline(self) -> bool:
        """Under a ``--root`` other than ``/`` pyrelctl makes no systemd call."""
        return self.root.resolve() != Path("/")

    @property
    def unit_dir(self) -> Path:
        return self.root / "etc/systemd/system"

    @property
    def state_root(self) -> Path:
        return self.root / "var/lib/pyrelctl"

    def app(self, name: str) -> AppPaths:
        return AppPaths(self, check_app_name(name))

    def apps(self) -> list[str]:
        """Names of the apps installed on this host, sorted."""
        opt = self.root / "opt"
        found = []
        for state in sorted(self.state_root.glob("*/releases.json")):
            name = state.parent.name
            if (opt / name / "releases").is_dir():
                found.append(name)
        return found


@dataclass(frozen=True)
class AppPaths:
    """Where one app's files live."""

    layout: Layout
    name: str

    @property
    def base(self) -> Path:
        return self.layout.root / "opt" / self.name

    @property
    def releases(self) -> Path:
        return self.base / "releases"

    @property
    def current(self) -> Path:
        return self.base / "current"

    @property
    def next_link(self) -> Path:
        """``opt/APP/next``: symlink ``releases/VERSION``, the release an overlap
        deploy starts beside the running one (deploy/overlap.py). There only
        while one runs, or after one was interrupted: the next command sees it."""
        return self.base / "next"

    def release(self, version: str) -> Path:
        return self.releases / check_version(version)

    @property
    def etc(self) -> Path:
        return self.layout.root / "etc/pyrelctl" / self.name

    @property
    def state(self) -> Path:
        return self.layout.state_root / self.name

    @property
    def history_file(self) -> Path:
        return self.state / "history.jsonl"

    @property
    def index_file(self) -> Path:
        return self.state / "releases.json"

    @property
    def credentials_dir(self) -> Path:
        return self.etc / "credentials"

    def secrets(self) -> list[str]:
        """Names of the app's secrets, sorted."""
        try:
            return sorted(
                p.name
                for p in self.credentials_dir.iterdir()
                if p.is_file() and not p.name.startswith(".")
            )
        except FileNotFoundError:
            return []

    @property
    def settings_file(self) -> Path:
        return self.etc / "settings.json"

    @property
    def lock_file(self) -> Path:
        # Outside the app's own state directory, so that `uninstall --purge`
        # can remove that directory while holding the lock.
        return self.layout.state_root / ".locks" / f"{self.name}.lock"

    @property
    def service_name(self) -> str:
        return f"{self.name}.service"

    @property
    def service_file(self) -> Path:
        return self.layout.unit_dir / self.service_name

    @property
    def dropin_dir(self) -> Path:
        return self.layout.unit_dir / f"{self.service_name}.d"

    @property
    def overlap_name(self) -> str:
        """The unit of the next release during an overlap deploy (deploy/overlap.py);
        no app can be named so (names.py: no ``@``)."""
        return f"{self.name}@overlap.service"

    @property
    def overlap_file(self) -> Path:
        return self.layout.unit_dir / self.overlap_name

    @property
    def socket_name(self) -> str:
        return f"{self.name}.socket"

    @property
    def socket_file(self) -> Path:
        return self.layout.unit_dir / self.socket_name

    # -- state --------------------------------------------------------------

    def exists(self) -> bool:
        return self.releases.is_dir()

    def require(self) -> AppPaths:
        """Return self, or raise :class:`NotInstalled`."""
        if not self.exists():
            raise NotInstalled(
                f"app {self.name!r} is not installed",
                hint="see installed apps with: pyrelctl status",
            )
        return self

    def current_version(self) -> str | None:
        """The version ``current`` points to, read from the link itself (never by mtime)."""
        try:
            target = os.readlink(self.current)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise HostError(
                f"{self.current} is not a symlink ({e.strerror})",
                hint=f"move it away; pyrelctl manages {self.current}",
            ) from e
        head, _, version = target.partition("/")
        if head != "releases" or not version or "/" in version:
            raise HostError(f"{self.current} points to {target!r}, not releases/<version>")
        return version

    def process_version(self, pid: int, proc: Path = Path("/proc")) -> tuple[str | None, str]:
        """The release process ``pid`` runs, from ``/proc/PID/cwd``, or None and why not.

        The units' ``WorkingDirectory=`` goes through ``current`` (or ``next``),
        so a process's working directory is the physical ``releases/VERSION``
        it started from, whatever the links say now. ``proc``: where procfs is
        (a test's stand-in).
        """
        try:
            cwd = os.readlink(proc / str(pid) / "cwd")
        except OSError as e:
            return None, f"cannot read /proc/{pid}/cwd ({e.strerror})"
        # The kernel appends " (deleted)" once the directory is gone (pruned).
        path = Path(cwd.removesuffix(" (deleted)"))
        # Resolved as the kernel reports the cwd: /opt may be a symlink.
        releases = self.releases.resolve()
        if not path.is_relative_to(releases) or path == releases:
            return None, f"its working directory {cwd} is not a release of {self.name}"
        version = path.relative_to(releases).parts[0]
        if not VERSION_RE.fullmatch(version):
            # e.g. ".removing-1.0.0.XXXX": the release was pruned under it.
            return None, f"its release directory {cwd} is no longer installed"
        return version, ""

    def versions(self) -> list[str]:
        """Complete releases on disk, oldest install first."""
        try:
            entries = list(os.scandir(self.releases))
        except FileNotFoundError:
            return []
        complete = [
            e for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
        ]
        index = self.read_index()
        complete.sort(key=lambda e: (index.get(e.name, {}).get("installed_at", 0.0), e.name))
        return [e.name for e in complete]

    def incomplete_dirs(self) -> list[Path]:
        """Leftovers of interrupted unpacks and deletions."""
        try:
            return sorted(
                p
                for p in self.releases.iterdir()
                if p.name.startswith((INCOMPLETE_PREFIX, DOOMED_PREFIX))
            )
        except FileNotFoundError:
            return []

    def new_incomplete_dir(self, version: str) -> Path:
        return self.releases / f"{INCOMPLETE_PREFIX}{version}.{os.urandom(4).hex()}"

    def switch(self, version: str) -> None:
        """Point ``current`` at ``releases/<version>`` atomically."""
        if not self.release(version).is_dir():
            raise NotInstalled(f"release {version} of {self.name} is not installed")
        symlink_atomic(f"releases/{version}", self.current)

    def read_index(self) -> dict[str, dict[str, Any]]:
        """Per-release facts: install time, size, mark. Advisory: the disk is the truth."""
        return read_json(
            self.index_file, hint="restore it from a backup or delete it; releases stay"
        )

    def update_index(self, version: str, **facts: Any) -> None:
        index = self.read_index()
        index.setdefault(version, {}).update(facts)
        write_json(self.index_file, index)

    def forget(self, version: str) -> None:
        index = self.read_index()
        if index.pop(version, None) is not None:
            write_json(self.index_file, index)

    def mark(self, version: str) -> Mark:
        return Mark(self.read_index().get(version, {}).get("mark", Mark.NEW))

    def read_settings(self) -> dict[str, Any]:
        """Settings the operator gave for this app on this host (health check, grace)."""
        return read_json(
            self.settings_file, hint="fix or delete it; pyrelctl then uses the release's settings"
        )

    def write_settings(self, settings: dict[str, Any]) -> None:
        ensure_dir(self.etc, 0o700)
        write_json(self.settings_file, settings, mode=0o600)

    def record(
        self, action: str, from_version: str | None, to_version: str | None, result: str
    ) -> None:
        """Add what an operation did to the app's history (``pyrelctl history``)."""
        self.append_history(
            {
                "time": time.time(),
                "action": action,
                "user": who(),
                "from": from_version,
                "to": to_version,
                "result": result,
            }
        )

    def append_history(self, record: dict[str, Any]) -> None:
        """Add one JSON line to the app's history, durably (:func:`open_state`)."""
        ensure_dir(self.state)
        line = json.dumps(record, sort_keys=True) + "\n"
        fd = open_state(
            self.history_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644, in_place=True
        )
        with open(fd, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def history(self) -> list[dict[str, Any]]:
        try:
            lines = read_state(self.history_file).decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            # A line cut short by a crash is skipped, not fatal.
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records


@contextlib.contextmanager
def app_lock(
    app: AppPaths, operation: str, *, wait: bool = True, on_wait: Any = None
) -> Iterator[None]:
    """Hold the app's lock (``flock``) for one operation.

    The kernel drops a flock when its holder dies, so a killed pyrelctl never
    leaves a stale lock behind. The holder's pid and operation are written
    into the file for the message the next caller sees.
    """
    ensure_dir(app.lock_file.parent)
    # Truncated and rewritten in place: never through a link (open_state).
    fd = open_state(app.lock_file, os.O_RDWR | os.O_CREAT, 0o600, in_place=True)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            if not wait:
                raise Locked(
                    f"{app.name} is locked by {holder}",
                    hint="wait for it to finish, or drop --no-wait",
                ) from e
            if on_wait is not None:
                on_wait(f"waiting for {app.name}'s lock, held by {holder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()} ({operation}) since {time.strftime('%H:%M:%S')}".encode(), 0
        )
        yield
    finally:
        os.close(fd)


def who() -> str:
    """Who runs this command, as the history names them."""
    import getpass  # only for the history entry, written after the restart

    # Set by the root helper of `pyrelctl grant` (delegate/serve.py) for the
    # command it runs for a granted user, whom the kernel named (SO_PEERCRED).
    granted = os.environ.get("PYRELCTL_DELEGATED_USER")
    if granted:
        return f"{granted} (by grant)"
    sudo = os.environ.get("SUDO_USER")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{sudo} (via sudo)" if sudo else user
