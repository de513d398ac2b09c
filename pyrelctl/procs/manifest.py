"""``[processes.NAME]`` and ``[timers.NAME]``: what a release runs beside its web process.

The same tables in release.toml (every kind; a mix release carries one in
its overlay, ``rel/overlays/release.toml``) and in ``[tool.pyrelctl]`` of a
Python project, checked by one parser (:func:`parse_tables`, called from
``release.parse_settings``)::

    [processes.worker]
    command = ["bin/shop", "eval", "Shop.Worker.run()"]
    instances = 2                 # 0 to 64; default 1
    stop_timeout = 60             # optional: seconds, default [service] stop_timeout
    environment = { QUEUE = "default" }   # optional, beside [environment]

    [timers.report]
    command = ["bin/shop", "eval", "Shop.Reports.nightly()"]
    on_calendar = "*-*-* 03:00:00"        # systemd.time(7), one or a list; or
    # every = "15m"                       # a fixed interval, 1m to 24h
    randomized_delay = "5m"               # optional: spread the start
    persistent = true                     # on_calendar only: catch up a missed run
    timeout = "1h"                        # optional: longest run, then it is stopped

Every value is checked against what systemd will do with it: names become
unit names (``APP-NAME@N.service``, ``APP-NAME.timer``), commands ``ExecStart=``
lines (the same argv rules as ``[commands] start``), schedules ``OnCalendar=``
lines (calendar.py asks the host's systemd) and durations ``*Sec=`` values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pyrelctl.durations import parse_duration
from pyrelctl.errors import BadInput
from pyrelctl.names import is_env_name
from pyrelctl.procs.calendar import check_calendar
from pyrelctl.procs.values import Process, Timer

MANIFEST = "release.toml"
#: release.toml's own check of an argv (``manifest._argv``: the rules of
#: ``[commands] start``) and of a text written into a unit
#: (``manifest.check_unit_text``), passed in by ``manifest.parse_settings``:
#: this module is below ``manifest``, which imports it.
ArgvCheck = Callable[[str, str, object, str], tuple[str, ...]]
TextCheck = Callable[[str, str], str]

#: A process or timer name: it follows ``APP-`` in unit names, the runtime
#: directory and the journal identifier. ASCII only (names.py says why); no
#: ``@`` or ``.``, which unit names give a meaning; ``_`` for Procfile names
#: such as ``urgent_worker``.
NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,30}", re.ASCII)
#: Names that mean something else to a Procfile user, with where it goes here.
RESERVED_NAMES = {
    "web": "the web process is the release's start command ([commands] start, or "
    "start in [tool.pyrelctl])",
    "release": "a command run once before each deploy's switch is a hook: [hooks] pre_switch",
}
#: Instances of one process. The cap keeps a typo (``instances = 1000``) from
#: starting a thousand VMs on one host; a host runs a handful per process.
MAX_INSTANCES = 64
#: Processes, and timers, one release may declare: each is a unit file.
MAX_ENTRIES = 32
#: ``every`` below this starts a fresh VM or interpreter more often than once a
#: minute (cron's granularity): work that frequent belongs in a process.
MIN_EVERY = 60.0

PROCESS_KEYS = frozenset({"command", "instances", "stop_timeout", "environment"})
TIMER_KEYS = frozenset(
    {
        "command",
        "on_calendar",
        "every",
        "randomized_delay",
        "persistent",
        "timeout",
        "stop_timeout",
        "environment",
    }
)


_ONE = {"processes": "process", "timers": "timer"}


def check_name(name: object, table: str, where: str = MANIFEST) -> str:
    """A process or timer name, or :class:`BadInput`."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise BadInput(
            f"{where}: [{table}.{name}]: invalid name {name!r}",
            hint="a name is 1-31 characters: a lowercase letter, then a-z, 0-9, '-' or '_'",
        )
    if name in RESERVED_NAMES:
        raise BadInput(
            f"{where}: [{table}.{name}]: {name!r} is not a {_ONE[table]} name here",
            hint=RESERVED_NAMES[name],
        )
    return name


