"""The unit files of a release's processes and timers, and their names.

For the app ``APP`` (whose web process is ``APP.service``):

* a process ``NAME``: the template ``APP-NAME@.service``, instances
  ``APP-NAME@1.service`` to ``@N``, started with the app by links in
  ``APP.service.wants/`` (what ``systemctl enable`` writes for their
  ``[Install] WantedBy=APP.service``), stopped and restarted with it
  (``PartOf=APP.service``);
* a timer ``NAME``: ``APP-NAME.timer`` (linked and ``PartOf=`` the same way)
  and the job it starts, ``APP-NAME.service``, ``Type=oneshot`` and *not*
  part of the app: nothing that restarts the app stops a job that runs.

Each runs with the settings of ``APP.service`` (units.exec_settings: user,
sandbox, environment files, credentials, a mix release's cookie) except its
runtime directory, which is its own below ``/run/pyrelctl/`` (``APP.NAME.N``,
``APP.NAME``): systemd removes a unit's runtime directory when that unit
stops, and ``/run/APP`` is the web process's. No app or process name holds
a ``.``, so these directories never meet another app's or a transient
unit's (``/run/pyrelctl/APP-VERB-TOKEN``).

Why ``APP-NAME`` and not a name of its own: ``systemctl status 'APP-*'`` and
``journalctl -u 'APP-*'`` find the whole app. The ``-`` also occurs in app
names, so the app ``shop`` with a process ``mail`` and an app ``shop-mail``
could both claim ``shop-mail...``: :func:`foreign_units` refuses a release
whose unit names another app or the host already holds, and hostclaims
refuses a new app named like an existing app's process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyrelctl import __version__
from pyrelctl.procs.manifest import MAX_INSTANCES
from pyrelctl.procs.values import Process, Timer
from pyrelctl.release import Kind, Release
from pyrelctl.units import (
    ServiceSpec,
    Setting,
    UnitText,
    escape_specifiers,
    exec_settings,
    quote_value,
)

#: Where unit files go on the target system (never prefixed by --root).
UNIT_DIR = "/etc/systemd/system"
#: What a python release's ``bin/NAME start`` exports (pyrelease.launcher):
#: print() reaches the journal at once; no bytecode written into the release.
PYTHON_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def process_template(app: str, name: str) -> str:
    """The template unit of a process: ``APP-NAME@.service``."""
    return f"{app}-{name}@.service"


def process_instance(app: str, name: str, instance: int) -> str:
    """One instance of a process: ``APP-NAME@N.service``."""
    return f"{app}-{name}@{instance}.service"


def timer_name(app: str, name: str) -> str:
    """A timer's schedule: ``APP-NAME.timer``."""
    return f"{app}-{name}.timer"


def job_name(app: str, name: str) -> str:
    """The job a timer starts: ``APP-NAME.service`` (the timer's default ``Unit=``)."""
    return f"{app}-{name}.service"


def unit_names(app: str, release: Release) -> list[str]:
    """The unit files a release's processes and timers need, sorted."""
    names = [process_template(app, p.name) for p in release.processes]
    for t in release.timers:
        names += [timer_name(app, t.name), job_name(app, t.name)]
    return sorted(names)


def _seconds(value: float) -> str:
    # A systemd time span (systemd.time(7)): "900s", "1.5s".
    return f"{value:g}s"


def _command(release: Release, argv: Sequence[str]) -> tuple[str, ...]:
    if release.kind is Kind.PYTHON:
        from pyrelctl.pyspec import venv_argv  # python releases only

        # `celery`, `python`: the release's venv, never a host program of that name.
        return venv_argv(argv)
    return tuple(argv)


def _spec_for(spec: ServiceSpec, environment: Mapping[str, str]) -> ServiceSpec:
    """``spec`` with a process's own variables over the release's: the host's
    (``spec.environment``) and pyrelctl's defaults for the kind still win, as
    for the web process (units.service_environment)."""
    base = dict(PYTHON_ENVIRONMENT) if spec.release.kind is Kind.PYTHON else {}
    release = dataclasses.replace(
        spec.release, environment={**base, **spec.release.environment, **environment}
    )
    return dataclasses.replace(spec, release=release)


