"""The state of an app's process instances and timers, for ``pyrelctl status APP``.

Apart from procs/host.py because of what it imports: only the layout and the
systemd client, which ``status`` loads anyway. procs.units (and with it the
release and unit-rendering stack) would add about 70 ms to every ``status
APP`` (measured with ``python -X importtime``; bench/ keeps status fast),
so the one name it needs from there, ``APP.service.wants/``, is spelled here
too (procs.units.wants_dir; tests/cli/test_scale_cli.py lists instances
through both).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pyrelctl.layout import AppPaths
from pyrelctl.systemd import Systemd


@dataclass(frozen=True)
class InstanceStatus:
    """One process instance, for ``pyrelctl status APP``."""

    unit: str
    active_state: str = "offline"
    sub_state: str = ""
    since: float | None = None
    main_pid: int = 0
    restarts: int = 0
    #: The release its main process runs (/proc/PID/cwd), None if not known.
    release: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TimerStatus:
    """One timer and its job's last run, for ``pyrelctl status APP``."""

    unit: str
    active_state: str = "offline"
    last: float | None = None  # LastTriggerUSec: when the job last started
    next: float | None = None  # the next elapse, wall clock
    #: The job's last run: systemd's Result ("success", "exit-code", ...) and
    #: ExecMainStatus; "" while it never ran (since the boot).
    result: str = ""
    exit_status: int = 0
    job_state: str = ""  # "activating" while a run is in progress

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _seconds(usec: int) -> float | None:
    return usec / 1e6 if usec else None


def companions_status(
    app: AppPaths, systemd: Systemd | None
) -> tuple[list[InstanceStatus], list[TimerStatus]]:
    """The state of every unit ``APP.service.wants/`` starts with the app: each
    instance (and the release its main process runs) and each timer (its last
    and next run, its job's last result). ``systemd`` None (offline): the
    links alone."""
    instances: list[InstanceStatus] = []
    timers: list[TimerStatus] = []
    for unit in _wanted(app):
        if not unit.startswith(f"{app.name}-"):
            continue  # the operator's own `systemctl add-wants`
        if unit.endswith(".timer"):
            timers.append(_timer(app, unit, systemd))
        elif unit.endswith(".service"):
            instances.append(_instance(app, unit, systemd))
    return instances, timers


def _instance(app: AppPaths, unit: str, systemd: Systemd | None) -> InstanceStatus:
    if systemd is None:
        return InstanceStatus(unit)
    state = systemd.state(unit)
    release = app.process_version(state.main_pid)[0] if state.main_pid else None
    return InstanceStatus(
        unit=unit,
        active_state=state.active_state,
        sub_state=state.sub_state,
        since=_seconds(state.state_change_usec),
        main_pid=state.main_pid,
        restarts=state.n_restarts,
        release=release,
    )


def _timer(app: AppPaths, unit: str, systemd: Systemd | None) -> TimerStatus:
    if systemd is None:
        return TimerStatus(unit)
    state = systemd.state(unit)
    timer = systemd.timer_state(unit)
    job = systemd.state(unit.removesuffix(".timer") + ".service")
    ran = bool(job.invocation_id or timer.last_trigger_usec)
    return TimerStatus(
        unit=unit,
        active_state=state.active_state,
        last=_seconds(timer.last_trigger_usec),
        next=_seconds(timer.next_elapse_usec) if state.active_state == "active" else None,
        result=job.result if ran else "",
        exit_status=job.exec_main_status,
        job_state=job.active_state,
    )


def _wanted(app: AppPaths) -> list[str]:
    """The units ``APP.service.wants/`` starts with the app (procs.host.wanted_units)."""
    directory = app.layout.unit_dir / f"{app.name}.service.wants"
    try:
        return sorted(p.name for p in directory.iterdir() if p.is_symlink())
    except FileNotFoundError:
        return []
