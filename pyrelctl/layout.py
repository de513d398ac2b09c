"""The host layout of DESIGN.md, and the atomic file operations that change it.

Every change pyrelctl makes to the host goes through this module: files are
written to a temporary name in the same directory, fsynced and renamed over
the old one; the ``current`` symlink is replaced by renaming a temporary link
over it (``rename(2)`` is atomic, ``ln -sfn`` is unlink + symlink and is not).

pyrelctl runs as root, so a link planted in its own state must never send a
write (or a read) to another file (security issue 15). Its state files (the
lock, the history, the release index, the settings, see :func:`open_state`)
are opened with ``O_NOFOLLOW`` and refused when they are a symlink, not a
regular file, or (for the two written in place) have other hard links; the
directory that holds them must be a real directory that only root (or the
caller) can write. :func:`write_atomic` renames a new file over its target,
which replaces a link there and never writes through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pyrelctl.errors import HostError, Locked, NotInstalled
from pyrelctl.names import VERSION_RE, check_app_name, check_version

#: Prefix of a release directory that is still being unpacked or prepared.
INCOMPLETE_PREFIX = ".incomplete-"
#: Prefix of a release directory on its way out (being deleted).
DOOMED_PREFIX = ".removing-"


class Mark(StrEnum):
    """What pyrelctl knows of a release."""

    NEW = "new"  # unpacked, never started (or installed offline)
    GOOD = "good"  # came up and stayed up
    FAILED = "failed"  # failed to come up; never chosen by rollback


def fsync_dir(path: Path) -> None:
    """Make a rename or new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_file(name: str | Path, data: bytes, mode: int, *, dir_fd: int | None = None) -> bool:
    """Whether ``name`` (in ``dir_fd`` if given) is a regular file that holds
    ``data`` with ``mode``.

    Read with ``O_NOFOLLOW``: a symlink is never "the same" (it is replaced),
    and reading through it would compare against, and reveal the timing of,
    whatever file it points to. ``O_NONBLOCK`` keeps a FIFO from hanging us.
    The size is compared first (``fstat``): a huge file planted there is never
    read (security issue 26), nor is a file with other hard links.
    """
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd
        )
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink: open(2) with O_NOFOLLOW
            return False
        raise
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or (st.st_mode & 0o7777) != mode:
            return False
        if st.st_size != len(data) or st.st_nlink != 1:
            return False
        return f.read(len(data) + 1) == data


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Replace ``path`` with ``data`` atomically; return whether the content changed.

    Files with identical content are left alone (their mtime too), which is
    what keeps unit files and daemon-reloads to a minimum. A symlink at
    ``path`` is replaced by the new file (``rename(2)`` replaces the link
    itself), never written through (:func:`write_atomic_at`).
    """
    if _same_file(path, data, mode):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return write_atomic_at(dir_fd, path.name, data, mode)
    finally:
        os.close(dir_fd)


def write_atomic_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> bool:
    """:func:`write_atomic` of ``name`` in the open directory ``dir_fd``.

    Everything happens relative to the descriptor (``openat``, ``renameat``),
    so a directory on the way that is swapped for a link meanwhile cannot
    send the file elsewhere. The temporary file is made with ``O_CREAT |
    O_EXCL``, which fails on any existing name, a link included.
    """
    if _same_file(name, data, mode, dir_fd=dir_fd):
        return False
    tmp = f".{name}.{os.urandom(4).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        with open(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # the umask must not widen or narrow it
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)  # the rename, durable
    return True


def symlink_atomic(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` with one rename: readers see the old or the new link."""
    tmp = link.with_name(f".{link.name}.{os.urandom(4).hex()}.tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(link.parent)


def _remove_hint(path: Path) -> str:
    return f"remove it: rm {path} (pyrelctl makes it again); and find out who put it there"


def _refuse(path: Path, what: str) -> HostError:
    return HostError(f"{path} {what}", hint=_remove_hint(path))


def _trusted_owner(uid: int) -> bool:
    # Root's files, or the caller's own (pyrelctl --root DIR run by a user).
    return uid in (0, os.geteuid())


def check_dir(path: Path) -> None:
    """Refuse ``path`` unless it is a real directory only root (or the caller) may write.

    A symlink there could send pyrelctl's writes anywhere; a directory other
    users may write lets them plant one. Group-writable is fine for the
    caller's own group (a root umask of 002 makes ``root:root 0775``).
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "is a symlink; pyrelctl never makes one there")
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "is not a directory")
    _check_owner(path, st)


def _check_owner(path: Path, st: os.stat_result, *, owner: bool = True) -> None:
    if owner and not _trusted_owner(st.st_uid):
        raise HostError(
            f"{path} belongs to uid {st.st_uid}, not to root",
            hint=f"pyrelctl's own files and directories are root's: chown root: {path}",
        )
    others = st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid not in (0, os.getegid()))
    if others:
        raise HostError(
            f"{path} is writable by other users (mode {st.st_mode & 0o7777:04o})",
            hint=f"chmod go-w {path}",
        )


def ensure_dir(path: Path, mode: int = 0o755) -> None:
    """Create ``path`` and missing parents with exactly ``mode`` (never the umask's).

    Run under ``umask 077``, a plain mkdir would hide /opt/APP from the
    unprivileged service user. Each directory made is chmod'ed through a
    descriptor opened with ``O_NOFOLLOW`` (a symlink swapped in after the
    mkdir is refused, not followed), and ``path`` itself must end up a real
    directory that only root may write (:func:`check_dir`). Existing
    parents are not checked: ``/opt`` or ``/var/lib`` may well be symlinks
    to another disk.
    """
    missing = []
    existing = path
    while not os.path.lexists(existing):
        missing.append(existing)
        existing = existing.parent
    if missing:
        # Where other users may rename entries (a writable directory without
        # the sticky bit, unlike /tmp), what we make could be swapped for a
        # link after every check.
        st = os.stat(existing)
        if not st.st_mode & stat.S_ISVTX:
            _check_owner(existing, st, owner=False)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile: checked just below
            os.mkdir(directory, mode)
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                check_dir(directory)  # raises, naming what is there
            raise
        try:
            _check_owner(directory, os.fstat(fd))
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    check_dir(path)


def open_state(path: Path, flags: int, mode: int = 0o644, *, in_place: bool = False) -> int:
    """Open one of pyrelctl's own state files; return the descriptor.

    Refused (:class:`HostError`, exit 1): a symlink at ``path``
    (``O_NOFOLLOW``), anything but a regular file (a FIFO would hang us,
    hence ``O_NONBLOCK``), a file with other hard links when it is written
    ``in_place`` (the lock is truncated, the history appended to), and a
    parent directory that is a symlink or that other users may write.
    ``FileNotFoundError`` passes through when ``flags`` do not create.
    """
    check_dir(path.parent)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(path, "is a symlink; pyrelctl never makes one there") from e
        if e.errno in (errno.EISDIR, errno.ENXIO, errno.ENOTDIR):
            raise _refuse(path, "is not a regular file") from e
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "is not a regular file")
        if in_place and st.st_nlink > 1:
            raise _refuse(path, f"has other hard links ({st.st_nlink} names for one file)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_state_target(path: Path) -> None:
    """Refuse to replace ``path`` unless it is missing or a regular file, in a safe directory.

    For the state files pyrelctl replaces with :func:`write_atomic`: the
    rename would replace a planted link harmlessly, but a link there means
    someone tampered with pyrelctl's state, and the operator should know.
    """
    check_dir(path.parent)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "is a symlink; pyrelctl never makes one there")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "is not a regular file")


def remove_tree(path: Path) -> None:
    """Delete a directory tree so that a crash never leaves it looking complete.

    It is first renamed to a ``.removing-`` name (atomic), then deleted; the
    next pyrelctl run finishes any deletion a crash interrupted.
    """
    if not path.exists() and not path.is_symlink():
        return
    doomed = path.with_name(f"{DOOMED_PREFIX}{path.name}.{os.urandom(4).hex()}")
    os.rename(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed)


def write_json(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    """Replace one of pyrelctl's own JSON files (see :func:`check_state_target`)."""
    ensure_dir(path.parent)
    check_state_target(path)
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode(), mode=mode)


def _read_state(path: Path) -> bytes:
    """The content of one of pyrelctl's own files (:func:`open_state`)."""
    with open(open_state(path, os.O_RDONLY), "rb") as f:
        return f.read()


def read_json(path: Path, *, hint: str) -> dict[str, Any]:
    """A JSON object from one of pyrelctl's own files; {} when it does not exist."""
    try:
        data = json.loads(_read_state(path))
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as e:
        raise HostError(f"{path} is unreadable ({e})", hint=hint) from e
    return data if isinstance(data, dict) else {}


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

    def process_version(self, pid: int) -> tuple[str | None, str]:
        """The release process ``pid`` runs, from ``/proc/PID/cwd``, or None and why not.

        The units' ``WorkingDirectory=`` goes through ``current`` (or ``next``),
        so a process's working directory is the physical ``releases/VERSION``
        it started from, whatever the links say now.
        """
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
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
            lines = _read_state(self.history_file).decode("utf-8", "replace").splitlines()
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