def _unit_settings(spec: ServiceSpec, runtime: str) -> list[Setting]:
    """exec_settings with runtime directory ``runtime``, encoded for a unit file.

    ``%`` is doubled everywhere, except in the instance specifier ``%i`` that
    pyrelctl itself puts into ``runtime`` (``pyrelctl/APP.NAME.%i``): in
    ``RuntimeDirectory=`` and in the two variables a mix release gets from
    it (``HOME``, ``RELEASE_TMP``; units.mix_environment). Those words are
    matched whole, quotes included, so no value of the release or the host
    can become a specifier.
    """
    run_dir = f"/run/{runtime}"
    # pyrelctl's own only where it set them: a mix release, unless the host
    # overrides them (spec.environment wins, as in units.service_environment).
    ours = {
        quote_value(f"{key}={run_dir}")
        for key in ("HOME", "RELEASE_TMP")
        if spec.release.kind is Kind.MIX and key not in spec.environment
    }
    settings: list[Setting] = []
    for key, value in exec_settings(spec, runtime_directory=runtime):
        text = escape_specifiers(value)
        if key == "RuntimeDirectory" and value == runtime:
            text = runtime
        elif key == "Environment" and "%" in runtime:
            words = text.split(" ")
            text = " ".join(w.replace("%%i", "%i") if w in ours else w for w in words)
        settings.append((key, text))
    return settings


def _context(spec: ServiceSpec, entry: Process | Timer, runtime: str) -> dict[str, object]:
    """What the unit of a process or of a timer's job says about its command:
    the command through ``current``, the app's settings with the entry's own
    variables and runtime directory, its stop timeout."""
    espec = _spec_for(spec, entry.environment)
    release = spec.release
    return {
        "app": spec.app,
        "name": entry.name,
        "pyrelctl_version": __version__,
        "kind": release.kind.value,
        "exec_start": espec.absolute_argv(_command(release, entry.command)),
        "exec_settings": _unit_settings(espec, runtime),
        "stop_timeout": entry.stop_timeout or release.stop_timeout,
    }


def process_unit(spec: ServiceSpec, process: Process) -> UnitText:
    """``APP-NAME@.service``: one instance of ``process`` of ``spec``'s release."""
    runtime = f"pyrelctl/{spec.app}.{process.name}.%i"
    return UnitText("process.service.j2", _context(spec, process, runtime))


def job_unit(spec: ServiceSpec, timer: Timer) -> UnitText:
    """``APP-NAME.service``: one run of ``timer``'s command."""
    context = _context(spec, timer, f"pyrelctl/{spec.app}.{timer.name}")
    context["timeout"] = _seconds(timer.timeout) if timer.timeout else ""
    return UnitText("job.service.j2", context)


def timer_unit(app: str, timer: Timer) -> UnitText:
    """``APP-NAME.timer``: when ``timer``'s job runs."""
    return UnitText(
        "job.timer.j2",
        {
            "app": app,
            "name": timer.name,
            "pyrelctl_version": __version__,
            "on_calendar": list(timer.on_calendar),
            "persistent": timer.persistent,
            "every": _seconds(timer.every) if timer.every else "",
            "randomized_delay": _seconds(timer.randomized_delay) if timer.randomized_delay else "",
        },
    )


def units(spec: ServiceSpec) -> dict[str, UnitText]:
    """Every unit file of the release's processes and timers, by file name."""
    found: dict[str, UnitText] = {}
    for process in spec.release.processes:
        found[process_template(spec.app, process.name)] = process_unit(spec, process)
    for timer in spec.release.timers:
        found[timer_name(spec.app, timer.name)] = timer_unit(spec.app, timer)
        found[job_name(spec.app, timer.name)] = job_unit(spec, timer)
    return found


def instance_counts(release: Release, scaled: Mapping[str, object]) -> dict[str, int]:
    """How many instances of each process run: the host's ``pyrelctl scale``
    (remembered in the app's settings), else the release's ``instances``.

    A count remembered for a process the release no longer declares is
    ignored (and kept, for a rollback to the release that had it).
    """
    counts = {}
    for process in release.processes:
        value = scaled.get(process.name)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INSTANCES:
            counts[process.name] = value
        else:
            counts[process.name] = process.instances
    return counts


def wants_links(app: str, release: Release, counts: Mapping[str, int]) -> dict[str, str]:
    """The links of ``APP.service.wants/`` that start the processes and timers with
    the app: link name -> target, as ``systemctl enable`` writes them."""
    links = {}
    for process in release.processes:
        template = process_template(app, process.name)
        for instance in range(1, counts.get(process.name, process.instances) + 1):
            links[process_instance(app, process.name, instance)] = f"{UNIT_DIR}/{template}"
    for timer in release.timers:
        links[timer_name(app, timer.name)] = f"{UNIT_DIR}/{timer_name(app, timer.name)}"
    return links


def wants_dir(unit_dir: Path, app: str) -> Path:
    """``APP.service.wants/`` below the root's unit directory."""
    return unit_dir / f"{app}.service.wants"
