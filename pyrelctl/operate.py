"""Running a release's own commands as its service would: rpc, eval, remote; pid, version.

A command typed into a root shell (``/opt/shop/current/bin/shop rpc ...``)
gets the caller's user and environment, not the service's: another cookie,
node name, ``RELEASE_TMP`` and ``HOME``, none of the ``EnvironmentFile=``
settings, and files written as root. pyrelctl runs it in a *transient unit*
with the service's own exec settings (:func:`pyrelctl.units.exec_settings`,
the same data the unit file is rendered from), so it runs as the service's
dynamic user, with its environment, environment files, working directory and
sandbox. Two things differ on purpose: the working directory is the release
itself (``releases/VERSION``, whose commands were checked) rather than the
``current`` link, and the unit gets a runtime directory of its own (below
``/run/pyrelctl/``), because systemd removes a unit's ``RuntimeDirectory=``
when that unit stops, and ``/run/APP`` belongs to the running service.

Why the ``systemd-run`` binary rather than pystemd's ``StartTransientUnit``:
run on pyrelctl's own stdin, stdout, stderr and terminal, it hands them to
the command (``--pipe``), and ``--wait`` makes the command's exit status
its own; ``--pty`` already does what a console needs (a pseudo-terminal, raw
mode, window size); and ``--property`` parses every setting as unit files
do, including ``LoadCredential=``, which pystemd 0.15's property table lacks
(FACTS.md). It is not exec'd, though: on SIGINT (Ctrl-C) systemd-run 252
exits and leaves the unit running, so pyrelctl waits for it and then stops
the unit (:func:`pyrelctl.run.run_attached`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyrelctl import mixcookie
from pyrelctl.deploy.settings import release_of
from pyrelctl.errors import BadInput, NotInstalled, NotRoot, NotRunning, SystemdError
from pyrelctl.layout import AppPaths, Layout
from pyrelctl.release import Kind
from pyrelctl.run import run_attached
from pyrelctl.systemd import Systemd, UnitState
from pyrelctl.transient import (
    INPUT_DIR,
    TransientCommand,
    dropins_note,
    staged_input,
    transient_command,
)
from pyrelctl.units import default_environment_files

#: The release commands pyrelctl runs in a transient unit.
COMMAND_VERBS = ("rpc", "eval", "remote")
#: Verbs that talk to the running service, so need it up.
NEEDS_RUNNING = frozenset({"rpc", "remote"})
#: Seconds to wait for an interrupted command's unit to stop.
STOP_TIMEOUT = 30.0

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def require_root(verb: str, app: str) -> None:
    """Refuse a caller who is not root, before anything is read or started."""
    if os.geteuid() != 0:
        raise NotRoot(
            f"pyrelctl {verb} must run as root: it runs {app}'s command as the service's "
            f"user, with settings only root may read (such as the cookie in /etc/pyrelctl/{app})",
            hint=f"sudo pyrelctl {verb} {app} ...",
        )


@dataclass(frozen=True)
class RunningVersion:
    """Which release of an app runs (or would run), and how pyrelctl knows."""

    app: str
    version: str
    #: "process": read from the main process's working directory;
    #: "current": the ``current`` link (the service is not running, or its
    #: directory could not be read).
    source: str
    current: str | None
    main_pid: int
    detail: str = ""

    @property
    def running(self) -> bool:
        return self.main_pid > 0

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "running": self.running}


class Operator:
    """The commands of a deployed app: its release's rpc, eval and remote; pid, version.

    ``systemd`` is asked for the unit's state only; the commands themselves
    run in transient units that systemd-run starts.
    """

    def __init__(self, layout: Layout, systemd: Systemd, say: Say = _quiet) -> None:
        self.layout = layout
        self.systemd = systemd
        self.say = say

    def _require_online(self, verb: str) -> None:
        if self.layout.offline:
            raise BadInput(
                f"{verb} needs the running systemd; it cannot work with --root",
                hint="run it on the host itself, without --root",
            )

    def _state(self, app: AppPaths) -> UnitState:
        return self.systemd.state(app.service_name)

    def _not_running(self, app: AppPaths, state: UnitState) -> NotRunning:
        return NotRunning(
            f"{app.name} is not running ({state.active_state}/{state.sub_state})",
            hint=f"start it: pyrelctl start {app.name}",
        )

    def _current(self, app: AppPaths) -> str:
        current = app.current_version()
        if current is None:
            raise NotInstalled(
                f"{app.name} has no current release",
                hint=f"install one: pyrelctl install ARTIFACT --app {app.name}",
            )
        return current

    # -- release commands --------------------------------------------------

    def run_command(
        self,
        name: str,
        verb: str,
        expression: str | None = None,
        *,
        version: str | None = None,
        stdin_tty: bool = False,
    ) -> int:
        """Run the release's ``verb`` as the service would; return its exit status.

        stdin, stdout and stderr are pyrelctl's own. On SIGINT, SIGTERM or
        SIGHUP the transient unit is stopped (its command with it), and
        128 + the signal's number is returned. The staged expression is
        removed however it ends.
        """
        command = self.prepare(name, verb, expression, version=version, stdin_tty=stdin_tty)

        def stop(signum: int) -> None:
            # Stopping a unit that has already gone (--collect) is no error.
            with contextlib.suppress(SystemdError):
                self.systemd.stop(command.unit, timeout=STOP_TIMEOUT)
            self.say(f"interrupted by {signal.Signals(signum).name}: stopped {command.unit}")

        with staged_input(command):
            return run_attached(command.argv, interrupted=stop)

    def prepare(
        self,
        name: str,
        verb: str,
        expression: str | None = None,
        *,
        version: str | None = None,
        stdin_tty: bool = False,
    ) -> TransientCommand:
        """Check everything, then return the transient command that runs ``verb``.

        Refuses (in this order): a caller who is not root, ``--root``, a
        console without a terminal, an app that is not installed, a release
        that does not declare ``verb``, and (rpc, remote) a service that is
        not running. ``expression`` (rpc, eval) becomes the command's last
        argument, staged out of every other command line
        (:func:`pyrelctl.transient.transient_command`).
        """
        if verb not in COMMAND_VERBS:
            raise ValueError(f"not a release command: {verb}")
        require_root(verb, name)
        self._require_online(verb)
        if verb == "remote" and not stdin_tty:
            raise BadInput(
                "remote is an interactive console and needs a terminal: stdin is not a TTY",
                hint=f"run it from an interactive shell (ssh -t), or use: pyrelctl rpc {name} EXPR",
            )
        app = self.layout.app(name).require()
        version = version if version is not None else self._current(app)
        release_dir = app.release(version)
        if not release_dir.is_dir():
            raise NotInstalled(
                f"release {version} of {app.name} is not installed",
                hint=f"see the installed releases: pyrelctl releases {app.name}",
            )
        release = release_of(app, version)
        if release.command(verb) is None:
            raise BadInput(
                f"{app.name} {version} ({release.kind} release) does not declare "
                f"the {verb} command",
                hint=f'a release declares it in its release.toml: [commands] {verb} = ["bin/..."]',
            )
        if verb in NEEDS_RUNNING:
            state = self._state(app)
            if not state.main_pid:
                raise self._not_running(app, state)
        if release.kind is Kind.MIX:
            # An app no install has touched since pyrelctl kept its cookie in
            # release.env: the file the command's unit loads (mixcookie.py).
            mixcookie.ensure(app.etc)
        self._note_dropins(app)
        return transient_command(
            app.name,
            release,
            verb,
            (),
            expression=expression,
            input_dir=self.layout.root / INPUT_DIR,
            release_dir=release_dir,
            environment_files=default_environment_files(app.name, release),
            token=secrets.token_hex(4),
            pty=verb == "remote",
            credentials=app.secrets(),
        )

    def _note_dropins(self, app: AppPaths) -> None:
        note = dropins_note(app, "this command")
        if note is not None:
            self.say(note)

    # -- pid, version ------------------------------------------------------

    def pid(self, name: str) -> int:
        """The service's main PID (``systemctl show -p MainPID``); it must be running."""
        self._require_online("pid")
        app = self.layout.app(name).require()
        state = self._state(app)
        if not state.main_pid:
            raise self._not_running(app, state)
        return state.main_pid

    def version(self, name: str) -> RunningVersion:
        """The release the service runs, else the one ``current`` points to.

        The unit's ``WorkingDirectory=`` goes through ``current``, so the main
        process's working directory is the physical ``releases/VERSION`` it
        started from, whatever ``current`` says now (after an install with
        ``--no-start``, say).
        """
        self._require_online("version")
        app = self.layout.app(name).require()
        current = app.current_version()
        state = self._state(app)
        if state.main_pid:
            version, detail = app.process_version(state.main_pid)
            if version is not None:
                return RunningVersion(app.name, version, "process", current, state.main_pid)
        else:
            detail = f"not running ({state.active_state}/{state.sub_state})"
        if current is None:
            raise NotInstalled(f"{app.name} has no current release")
        return RunningVersion(app.name, current, "current", current, state.main_pid, detail)
