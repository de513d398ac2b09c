"""Where ``pyrelctl build`` runs pip, and as whom: never the project's code as root.

Building runs code that is not pyrelctl's: pip calls the project's PEP 517
backend (with ``backend-path`` it is the project's own code, else a package
from the index), and builds every dependency the index has only as an
sdist by running its ``setup.py`` or backend, after installing its build
requirements from the index. Run by root, all of that would run as root.
So, as root, every step that starts the build interpreter runs as an
unprivileged user, with the network (pip needs the index), in a work
directory of its own, reusing install's machinery (sandboxrun):

* systemd booted (:class:`SystemdSteps`): a transient unit per step
  (``systemd-run --wait --pipe --collect``) of a dynamic user, with the
  sandbox install's venv steps get (sandboxrun.SystemdBuild) except that
  the network stays. The work directory is the unit's ``StateDirectory=``:
  root prepares it in the root-only ``/var/lib/private`` and systemd chowns
  it to the dynamic user as each step starts (systemd.exec(5)).
  ProtectSystem=strict leaves everything else read-only; ProtectHome=
  hides /root and /home (the interpreter must live elsewhere).
* no systemd (:class:`SetprivSteps`): as sandboxrun.OfflineBuild,
  ``setpriv`` to nobody (no capabilities, no new privileges, no groups) in
  new pid and IPC namespaces, so nothing a step starts outlives it, but in
  the host's network namespace. The work directory has a random name under
  a root directory nobody can list (0711).
* not root (:class:`DirectSteps`): nothing to drop; pip runs as the caller
  on the project in place, as it always did.

The work directory holds a copy of the project made by root, symlinks
copied as symlinks (a link to a file only root may read stays a link the
build cannot follow); it is a copy, not a read-only bind, because
setuptools writes ``build/`` and ``*.egg-info`` into the source tree.
Beside it: ``home/`` (HOME, with copies of the caller's own pip
configuration files, so pip uses the indexes the caller configured; the
global ones in /etc are read where they are), an input directory per step
(:meth:`Steps.share`: root's files the step reads, the runtime wheel, the
repacked project wheel, the constraints; made by root just before, under a
random name) and an output directory per step (:meth:`Steps.output`). Root
never writes into a directory the build user could have written: its own
work (repacking, the release tree, the tarball) is in a private temporary
directory. The steps get the caller's pip, Python, proxy, CA bundle and locale
variables, nothing else of root's environment.

Results come back with :meth:`Steps.take`: once the step has ended (the
unit stopped, the pid namespace killed), sandboxrun.adopt makes the output
directory root's through directory fds, refusing hard links, FIFOs and
sockets; only regular files are taken, opened with O_NOFOLLOW.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyrelctl.errors import BadInput, HostError
from pyrelctl.release import Sandbox
from pyrelctl.run import run
from pyrelctl.sandboxrun import (
    OFFLINE_USER,
    PRIVATE_STATE,
    STEP_TIMEOUT,
    Argv,
    Build,
    _remove_state,
    adopt,
    step_unit_argv,
)
from pyrelctl.units import environment_words, sandbox_settings

#: Prefix of the state directory and dynamic user of a project build. It does
#: not match sandboxrun.sweep's ``pyrelctl-build.APP.*``: an install's sweep
#: never removes a running build's directory.
STATE_PREFIX = "pyrelctl-project-build"
USER_PREFIX = "pyrelctl-pb"
#: The PATH of a sandboxed step (systemd's default for services): root's own
#: PATH may name directories of root's home, hidden from the build user.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: What of the caller's environment a sandboxed step gets: pip's and
#: Python's own settings, proxies, CA bundles and the locale; not the rest
#: (tokens, SSH_AUTH_SOCK, root's PATH and HOME).
_PASSED_ENV = re.compile(
    r"PIP_\w+|PYTHON\w+|(?i:https?_proxy|no_proxy|all_proxy)|REQUESTS_CA_BUNDLE"
    r"|SSL_CERT_(?:FILE|DIR)|CURL_CA_BUNDLE|LANG|LANGUAGE|LC_\w+"
)
PROJECT, HOME = "project", "home"


def sandbox_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of ``env`` a sandboxed step gets (see the module doc)."""
    return {k: v for k, v in env.items() if _PASSED_ENV.fullmatch(k)}


