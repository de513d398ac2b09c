"""A throwaway systemd 252 in a container: Recipe A of shared/SYSTEMD.md.

`Machine.boot()` starts `systemd-nspawn --volatile=yes` on the host's own
read-only /usr with a fresh tmpfs root (plus, by default, a private
network namespace), waits until systemd inside reports
`running` or `degraded`, checks that commands really land inside, and only
then lets `Machine.run()` enter it with `nsenter`. Everything written
outside the bound directories vanishes with the container.

Safety is the point of this module: `nsenter --target <pid>` with a wrong
pid (the container not up yet, gone, or the pid reused) runs the command
on the host, as root. So `run()` refuses unless the boot was verified and
the target pid still has the container's mount namespace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from devtools.proc import (
    CommandTimeout,
    Deadline,
    DevtoolsError,
    StrPath,
    WaitTimeout,
    run,
    wait_until,
)

logger = logging.getLogger(__name__)

# `-M` becomes the container's hostname; keep to what every tool accepts.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")

# Bound writable into the container, these would hand the host's own system
# to the container's systemd (or, for "/", everything). Nothing needs them.
_FORBIDDEN_BINDS = frozenset(
    Path(p)
    for p in (
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/lib",
        "/proc",
        "/run",
        "/sbin",
        "/sys",
        "/usr",
        "/var",
    )
)

# `systemctl is-system-running` prints `degraded` when some unit failed; in
# this container epmd.service always does (see _quiet_epmd), so both count.
_BOOTED_STATES = frozenset({"running", "degraded"})

# Commands inside get this environment, not the host's: the host's PATH
# (pyenv shims, ~/.cargo) and variables such as VIRTUAL_ENV mean nothing in
# the container and would make results depend on who runs the tests.
_BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class MachineError(DevtoolsError):
    """The container could not be booted, or cannot safely be entered."""


def _preflight() -> tuple[str, str]:
    """Paths of systemd-nspawn and nsenter, or a MachineError saying what is missing."""
    if os.geteuid() != 0:
        raise MachineError(
            "booting a container needs root (systemd-nspawn); run the system tests as root"
        )
    nspawn = shutil.which("systemd-nspawn")
    if nspawn is None:
        raise MachineError(
            "systemd-nspawn not found; install it: apt-get install -y systemd-container"
        )
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        raise MachineError("nsenter not found; install it: apt-get install -y util-linux")
    return nspawn, nsenter


def _check_binds(binds: Sequence[Path]) -> list[Path]:
    """The bind directories, deduplicated in order, each checked to be safe to bind."""
    checked: list[Path] = []
    for bind in binds:
        path = Path(bind)
        if not path.is_absolute():
            raise MachineError(f"bind {path}: not an absolute path")
        # `--bind=SRC:DST:OPTS` splits on ':', so such a path would be misread.
        if ":" in str(path):
            raise MachineError(f"bind {path}: a ':' cannot be passed to --bind")
        if path in _FORBIDDEN_BINDS:
            raise MachineError(f"bind {path}: refusing to expose a host system directory")
        if not path.is_dir():
            raise MachineError(f"bind {path}: not a directory")
        if path not in checked:
            checked.append(path)
    return checked


def _alternatives_bind() -> list[str]:
    """Bind the host's /etc/alternatives read-only, if it has one.

    --volatile=yes gives the container an /etc of its own that is nearly
    empty, but Debian reaches awk, which, pager, editor... in /usr/bin
    through symlinks into /etc/alternatives: without this they are missing,
    and a mix release's bin/NAME (which calls awk for `rpc`, `remote` and
    `pid`) prints "awk: not found" where a real host would not.
    """
    alternatives = Path("/etc/alternatives")
    return [f"--bind-ro={alternatives}"] if alternatives.is_dir() else []


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (no pgrep needed)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(c) for c in children.read_text().split())
        except OSError:
            continue  # the task exited while we looked
    return found


def _read(path: str) -> str | None:
    """A small /proc or /etc file, stripped; None if it cannot be read."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _mount_ns(pid: int | str) -> str | None:
    """The mount namespace of a process, like `mnt:[4026532178]`; None if it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _cgroup_dirs(name: str) -> list[Path]:
    """A cgroup of its own for one container, in each hierarchy systemd-nspawn uses.

    Without systemd on the host (`--keep-unit`), nspawn creates its
    `payload/` and `supervisor/` cgroups below its *current* cgroup. Two
    containers started from the same cgroup would then share
    `/payload/system.slice/APP.service`, and each inner systemd would kill
    and count the other's processes ("Failed to kill control group").
    """
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        own[controllers] = path
    dirs = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = [*right.split(), "", "", ""][:3]
        mountpoint = left.split()[4]
        if fstype == "cgroup2" and "" in own:
            dirs.append(Path(mountpoint) / own[""].lstrip("/") / f"pyrelctl-{name}")
        elif fstype == "cgroup" and "name=systemd" in options.split(",") and "name=systemd" in own:
            dirs.append(Path(mountpoint) / own["name=systemd"].lstrip("/") / f"pyrelctl-{name}")
    return dirs


def _enter_cgroups(dirs: Sequence[Path]) -> None:
    """In the child before exec: move this process into `dirs` (made by the parent)."""
    for directory in dirs:
        (directory / "cgroup.procs").write_text("0")


def _remove_cgroups(dirs: Sequence[Path]) -> None:
    """Remove a stopped container's cgroups, innermost first (rmdir works on empty ones)."""
    for directory in dirs:
        if not directory.is_dir():
            continue
        for root, _subdirs, _files in os.walk(directory, topdown=False):
            try:
                os.rmdir(root)
            except OSError as e:
                logger.warning("cannot remove cgroup %s: %s", root, e)


