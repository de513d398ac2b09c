"""What a release is: its kind, name, version, commands and service settings.

The values only, and how pyrelctl's release index stores them (JSON):
:mod:`pyrelctl.manifest` detects a release in an artifact and reads its
release.toml into these values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pyrelctl.mixlogger import LoggerMode
from pyrelctl.procs.values import Process, Timer, processes_from_json, timers_from_json
from pyrelctl.sockets import Socket, socket_from_json

#: The verbs a release may declare, in the order ``unit``/``--help`` show them.
VERBS = ("start", "stop", "rpc", "eval", "remote", "pid", "version")

#: ``TimeoutStopSec=`` unless ``[service] stop_timeout`` says otherwise: how long
#: a stopping release may take to finish its requests in flight before
#: systemd kills it (gunicorn's graceful_timeout is 30 s too).
DEFAULT_STOP_TIMEOUT = 30


class Kind(StrEnum):
    MIX = "mix"
    PYTHON = "python"
    GENERIC = "generic"


class ServiceType(StrEnum):
    """systemd ``Type=``: ``notify`` when the release sends READY=1 itself."""

    EXEC = "exec"
    NOTIFY = "notify"


class HealthKind(StrEnum):
    HTTP = "http"
    TCP = "tcp"
    COMMAND = "command"


@dataclass(frozen=True)
class HealthCheck:
    """How to tell that a started release really serves."""

    kind: HealthKind
    http: str = ""
    tcp: str = ""
    command: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind is HealthKind.COMMAND:
            return "command " + " ".join(self.command)
        return f"{self.kind} {self.http or self.tcp}"


@dataclass(frozen=True)
class Sandbox:
    """The exceptions a release asks for from pyrelctl's hardened defaults
    (``[service]`` in release.toml; docs/hardening.md)."""

    #: False for runtimes that need writable+executable memory (cffi callbacks,
    #: some JITs); the BEAM's JIT and CPython work with it on.
    memory_deny_write_execute: bool = True
    #: Grants CAP_NET_BIND_SERVICE, to listen on a port below 1024.
    bind_privileged_ports: bool = False
    #: Absolute paths outside the app's own directories the service may write.
    writable_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Release:
    """A release as detected from its artifact."""

    name: str  # the release's own name: bin/<name> for mix
    version: str
    kind: Kind
    commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    service_type: ServiceType = ServiceType.EXEC
    health: HealthCheck | None = None
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    sandbox: Sandbox = field(default_factory=Sandbox)
    #: Listening sockets systemd holds for the service (socket activation).
    socket: Socket | None = None
    #: Seconds a stop may take (graceful shutdown) before SIGKILL.
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    #: Seconds to watch the release after its deploy (``[service] watch``); 0: no watch.
    watch: float = 0.0
    #: How it replaces the running release (``[service] strategy``, deploy/strategy.py):
    #: "restart", "overlap", or "" for pyrelctl's choice.
    strategy: str = ""
    #: ``[processes.NAME]`` and ``[timers.NAME]`` (procs/manifest.py), sorted by name.
    processes: tuple[Process, ...] = ()
    timers: tuple[Timer, ...] = ()
    #: mix: ``MAJOR.MINOR`` of the release's Elixir Logger (``lib/logger-VSN``),
    #: "" if unknown; with :attr:`logger` it decides the VM's logging flags.
    elixir_logger: str = ""
    #: mix: who sets up the VM's logging (``[service] logger``, mixlogger.py).
    logger: LoggerMode = LoggerMode.PYRELCTL

    def command(self, verb: str) -> tuple[str, ...] | None:
        return self.commands.get(verb)


# -- commands -----------------------------------------------------------------


def python_commands(name: str) -> dict[str, tuple[str, ...]]:
    """The verbs of a python release's generated ``bin/<name>`` (no ``stop``:
    systemd's SIGTERM stops it)."""
    return {verb: (f"bin/{name}", verb) for verb in VERBS if verb != "stop"}


def mix_commands(name: str) -> dict[str, tuple[str, ...]]:
    """The verbs of a mix release's ``bin/<name>`` script."""
    return {verb: (f"bin/{name}", verb) for verb in VERBS}


# -- serialisation (pyrelctl's release index) ------------------------------------


def release_to_json(release: Release) -> dict[str, Any]:
    data = dataclasses.asdict(release)
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}


def health_to_json(check: HealthCheck) -> dict[str, Any]:
    return {
        "kind": check.kind.value,
        "http": check.http,
        "tcp": check.tcp,
        "command": list(check.command),
    }


def health_from_json(data: dict[str, Any]) -> HealthCheck:
    return HealthCheck(
        HealthKind(data["kind"]),
        http=data.get("http", ""),
        tcp=data.get("tcp", ""),
        command=tuple(data.get("command", ())),
    )


def release_from_json(data: dict[str, Any]) -> Release:
    health = data.get("health")
    return Release(
        name=data["name"],
        version=data["version"],
        kind=Kind(data["kind"]),
        commands={k: tuple(v) for k, v in data.get("commands", {}).items()},
        service_type=ServiceType(data.get("service_type", "exec")),
        health=health_from_json(health) if health else None,
        hooks={k: tuple(v) for k, v in data.get("hooks", {}).items()},
        environment=dict(data.get("environment", {})),
        description=data.get("description", ""),
        sandbox=Sandbox(
            **{
                **data.get("sandbox", {}),
                "writable_paths": tuple(data.get("sandbox", {}).get("writable_paths", ())),
            }
        ),
        socket=socket_from_json(data["socket"]) if data.get("socket") else None,
        stop_timeout=int(data.get("stop_timeout", DEFAULT_STOP_TIMEOUT)),
        watch=float(data.get("watch", 0.0)),
        strategy=str(data.get("strategy", "")),
        processes=processes_from_json(data.get("processes", ())),
        timers=timers_from_json(data.get("timers", ())),
        elixir_logger=str(data.get("elixir_logger", "")),
        logger=LoggerMode(data.get("logger", LoggerMode.PYRELCTL)),
    )
