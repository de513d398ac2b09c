"""Talking to systemd: the one module that imports pystemd.

Calls go straight to the D-Bus API (org.freedesktop.systemd1(5)) over one
shared connection, with known signatures: pystemd's ``Unit`` objects would
introspect (and parse XML) on every object, which costs more than the calls.
Everything systemd returns is bytes; it is converted to ``str``/``int`` here
and nowhere else.
"""

from __future__ import annotations

import importlib.machinery
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pyrelctl.errors import SystemdError

if TYPE_CHECKING:
    from pyrelctl.bootwindow import TermResender

DEST = b"org.freedesktop.systemd1"
MANAGER_PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"
UNIT = b"org.freedesktop.systemd1.Unit"
SERVICE = b"org.freedesktop.systemd1.Service"
SOCKET = b"org.freedesktop.systemd1.Socket"
JOB = b"org.freedesktop.systemd1.Job"
PROPERTIES = b"org.freedesktop.DBus.Properties"


@dataclass(frozen=True)
class UnitState:
    """A snapshot of a unit, as ``systemctl show`` would report it."""

    name: str
    load_state: str = "not-found"
    active_state: str = "inactive"
    sub_state: str = "dead"
    unit_file_state: str = ""
    main_pid: int = 0
    exec_main_pid: int = 0  # the last main process's, also once it exited
    invocation_id: str = ""
    result: str = ""
    exec_main_code: int = 0  # CLD_EXITED (1), CLD_KILLED (2), CLD_DUMPED (3)
    exec_main_status: int = 0
    n_restarts: int = 0  # automatic restarts (Restart=) since the last explicit start
    memory_bytes: int | None = None  # the unit's cgroup memory; None: not accounted
    active_enter_usec: int = 0
    state_change_usec: int = 0
    need_daemon_reload: bool = False  # the unit file changed on disk since the last reload
    listen: tuple[str, ...] = ()  # a socket unit's addresses, as ``systemctl show -p Listen``
    #: A job is queued or running for the unit (``systemctl list-jobs``): its
    #: state is on the way somewhere (a restart's stop half, say).
    has_job: bool = False

    @property
    def running(self) -> bool:
        return self.active_state == "active" and self.sub_state in ("running", "listening")

    def exit_description(self) -> str:
        """How the main process ended, in words (for failure reports)."""
        if self.exec_main_code == 1:
            return f"exited with status {self.exec_main_status}"
        if self.exec_main_code in (2, 3):
            import signal

            try:
                name = signal.Signals(self.exec_main_status).name
            except ValueError:
                name = str(self.exec_main_status)
            dumped = " (core dumped)" if self.exec_main_code == 3 else ""
            return f"killed by {name}{dumped}"
        return "not started"


@dataclass(frozen=True)
class JobResult:
    """How a start/stop/restart job ended: done, failed, timeout, canceled, ..."""

    unit: str
    result: str
    #: For a job that timed out while still queued: the jobs it waited for, as
    #: "UNIT (TYPE, STATE)" (``systemctl list-jobs --after``). Empty otherwise.
    waiting_for: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.result == "done"

    def describe_wait(self) -> str:
        """What held a job that never began, in words; "" if nothing did."""
        if not self.waiting_for:
            return ""
        return "its start job never began: it waits for " + ", ".join(self.waiting_for)