class _WritableRoot:
    """A copy-on-write view of the host's / for one container (SYSTEMD.md, Recipe B).

    An overlay whose lower layer is the host's root filesystem and whose upper
    layer lives in a tmpfs of its own: whatever the container writes (apt
    installing a package, dpkg's database, /etc) lands in memory, and the
    host's files are never changed. Only the root filesystem is the lower
    layer: mounts below / (/proc, /tmp if it is a tmpfs, bind mounts) are not
    part of it, so directories on them must be bound like with Recipe A.
    The lower layer may instead be another root file system (a cached
    Debian 13 from devtools.rootfs), which stays as it was just the same.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self._mounted: list[Path] = []

    @classmethod
    def mount(cls, name: str, lower: Path = Path("/")) -> _WritableRoot:
        """Mount the tmpfs and the overlay, and give the copy a machine id of its own."""
        made = cls(Path(tempfile.mkdtemp(prefix=f"{name}-root-")))
        try:
            made._mount(["-t", "tmpfs", "-o", "mode=0700", "tmpfs"], made.base)
            for sub in ("upper", "work", "root"):
                (made.base / sub).mkdir()
            made._mount(
                [
                    "-t",
                    "overlay",
                    "-o",
                    f"lowerdir={lower},upperdir={made.base / 'upper'},workdir={made.base / 'work'}",
                    "overlay",
                ],
                made.root,
            )
            if _mount_fstype(made.root) != "overlay":
                raise MachineError(f"{made.root} is not an overlay mount after mounting it")
            # The host's id, copied up, would make two machines one to systemd
            # and journald: `systemd-id128 new` is what SYSTEMD.md's recipe uses.
            (made.root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        except BaseException:
            made.unmount()
            raise
        return made

    def _mount(self, options: list[str], target: Path) -> None:
        run(["mount", *options, target])
        self._mounted.append(target)

    def unmount(self) -> None:
        """Unmount the overlay, then the tmpfs (its content goes with it); idempotent.

        Called only once the container has exited. A mount that is still busy
        is detached lazily (`umount -l`): nothing runs in it any more, and the
        host must not keep it. Directories are removed with rmdir only, never
        recursively: a mistake here must not delete through a live overlay.
        """
        while self._mounted:
            target = self._mounted.pop()
            result = run(["umount", target], check=False)
            if result.returncode != 0:
                logger.warning("umount %s: %s; detaching it", target, result.stderr.strip())
                run(["umount", "-l", target], check=False)
        if self.base.is_dir() and not os.path.ismount(self.base):
            for sub in ("root", "upper", "work", ""):
                # Not empty or gone: leave it rather than guess.
                with contextlib.suppress(OSError):
                    (self.base / sub).rmdir()


def _mount_fstype(path: Path) -> str | None:
    """The file system type mounted exactly at `path`, from /proc/self/mountinfo."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if left.split()[4] == str(path):
            return right.split()[0]
    return None


