"""Building a python release's venv as nobody in particular: no privileges, no network.

Making the venv runs code of the artifact: the release's own pip
(``tools/pip-*.whl``), and every ``.pth`` file of its wheels as soon as an
interpreter starts on the new venv (``-I`` does not stop them, ``-S`` would
stop ``site`` altogether; site.py ``addpackage``). pyrelctl runs as root, so
none of it may run in pyrelctl's process tree as root. A :class:`Build` runs
each step (venv, install, compileall) as an unprivileged user that can write
the venv directory and nothing else, then takes the result over for root:

* online (:class:`SystemdBuild`): a transient unit per step
  (``systemd-run --wait --pipe --collect``) with ``DynamicUser=yes`` and the
  service's own sandbox (units.sandbox_settings), ``PrivateNetwork=yes``.
  The dynamic user gets a ``StateDirectory=`` (created and chowned to it by
  systemd, in the root-only ``/var/lib/private``), bound with ``BindPaths=``
  over the empty ``venv/`` of the staging directory, so the venv is made at
  the path it is relocated from, as before. ProtectSystem=strict (implied
  by DynamicUser=) leaves everything else read-only. Seen in systemd 252:
  the bind is writable, ``/opt`` is not, and the directory outlives the unit.
* offline, as root (:class:`OfflineBuild`): no systemd may be called, so
  each step runs as ``nobody`` through ``setpriv`` (no capabilities, no
  new privileges, no supplementary groups) inside ``unshare --net --ipc
  --pid``: no network, and the whole pid namespace is killed when the step
  ends, so nothing it started lives on. It works on a private copy of the
  wheelhouse and pip under a directory whose name nobody else can list.
* offline, not root (:class:`DirectBuild`): there is no privilege to drop;
  the steps run as the caller, in place.

Afterwards :func:`adopt` makes the tree root's (``lchown``, modes 0755/0644,
through directory fds, never following a symlink) and refuses what an
installer never makes and root must not touch: hard links (chmod through
one would change a file elsewhere, /etc/shadow say), FIFOs, sockets.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from pyrelctl.errors import BadInput, CommandFailed, HostError
from pyrelctl.release import Sandbox
from pyrelctl.run import run
from pyrelctl.units import environment_words, sandbox_settings

VENV = "venv"
#: Where systemd keeps the StateDirectory= of a DynamicUser= unit (systemd.exec(5)).
PRIVATE_STATE = Path("/var/lib/private")
STATE_PARENT = Path("/var/lib")
#: Prefix of a build's user and state directory; ``.`` cannot occur in an app
#: name, so ``pyrelctl-build.APP.`` names one app's builds and no other's.
BUILD_PREFIX = "pyrelctl-build"
#: Longest a build step may run; systemd stops the unit then (RuntimeMaxSec=),
#: so a step never outlives pyrelctl waiting for it.
STEP_TIMEOUT = 1800
#: The unprivileged user of offline builds (the kernel's overflow uid if absent).
OFFLINE_USER = "nobody"
ENV = "/usr/bin/env"

Argv = Sequence[str | os.PathLike[str]]


class Build:
    """One venv build for the release unpacked in ``staging``.

    ``prefix`` is the release directory as the build's commands see it: the
    venv is made at ``prefix/venv`` and the wheelhouse and pip wheel are read
    below it. :meth:`collect` puts the finished venv at ``staging/venv``,
    owned by root. Use as a context manager: leaving it removes what the
    build left behind.
    """

    #: Said to the operator: who runs the build.
    who = "the invoking user"

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.prefix = staging

    @property
    def venv(self) -> Path:
        return self.prefix / VENV

    def run(
        self, step: str, argv: Argv, *, env: Mapping[str, str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one step of the build (``step`` names it, e.g. ``venv``)."""
        home = {k: os.environ[k] for k in ("HOME", "TMPDIR") if k in os.environ}
        return run(argv, env={**home, **env}, check=check)

    def _checked(
        self, step: str, argv: list[str], proc: subprocess.CompletedProcess[str], *, check: bool
    ) -> subprocess.CompletedProcess[str]:
        """Report a failed step by its own command, not by systemd-run's or unshare's."""
        if check and proc.returncode != 0:
            raise CommandFailed(
                argv, proc.returncode, proc.stderr, hint=f"the {step} step ran as {self.who}"
            )
        return proc

    def collect(self) -> None:
        """Put the built venv at ``staging/venv``, root's and read-only to others."""

    def close(self, failed: bool) -> None:
        """Remove what the build left outside ``staging``."""

    def __enter__(self) -> Build:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc_type is not None)