def _whole_seconds(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 3600:
        raise BadInput(f"{what} must be whole seconds, 1 to 3600")
    return value


def environment_table(value: object, what: str, text_check: TextCheck) -> dict[str, str]:
    """A table of environment variables (``[environment]``, a process's or a
    timer's ``environment``), each name valid and each value checked by
    ``text_check``; ``what`` names the table in messages."""
    if not isinstance(value, dict):
        raise BadInput(f"{what} must be a table of variables")
    env: dict[str, str] = {}
    for key, text in value.items():
        if not is_env_name(key):
            raise BadInput(f"{what} variable name {key!r} is not valid")
        if not isinstance(text, str):
            raise BadInput(f"{what}.{key} must be a string")
        env[key] = text_check(text, f"{what}.{key}")
    return env


def _entries(
    doc: Mapping[str, Any], table: str, keys: frozenset[str], where: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    value = doc.get(table, {})
    if not isinstance(value, dict):
        raise BadInput(f"{where}: [{table}] must be a table of named tables")
    if len(value) > MAX_ENTRIES:
        raise BadInput(f"{where}: [{table}] declares {len(value)}; at most {MAX_ENTRIES}")
    for name in sorted(value):
        entry = value[name]
        check_name(name, table, where)
        if not isinstance(entry, dict):
            raise BadInput(f"{where}: {table}.{name} must be a table ([{table}.{name}])")
        unknown = sorted(set(entry) - keys)
        if unknown:
            raise BadInput(
                f"{where}: unknown key {table}.{name}.{unknown[0]}",
                hint=f"[{table}.NAME] accepts: {', '.join(sorted(keys))}",
            )
        if "command" not in entry:
            raise BadInput(f"{where}: [{table}.{name}] has no command")
        yield name, entry


def _shared(
    table: str, name: str, entry: Mapping[str, Any], where: str, argv: ArgvCheck, text: TextCheck
) -> tuple[tuple[str, ...], int | None, dict[str, str]]:
    """What a process and a timer both declare: command, stop_timeout, environment."""
    at = f"{where}: {table}.{name}"
    return (
        argv(f"{table}.{name}", "command", entry["command"], where),
        _whole_seconds(entry["stop_timeout"], f"{at}.stop_timeout")
        if "stop_timeout" in entry
        else None,
        environment_table(entry.get("environment", {}), f"{at}.environment", text),
    )


def parse_processes(
    doc: Mapping[str, Any], where: str, argv: ArgvCheck, text: TextCheck
) -> tuple[Process, ...]:
    """The ``[processes]`` table of ``doc``, checked, sorted by name."""
    found = []
    for name, entry in _entries(doc, "processes", PROCESS_KEYS, where):
        at = f"{where}: processes.{name}"
        instances = entry.get("instances", 1)
        if (
            not isinstance(instances, int)
            or isinstance(instances, bool)
            or not 0 <= instances <= MAX_INSTANCES
        ):
            raise BadInput(f"{at}.instances must be a whole number, 0 to {MAX_INSTANCES}")
        command, stop_timeout, environment = _shared("processes", name, entry, where, argv, text)
        found.append(
            Process(
                name=name,
                command=command,
                instances=instances,
                stop_timeout=stop_timeout,
                environment=environment,
            )
        )
    return tuple(found)


def parse_timers(
    doc: Mapping[str, Any], where: str, argv: ArgvCheck, text: TextCheck
) -> tuple[Timer, ...]:
    """The ``[timers]`` table of ``doc``, checked, sorted by name."""
    found = []
    for name, entry in _entries(doc, "timers", TIMER_KEYS, where):
        at = f"{where}: timers.{name}"
        if ("on_calendar" in entry) == ("every" in entry):
            raise BadInput(
                f"{at} needs exactly one of on_calendar and every",
                hint='e.g. on_calendar = "*-*-* 03:00:00" (systemd.time(7)) or every = "15m"',
            )
        calendar: tuple[str, ...] = ()
        every = 0.0
        if "on_calendar" in entry:
            raw = entry["on_calendar"]
            specs = [raw] if isinstance(raw, str) else raw
            if (
                not isinstance(specs, list)
                or not specs
                or len(specs) > 8
                or not all(isinstance(s, str) for s in specs)
            ):
                raise BadInput(f"{at}.on_calendar must be a calendar expression or a list of 1-8")
            calendar = tuple(check_calendar(s, f"{at}.on_calendar") for s in specs)
        else:
            every = parse_duration(entry["every"], f"{at}.every")
            if every < MIN_EVERY:
                raise BadInput(
                    f"{at}.every must be at least 1m, not {entry['every']!r}",
                    hint=f"run work that frequent as a process: [processes.{name}]",
                )
        persistent = entry.get("persistent", True)
        if not isinstance(persistent, bool):
            raise BadInput(f"{at}.persistent must be true or false")
        if "persistent" in entry and every:
            raise BadInput(
                f"{at}.persistent applies to on_calendar only",
                hint="an every timer counts from its last run (systemd.timer(5), OnUnitActiveSec=)",
            )
        timeout = parse_duration(entry.get("timeout", 0), f"{at}.timeout")
        if "timeout" in entry and timeout <= 0:
            raise BadInput(f"{at}.timeout must be more than 0")
        command, stop_timeout, environment = _shared("timers", name, entry, where, argv, text)
        found.append(
            Timer(
                name=name,
                command=command,
                on_calendar=calendar,
                every=every,
                randomized_delay=parse_duration(
                    entry.get("randomized_delay", 0), f"{at}.randomized_delay"
                ),
                persistent=persistent and not every,
                timeout=timeout,
                stop_timeout=stop_timeout,
                environment=environment,
            )
        )
    return tuple(found)


def parse_tables(
    doc: Mapping[str, Any], where: str, *, argv: ArgvCheck, text: TextCheck
) -> tuple[tuple[Process, ...], tuple[Timer, ...]]:
    """``[processes]`` and ``[timers]`` of a manifest (or ``[tool.pyrelctl]``),
    commands checked with ``argv`` and values with ``text`` (see :data:`ArgvCheck`).

    A name may not be both a process and a timer: ``APP-NAME@.service`` and
    ``APP-NAME.service`` would be two units that ``systemctl status APP-NAME``
    and the journal's identifier could not tell apart.
    """
    processes = parse_processes(doc, where, argv, text)
    timers = parse_timers(doc, where, argv, text)
    both = sorted({p.name for p in processes} & {t.name for t in timers})
    if both:
        raise BadInput(f"{where}: {both[0]!r} is both a process and a timer; rename one")
    return processes, timers


def commands(
    processes: Sequence[Process], timers: Sequence[Timer]
) -> list[tuple[str, tuple[str, ...]]]:
    """``(where, argv)`` of every command, for the checks against the release's files."""
    return [
        *((f"processes.{p.name}.command", p.command) for p in processes),
        *((f"timers.{t.name}.command", t.command) for t in timers),
    ]


# -- release.toml text (pyrelctl build) and the release index (JSON) -----------


def _seconds(value: float) -> str:
    return json.dumps(f"{value:g}s")


def _inline(env: Mapping[str, str]) -> str:
    # Variable names are valid TOML bare keys ([A-Za-z_][A-Za-z0-9_]*).
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(env.items())) + " }"


def toml_lines(processes: Sequence[Process], timers: Sequence[Timer]) -> list[str]:
    """The tables as release.toml lines, read back by :func:`parse_tables` as given."""
    lines: list[str] = []
    for p in processes:
        lines += ["", f"[processes.{p.name}]", f"command = {json.dumps(list(p.command))}"]
        lines.append(f"instances = {p.instances}")
        if p.stop_timeout is not None:
            lines.append(f"stop_timeout = {p.stop_timeout}")
        if p.environment:
            lines.append(f"environment = {_inline(p.environment)}")
    for t in timers:
        lines += ["", f"[timers.{t.name}]", f"command = {json.dumps(list(t.command))}"]
        if t.on_calendar:
            lines.append(f"on_calendar = {json.dumps(list(t.on_calendar))}")
            lines.append(f"persistent = {'true' if t.persistent else 'false'}")
        else:
            lines.append(f"every = {_seconds(t.every)}")
        if t.randomized_delay:
            lines.append(f"randomized_delay = {_seconds(t.randomized_delay)}")
        if t.timeout:
            lines.append(f"timeout = {_seconds(t.timeout)}")
        if t.stop_timeout is not None:
            lines.append(f"stop_timeout = {t.stop_timeout}")
        if t.environment:
            lines.append(f"environment = {_inline(t.environment)}")
    return lines
