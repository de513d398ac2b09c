"""The overlap strategy: the new release proves itself beside the running one.

One listening socket, two services (docs/zero-downtime.md says why this
mechanism): ``APP.socket`` holds the app's listeners; the running release
accepts from them in ``APP.service``; the new release starts in
``APP@overlap.service``, which names the same socket unit in ``Sockets=``,
so systemd passes it the same descriptors (systemd.service(5): "the same
socket file descriptors may be passed to multiple processes
simultaneously"). Both accept from one queue: no connection waits for a
start. The deploy then runs:

1. point the ``next`` link to ``releases/VERSION``, start ``APP@overlap``
   through it and verify it as a deploy does (its own READY=1, a health
   check sent to it alone through owner.py, the grace period) while the
   old release keeps serving;
2. if it fails: stop it. The old release never stopped (exit 3);
3. else move ``current`` and restart ``APP.service``: the old release stops
   gracefully while ``APP@overlap`` serves, and ``APP.service`` comes up
   with the new release (verified again, without a second grace period);
4. stop ``APP@overlap`` gracefully and remove ``next``.

So the app keeps its one name for systemctl, the journal, boot and
``pyrelctl rpc``, and every release that serves for good runs in
``APP.service``. The price is a second start of the new release, with both
running for a moment (twice the memory). A BEAM node gets its own node name
in the overlap unit (``NAME_overlap@HOST``), through an environment file
read after the operator's.

The overlap unit runs whatever ``next`` points to, so its file reads the
same from one deploy to the next: it is written once (again only when the
app's settings change it) and stays, stopped, between deploys. A deploy
makes systemd re-read no unit (a daemon-reload takes ~170 ms on an idle
container, more on a host with many units). ``next`` is the sign that an
overlap deploy runs or was interrupted (:meth:`Overlap.exists`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrelctl.deploy import owner
from pyrelctl.deploy.readiness import Failure, Readiness, Watcher
from pyrelctl.hostfiles import symlink_atomic, write_atomic
from pyrelctl.layout import AppPaths
from pyrelctl.release import Kind, Release
from pyrelctl.socketunit import effective_socket
from pyrelctl.systemd import UnitState
from pyrelctl.transient import RUNTIME_PARENT
from pyrelctl.unitfiles import write_unit
from pyrelctl.units import ServiceSpec, default_environment_files, overlap_unit

if TYPE_CHECKING:
    from pyrelctl.deploy import health
    from pyrelctl.deploy.host import Host

INSTANCE = "overlap"

#: The niceness the next release boots with beside the running one (Nice= of
#: the overlap unit): a BEAM's boot keeps every core busy for seconds, and on
#: a small host the clients of the release that serves would wait for it.
STARTING_NICE = 10

#: Signs in a failed overlap start's journal that the release cannot run
#: twice at once, whatever its version: then the deploy restarts instead.
CANNOT_RUN_TWICE = (
    ("address already in use", "a port it binds itself is taken by the running release"),
    ("eaddrinuse", "a port it binds itself is taken by the running release"),
    ("in use by another erlang node", "its BEAM node name is taken by the running release"),
    ("is already locked", "a lock it takes is held by the running release"),
    ("could not acquire lock", "a lock it takes is held by the running release"),
)


def node_name(node: str) -> str:
    """The overlap unit's BEAM node for the service's ``node`` (``NAME@HOST``)."""
    name, at, host = node.partition("@")
    return f"{name}_{INSTANCE}{at}{host}"


def renice(pids: Iterable[int], nice: int) -> int:
    """Set every thread of ``pids`` to ``nice`` (on Linux a niceness belongs
    to a thread, and threads made later inherit their maker's); how many were
    set. Best effort: a thread may be gone, and without CAP_SYS_NICE a lower
    niceness is refused (setpriority(2)): clients would only wait longer."""
    done = 0
    for pid in pids:
        try:
            tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except OSError:
                continue
            done += 1
    return done


class Overlap:
    """The overlap unit of one app: written, started, verified, stopped, removed."""

    def __init__(self, host: Host, app: AppPaths) -> None:
        self.host = host
        self.systemd = host.systemd
        self.app = app
        self.unit = app.overlap_name
        self.path = app.overlap_file
        self.dropins = app.overlap_file.with_name(f"{self.unit}.d")
        self.env_file = app.etc / "overlap.env"

    @property
    def runtime_directory(self) -> str:
        # Not /run/APP: systemd removes a unit's RuntimeDirectory= when the
        # unit stops, and that one belongs to APP.service.
        return f"{RUNTIME_PARENT}/{self.app.name}-{INSTANCE}"

    def exists(self) -> bool:
        """Whether an overlap deploy runs, or was interrupted: ``next`` is there."""
        return self.app.next_link.is_symlink()

    # -- the start beside the running release -------------------------------

    def start(
        self, release: Release, settings: dict[str, Any], readiness: Readiness
    ) -> UnitState | Failure:
        """Start ``release`` beside the running one and verify it there."""
        files = self._write(release, settings)
        service = self.app.service_name
        connect = owner.connector(
            self.unit,
            lambda: self.systemd.unit_pids(self.unit),
            lambda: self.systemd.unit_pids(service),
        )
        runner = self._command_runner(release, files)
        watcher = Watcher(self.systemd, self.host.say)
        return watcher.restart_and_verify(
            self.unit,
            release.version,
            readiness,
            runner,
            connect,
            action="starting beside the running release:",
        )

    def _write(self, release: Release, settings: dict[str, Any]) -> tuple[str, ...]:
        app = self.app
        symlink_atomic(f"releases/{release.version}", app.next_link)
        files = default_environment_files(app.name, release)
        if release.kind is Kind.MIX:
            node = node_name(self._service_node())
            write_atomic(self.env_file, f"RELEASE_NODE={node}\n".encode(), mode=0o600)
            files = (*files, str(Path("/", self.env_file.relative_to(self.host.layout.root))))
        spec = ServiceSpec(
            app=app.name,
            release=release,
            environment_files=files,
            credentials=tuple(app.secrets()),
            socket=effective_socket(settings, release),
        )
        unit = overlap_unit(
            spec,
            spec.app_dir / app.next_link.name,
            runtime_directory=self.runtime_directory,
            starting_nice=STARTING_NICE,
        )
        changed = write_unit(app, self.path, unit)
        changed |= self._link_dropins()
        if changed:
            self.systemd.reload()
        return files

    def _link_dropins(self) -> bool:
        """The operator's drop-ins (``systemctl edit APP``: limits, environment)
        apply to the release wherever it runs: each ``APP.service.d/*.conf`` is
        linked from ``APP@overlap.service.d/``. A link to the directory itself
        would not do: systemd 252 ignores a drop-in directory that is a symlink
        (seen in tests/system/test_overlap.py)."""
        source = self.app.dropin_dir
        wanted = sorted(p.name for p in source.glob("*.conf")) if source.is_dir() else []
        have = sorted(p.name for p in self.dropins.iterdir()) if self.dropins.is_dir() else []
        if wanted == have:
            return False
        self._remove_dropins()
        if wanted:
            self.dropins.mkdir(mode=0o755)
            for name in wanted:
                symlink_atomic(f"../{source.name}/{name}", self.dropins / name)
        return True

    def _remove_dropins(self) -> None:
        if self.dropins.is_symlink() or self.dropins.is_file():
            self.dropins.unlink()
        elif self.dropins.is_dir():
            for link in self.dropins.iterdir():
                link.unlink()
            self.dropins.rmdir()

    def _service_node(self) -> str:
        """``RELEASE_NODE`` as ``APP.service`` gets it: pyrelctl's default, or the
        operator's env files (which override it, in EnvironmentFile= order)."""
        from pyrelctl.appconfig import envfile
        from pyrelctl.appconfig.generations import unit_path
        from pyrelctl.errors import PyrelctlError
        from pyrelctl.units import mix_environment

        node = mix_environment(self.app.name)["RELEASE_NODE"]
        root = self.host.layout.root
        for path in (self.app.etc / "env", root / unit_path(self.app.name).lstrip("/")):
            with contextlib.suppress(OSError, PyrelctlError):
                text = path.read_text(encoding="utf-8")
                node = envfile.parse(text, source=str(path)).get("RELEASE_NODE", node)
        return node

    def _command_runner(self, release: Release, files: Sequence[str]) -> health.CommandRunner:
        """A ``[health] command`` runs from the new release, with its node name."""
        from pyrelctl.deploy.hooks import run_as_service

        root = self.host.layout.root
        release_dir = self.app.release(release.version)

        def run_check(argv: Sequence[str], timeout: float) -> tuple[int, str]:
            return run_as_service(
                root,
                self.app,
                release,
                argv,
                purpose="health",
                timeout=timeout,
                release_dir=release_dir,
                environment_files=files,
            )

        return run_check

    @staticmethod
    def cannot_run_twice(failure: Failure) -> str | None:
        """Why the failed start says the release cannot run twice at once, if it does."""
        text = "\n".join(failure.journal).lower()
        for sign, reason in CANNOT_RUN_TWICE:
            if sign in text:
                return reason
        return None

    # -- the end -------------------------------------------------------------

    def serve_alone(self) -> None:
        """Before APP.service stops to take over: the overlap unit, about to
        serve alone, gets the niceness the running release has (the app's
        own, Nice= of APP.service or 0). Not more: a BEAM's schedulers spin
        while they wait for work, and above its clients' niceness they keep
        the clients waiting (seen in bench/ with niceness -5)."""
        state = self.systemd.state(self.app.service_name)
        try:
            nice = os.getpriority(os.PRIO_PROCESS, state.main_pid) if state.main_pid else 0
        except OSError:
            nice = 0
        renice(self.systemd.unit_pids(self.unit), nice)

    def stop(self, *, timeout: float) -> None:
        """Stop the overlap unit gracefully (its requests in flight finish) and
        remove ``next``; the unit file stays for the next deploy."""
        state = self.systemd.state(self.unit)
        if state.active_state not in ("inactive", "failed") or state.main_pid:
            self.systemd.stop(self.unit, timeout=timeout)
        if state.load_state != "not-found":
            with contextlib.suppress(Exception):
                self.systemd.reset_failed(self.unit)  # gone from `systemctl --failed` too
        if self.env_file.exists():
            self.env_file.unlink()
        if self.app.next_link.is_symlink():
            self.app.next_link.unlink()

    def recover(self) -> str | None:
        """After an interrupted overlap: exactly one release serves, in ``APP.service``.

        The service is started first if it does not run (a deploy killed
        while it restarted), so that stopping the overlap unit never leaves
        nothing serving. A deploy killed after it moved ``current`` but before
        ``APP.service`` restarted leaves the old release serving there: then
        ``current`` goes back to the release the service runs, which the
        interrupted deploy never replaced.
        """
        if not self.exists() and not self.systemd.state(self.unit).running:
            return None
        service = self.app.service_name
        state = self.systemd.state(service)
        if not state.running:
            self.systemd.reset_failed(service)
            self.systemd.start(service)
            state = self.systemd.state(service)
        self.stop(timeout=90.0)
        done = f"stopped {self.unit}, left by an interrupted overlap deploy"
        running, _why = self.app.process_version(state.main_pid) if state.main_pid else (None, "")
        if (
            running is not None
            and running != self.app.current_version()
            and self.app.release(running).is_dir()
        ):
            symlink_atomic(f"releases/{running}", self.app.current)
            done += f"; current -> releases/{running}, the release {service} runs"
        return done