class DirectBuild(Build):
    """Offline and not root: nothing to drop, the caller builds in place."""


def _refuse_odd_path(path: Path) -> str:
    # BindPaths= splits on ':' and whitespace (systemd.exec(5)); a staging
    # path never has them (names.py rules for apps and versions), but a
    # --root could.
    text = os.fspath(path)
    if not path.is_absolute() or any(c in text for c in ":\\\"'") or any(c.isspace() for c in text):
        raise HostError(f"cannot build a venv at {text}: the path cannot be bound into a unit")
    return text


def step_unit_argv(
    step: str,
    unit: str,
    description: str,
    properties: Sequence[tuple[str, str]],
    args: Sequence[str],
) -> list[str]:
    """``systemd-run`` that runs ``args`` in the transient unit ``unit`` with
    ``properties``, waits for it to end and hands back its output.

    Refuses (:class:`HostError`) a program that is not an absolute path:
    systemd strips the prefixes @ - : + ! from the start of ExecStart= even
    quoted, and "+" runs the command as root outside the sandbox
    (src/core/load-fragment.c).
    """
    if not args[0].startswith("/"):
        raise HostError(f"build step {step}: {args[0]} is not an absolute path")
    return [
        "systemd-run",
        f"--unit={unit}",
        f"--description={description}",
        "--quiet",
        "--collect",
        "--wait",
        "--pipe",
        *(f"--property={key}={value}" for key, value in properties),
        # env(1) runs the program: systemd-run looks the program up in its
        # own mount namespace ("Failed to find executable"), where a bound
        # venv's bin/ is the empty mount point, not the venv.
        "--",
        ENV,
        *(_exec_word(a) for a in args),
    ]


def _exec_word(arg: str) -> str:
    # PID 1 expands $VAR in the ExecStart= of transient units as well; `$$` is
    # a literal `$` (see transient._no_expansion).
    return arg.replace("$", "$$")


