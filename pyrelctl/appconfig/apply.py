"""A configuration change, applied as a deploy: switch, restart, verify, or undo.

``pyrelctl config set shop POOL_SIZE=20`` goes the way ``pyrelctl install``
goes, under the app's lock: a new generation is written, ``current.env``
moves to it, the service restarts and must pass the same readiness, health
check and grace period as a new release. When it does not come up, the
previous generation is made current again and the service restarted with
it (exit 3, with the failed start's journal); only when that fails too is
the app down (exit 4). An app that is installed but not running, or not
installed yet, gets the change staged: its next start (the first install
included) runs with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pyrelctl.appconfig import envfile
from pyrelctl.appconfig.generations import Generations, GenMark, label
from pyrelctl.defaults import DEFAULT_KEEP, DEFAULT_TIMEOUT
from pyrelctl.deploy.host import Host
from pyrelctl.deploy.publish import failed, publish
from pyrelctl.deploy.readiness import Failure, Readiness
from pyrelctl.deploy.settings import readiness_for, release_of
from pyrelctl.deploy.verify import verify
from pyrelctl.deploy.watch import WatchWindow
from pyrelctl.errors import BadInput, DeployFailed, ExitCode, HostError, NotInstalled
from pyrelctl.layout import AppPaths, app_lock
from pyrelctl.release import Release

Edit = Callable[[dict[str, str]], dict[str, str]]


@dataclass(frozen=True)
class ConfigOutcome:
    """What a configuration change did, as ``--json`` prints it."""

    app: str
    generation: int | None
    previous: int | None
    change: dict[str, list[str]] = field(default_factory=dict)
    applied: bool = False  # the service restarted with it and came up
    staged: bool = False  # current, for the next start

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Configurator:
    """Changes an app's configuration through the deploy's steps: the same
    verification (verify.py), watch ending and publishing as a release."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def app(self, name: str, *, create: bool = True) -> AppPaths:
        app = self.host.layout.app(name)
        if not create and not app.exists():
            raise NotInstalled(
                f"app {name!r} is not installed (and --no-create was given)",
                hint="see installed apps with: pyrelctl status",
            )
        return app

    def change(
        self,
        name: str,
        edit: Edit,
        *,
        restart: bool = True,
        create: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        keep: int = DEFAULT_KEEP,
        wait_lock: bool = True,
    ) -> ConfigOutcome:
        """Apply ``edit`` (old variables -> new) as a new generation: restarted and
        verified if the app runs (``restart``), else staged; ``keep`` generations."""
        try:
            outcome = self._change(name, edit, restart, create, timeout, keep, wait_lock)
        except DeployFailed as e:
            raise failed(self.host, "config", e) from None
        if outcome.generation != outcome.previous:
            self._published(outcome)
        return outcome

    def _published(self, outcome: ConfigOutcome) -> None:
        from pyrelctl.notify import Event

        publish(
            self.host,
            Event(
                "success",
                "config",
                outcome.app,
                label(outcome.generation),
                label(outcome.previous),
                "ok" if outcome.applied else "staged",
                0,
            ),
        )

    def _change(
        self,
        name: str,
        edit: Edit,
        restart: bool,
        create: bool,
        timeout: float,
        keep: int,
        wait_lock: bool,
    ) -> ConfigOutcome:
        app = self.app(name, create=create)
        gens = Generations(app)
        # Checked before the lock and again under it: a refusal writes nothing.
        current = gens.values()
        envfile.check(edit(dict(current)), unchanged=current)
        with app_lock(app, "config", wait=wait_lock, on_wait=self.host.say):
            previous = gens.current()
            old = gens.read(previous)
            new = envfile.check(edit(dict(old)), unchanged=old)
            change = envfile.diff(old, new)
            if not any(change.values()):
                return ConfigOutcome(app.name, previous, previous, change)
            number = gens.create(new)
            outcome = self._apply(app, gens, number, previous, restart=restart, timeout=timeout)
            gens.prune(keep)
            return outcome

    def rollback(
        self, name: str, *, to: int | None = None, timeout: float = DEFAULT_TIMEOUT,
        wait_lock: bool = True,
    ) -> ConfigOutcome:  # fmt: skip
        """Make an earlier generation current again (the previous one, or ``to``)."""
        try:
            outcome = self._rollback(name, to=to, timeout=timeout, wait_lock=wait_lock)
        except DeployFailed as e:
            raise failed(self.host, "config", e) from None
        self._published(outcome)
        return outcome

    def _rollback(
        self, name: str, *, to: int | None, timeout: float, wait_lock: bool
    ) -> ConfigOutcome:
        app = self.app(name)
        gens = Generations(app)
        self._rollback_target(app, gens, to)  # refused before the lock: nothing written
        with app_lock(app, "config rollback", wait=wait_lock, on_wait=self.host.say):
            current = gens.current()
            target = self._rollback_target(app, gens, to)
            return self._apply(app, gens, target, current, restart=True, timeout=timeout)

    @staticmethod
    def _rollback_target(app: AppPaths, gens: Generations, to: int | None) -> int:
        if to is not None:
            if to not in gens.numbers():
                raise BadInput(f"{app.name} has no configuration generation {to}")
            return to
        current = gens.current()
        target = gens.previous(current) if current is not None else None
        if target is None:
            raise BadInput(
                f"{app.name} has no earlier configuration generation to go back to",
                hint=f"see them with: pyrelctl config history {app.name}",
            )
        return target

    # -- applying ------------------------------------------------------------

    def _running_release(self, app: AppPaths) -> str | None:
        """The current release, if the service runs it now (online only)."""
        if not self.host.online or not app.exists():
            return None
        version = app.current_version()
        if version is None or not self.host.systemd.state(app.service_name).running:
            return None
        return version

    def _apply(
        self,
        app: AppPaths,
        gens: Generations,
        number: int,
        previous: int | None,
        *,
        restart: bool,
        timeout: float,
    ) -> ConfigOutcome:
        change = gens.info(number).change
        version = self._running_release(app) if restart else None
        if version is not None:
            # Units first: an app installed before `config` existed names no
            # configuration file yet (units.default_environment_files).
            release = release_of(app, version)
            self.host.setup.write_units(app, release)
        gens.switch(number)
        summary = envfile.describe(change)
        if version is None:
            app.record("config", label(previous), label(number), f"staged: {summary}")
            self.host.say(
                f"{app.name} configuration generation {number} is current; "
                "the next start runs with it"
            )
            return ConfigOutcome(app.name, number, previous, change, staged=True)
        WatchWindow(self.host).end(app)  # a configuration change ends a watch, as a deploy does
        readiness = readiness_for(app.read_settings(), release, timeout)
        self.host.say(f"{app.name}: configuration generation {number} ({summary}); restarting")
        result = verify(self.host, app, release, readiness)
        if not isinstance(result, Failure):
            gens.set_mark(number, GenMark.GOOD)
            app.record("config", label(previous), label(number), f"ok: {summary}")
            self.host.say(f"{app.name} is up with generation {number} (pid {result.main_pid})")
            return ConfigOutcome(app.name, number, previous, change, applied=True)
        self._undo(app, gens, release, number, previous, result, readiness, summary)

    def _undo(
        self,
        app: AppPaths,
        gens: Generations,
        release: Release,
        number: int,
        previous: int | None,
        failure: Failure,
        readiness: Readiness,
        summary: str,
    ) -> NoReturn:
        """The service did not come up with generation ``number``: restore ``previous``."""
        gens.set_mark(number, GenMark.FAILED)
        report: dict[str, Any] = {
            "app": app.name,
            "action": "config",
            "failed": failure.to_json(),
            "generation": number,
            "previous": previous,
        }
        message = (
            f"{app.name} failed to come up with configuration generation {number}: "
            + failure.summary()
        )
        try:
            self.host.say(f"generation {number} failed; restoring generation {previous}")
            gens.switch(previous)
            try:
                restored = verify(self.host, app, release, readiness.restoring(readiness.health))
            except HostError as e:
                restored = Failure(version=release.version, reason=e.message)
            if isinstance(restored, Failure):
                app.record("config", label(previous), label(number), "failed; restoring failed too")
                report["restored"] = None
                raise DeployFailed(
                    message + f"; restoring generation {previous} FAILED too: {restored.reason}",
                    exit_code=ExitCode.ROLLBACK_FAILED,
                    report=report,
                    hint=f"THE APP IS DOWN; see: journalctl -u {app.name}",
                )
            app.record(
                "config", label(previous), label(number), f"failed: {summary}: {failure.reason}"
            )
            app.record("config-rollback", label(number), label(previous), "ok")
            report["restored"] = {"generation": previous, "main_pid": restored.main_pid}
            raise DeployFailed(
                message,
                exit_code=ExitCode.ROLLED_BACK,
                report=report,
                hint=f"generation {previous} was restored and runs (pid {restored.main_pid}); "
                f"fix the value and set it again: pyrelctl config set {app.name} ...",
            )
        finally:
            # The failed start's last words, read again after the restore:
            # journald may have filed them late (journal.invocation_lines).
            failure.reread_journal()
            report["failed"] = failure.to_json()


def set_values(updates: Mapping[str, str]) -> Edit:
    def edit(old: dict[str, str]) -> dict[str, str]:
        return {**old, **updates}

    return edit


def unset_values(names: list[str]) -> Edit:
    def edit(old: dict[str, str]) -> dict[str, str]:
        missing = [n for n in names if n not in old]
        if missing:
            raise BadInput(
                f"{missing[0]} is not set", hint="see the names with: pyrelctl config list"
            )
        return {k: v for k, v in old.items() if k not in names}

    return edit


def replace_values(new: Mapping[str, str]) -> Edit:
    def edit(_old: dict[str, str]) -> dict[str, str]:
        return dict(new)

    return edit