class Steps(Build):
    """The work directory of one build and the user its steps run as.

    ``path(rel)`` is a path of the work directory as the steps see it (for
    their argv), ``host(rel)`` the same as root sees it. ``project`` is the
    project's directory as the steps see it.
    """

    who = "the invoking user"

    def __init__(self, work: Path, view: Path, project: Path) -> None:
        super().__init__(work)
        self.work, self.view, self.project = work, view, project

    def __enter__(self) -> Steps:
        return self

    def host(self, rel: str) -> Path:
        return self.work / rel

    def path(self, rel: str) -> Path:
        return self.view / rel

    def _new_dir(self, kind: str) -> str:
        rel = f"{kind}-{secrets.token_hex(8)}"
        # mkdir fails on anything already there, a planted link included;
        # chmod: root's umask may be 077, and the build user must read it.
        (self.work / rel).mkdir()
        os.chmod(self.work / rel, 0o755)
        return rel

    def output(self) -> str:
        """A new directory the next step may write (``path(rel)`` in its argv)."""
        return self._new_dir("out")

    def share(self, files: Sequence[Path]) -> Path:
        """Copies of root's ``files`` the next step may read; their directory, as it sees it."""
        rel = self._new_dir("in")
        for source in files:
            with source.open("rb") as f_in, open(self.host(rel) / source.name, "xb") as f_out:
                shutil.copyfileobj(f_in, f_out)
                os.fchmod(f_out.fileno(), 0o644)
        return self.path(rel)

    def take(self, rel: str, dest: Path) -> list[Path]:
        """Copy the regular files a step left in ``rel`` into root's ``dest``; their paths."""
        return [copy_out(path, dest) for path in _regular_files(self.host(rel))]

    def run(
        self, step: str, argv: Argv, *, env: Mapping[str, str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one step: ``env`` on top of what the caller's environment passes."""
        return run(argv, env={**os.environ, **env}, check=check)


class DirectSteps(Steps):
    """Not root: the caller's own rights, the project in place, the caller's environment."""

    def __init__(self, project: Path) -> None:
        work = Path(tempfile.mkdtemp(prefix="pyrelctl-build-"))
        super().__init__(work, work, project)

    def close(self, failed: bool) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _prepare(work: Path, project: Path) -> None:
    """The project's copy and the home of the build user, below ``work`` (root's)."""
    # symlinks=True: a link is copied as a link, never followed by root. pip's
    # own copy (before in-tree builds, pip < 21.3) left .tox and .nox out.
    shutil.copytree(
        project, work / PROJECT, symlinks=True, ignore=shutil.ignore_patterns(".tox", ".nox")
    )
    home = work / HOME
    home.mkdir(mode=0o700)
    caller_home = Path(os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir)
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or caller_home / ".config")
    # The caller's own pip configuration files (pip's docs, "Configuration":
    # user level), which the build user could not read in root's home.
    for source, rel in (
        (caller_home / ".pip" / "pip.conf", ".pip/pip.conf"),
        (config_home / "pip" / "pip.conf", ".config/pip/pip.conf"),
    ):
        if source.is_file():
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, home / rel)


def _config_file_env(work: Path, view: Path) -> dict[str, str]:
    """PIP_CONFIG_FILE of the caller, as a copy in the build user's home."""
    name = os.environ.get("PIP_CONFIG_FILE")
    if not name or name == os.devnull or not Path(name).is_file():
        return {}
    shutil.copyfile(name, work / HOME / "pip-config-file.conf")
    return {"PIP_CONFIG_FILE": os.fspath(view / HOME / "pip-config-file.conf")}


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """lchown a tree root just made, through directory fds (os.fwalk), following no link."""
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        os.fchown(dirfd, uid, gid)
        for name in [*dirnames, *filenames]:  # a link to a directory is in dirnames
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)