class SystemdBuild(Build):
    """Each step in a transient unit of a dynamic user, sandboxed like the service."""

    who = "a dynamic user in a sandbox (systemd-run)"

    def __init__(self, staging: Path, *, app: str) -> None:
        super().__init__(staging)
        self.app = app
        sweep(app)
        token = secrets.token_hex(4)
        #: DynamicUser= with User= of an existing static user runs as that
        #: user (root included, systemd.exec(5)): the name must be new.
        self.user = f"{BUILD_PREFIX}-{token}"  # <= 31 characters, a valid user name
        with contextlib.suppress(KeyError):
            pwd.getpwnam(self.user)
            raise HostError(f"a user named {self.user} exists; cannot build as a dynamic user")
        self.state_name = f"{BUILD_PREFIX}.{app}.{token}"
        self.state_dir = PRIVATE_STATE / self.state_name
        self.token = token
        self.units: list[str] = []
        # The mount point of the bind: empty, root's; never the artifact's
        # (detection refuses a release with venv/, mkdir fails if one is there).
        (staging / VENV).mkdir(mode=0o755)
        self.bind = f"{_refuse_odd_path(self.state_dir)}:{_refuse_odd_path(staging / VENV)}"

    def properties(self, env: Mapping[str, str]) -> list[tuple[str, str]]:
        """The unit's settings: the service's sandbox, a dynamic user, one writable dir."""
        return [
            ("DynamicUser", "yes"),  # implies ProtectSystem=strict, PrivateTmp=, NoNewPrivileges=
            ("User", self.user),
            ("StateDirectory", self.state_name),
            ("BindPaths", self.bind),
            ("WorkingDirectory", "/"),
            ("PrivateNetwork", "yes"),  # an offline install: the wheelhouse only
            # (The sandbox below gives it a /dev/shm of its own, not the host's:
            # multiprocessing, compileall -j, needs one.)
            ("UMask", "0022"),
            ("RuntimeMaxSec", str(STEP_TIMEOUT)),
            # The strictest sandbox: the release's own exceptions (writable
            # paths, low ports, W+X memory) are for its service, not for pip.
            *sandbox_settings(Sandbox()),
            # pip wants a home even with --no-cache-dir; the dynamic user's is
            # "/", read-only. Its /tmp is its own (PrivateTmp=).
            ("Environment", environment_words({"HOME": "/tmp", "TMPDIR": "/tmp", **env})),
        ]

    def run(
        self, step: str, argv: Argv, *, env: Mapping[str, str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        args = [os.fspath(a) for a in argv]
        unit = f"pyrelctl-{self.app}-build-{step}-{self.token}.service"
        # Refuses a program that is not an absolute path, before anything is done.
        command = step_unit_argv(
            step,
            unit,
            f"pyrelctl build {step} of a python release of {self.app}",
            self.properties(env),
            args,
        )
        self.units.append(unit)
        return self._checked(step, args, run(command, check=False), check=check)

    def collect(self) -> None:
        # The units have ended: --wait returns once the unit is inactive, and
        # systemd stops a unit by killing its whole cgroup; nothing of the
        # dynamic user runs any more that could race the walk below.
        adopt(self.state_dir)
        (self.staging / VENV).rmdir()  # the empty mount point
        move_tree(self.state_dir, self.staging / VENV)
        _unlink_state_link(self.state_name)

    def close(self, failed: bool) -> None:
        if failed:
            # Interrupted while systemd-run waited: stop what may still run.
            for unit in self.units:
                run(["systemctl", "stop", unit], check=False)
        _remove_state(self.state_name)


def _unlink_state_link(name: str) -> None:
    # systemd links /var/lib/NAME -> private/NAME for a DynamicUser= unit.
    link = STATE_PARENT / name
    if link.is_symlink():
        link.unlink()


def _remove_state(name: str) -> None:
    _unlink_state_link(name)
    path = PRIVATE_STATE / name
    if path.exists() or path.is_symlink():
        # shutil.rmtree removes through directory fds (rmtree.avoids_symlink_attacks).
        shutil.rmtree(path, ignore_errors=True)


def sweep(app: str) -> None:
    """Remove the state directories of ``app``'s builds that a killed pyrelctl left.

    Called under the app's lock, so no build of this app is running.
    """
    if not PRIVATE_STATE.is_dir():
        return
    for path in PRIVATE_STATE.glob(f"{BUILD_PREFIX}.{app}.*"):
        _remove_state(path.name)


class OfflineBuild(Build):
    """Offline as root: each step as ``nobody``, without network, in a pid namespace."""

    def __init__(self, staging: Path, *, inputs: Sequence[str]) -> None:
        super().__init__(staging)
        try:
            user = pwd.getpwnam(OFFLINE_USER)
            self.uid, self.gid = user.pw_uid, user.pw_gid
        except KeyError:
            self.uid = self.gid = 65534
        self.who = f"uid {self.uid} (setpriv, no network)"
        # A root directory nobody can list (0711) holds the build under a
        # random name: only the build, which is told the path, finds it.
        # The release's own tree may be below a directory closed to nobody
        # (a --root in root's home), hence the copy of the inputs.
        self.work = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}-"))
        try:
            os.chmod(self.work, 0o711)
            self.prefix = self.work / secrets.token_hex(16)
            self.prefix.mkdir(mode=0o755)
            for rel in inputs:
                _copy_input(staging / rel, self.prefix / rel)
            for name, mode in ((VENV, 0o755), ("tmp", 0o700)):
                path = self.prefix / name
                path.mkdir(mode=mode)
                os.chown(path, self.uid, self.gid)
        except BaseException:
            shutil.rmtree(self.work, ignore_errors=True)
            raise

    def run(
        self, step: str, argv: Argv, *, env: Mapping[str, str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # unshare(1): a new network namespace has only a loopback that is
        # down; when the first process of a new pid namespace exits, the
        # kernel kills every other one in it (pid_namespaces(7)).
        # setpriv(1): the uid and gid of nobody, no groups, and no way back.
        command: list[str | os.PathLike[str]] = [
            "unshare", "--net", "--ipc", "--pid", "--fork", "--kill-child", "--",
            "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
            *argv,
        ]  # fmt: skip
        tmp = os.fspath(self.prefix / "tmp")
        proc = run(command, env={**env, "TMPDIR": tmp, "HOME": tmp}, check=False)
        return self._checked(step, [os.fspath(a) for a in argv], proc, check=check)

    def collect(self) -> None:
        # Closed first: from now on no process of nobody can enter the tree.
        os.chmod(self.work, 0o700)
        adopt(self.venv)
        move_tree(self.venv, self.staging / VENV)

    def close(self, failed: bool) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _copy_input(src: Path, dest: Path) -> None:
    """Copy a file, or the regular files directly in a directory, readable by all."""
    if src.is_dir() and not src.is_symlink():
        dest.mkdir(mode=0o755, parents=True)
        for child in sorted(src.iterdir()):
            if child.is_file() and not child.is_symlink():
                shutil.copyfile(child, dest / child.name)
                os.chmod(dest / child.name, 0o644)
    else:
        dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(src, dest, follow_symlinks=False)
        os.chmod(dest, 0o644)


def open_build(staging: Path, *, app: str, online: bool, inputs: Sequence[str]) -> Build:
    """The build for this host: systemd's sandbox online, setpriv offline as root.

    ``inputs`` are the release-relative paths the steps read (the
    wheelhouse, the pip wheel).
    """
    if online:
        return SystemdBuild(staging, app=app)
    if os.geteuid() == 0:
        return OfflineBuild(staging, inputs=inputs)
    return DirectBuild(staging)


def adopt(top: Path) -> None:
    """Make the tree at ``top`` root's and read-only to others, following no symlink.

    Every directory is reached through a descriptor opened with O_NOFOLLOW
    (os.fwalk), every entry is changed relative to it: a symlink planted in
    the tree is chowned itself, never what it points to.
    """
    try:
        top_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise HostError(f"the built venv {top} is not a directory: {e.strerror}") from e
    os.close(top_fd)
    for dirpath, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        os.fchown(dirfd, 0, 0)
        os.fchmod(dirfd, 0o755)
        for name in [*dirnames, *filenames]:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            where = os.path.join(dirpath, name)
            if stat.S_ISDIR(st.st_mode):
                continue  # visited in turn, through its own descriptor
            if stat.S_ISLNK(st.st_mode):
                os.chown(name, 0, 0, dir_fd=dirfd, follow_symlinks=False)
            elif stat.S_ISREG(st.st_mode):
                _adopt_file(name, dirfd, where)
            else:
                raise BadInput(
                    f"building the venv left {where}, which is not a file, directory or symlink",
                    hint="a package of the release made it; the release is refused",
                )


def _adopt_file(name: str, dirfd: int, where: str) -> None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(name, flags, dir_fd=dirfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            # pip and uv (--link-mode copy) write every file once; a second
            # name may be a file outside the venv that chown/chmod would change.
            raise BadInput(
                f"building the venv left {where}, a hard link",
                hint="a package of the release made it; the release is refused",
            )
        os.fchown(fd, 0, 0)  # also clears any setuid/setgid bit
        os.fchmod(fd, 0o755 if st.st_mode & stat.S_IXUSR else 0o644)
    finally:
        os.close(fd)


def move_tree(src: Path, dest: Path) -> None:
    """Rename ``src`` (adopted) to ``dest``; copy it, links as links, across file systems."""
    try:
        os.rename(src, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        shutil.copytree(src, dest, symlinks=True)
        shutil.rmtree(src)
