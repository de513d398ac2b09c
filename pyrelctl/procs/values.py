"""The values of ``[processes.NAME]`` and ``[timers.NAME]``, and their JSON form.

Below everything else of pyrelctl (it imports nothing of it): the values
of a release (:class:`pyrelctl.release.Release`) hold them, and the parser
(``procs.manifest``) makes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Process:
    """A long-running command of the release, run as ``instances`` units."""

    name: str
    command: tuple[str, ...]
    instances: int = 1
    #: Seconds a stop may take before SIGKILL; None: the release's stop_timeout.
    stop_timeout: int | None = None
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Timer:
    """A command run on a schedule, one run at a time, from ``current``."""

    name: str
    command: tuple[str, ...]
    #: ``OnCalendar=`` expressions (systemd.time(7)); empty when ``every`` is set.
    on_calendar: tuple[str, ...] = ()
    #: Seconds between runs (counted from the last start); 0 with on_calendar.
    every: float = 0.0
    randomized_delay: float = 0.0
    #: Run once at start when a calendar time passed while the timer was
    #: stopped (the app stopped, the host down, a deploy restarting it).
    persistent: bool = True
    #: Longest run in seconds, then the job is stopped as failed; 0: no limit.
    timeout: float = 0.0
    stop_timeout: int | None = None
    environment: Mapping[str, str] = field(default_factory=dict)


def processes_from_json(data: Sequence[Mapping[str, Any]]) -> tuple[Process, ...]:
    """Processes as ``dataclasses.asdict`` wrote them into the release index."""
    return tuple(
        Process(
            name=d["name"],
            command=tuple(d["command"]),
            instances=int(d.get("instances", 1)),
            stop_timeout=d.get("stop_timeout"),
            environment=dict(d.get("environment", {})),
        )
        for d in data
    )


def timers_from_json(data: Sequence[Mapping[str, Any]]) -> tuple[Timer, ...]:
    """Timers as ``dataclasses.asdict`` wrote them into the release index."""
    return tuple(
        Timer(
            name=d["name"],
            command=tuple(d["command"]),
            on_calendar=tuple(d.get("on_calendar", ())),
            every=float(d.get("every", 0.0)),
            randomized_delay=float(d.get("randomized_delay", 0.0)),
            persistent=bool(d.get("persistent", True)),
            timeout=float(d.get("timeout", 0.0)),
            stop_timeout=d.get("stop_timeout"),
            environment=dict(d.get("environment", {})),
        )
        for d in data
    )