class Machine:
    """A booted systemd container, entered with nsenter. Use `Machine.boot()`.

    A context manager: leaving the `with` block stops the container.
    """

    def __init__(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        log_path: Path,
        log_file: BinaryIO,
        nsenter: str,
        private_network: bool,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.private_network = private_network
        self._process = process
        self._log_file = log_file
        self._nsenter = nsenter
        self._pid: int | None = None
        self._mount_ns: str | None = None
        # Set only once the boot is verified, cleared first thing in stop():
        # the single switch that allows anything to run through nsenter.
        self._booted = False
        self._stopped = False
        self._cgroups: list[Path] = []
        self._writable_root: _WritableRoot | None = None

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    def boot(
        cls,
        name: str,
        binds: Sequence[Path],
        log: Path,
        timeout: float = 60.0,
        *,
        private_network: bool = True,
        writable_root: bool = False,
        lower: Path | None = None,
        unified_cgroup: bool = False,
    ) -> Machine:
        """Boot a container named `name` and return it once verified running.

        Each directory in `binds` is bound read-write at the same path inside.
        systemd-nspawn's output (the boot messages) goes to the file `log`.
        Raises `MachineError` (with the tail of that log) if systemd does not
        reach `running`/`degraded` within `timeout` seconds; the container
        is stopped before raising.

        With `private_network` (the default) the container has its own
        network namespace with only a loopback interface, so the ports its
        services open cannot collide with the host's or another container's.

        With `writable_root` the container's / is a copy-on-write overlay of
        the host's root file system on a tmpfs of its own (SYSTEMD.md, Recipe
        B) instead of a fresh tmpfs with the host's /usr read-only: packages
        can be installed inside, and every write stays in memory. The overlay
        is unmounted by `stop()`, also when the boot fails.

        With `lower` the overlay's lower layer is that root file system (say
        a Debian 13 from devtools.rootfs) instead of the host's: another
        distribution booted with this host's systemd-nspawn, the root left
        untouched. `unified_cgroup` gives the container the cgroup v2 only
        hierarchy (systemd-nspawn(1), $SYSTEMD_NSPAWN_UNIFIED_HIERARCHY), as
        a host booted with systemd 257 has; without it nspawn mirrors this
        host's hybrid setup.
        """
        nspawn, nsenter = _preflight()
        if not _NAME_RE.fullmatch(name):
            raise MachineError(f"invalid machine name {name!r}: use letters, digits and '-'")
        bind_paths = _check_binds(binds)
        if lower is not None and not (lower / "usr/lib/systemd/systemd").is_file():
            raise MachineError(f"{lower} has no /usr/lib/systemd/systemd to boot")
        writable = _WritableRoot.mount(name, lower or Path("/")) if writable_root or lower else None
        argv = [
            nspawn,
            "-q",
            # Never `--volatile` together with an overlay: that combination left
            # the host's /usr writable from the "container" (SYSTEMD.md).
            *(["-D", str(writable.root)] if writable else ["-D", "/", "--volatile=yes"]),
            # No machined and no system bus on the host: do not register, and
            # stay in our own cgroup instead of asking for a scope unit.
            "--register=no",
            "--keep-unit",
            "--console=passive",
            "-M",
            name,
            *(f"--bind={p}" for p in bind_paths),
            # The copy-on-write root has the host's /etc, alternatives included
            # (and writable: dpkg updates them when it installs a package).
            *([] if writable else _alternatives_bind()),
            # shared/SYSTEMD.md says --private-network did not boot on some
            # machine; it boots here (and as fast). Without it the container
            # shares the host's ports: another container's epmd.socket on
            # 4369 made a release here die with "epmd_close".
            *(["--private-network"] if private_network else []),
            "--boot",
            # Kernel command line for the container's systemd: without this
            # the first-boot wizard waits for input on the console.
            "systemd.firstboot=off",
        ]
        log.parent.mkdir(parents=True, exist_ok=True)
        cgroups = _cgroup_dirs(name)
        for directory in cgroups:
            directory.mkdir(exist_ok=True)
        log_file = log.open("wb")
        logger.info("booting machine %s: %s", name, shlex.join(argv))
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches pytest, whose
                # teardown then stops the container in order, rather than
                # hitting systemd-nspawn at the same time.
                start_new_session=True,
                preexec_fn=lambda: _enter_cgroups(cgroups),
                env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
                if unified_cgroup
                else None,
            )
        except BaseException:
            log_file.close()
            _remove_cgroups(cgroups)
            if writable is not None:
                writable.unmount()
            raise
        machine = cls(name, process, log, log_file, nsenter, private_network)
        machine._cgroups = cgroups
        machine._writable_root = writable
        try:
            machine._await_boot(Deadline.after(timeout), timeout)
        except BaseException:
            machine.stop()
            raise
        return machine

    def _await_boot(self, deadline: Deadline, timeout: float) -> None:
        """Wait for systemd inside, verify we really enter the container, then tidy up."""
        try:
            pid = wait_until(
                self._find_pid_1,
                timeout=deadline.remaining(),
                what="the container's systemd to start",
                interval=0.05,
            )
        except WaitTimeout as e:
            raise self._boot_error(str(e)) from e
        host_ns = _mount_ns("self")
        container_ns = _mount_ns(pid)
        if container_ns is None or container_ns == host_ns:
            raise self._boot_error(f"PID {pid} is not in a mount namespace of its own")
        self._pid, self._mount_ns = pid, container_ns

        last_state = "(no answer)"

        def system_state() -> str | None:
            nonlocal last_state
            self._require_alive()
            try:
                # Not self.run(): the boot is not verified yet, which is the point.
                result = self._enter(
                    ["systemctl", "is-system-running"],
                    check=False,
                    timeout=max(1.0, min(10.0, deadline.remaining())),
                )
            except CommandTimeout:
                last_state = "(systemctl is-system-running did not answer)"
                return None
            # Before systemd is up this prints nothing on stdout and "Failed to
            # connect to bus" on stderr; `initializing`/`starting` come next.
            last_state = result.stdout.strip() or result.stderr.strip() or "(no output)"
            return last_state if last_state in _BOOTED_STATES else None

        try:
            state = wait_until(
                system_state, timeout=deadline.remaining(), what="running", interval=0.2
            )
        except WaitTimeout as e:
            raise self._boot_error(
                f"systemd in the container did not reach running/degraded within "
                f"{timeout:g}s; last state: {last_state}"
            ) from e
        self._verify_inside()
        self._booted = True
        logger.info("machine %s booted (%s), PID 1 is host PID %d", self.name, state, pid)
        self._quiet_epmd()
        if self.private_network:
            self._settle_network()

    def _find_pid_1(self) -> int | None:
        """The container's PID 1 as the host sees it, once it has become systemd."""
        self._require_alive()
        # PID 1 is the child of systemd-nspawn. Its comm turns from
        # `systemd-nspawn` to `systemd` only at exec, after nspawn has set up
        # every namespace: entering it before then would enter half a container.
        for child in _children(self._process.pid):
            if _read(f"/proc/{child}/comm") == "systemd":
                return child
        return None

    def _verify_inside(self) -> None:
        """Check, through the same path as run(), that commands land in the container."""
        comm = self._enter(["cat", "/proc/1/comm"]).stdout.strip()
        if comm != "systemd":
            raise self._boot_error(f"/proc/1/comm inside is {comm!r}, not 'systemd'")
        inside_ns = self._enter(["readlink", "/proc/self/ns/mnt"]).stdout.strip()
        if inside_ns != self._mount_ns or inside_ns == _mount_ns("self"):
            raise self._boot_error(f"nsenter landed in mount namespace {inside_ns}")
        # --volatile=yes gives a fresh /etc, so systemd made a new machine id.
        host_id = _read("/etc/machine-id")
        inside_id = self._enter(["cat", "/etc/machine-id"]).stdout.strip()
        if host_id and inside_id == host_id:
            raise self._boot_error("/etc/machine-id inside is the host's")

    def _quiet_epmd(self) -> None:
        """Stop EPMD's socket, which the container enables but cannot serve.

        Debian's erlang package ships epmd.socket; first-boot presets enable
        it, and epmd.service then fails (217/USER: the fresh /etc has no
        `epmd` user). While the socket holds port 4369 every mix release dies
        at start with "register/listen error: epmd_close". With it stopped, a
        release starts its own EPMD as it would on a host without one.
        reset-failed then clears the unit the container broke, so a
        `degraded` state afterwards means a test's unit failed.
        """
        self.run(["systemctl", "stop", "epmd.socket", "epmd.service"], check=False)
        self.run(["systemctl", "reset-failed", "epmd.service", "epmd.socket"], check=False)

    def _settle_network(self) -> None:
        """Let network-online.target be reached at once, as on a connected host.

        With --private-network the container keeps CAP_NET_ADMIN, so
        systemd-networkd runs, and systemd-networkd-wait-online then waits
        for a link that is never configured (there is only `lo`): every unit
        with `After=network-online.target`, as generated services have, would
        sit in its start job for 2 minutes. Sharing the host's network, the
        same wait fails at once (networkd's ConditionCapability=CAP_NET_ADMIN
        is false), which is why this only shows up with a private network.
        """
        self.run(
            ["systemctl", "mask", "--runtime", "--now", "systemd-networkd-wait-online.service"]
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Halt the container and wait for systemd-nspawn to exit. Idempotent.

        SIGTERM asks nspawn to halt the container cleanly; a second SIGTERM
        forces it; SIGKILL is the last resort, after which a surviving PID 1
        (now orphaned) is killed too so no container outlives the tests.
        """
        # First of all: nothing may enter the container from now on.
        self._booted = False
        self._stopped = True
        # Shares of `timeout` granted to each signal in turn.
        steps = ((signal.SIGTERM, 0.6), (signal.SIGTERM, 0.25), (signal.SIGKILL, 0.15))
        try:
            for sig, share in steps:
                if self._process.poll() is not None:
                    break
                self._process.send_signal(sig)
                try:
                    self._process.wait(timeout=timeout * share)
                except subprocess.TimeoutExpired:
                    logger.warning("machine %s: still running after %s", self.name, sig.name)
            self._kill_orphaned_pid_1()
        finally:
            self._log_file.close()
            try:
                _remove_cgroups(self._cgroups)
            finally:
                # Only now: systemd-nspawn and the container's PID 1 are gone.
                if self._writable_root is not None:
                    self._writable_root.unmount()

    def _kill_orphaned_pid_1(self) -> None:
        if self._pid is None or self._mount_ns is None:
            return
        # Only if that pid is still the container's (pid reuse is possible).
        if _mount_ns(self._pid) != self._mount_ns:
            return
        logger.warning("machine %s: PID 1 outlived systemd-nspawn, killing it", self.name)
        try:
            os.kill(self._pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        pid, ns = self._pid, self._mount_ns
        try:
            wait_until(
                lambda: True if _mount_ns(pid) != ns else None,
                timeout=5.0,
                what=f"PID {pid} to exit",
            )
        except WaitTimeout:
            logger.error("machine %s: PID %d survived SIGKILL", self.name, pid)

    def __enter__(self) -> Machine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state -------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The container's PID 1, as a host PID (the child of systemd-nspawn)."""
        if self._pid is None:
            raise MachineError(f"machine {self.name} has no PID 1 (yet)")
        return self._pid

    @property
    def nspawn_pid(self) -> int:
        """The systemd-nspawn process: the one to signal to stop the container."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the boot was verified and the container has not stopped since."""
        return self._booted and not self._stopped and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The end of systemd-nspawn's output (the boot messages), without colours."""
        try:
            text = self.log_path.read_bytes().decode(errors="replace")
        except OSError as e:
            return f"(cannot read {self.log_path}: {e})"
        return "\n".join(_ANSI_RE.sub("", text).splitlines()[-lines:])

    def _boot_error(self, message: str) -> MachineError:
        return MachineError(
            f"machine {self.name}: {message}\n--- tail of {self.log_path} ---\n{self.log_tail()}"
        )

    def _require_alive(self) -> None:
        status = self._process.poll()
        if status is not None:
            raise self._boot_error(f"systemd-nspawn exited with status {status}")

    # -- running commands --------------------------------------------------

    def _enter(
        self,
        argv: Sequence[StrPath],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: StrPath | None = None,
    ) -> subprocess.CompletedProcess[str]:
        inner = [os.fspath(a) for a in argv]
        if cwd is not None:
            # Not `nsenter --wd=DIR`: util-linux 2.38 opens DIR *before*
            # entering the namespaces, so the command would run in the host's
            # directory of that name. env(1) changes directory once inside.
            inner = ["env", f"--chdir={os.fspath(cwd)}", *inner]
        return run(
            # --all enters every namespace of PID 1, and the mount namespace
            # brings its root and a cwd of "/" along with it.
            [self._nsenter, f"--target={self.pid}", "--all", "--", *inner],
            input=input,
            check=check,
            timeout=timeout,
            env={**_BASE_ENV, **(env or {})},
            where=f"in machine {self.name}",
            shown=[os.fspath(a) for a in argv],
        )

    def run(
        self,
        argv: Sequence[StrPath],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: StrPath | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the container as root; stdout and stderr captured as text.

        The environment is a minimal PATH/HOME/LANG plus `env`; the working
        directory is / unless `cwd` (a path inside) is given. With `check`, a
        non-zero status raises `CommandError` with argv, status and output.
        `timeout` kills nsenter (a process it started inside may live on).
        Refuses with `MachineError` unless the container is verified running.
        """
        self._check_enterable(argv)
        return self._enter(argv, input=input, check=check, timeout=timeout, env=env, cwd=cwd)

    def _check_enterable(self, argv: Sequence[StrPath]) -> None:
        if not self._booted:
            state = "was stopped" if self._stopped else "was never verified booted"
            raise MachineError(f"refusing to run {list(argv)}: machine {self.name} {state}")
        self._require_alive()
        # The pid could in theory be reused by a host process once PID 1 has
        # gone; entering that would run the command on the host.
        if _mount_ns(self.pid) != self._mount_ns:
            raise MachineError(f"machine {self.name}: PID {self.pid} is no longer its PID 1")

    def enter_argv(
        self, argv: Sequence[StrPath], env: Mapping[str, str] | None = None
    ) -> list[str]:
        """The host command line that runs `argv` inside, for a caller that starts it
        itself (on a pseudo-terminal, say). Checked like `run()`: refuses unless
        the container is verified running, so run it at once. The command gets
        the minimal PATH/HOME/LANG environment plus `env`, whatever the caller's.
        """
        self._check_enterable(argv)
        variables = [f"{k}={v}" for k, v in {**_BASE_ENV, **(env or {})}.items()]
        inner = ["env", "-i", *variables, *(os.fspath(a) for a in argv)]
        return [self._nsenter, f"--target={self.pid}", "--all", "--", *inner]

    def systemctl(
        self, *args: str, check: bool = True, timeout: float | None = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """`systemctl ARGS` inside the container."""
        return self.run(["systemctl", *args], check=check, timeout=timeout)

    def unit_property(self, unit: str, prop: str) -> str:
        """One property of ``unit`` as `systemctl show -p PROP --value` prints it."""
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def http_get(self, url: str, timeout: float = 10) -> str:
        """The body of GET ``url``, sent from inside the container, stripped."""
        code = (
            "import sys, urllib.request as u; "
            "print(u.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode().strip())"
        )
        return self.run(["python3", "-c", code, url, str(timeout)]).stdout.strip()

    def journalctl(
        self, *args: str, check: bool = True, timeout: float | None = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """`journalctl --no-pager ARGS` inside the container."""
        return self.run(["journalctl", "--no-pager", *args], check=check, timeout=timeout)

    def wait_for_journal(self, unit: str, needle: str, *, timeout: float = 30.0) -> str:
        """Poll the journal of `unit` until a message contains `needle`; return the messages.

        journald stores a line some milliseconds after the service wrote it,
        so a single `journalctl -u` right after an event can miss it.
        """
        last = ""

        def found() -> str | None:
            nonlocal last
            last = self.journalctl("-u", unit, "-o", "cat", check=False).stdout
            return last if needle in last else None

        try:
            return wait_until(found, timeout=timeout, what=f"{needle!r} in the journal of {unit}")
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}; its journal:\n{last.rstrip()}") from e


@dataclass(frozen=True)
class MachineCommand:
    """A program inside a machine, called like a function: `pyrelctl("status")`.

    Calls never raise on a non-zero status (`check=False` by default): tests
    assert on the returned `CompletedProcess` (returncode, stdout, stderr).
    """

    machine: Machine
    prefix: tuple[str, ...]

    def __call__(
        self,
        *args: StrPath,
        input: str | None = None,
        check: bool = False,
        timeout: float | None = 120.0,
        env: Mapping[str, str] | None = None,
        cwd: StrPath | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `PREFIX ARGS` inside the machine (see `Machine.run`)."""
        return self.machine.run(
            [*self.prefix, *args], input=input, check=check, timeout=timeout, env=env, cwd=cwd
        )
