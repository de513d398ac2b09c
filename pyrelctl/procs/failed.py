"""A scheduled job that fails reaches the host's notification hooks.

Every job unit (``APP-NAME.service``, procs/units.py) says
``OnFailure=pyrelctl-job-failed@%n.service``: when a run fails (its command
exits non-zero, is killed, or runs past its ``timeout``), systemd starts
that template's instance named after the job unit. The template is
root's, host-wide, written with the units of any release that has timers
(:func:`write`), and runs this pyrelctl's own interpreter
(``python3 -I -m pyrelctl _job-failed %i``: a .deb, a venv and a pipx
install each run their own copy, as the delegate helper and the watch unit
do). The command calls the hooks of ``/etc/pyrelctl/hooks.d`` (notify.py)
with ``PYRELCTL_EVENT=failure``, ``PYRELCTL_ACTION=job``, ``PYRELCTL_JOB``
and the failed run's journal lines on stdin.

The instance is a unit name and nothing more can be trusted about it: anyone
who may start units may start any instance. :func:`failed_job` accepts only
the job unit of a timer that an installed app's current units declare (its
timer and job files generated for that app) before anything else happens.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

from pyrelctl import __version__
from pyrelctl.errors import BadInput
from pyrelctl.hostclaims import generated_for
from pyrelctl.hostfiles import write_atomic
from pyrelctl.layout import Layout
from pyrelctl.names import APP_NAME_RE
from pyrelctl.notify import Event, notify
from pyrelctl.procs.manifest import NAME_RE
from pyrelctl.procs.units import job_name, timer_name
from pyrelctl.systemd import Systemd
from pyrelctl.units import UnitText

#: The template's file name in /etc/systemd/system.
UNIT = "pyrelctl-job-failed@.service"
#: The hidden command the template runs.
COMMAND = "_job-failed"
#: What a job unit's name can look like at all: an app name, "-", a timer name.
_INSTANCE_RE = re.compile(r"[a-z][a-z0-9_-]{2,63}\.service", re.ASCII)
#: systemd's invocation ids: 128 bits in hex.
_INVOCATION_RE = re.compile(r"[0-9a-f]{32}", re.ASCII)


def unit_text() -> str:
    """The template's text, running the interpreter of this pyrelctl."""
    return UnitText(
        "pyrelctl-job-failed@.service.j2",
        {
            "pyrelctl_version": __version__,
            "exec_start": [sys.executable, "-I", "-m", "pyrelctl", COMMAND],
        },
    ).render()


def write(layout: Layout) -> bool:
    """Write the template if its text changed (also offline: the file only)."""
    layout.unit_dir.mkdir(parents=True, exist_ok=True)
    return write_atomic(layout.unit_dir / UNIT, unit_text().encode())


@dataclass(frozen=True)
class FailedJob:
    """The job a ``pyrelctl-job-failed@`` instance names, once checked."""

    app: str
    name: str  # the timer's name in release.toml

    @property
    def unit(self) -> str:
        return job_name(self.app, self.name)


def failed_job(layout: Layout, instance: str) -> FailedJob:
    """The installed app's job that ``instance`` names, or :class:`BadInput`.

    App names contain ``-`` too, so ``a-b-c.service`` is tried as each split
    (app ``a``, job ``b-c``; app ``a-b``, job ``c``); only an app that is
    installed and whose ``APP-NAME.timer`` and ``APP-NAME.service`` files
    pyrelctl generated for it counts.
    """
    refused = BadInput(
        f"{instance[:80]!r} is not the job unit of an installed app's timer",
        hint="pyrelctl-job-failed@ is started by systemd when a job fails (OnFailure=)",
    )
    if not _INSTANCE_RE.fullmatch(instance):
        raise refused
    stem = instance.removesuffix(".service")
    for at in [i for i, c in enumerate(stem) if c == "-"]:
        app, name = stem[:at], stem[at + 1 :]
        if not (APP_NAME_RE.fullmatch(app) and NAME_RE.fullmatch(name)):
            continue
        paths = layout.app(app)
        if not paths.exists():
            continue
        unit_dir = layout.unit_dir
        if (
            generated_for(unit_dir / timer_name(app, name)) == app
            and generated_for(unit_dir / job_name(app, name)) == app
        ):
            return FailedJob(app, name)
    raise refused


def event(layout: Layout, systemd: Systemd, job: FailedJob, invocation: str | None = None) -> Event:
    """The hooks' event for ``job``'s failed run: its result and journal lines.

    ``invocation`` is the run's invocation id as PID 1 passes it to an
    ``OnFailure=`` unit (``$MONITOR_INVOCATION_ID``, systemd 251 and later);
    otherwise the unit's own, which is still the failed run's while the unit
    stays failed.
    """
    from pyrelctl.journal import invocation_lines

    state = systemd.state(job.unit)
    if invocation is None or not _INVOCATION_RE.fullmatch(invocation):
        invocation = state.invocation_id
    lines = invocation_lines(invocation, limit=60, settle=1.0)
    status = state.exec_main_status if state.exec_main_code == 1 else 0
    if state.exec_main_code in (2, 3):
        status = 128 + state.exec_main_status  # as a shell reports a signal
    paths = layout.app(job.app)
    headline = (
        f"{job.app} job {job.name} ({job.unit}) failed: {state.result or 'failed'}, "
        f"main process {state.exit_description()}"
    )
    return Event(
        event="failure",
        action="job",
        app=job.app,
        version=paths.current_version(),
        previous=None,
        result="failed",
        exit_code=status,
        summary="\n".join([headline, *lines]) + "\n",
        job=job.name,
        job_result=state.result,
    )


def report(
    layout: Layout,
    systemd: Systemd,
    instance: str,
    say: Callable[[str], None],
    invocation: str | None = None,
) -> Event:
    """Check ``instance``, then run the hooks for its failed run; return the event."""
    job = failed_job(layout, instance)
    happened = event(layout, systemd, job, invocation)
    say(happened.summary.splitlines()[0])
    notify(layout, happened, say)
    return happened