class SetprivSteps(Steps):
    """Root without systemd: each step as ``nobody`` in new pid and IPC namespaces."""

    def __init__(self, project: Path) -> None:
        try:
            user = pwd.getpwnam(OFFLINE_USER)
            self.uid, self.gid = user.pw_uid, user.pw_gid
        except KeyError:
            self.uid = self.gid = 65534
        self.who = f"uid {self.uid} (setpriv)"
        # As sandboxrun.OfflineBuild: a root directory nobody can list holds
        # the work, root's 0755, under a random name only the steps are told.
        self.top = Path(tempfile.mkdtemp(prefix="pyrelctl-build-"))
        try:
            os.chmod(self.top, 0o711)
            work = self.top / secrets.token_hex(16)
            work.mkdir()
            os.chmod(work, 0o755)
            super().__init__(work, work, work / PROJECT)
            _prepare(work, project)
            self.extra_env = _config_file_env(work, work)
            for rel in (PROJECT, HOME):
                _chown_tree(work / rel, self.uid, self.gid)
        except BaseException:
            shutil.rmtree(self.top, ignore_errors=True)
            raise

    def output(self) -> str:
        rel = super().output()
        os.chown(self.host(rel), self.uid, self.gid)
        return rel

    def run(
        self, step: str, argv: Argv, *, env: Mapping[str, str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # unshare(1): when the first process of a new pid namespace exits,
        # the kernel kills every other one in it (pid_namespaces(7)); no
        # --net: pip needs the index. setpriv(1): nobody, and no way back.
        command: list[str | os.PathLike[str]] = [
            "unshare", "--ipc", "--pid", "--fork", "--kill-child", "--",
            "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
            *argv,
        ]  # fmt: skip
        home = os.fspath(self.path(HOME))
        step_env = {
            **sandbox_env(os.environ),
            **self.extra_env,
            **env,
            "PATH": SAFE_PATH,
            "HOME": home,
            "TMPDIR": home,
        }
        proc = run(command, env=step_env, check=False, cwd=self.path(HOME))
        return self._checked(step, [os.fspath(a) for a in argv], proc, check=check)

    def take(self, rel: str, dest: Path) -> list[Path]:
        # The step has ended and its pid namespace with it.
        adopt(self.host(rel))
        return super().take(rel, dest)

    def close(self, failed: bool) -> None:
        shutil.rmtree(self.top, ignore_errors=True)


class SystemdSteps(Steps):
    """Root with systemd: each step in a transient unit of a dynamic user, sandboxed."""

    who = "a dynamic user in a sandbox (systemd-run)"

    def __init__(self, project: Path) -> None:
        self.token = secrets.token_hex(4)
        #: DynamicUser= with the User= of an existing static user runs as
        #: that user (root included, systemd.exec(5)): the name must be new.
        self.user = f"{USER_PREFIX}-{self.token}"
        with contextlib.suppress(KeyError):
            pwd.getpwnam(self.user)
            raise HostError(f"a user named {self.user} exists; cannot build as a dynamic user")
        self.state_name = f"{STATE_PREFIX}.{self.token}"
        self.units: list[str] = []
        PRIVATE_STATE.mkdir(mode=0o700, parents=True, exist_ok=True)
        sweep_builds()
        work = PRIVATE_STATE / self.state_name
        work.mkdir(mode=0o755)
        #: Held while the build lives: sweep_builds leaves its directory alone.
        self.lock_fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            # Inside the unit the directory is /var/lib/NAME ($STATE_DIRECTORY).
            view = Path("/var/lib") / self.state_name
            super().__init__(work, view, view / PROJECT)
            _prepare(work, project)
            self.extra_env = _config_file_env(work, view)
        except BaseException:
            _remove_state(self.state_name)
            os.close(self.lock_fd)
            raise

    def run(
        self, step: str, argv: Argv, *, env: Mapping[str, str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        args = [os.fspath(a) for a in argv]
        unit = f"pyrelctl-build-{step}-{self.token}.service"
        home = os.fspath(self.path(HOME))
        step_env = {
            **sandbox_env(os.environ),
            **self.extra_env,
            **env,
            "HOME": home,
            "TMPDIR": "/tmp",  # PrivateTmp=, implied by DynamicUser=
        }
        properties = [
            ("DynamicUser", "yes"),  # implies ProtectSystem=strict, PrivateTmp=, NoNewPrivileges=
            ("User", self.user),
            # Created by root above; systemd chowns it to the dynamic user at
            # each start (src/core/execute.c, setup_exec_directory).
            ("StateDirectory", self.state_name),
            ("WorkingDirectory", home),
            ("UMask", "0022"),
            ("RuntimeMaxSec", str(STEP_TIMEOUT)),
            # Install's sandbox without PrivateNetwork=: pip needs the index.
            # W+X memory stays allowed: the compilers and build tools of
            # sdists are not the service, and some need it (cffi callbacks).
            *sandbox_settings(Sandbox(memory_deny_write_execute=False)),
            ("Environment", environment_words(step_env)),
        ]
        # Refuses a program that is not an absolute path, before anything is done.
        command = step_unit_argv(step, unit, f"pyrelctl build: {step}", properties, args)
        self.units.append(unit)
        # systemd chowns the StateDirectory= tree to the dynamic user only
        # when its top is not the user's already (src/basic/chown-recursive.c
        # checks the top first): made root's again, the directories root
        # added since the last step (outputs) become the user's too.
        os.chown(self.work, 0, 0)
        return self._checked(step, args, run(command, check=False), check=check)

    def take(self, rel: str, dest: Path) -> list[Path]:
        # --wait returned: the unit is inactive, its whole cgroup killed.
        adopt(self.host(rel))
        return super().take(rel, dest)

    def close(self, failed: bool) -> None:
        if failed:
            for unit in self.units:
                run(["systemctl", "stop", unit], check=False)
        _remove_state(self.state_name)
        os.close(self.lock_fd)


#: A state directory younger than this is never swept: it may be a build's
#: that has made it and not yet locked it.
SWEEP_AFTER = 60


def sweep_builds() -> None:
    """Remove the state directories of project builds a killed pyrelctl left.

    A live build holds an flock on its directory (flock(2) works on a
    directory's descriptor); one nobody holds, older than SWEEP_AFTER, is
    left over.
    """
    for path in PRIVATE_STATE.glob(f"{STATE_PREFIX}.*"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if time.time() - os.fstat(fd).st_mtime < SWEEP_AFTER:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running build's
        finally:
            os.close(fd)
        _remove_state(path.name)


def systemd_booted() -> bool:
    """sd_booted(3): systemd is PID 1 when /run/systemd/system/ exists."""
    return Path("/run/systemd/system").is_dir()


def open_steps(project: Path) -> Steps:
    """The steps for this caller: as the caller when not root, else sandboxed."""
    if os.geteuid() != 0:
        return DirectSteps(project)
    if systemd_booted():
        return SystemdSteps(project)
    return SetprivSteps(project)


def _regular_files(directory: Path) -> list[Path]:
    found = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
            raise BadInput(
                f"the build left {entry.name}, which is not a regular file",
                hint="the project or one of its dependencies made it; the build is refused",
            )
        found.append(Path(entry.path))
    return found


def copy_out(src: Path, dest: Path) -> Path:
    """Copy ``src`` (not a link, a regular file) into root's ``dest`` directory."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    target = dest / src.name
    with os.fdopen(fd, "rb") as f_in:
        if not stat.S_ISREG(os.fstat(f_in.fileno()).st_mode):
            raise BadInput(f"the build left {src.name}, which is not a regular file")
        with open(target, "xb") as f_out:
            shutil.copyfileobj(f_in, f_out)
    return target


def interpreter(python: str) -> str:
    """``--python`` as an absolute path (a sandboxed step has another PATH)."""
    if "/" in python:
        return os.path.abspath(python)
    found = shutil.which(python)
    if found is None:
        raise BadInput(f"--python {python}: not found on PATH")
    return found
