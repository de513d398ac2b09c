"""Deploy orchestration: install, switch, verify, roll back, prune, uninstall.

The order of every operation keeps one invariant through any crash:
``current`` points to a complete release. Releases are unpacked under an
``.incomplete-`` name and renamed into place only when fully on disk;
``current`` moves with one rename; deletions rename first. Each mutating
operation holds the app's lock and begins with :meth:`Deployer.recover`,
which removes what an interrupted run left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pyrelctl import allowances
from pyrelctl.appsetup import AppSetup
from pyrelctl.archive import Artifact, Progress, open_artifact
from pyrelctl.defaults import DEFAULT_GRACE, DEFAULT_KEEP, DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT
from pyrelctl.deploy import admission, hooks, strategy
from pyrelctl.deploy.readiness import SERVING_TIMEOUT, Failure, Readiness, Watcher
from pyrelctl.deploy.retention import prune_plan, rollback_target
from pyrelctl.deploy.strategy import Strategy
from pyrelctl.deploy.watch import WatchWindow
from pyrelctl.errors import (
    BadInput,
    DeployFailed,
    ExitCode,
    HostError,
    NotInstalled,
    PyrelctlError,
)
from pyrelctl.layout import (
    AppPaths,
    Layout,
    Mark,
    app_lock,
    ensure_dir,
    fsync_dir,
    remove_tree,
    symlink_atomic,
)
from pyrelctl.names import app_name_from_release
from pyrelctl.release import (
    HealthCheck,
    Kind,
    Release,
    detect,
    health_from_json,
    health_to_json,
    release_from_json,
    release_to_json,
)
from pyrelctl.socketunit import SETTING as SOCKET_SETTING
from pyrelctl.socketunit import effective_socket
from pyrelctl.systemd import Systemd, UnitState

if TYPE_CHECKING:
    from pyrelctl import notify
    from pyrelctl.deploy.overlap import Overlap

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


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


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


class Deployer:
    """Carries out pyrelctl's operations on one host.

    ``systemd`` is never called when ``layout.offline`` (``--root``).
    ``say`` receives progress lines for the operator.
    """

    def __init__(
        self,
        layout: Layout,
        systemd: Systemd,
        say: Say = _quiet,
        progress: Progress | None = None,
    ) -> None:
        self.layout = layout
        self.systemd = systemd
        self.say = say
        self.progress = progress
        self.setup = AppSetup(layout, systemd, say)
        #: Undoes the configuration generation an install set (``--env``), if any.
        self._config_undo: Callable[[], None] | None = None

    @property
    def online(self) -> bool:
        return not self.layout.offline

    # -- recovery ----------------------------------------------------------

    def recover(self, app: AppPaths) -> list[str]:
        """Clean up after an interrupted operation; return what was done."""
        done = []
        for path in app.incomplete_dirs():
            shutil.rmtree(path)
            done.append(f"removed incomplete {path.name}")
        for link in (app.current, app.next_link):  # symlink_atomic's, cut short
            for tmp in app.base.glob(f".{link.name}.*.tmp"):
                tmp.unlink()
        current = app.current_version()
        if current is not None and not app.release(current).is_dir():
            good = [v for v in app.versions() if app.mark(v) is not Mark.FAILED]
            if good:
                symlink_atomic(f"releases/{good[-1]}", app.current)
                done.append(f"current pointed to missing {current}; now {good[-1]}")
            else:
                app.current.unlink()
                done.append(f"current pointed to missing {current}; removed")
        if self.online:
            from pyrelctl.deploy.overlap import Overlap

            stopped = Overlap(self, app).recover()
            if stopped is not None:
                done.append(stopped)
        for line in done:
            self.say(f"recovered: {line}")
        return done

    # -- releases ----------------------------------------------------------

    def release_of(self, app: AppPaths, version: str) -> Release:
        """The detected release of an installed version (from the index, else from disk)."""
        data = app.read_index().get(version, {}).get("release")
        if data:
            try:
                return release_from_json(data)
            except (KeyError, ValueError, TypeError):
                pass  # an index from another pyrelctl version: detect again
        path = app.release(version)
        if not path.is_dir():
            raise NotInstalled(
                f"release {version} of {app.name} is not installed",
                hint=f"see the installed releases with: pyrelctl releases {app.name}",
            )
        with open_artifact(path) as artifact:
            return detect(artifact)

    def _unpack(self, app: AppPaths, artifact: Artifact, release: Release) -> None:
        """Unpack into an incomplete directory, then rename it into place."""
        final = app.release(release.version)
        staging = app.new_incomplete_dir(release.version)
        ensure_dir(app.releases)
        self.say(f"unpacking {artifact.source.name} into {final}")
        try:
            artifact.extract(staging, self.progress)
            if release.kind is Kind.MIX:
                cookie = staging / "releases/COOKIE"
                if cookie.is_file() and not cookie.is_symlink():
                    # The build's cookie is replaced by the app's own (see
                    # AppSetup.configure); never leave one readable by other users.
                    cookie.chmod(0o600)
            if release.kind is Kind.PYTHON:
                # The venv is made for the path the release has once renamed,
                # on the running system (no --root prefix): venvs are not movable.
                from pyrelctl import pyrelease

                pyrelease.prepare(
                    staging,
                    Path("/", final.relative_to(self.layout.root)),
                    app=app.name,
                    name=release.name,
                    version=release.version,
                    say=self.say,
                    online=self.online,
                )
            # Everything must be on disk before the rename makes the release
            # "complete"; one sync(2) beats an fsync per file of a big release.
            os.sync()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # else recover() does it next time
            raise
        if final.exists():
            remove_tree(final)
        os.rename(staging, final)
        fsync_dir(app.releases)
        app.update_index(
            release.version,
            installed_at=time.time(),
            size=_dir_size(final),
            mark=Mark.NEW,
            release=release_to_json(release),
            artifact=artifact.source.name,
        )

    # -- starting and verifying --------------------------------------------

    def verify(
        self, app: AppPaths, release: Release, readiness: Readiness, *, alone: bool = False
    ) -> UnitState | Failure:
        """Restart the unit and wait until the release is really up (readiness.py);
        a configuration change is verified so too (appconfig/apply.py).

        The socket unit, if any, keeps listening through the restart. With
        ``alone``, health probes count only when the service's own processes
        accepted them (owner.py): another release serves the same socket.
        """
        problem = self.setup.socket_unit(app).ensure_running(timeout=readiness.timeout)
        if problem is not None:
            return Failure(version=release.version, reason=problem, exit="not started")
        watcher = Watcher(self.systemd, self.say)
        runner = hooks.command_runner(self.layout.root, app, release)
        connect = None
        if alone:
            from pyrelctl.deploy import owner

            unit, other = app.service_name, app.overlap_name
            connect = owner.connector(
                unit, lambda: self.systemd.unit_pids(unit), lambda: self.systemd.unit_pids(other)
            )
        return watcher.restart_and_verify(
            app.service_name, release.version, readiness, runner, connect
        )

    # -- install -----------------------------------------------------------

    def publish(self, event: notify.Event | None = None) -> None:
        """After an outcome: rewrite the Prometheus textfile (metrics.py) and run the
        host's notification hooks (notify.py). Never changes the outcome."""
        try:
            from pyrelctl import metrics

            metrics.write_textfile(self.layout, self.systemd if self.online else None)
        except (PyrelctlError, OSError) as e:
            self.say(f"warning: metrics not written: {e}")
        if event is not None:
            from pyrelctl import notify

            notify.notify(self.layout, event, self.say)
            if self.online:
                hooks.notify_release(self, event)

    def published(self, action: str, outcome: Outcome) -> Outcome:
        from pyrelctl.notify import Event

        self.publish(
            Event("success", action, outcome.app, outcome.version, outcome.previous, "ok", 0)
        )
        return outcome

    def failed(self, action: str, error: DeployFailed) -> DeployFailed:
        from pyrelctl.notify import failure_event

        self.publish(failure_event(action, error))
        return error

    def install(self, artifact_path: Path, opts: InstallOptions) -> Outcome:
        """Install a release and make it current (DESIGN.md, "What an install does").

        Every check that can refuse the artifact runs before the first write.
        """
        try:
            outcome = self._install(artifact_path, opts)
        except DeployFailed as e:
            raise self.failed("install", e) from None
        if not outcome.changed:
            return outcome  # converged, nothing deployed: nobody to tell
        return self.published("install", outcome)

    def _install(self, artifact_path: Path, opts: InstallOptions) -> Outcome:
        started_at = time.monotonic()
        from pyrelctl import checksums, signatures

        verification = signatures.Verification(self.layout, opts.app, artifact_path, opts.signature)
        # Read once: the bytes verified (first, before any parsing) are the
        # bytes validated, detected and unpacked.
        with open_artifact(
            artifact_path,
            max_bytes=opts.max_bytes,
            verify=verification if verification.needed else None,
        ) as artifact:
            release = detect(artifact)
            # Required where `pyrelctl build` made the release.
            checksums.verify_artifact(artifact, required=release.kind is Kind.PYTHON)
            own_name = app_name_from_release(release.name)
            name = opts.app if opts.app is not None else own_name
            app = self.layout.app(name)
            signer = verification.confirm(app, own_name)
            if signer is not None:
                self.say(f"signature good: signed by {signer}")
            admission.check_host(self, app, release, self.settings_for(app, opts))
            with app_lock(app, "install", wait=opts.wait_lock, on_wait=self.say):
                self.recover(app)
                previous = app.current_version()
                if signer is not None and not opts.allow_downgrade:
                    admission.refuse_downgrade(app, release, previous)
                self._config_undo = self._stage_env(app, opts.env)
                try:
                    if previous == release.version and app.release(previous).is_dir():
                        return self._reinstall_current(app, release, opts, started_at)
                    self._unpack(app, artifact, release)
                    return self._switch(
                        app, release, previous, opts, "install", started_at, changed=True
                    )
                except BaseException:
                    # A failed deploy restored the configuration (_fail); any
                    # other error before the restart does it here (an undo
                    # runs once).
                    if self._config_undo is not None:
                        self._config_undo()
                    raise
                finally:
                    self._config_undo = None

    def _reinstall_current(
        self, app: AppPaths, release: Release, opts: InstallOptions, started_at: float
    ) -> Outcome:
        """Installing the current version again: converge, do not redeploy."""
        self.say(f"{app.name} {release.version} is already current")
        self.setup.configure(app, release)
        settings = self.settings_for(app, opts)
        changed = self.setup.write_units(app, release, settings)
        state = self.systemd.state(app.service_name) if self.online else None
        if opts.start and self.online and (changed or state is None or not state.running):
            return self._switch(
                app, release, release.version, opts, "install", started_at, changed=True
            )
        self._remember(app, settings)  # the units now follow them
        return Outcome(
            app=app.name,
            action="install",
            version=release.version,
            previous=release.version,
            changed=changed,
            started=False,
            state=state.active_state if state else "",
            main_pid=state.main_pid if state else 0,
            seconds=round(time.monotonic() - started_at, 3),
        )

    def _switch(
        self,
        app: AppPaths,
        release: Release,
        previous: str | None,
        opts: InstallOptions,
        action: str,
        started_at: float,
        *,
        changed: bool,
    ) -> Outcome:
        """Run hooks, render units, move ``current``, restart, verify; restore on failure."""
        self.setup.configure(app, release)
        settings = self.settings_for(app, opts)
        readiness = self.readiness_for(settings, release, opts.timeout)
        online_start = opts.start and self.online
        hooks = release.hooks if opts.run_hooks and online_start else {}
        if "pre_switch" in hooks:
            failure = self._hook(app, release, "pre_switch")
            if failure is not None:
                self._fail(app, release, previous, failure, readiness, action, switched=False)
        if self.online:
            WatchWindow(self).end(app)
        overlap = None
        if online_start and self._overlaps(app, release, previous, settings):
            overlap = self._start_beside(app, release, previous, settings, readiness, action)
        self.setup.write_units(app, release, settings)
        app.switch(release.version)
        self.say(f"current -> releases/{release.version}")
        if not online_start:
            app.update_index(release.version, widened=admission.widened(release, settings))
            if not self.online:
                self.setup.enable(app)
            self._remember(app, settings)
            app.record(action, previous, release.version, "switched, not started")
            pruned = self._prune(app, opts.keep)
            return Outcome(
                app=app.name,
                action=action,
                version=release.version,
                previous=previous,
                changed=changed,
                started=False,
                pruned=pruned,
                seconds=round(time.monotonic() - started_at, 3),
            )

        if overlap is None:
            result = self.verify(app, release, readiness)
        else:
            # It proved itself beside the old release: now it takes over the
            # service (the old one stops while the overlap unit serves), and
            # is verified again, without a second grace period.
            try:
                overlap.serve_alone()
                result = self.verify(
                    app, release, dataclasses.replace(readiness, grace=0), alone=True
                )
                reason = overlap.cannot_run_twice(result) if isinstance(result, Failure) else None
                if reason is not None:
                    # It ran beside the old release, not beside itself.
                    self.say(f"{release.version} cannot run twice: {reason}; restarting instead")
                    overlap.stop(timeout=release.stop_timeout + readiness.timeout)
                    result = self.verify(app, release, readiness)
                if isinstance(result, Failure):
                    self._fail(app, release, previous, result, readiness, action)
            finally:
                overlap.stop(timeout=release.stop_timeout + readiness.timeout)
        if isinstance(result, Failure):
            self._fail(app, release, previous, result, readiness, action)
        if "post_switch" in hooks:
            failure = self._hook(app, release, "post_switch")
            if failure is not None:
                self._fail(app, release, previous, failure, readiness, action)
        app.update_index(
            release.version,
            mark=Mark.GOOD,
            last_good_at=time.time(),
            widened=admission.widened(release, settings),
        )
        self._after_good(app, release, previous, settings, action)
        self._remember(app, settings)
        self.setup.enable(app)
        app.record(action, previous, release.version, "ok")
        pruned = self._prune(app, opts.keep)
        self.say(f"{app.name} {release.version} is up (pid {result.main_pid})")
        return Outcome(
            app=app.name,
            action=action,
            version=release.version,
            previous=previous,
            changed=changed,
            started=True,
            state=result.active_state,
            main_pid=result.main_pid,
            pruned=pruned,
            seconds=round(time.monotonic() - started_at, 3),
        )

    def _overlaps(
        self, app: AppPaths, release: Release, previous: str | None, settings: dict[str, Any]
    ) -> bool:
        """Whether this deploy starts ``release`` beside the running one (strategy.py)."""
        if strategy.chosen(settings, release) is not Strategy.OVERLAP:
            return False
        if previous is None or previous == release.version:
            return False  # nothing else serves: a plain (re)start
        if not self.systemd.state(app.service_name).running:
            return False  # nothing to overlap with
        blocker = strategy.overlap_blocker(
            settings, release, strategy.health_url(settings, release)
        )
        if blocker is None and not self.setup.socket_unit(app).listening_as(
            effective_socket(settings, release)
        ):
            blocker = "its listening socket is not the one open now (new or changed)"
        if blocker is not None:
            self.say(f"{release.version} cannot overlap: {blocker}; restarting instead")
            return False
        return True

    def _start_beside(
        self,
        app: AppPaths,
        release: Release,
        previous: str | None,
        settings: dict[str, Any],
        readiness: Readiness,
        action: str,
    ) -> Overlap | None:
        """Start ``release`` beside the running one (overlap.py): the proven overlap
        unit, None when the release cannot run twice (then it restarts), or raise
        the failed deploy (the old release never stopped)."""
        from pyrelctl.deploy.overlap import Overlap

        overlap = Overlap(self, app)
        result = overlap.start(release, settings, readiness)
        if not isinstance(result, Failure):
            return overlap
        overlap.stop(timeout=release.stop_timeout + readiness.timeout)
        reason = overlap.cannot_run_twice(result)
        if reason is not None:
            self.say(
                f"{release.version} cannot run beside {previous}: {reason}; restarting instead"
            )
            return None
        self._fail(app, release, previous, result, readiness, action, switched=False)

    @staticmethod
    def settings_for(app: AppPaths, opts: InstallOptions) -> dict[str, Any]:
        """The app's remembered settings, updated with what this command sets.

        They are written (by :meth:`_remember`) only once the deploy worked: a
        failed deploy changes nothing, and restoring the previous release
        uses the settings it ran with.
        """
        updated = app.read_settings()
        if opts.grace is not None:
            updated["grace"] = opts.grace
        if opts.health is not None:
            updated["health"] = health_to_json(opts.health)
        if opts.reset_health:
            updated.pop("health", None)
        if opts.listen:
            updated[SOCKET_SETTING] = {"listen": list(opts.listen)}
        if opts.reset_listen:
            updated.pop(SOCKET_SETTING, None)
        if opts.watch is not None:
            updated["watch"] = opts.watch
        if opts.watch_restarts is not None:
            updated["watch_restarts"] = opts.watch_restarts
        if opts.strategy is not None:
            updated[strategy.SETTING] = opts.strategy
        if opts.reset_allow:
            updated.pop(allowances.SETTING, None)
        if opts.allow:
            updated[allowances.SETTING] = sorted({*allowances.granted(updated), *opts.allow})
        return updated

    def _stage_env(self, app: AppPaths, env: dict[str, str] | None) -> Callable[[], None] | None:
        """``install --env``: a configuration generation for this deploy, and its undo."""
        if not env:
            return None
        from pyrelctl.appconfig.generations import stage_with_deploy

        return stage_with_deploy(app, env, self.say)

    def switch_back(self, app: AppPaths, current: str, target: str, action: str) -> Outcome:
        """Make ``target`` current again in place of ``current``, a rollback pyrelctl
        decided on (the watch window): verified as a rollback is, no hooks."""
        release = self.release_of(app, target)
        opts = InstallOptions(keep=0, run_hooks=False)
        return self._switch(app, release, current, opts, action, time.monotonic(), changed=True)

    def _after_good(
        self,
        app: AppPaths,
        release: Release,
        previous: str | None,
        settings: dict[str, Any],
        action: str,
    ) -> None:
        """The release is up: its configuration generation is good, its watch begins."""
        from pyrelctl.appconfig.generations import mark_current_good

        mark_current_good(app)
        WatchWindow(self).start(app, release, previous, settings, action)

    @staticmethod
    def _remember(app: AppPaths, settings: dict[str, Any]) -> None:
        if settings != app.read_settings():
            app.write_settings(settings)

    @staticmethod
    def readiness_for(settings: dict[str, Any], release: Release, timeout: float) -> Readiness:
        """When ``release`` counts as up, by the app's ``settings`` (grace, health)."""
        return Readiness(
            timeout=timeout,
            grace=float(settings.get("grace", DEFAULT_GRACE)),
            health=Deployer.health_for(settings, release),
        )

    @staticmethod
    def health_for(settings: dict[str, Any], release: Release) -> HealthCheck | None:
        """The host's health check for the app if one was set, else the release's own."""
        data = settings.get("health")
        return health_from_json(data) if data else release.health

    def _hook(self, app: AppPaths, release: Release, name: str) -> Failure | None:
        return hooks.run_hook(self.layout.root, app, release, name, self.say)

    def _fail(
        self,
        app: AppPaths,
        release: Release,
        previous: str | None,
        failure: Failure,
        readiness: Readiness,
        action: str,
        *,
        switched: bool = True,
    ) -> NoReturn:
        """The new release did not come up: mark it, restore ``previous``, raise.

        With ``switched=False`` (a pre_switch hook failed) nothing was changed
        yet: the previous release never stopped serving.
        """
        app.update_index(release.version, mark=Mark.FAILED, failed_at=time.time())
        if self._config_undo is not None:
            self._config_undo()  # the previous release comes back with its configuration
        report: dict[str, Any] = {
            "app": app.name,
            "action": action,
            "failed": failure.to_json(),
            "previous": previous,
        }
        message = f"{app.name} {release.version} failed to come up: {failure.summary()}"
        try:
            if previous is None or previous == release.version:
                # Nothing to go back to: leave it stopped rather than crash-looping.
                if switched:
                    self.systemd.stop(app.service_name, timeout=readiness.timeout)
                app.record(action, previous, release.version, f"failed: {failure.reason}")
                report["restored"] = None
                raise DeployFailed(
                    message,
                    exit_code=ExitCode.FAILED,
                    report=report,
                    hint="nothing to roll back to; the service is stopped "
                    f"(journalctl -u {app.name})",
                )
            if not switched:
                # Nothing was switched, but "kept running" needs evidence: a
                # failed start beside it once left the release that serves
                # alive and deaf (issue 27; docs/zero-downtime.md).
                serving = self._check_serving(app, previous, readiness)
                if not isinstance(serving, Failure):
                    app.record(action, previous, release.version, f"failed: {failure.reason}")
                    report["restored"] = {"version": previous, "main_pid": serving.main_pid}
                    raise DeployFailed(
                        message,
                        exit_code=ExitCode.ROLLED_BACK,
                        report=report,
                        hint=f"nothing was switched: {previous} kept running",
                    )
                report["serving_failure"] = serving.to_json()
                self.say(
                    f"{previous} does not serve after the failed deploy: {serving.summary()}; "
                    f"restarting {app.service_name} into it"
                )
            else:
                self.say(f"{release.version} failed; restoring {previous}")
            # Back to ``previous`` as the restart strategy does: restart the
            # service into it, wait for it, verify it.
            restoring = "restoring" if switched else "restarting"
            try:
                old = self.release_of(app, previous)
                self.setup.write_units(app, old)
                app.switch(previous)
                # The previous release is verified as it ran before this command:
                # its own health check, or the app's settings as they were.
                restored = self.verify(
                    app, old, readiness.restoring(self.health_for(app.read_settings(), old))
                )
            except HostError as e:
                restored = Failure(version=previous, reason=e.message)
            if isinstance(restored, Failure):
                app.record(
                    action, previous, release.version, f"failed; {restoring} {previous} failed too"
                )
                report["restored"] = None
                report["restore_failure"] = restored.to_json()
                raise DeployFailed(
                    message + f"; {restoring} {previous} FAILED too: {restored.reason}",
                    exit_code=ExitCode.ROLLBACK_FAILED,
                    report=report,
                    hint=f"THE APP IS DOWN; see: journalctl -u {app.name}",
                )
            app.record(action, previous, release.version, f"failed: {failure.reason}")
            if switched:
                app.record("auto-rollback", release.version, previous, "ok")
            else:
                app.record("auto-restart", previous, previous, "ok: it did not serve")
            report["restored"] = {"version": previous, "main_pid": restored.main_pid}
            done = "restored" if switched else "restarted"
            raise DeployFailed(
                message,
                exit_code=ExitCode.ROLLED_BACK,
                report=report,
                hint=f"{previous} was {done} and runs (pid {restored.main_pid})",
            )
        finally:
            # The failed start's last words, read again after the restore:
            # journald may have filed them late (journal.invocation_lines).
            failure.reread_journal()
            report["failed"] = failure.to_json()

    def _check_serving(
        self, app: AppPaths, version: str, readiness: Readiness
    ) -> UnitState | Failure:
        """Evidence that ``version``, left running in the service by a failed
        deploy, serves: its health check (the one it ran with), accepted by
        the service's own processes, or else the unit running."""
        from pyrelctl.deploy import owner

        try:
            old = self.release_of(app, version)
        except PyrelctlError as e:
            return Failure(version=version, reason=e.message)
        unit, other = app.service_name, app.overlap_name
        connect = owner.connector(
            unit, lambda: self.systemd.unit_pids(unit), lambda: self.systemd.unit_pids(other)
        )
        return Watcher(self.systemd, self.say).check_serving(
            unit,
            version,
            self.health_for(app.read_settings(), old),
            hooks.command_runner(self.layout.root, app, old),
            connect,
            timeout=min(readiness.timeout, SERVING_TIMEOUT),
        )

    # -- rollback ----------------------------------------------------------

    def rollback(
        self,
        name: str,
        *,
        to: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        grace: float | None = None,
        wait_lock: bool = True,
    ) -> Outcome:
        """Make an earlier release current again (the previous good one, or ``to``).

        The release's hooks do not run: a pre_switch migration is for going
        forward, and the release it returns to ran them when it was installed.
        """
        try:
            outcome = self._rollback(name, to=to, timeout=timeout, grace=grace, wait_lock=wait_lock)
        except DeployFailed as e:
            raise self.failed("rollback", e) from None
        return self.published("rollback", outcome)

    def _rollback(
        self, name: str, *, to: str | None, timeout: float, grace: float | None, wait_lock: bool
    ) -> Outcome:
        started_at = time.monotonic()
        app = self.layout.app(name).require()
        # Checked before the lock too, so that a refusal changes nothing at all
        # (a target that cannot be found is reported under the lock, as before).
        try:
            early = rollback_target(app, app.current_version(), to)
        except (NotInstalled, BadInput, HostError):
            early = None
        if early is not None:
            admission.check_rollback(app, self.release_of(app, early))
        with app_lock(app, "rollback", wait=wait_lock, on_wait=self.say):
            self.recover(app)
            current = app.current_version()
            target = rollback_target(app, current, to)
            release = admission.check_rollback(app, self.release_of(app, target))
            opts = InstallOptions(timeout=timeout, grace=grace, keep=0, run_hooks=False)
            return self._switch(app, release, current, opts, "rollback", started_at, changed=True)

    # -- prune -------------------------------------------------------------

    def _prune(self, app: AppPaths, keep: int) -> tuple[str, ...]:
        doomed = prune_plan(app, keep)
        for version in doomed:
            self.say(f"pruning {app.name} {version}")
            remove_tree(app.release(version))
            app.forget(version)
        return doomed

    def prune(
        self, name: str, *, keep: int = DEFAULT_KEEP, wait_lock: bool = True
    ) -> tuple[str, ...]:
        app = self.layout.app(name).require()
        if keep < 1:
            raise BadInput("--keep must be at least 1")
        with app_lock(app, "prune", wait=wait_lock, on_wait=self.say):
            self.recover(app)
            pruned = self._prune(app, keep)
            if pruned:
                app.record("prune", None, None, "removed " + ", ".join(pruned))
            return pruned

    # -- service control ---------------------------------------------------

    def control(
        self, name: str, verb: str, *, timeout: float = DEFAULT_TIMEOUT, wait_lock: bool = True
    ) -> UnitState:
        """start / stop / restart the app's unit, waiting for the job.

        A (re)start waits for the readiness an install waits for (the start
        job, the health check, the grace period): a command right after it
        (``rpc``, a stop) finds the release up, not booting.

        With socket activation, stop stops the socket unit too (else the next
        connection would start the service again); start and restart leave
        it listening, and the service's Requires= starts it if it is not.
        """
        app = self.layout.app(name).require()
        if not self.online:
            raise BadInput(f"{verb} needs the running systemd; it cannot work with --root")
        with app_lock(app, verb, wait=wait_lock, on_wait=self.say):
            current = app.current_version()
            running = self.systemd.state(app.service_name).running
            restarts = verb == "restart" or (verb == "start" and not running)
            if restarts and current is not None and app.release(current).is_dir():
                return self._restart_ready(app, current, verb, timeout)
            if verb != "stop":
                self.systemd.reset_failed(app.service_name)  # see verify
            elif app.socket_file.exists():
                self.systemd.stop(app.socket_name, timeout=timeout)
            method = {
                "start": self.systemd.start,
                "stop": self.systemd.stop,
                "restart": self.systemd.restart,
            }[verb]
            job = method(app.service_name, timeout=timeout)
            state = self.systemd.state(app.service_name)
            if not job.ok:
                raise HostError(
                    f"{verb} {app.service_name}: job {job.result} "
                    f"({state.active_state}/{state.sub_state}, main process "
                    f"{state.exit_description()})",
                    hint=f"see: pyrelctl logs {app.name}",
                )
            return state

    def _restart_ready(self, app: AppPaths, version: str, verb: str, timeout: float) -> UnitState:
        """(Re)start the service into ``version`` and verify it as a deploy does."""
        release = self.release_of(app, version)
        readiness = self.readiness_for(app.read_settings(), release, timeout)
        result = self.verify(app, release, readiness)
        if isinstance(result, Failure):
            last = [line for line in result.journal if line.strip()][-3:]
            raise HostError(
                f"{verb} {app.service_name}: {version} did not come up: {result.summary()}"
                + "".join(f"\n  {line}" for line in last),
                hint=f"see: pyrelctl logs {app.name}",
            )
        self.say(f"{app.name} {version} is up (pid {result.main_pid})")
        return result

    # -- uninstall ---------------------------------------------------------

    def uninstall(self, name: str, *, purge: bool = False, wait_lock: bool = True) -> list[str]:
        """Stop and remove the app; with ``purge`` its settings, state and history too
        (uninstall.py)."""
        from pyrelctl.uninstall import uninstall

        return uninstall(self.layout, self.setup, self.say, name, purge=purge, wait_lock=wait_lock)