class Systemd:
    """The systemd manager of the running system, through pystemd."""

    def __init__(self) -> None:
        self._bus: Any = _dbuslib().DBus()
        try:
            self._bus.open()
        except Exception as e:  # pystemd raises DBusError (no common base to name)
            raise SystemdError(
                f"cannot reach systemd over D-Bus ({e})",
                hint="is systemd PID 1 and the system bus up? Use --root DIR to work offline",
            ) from e
        self._jobs: dict[bytes, str] = {}
        self._resenders: dict[bytes, TermResender] = {}  # a stop's SIGTERM again (bootwindow.py)
        self._subscribed = False
        jobs = self._jobs

        def on_job_removed(msg: Any, error: Any = None, userdata: Any = None) -> None:
            msg.process_reply(False)
            _id, job, _unit, result = msg.body
            jobs[bytes(job)] = _text(result)

        # A plain function (pystemd sets attributes on it), kept alive by this
        # attribute: pystemd holds only a borrowed reference.
        self._on_job_removed: Callable[..., None] = on_job_removed

    def close(self) -> None:
        self._bus.close()

    # -- raw calls ---------------------------------------------------------

    def _call(
        self,
        method: bytes,
        signature: bytes,
        *args: Any,
        path: bytes = MANAGER_PATH,
        interface: bytes = MANAGER,
    ) -> Any:
        apply_signature = _dbuslib().apply_signature

        try:
            return self._bus.call_method(
                DEST, path, interface, method, apply_signature(signature, list(args))
            ).body
        except Exception as e:
            raise SystemdError(f"systemd refused {method.decode()}: {_dbus_message(e)}") from e

    def _unit_path(self, unit: str) -> bytes:
        path: bytes = self._call(b"LoadUnit", b"s", unit.encode())
        return path

    def _get_all(self, path: bytes, interface: bytes) -> dict[bytes, Any]:
        props: dict[bytes, Any] = self._call(
            b"GetAll", b"s", interface, path=path, interface=PROPERTIES
        )
        return props

    # -- manager -----------------------------------------------------------

    def reload(self) -> None:
        """``systemctl daemon-reload``: returns once systemd has re-read its units."""
        self._call(b"Reload", b"")

    def enable(self, unit: str) -> None:
        """Enable ``unit`` for its ``[Install]`` targets (then reload)."""
        self._call(b"EnableUnitFiles", b"asbb", [unit.encode()], False, True)

    def disable(self, unit: str) -> None:
        self._call(b"DisableUnitFiles", b"asb", [unit.encode()], False)

    def version(self) -> str:
        """The running systemd's version string, e.g. ``252.39-1~deb12u2``."""
        value = self._call(b"Get", b"ss", MANAGER, b"Version", interface=PROPERTIES)
        return _text(value)

    def reset_failed(self, unit: str) -> None:
        """Clear the failed state and the start rate-limit counter of ``unit``."""
        # On the unit object after LoadUnit: the manager's ResetFailedUnit
        # refuses units that are not loaded in memory right now.
        self._call(b"ResetFailed", b"", path=self._unit_path(unit), interface=UNIT)

    def state(self, unit: str) -> UnitState:
        """Read a unit's state (two D-Bus calls after the unit is loaded)."""
        path = self._unit_path(unit)
        u = self._get_all(path, UNIT)
        s = self._get_all(path, SERVICE) if unit.endswith(".service") else {}
        listen: list[Any] = []
        if unit.endswith(".socket"):
            listen = self._call(b"Get", b"ss", SOCKET, b"Listen", path=path, interface=PROPERTIES)
        invocation = u.get(b"InvocationID", b"")
        return UnitState(
            name=unit,
            load_state=_text(u.get(b"LoadState")),
            active_state=_text(u.get(b"ActiveState")),
            sub_state=_text(u.get(b"SubState")),
            unit_file_state=_text(u.get(b"UnitFileState")),
            main_pid=int(s.get(b"MainPID", 0)),
            exec_main_pid=int(s.get(b"ExecMainPID", 0)),
            invocation_id=bytes(invocation).hex() if invocation else "",
            result=_text(s.get(b"Result")),
            exec_main_code=int(s.get(b"ExecMainCode", 0)),
            exec_main_status=int(s.get(b"ExecMainStatus", 0)),
            n_restarts=int(s.get(b"NRestarts", 0)),
            memory_bytes=_uint64(s.get(b"MemoryCurrent")),
            active_enter_usec=int(u.get(b"ActiveEnterTimestamp", 0)),
            state_change_usec=int(u.get(b"StateChangeTimestamp", 0)),
            need_daemon_reload=bool(u.get(b"NeedDaemonReload", False)),
            listen=tuple(_text(address) for _kind, address in listen),
            has_job=_job_id(u.get(b"Job")) != 0,
        )

    def unit_pids(self, unit: str) -> set[int]:
        """The processes in ``unit``'s control group now (``systemctl status``'s tree)."""
        try:
            processes = self._call(b"GetUnitProcesses", b"s", unit.encode())
        except SystemdError:
            return set()  # not loaded or not running: no processes
        return {int(pid) for _cgroup, pid, _cmdline in processes}

    # -- jobs --------------------------------------------------------------

    def _subscribe(self) -> None:
        if self._subscribed:
            return
        # The match must exist before the job is queued, or a fast job's
        # JobRemoved could come and go unseen; Subscribe() makes systemd emit
        # job signals to us at all.
        self._bus.match_signal(DEST, MANAGER_PATH, MANAGER, b"JobRemoved", self._on_job_removed)
        self._call(b"Subscribe", b"")
        self._subscribed = True

    def _run_job(self, method: bytes, unit: str, timeout: float) -> JobResult:
        return self.wait_job(self._queue_job(method, unit), unit, timeout=timeout)

    def _queue_job(self, method: bytes, unit: str) -> bytes:
        self._subscribe()
        resender = None
        if method in (b"StopUnit", b"RestartUnit"):
            # The main process it stops may be a BEAM in its boot window,
            # which drops SIGTERM (bootwindow.py). Stopping APP.socket stops
            # APP.service too (its Requires=).
            from pyrelctl.bootwindow import TermResender

            if unit.endswith(".socket"):
                unit_stopped = unit.removesuffix(".socket") + ".service"
            else:
                unit_stopped = unit
            if unit_stopped.endswith(".service"):
                resender = TermResender.for_pid(self.state(unit_stopped).main_pid)
        job: bytes = self._call(method, b"ss", unit.encode(), b"replace")
        if resender is not None:
            self._resenders[job] = resender
        return job

    def queue_restart(self, unit: str) -> bytes:
        """Queue a restart of ``unit`` and return at once with the job; see :meth:`wait_job`."""
        return self._queue_job(b"RestartUnit", unit)

    def wait_job(self, job: bytes, unit: str, *, timeout: float = 90.0) -> JobResult:
        """Wait until systemd has finished ``job`` (of ``unit``), or ``timeout`` passed."""
        from pyrelctl.bootwindow import EVERY

        deadline = time.monotonic() + timeout
        resender = self._resenders.pop(job, None)
        try:
            while True:
                while not self._bus.process().is_empty():
                    pass
                if job in self._jobs:
                    return JobResult(unit, self._jobs.pop(job))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return JobResult(unit, "timeout", self._waiting_for(job, unit))
                if resender is not None:
                    resender.tick()
                    remaining = min(remaining, EVERY)
                self._bus.wait(int(remaining * 1_000_000))
        finally:
            if resender is not None:
                resender.close()

    def _waiting_for(self, job: bytes, unit: str) -> tuple[str, ...]:
        """The queued jobs ``job`` (of ``unit``) waits for, if it has not begun.

        A unit ordered after another (``After=network-online.target``, a
        drop-in's dependency) starts no process until that unit's job is done:
        its own journal is empty, and only the job queue says why: the jobs of
        the units in its ``After=`` (org.freedesktop.systemd1(5); Job.GetAfter()
        answered nothing for a waiting restart job in systemd 252).
        """
        try:
            state = _text(self._call(b"Get", b"ss", JOB, b"State", path=job, interface=PROPERTIES))
            if state != "waiting":
                return ()
            after = {
                _text(u)
                for u in self._call(
                    b"Get", b"ss", UNIT, b"After", path=self._unit_path(unit), interface=PROPERTIES
                )
            }
            jobs = self._call(b"ListJobs", b"")
        except SystemdError:
            return ()  # the job ended meanwhile
        return tuple(
            f"{_text(u)} ({_text(t)}, {_text(st)})"
            for _i, u, t, st, _j, _p in jobs
            if _text(u) in after
        )

    def start(self, unit: str, *, timeout: float = 90.0) -> JobResult:
        """Start ``unit`` and wait for the job (for Type=notify: until READY=1)."""
        return self._run_job(b"StartUnit", unit, timeout)

    def stop(self, unit: str, *, timeout: float = 90.0) -> JobResult:
        return self._run_job(b"StopUnit", unit, timeout)

    def restart(self, unit: str, *, timeout: float = 90.0) -> JobResult:
        return self._run_job(b"RestartUnit", unit, timeout)


