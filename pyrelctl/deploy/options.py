"""What a deploy is asked to do (:class:`InstallOptions`) and what it answers (:class:`Outcome`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrelctl.defaults import DEFAULT_KEEP, DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT
from pyrelctl.release import HealthCheck


@dataclass(frozen=True)
class InstallOptions:
    """What ``install`` (and ``rollback``) were asked to do."""

    app: str | None = None
    start: bool = True
    timeout: float = DEFAULT_TIMEOUT
    grace: float | None = None  # None: the app's remembered grace, else DEFAULT_GRACE
    keep: int = DEFAULT_KEEP
    wait_lock: bool = True
    max_bytes: int = DEFAULT_MAX_BYTES
    health: HealthCheck | None = None  # remembered for the app, overriding the release's
    reset_health: bool = False  # forget the remembered health check
    listen: tuple[str, ...] = ()  # remembered for the app, overriding the release's [socket]
    reset_listen: bool = False  # forget the remembered socket setting
    run_hooks: bool = True  # the release's pre_switch / post_switch hooks
    signature: Path | None = None  # default: ARTIFACT.sig, when the host requires one
    allow: tuple[str, ...] = ()  # sandbox widenings the host allows (allowances.py); remembered
    reset_allow: bool = False  # forget the remembered allowances first
    allow_downgrade: bool = False  # a signed release older than the current one
    env: dict[str, str] | None = None  # configuration set with this deploy (a new generation)
    watch: float | None = None  # seconds to watch after the deploy (watch.py); remembered
    watch_restarts: int | None = None  # restarts in the window that roll back; remembered
    strategy: str | None = None  # "restart" or "overlap" (deploy/strategy.py); remembered


@dataclass(frozen=True)
class Outcome:
    """The result of an install or rollback, as ``--json`` prints it."""

    app: str
    action: str
    version: str
    previous: str | None
    changed: bool
    started: bool
    state: str = ""
    main_pid: int = 0
    pruned: tuple[str, ...] = ()
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
