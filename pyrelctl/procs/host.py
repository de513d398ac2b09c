"""What a release's processes and timers claim on the host, and the files they have there.

Reads, nothing changed: the deploy calls :func:`foreign_units` before it
writes a unit of a process or timer (exit 2, nothing written), ``pyrelctl
unit`` shows :func:`unit_files`, ``pyrelctl status APP`` prints
:func:`companions_status` (the only read here that asks systemd).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrelctl.errors import BadInput
from pyrelctl.hostclaims import UNIT_PATH, generated_for
from pyrelctl.layout import AppPaths
from pyrelctl.names import APP_NAME_RE
from pyrelctl.procs.units import wants_dir
from pyrelctl.release import Release
from pyrelctl.systemd import Systemd

#: Every unit an app named STEM (``APP-NAME``) would have: they must not exist
#: unless this app generated them (procs/units.py says why they could).
_STEM_UNITS = (
    "{stem}.service",
    "{stem}.socket",
    "{stem}.timer",
    "{stem}.path",
    "{stem}@.service",
    "{stem}@overlap.service",
)


def foreign_units(app: AppPaths, release: Release) -> list[Path]:
    """Paths that hold a name the release's processes and timers need, and are
    not this app's: another app's units, the host's (in any unit directory,
    where they would shadow or be shadowed), or an app of pyrelctl's named
    ``APP-NAME``."""
    layout = app.layout
    found: list[Path] = []
    for name in sorted({p.name for p in release.processes} | {t.name for t in release.timers}):
        stem = f"{app.name}-{name}"
        # An app of that name (none can be: longer than 31 or with "_").
        if APP_NAME_RE.fullmatch(stem):
            other = layout.app(stem)
            if other.releases.is_dir() or other.index_file.exists():
                found.append(other.releases.parent)
        for directory in UNIT_PATH:
            for pattern in _STEM_UNITS:
                path = layout.root / directory / pattern.format(stem=stem)
                if not os.path.lexists(path):
                    continue
                # This app's own, from an earlier release: the deploy rewrites it.
                if directory == "etc/systemd/system" and generated_for(path) == app.name:
                    continue
                found.append(path)
    return found


def check_units_free(app: AppPaths, release: Release) -> None:
    """Refuse a release whose process or timer units another app or the host holds."""
    foreign = foreign_units(app, release)
    if foreign:
        raise BadInput(
            f"{release.name} {release.version}: a process or timer of {app.name} would "
            f"replace or shadow {foreign[0]}",
            hint="rename the process or timer in release.toml, or install the app under "
            "another name (--app)",
        )


def unit_files(app: AppPaths) -> list[Path]:
    """This app's process and timer unit files on disk, with their drop-ins,
    and the links that start them with the app (for ``pyrelctl unit``)."""
    unit_dir = app.layout.unit_dir
    found: list[Path] = []
    for path in sorted(unit_dir.glob(f"{app.name}-*")):
        if path.suffix in (".service", ".timer") and generated_for(path) == app.name:
            found.append(path)
            found += sorted(unit_dir.glob(f"{path.name}.d/*.conf"))
    return found


def wanted_units(app: AppPaths) -> list[str]:
    """The units ``APP.service.wants/`` starts with the app (processes' instances,
    timers), sorted: what ``pyrelctl unit`` and ``status`` list."""
    directory = wants_dir(app.layout.unit_dir, app.name)
    try:
        return sorted(p.name for p in directory.iterdir() if p.is_symlink())
    except FileNotFoundError:
        return []


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
    for unit in wanted_units(app):
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