class OfflineSystemd(Systemd):
    """Stands in for systemd under ``--root``: no call reaches the running system."""

    def __init__(self) -> None:  # no bus
        pass

    def close(self) -> None:
        pass

    def _call(
        self,
        method: bytes,
        signature: bytes,
        *args: Any,
        path: bytes = MANAGER_PATH,
        interface: bytes = MANAGER,
    ) -> Any:
        raise SystemdError(
            f"{method.decode()} needs the running systemd, not --root",
            hint="run without --root on the host itself",
        )


def _dbuslib() -> ModuleType:
    """pystemd's D-Bus binding (``pystemd.dbuslib``), and nothing else of pystemd.

    Imported late: offline mode needs no libsystemd. And without the package's
    ``__init__``: that one loads pystemd's introspecting unit API and lxml
    with it, about 20 ms of every command's start (bench/: `pyrelctl status`
    has a 150 ms budget) for code this module never calls. The binding itself
    imports only ``pystemd.dbusexc`` and ``pystemd.utils``, which load as
    submodules of a bare package object pointing at pystemd's directory.
    """
    if "pystemd" not in sys.modules:
        spec = importlib.machinery.PathFinder.find_spec("pystemd")  # finds it, runs nothing
        if spec is not None and spec.submodule_search_locations is not None:
            package = ModuleType("pystemd")
            package.__path__ = list(spec.submodule_search_locations)
            sys.modules["pystemd"] = package
    import pystemd.dbuslib  # noqa: F401  (registers it in sys.modules)

    return sys.modules["pystemd.dbuslib"]


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _job_id(value: Any) -> int:
    # Unit.Job is (uint32 id, object path); (0, "/") when there is none.
    try:
        return int(value[0])
    except (TypeError, ValueError, IndexError):
        return 0


def _uint64(value: Any) -> int | None:
    """A cgroup counter; systemd sends UINT64_MAX ("[not set]") when it has none."""
    if value is None or int(value) >= 2**64 - 1:
        return None
    return int(value)


def _dbus_message(e: Exception) -> str:
    # pystemd's DBusBaseError keeps systemd's own words in err_message (bytes).
    message = getattr(e, "err_message", None)
    if message:
        return message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    return str(e) or type(e).__name__
