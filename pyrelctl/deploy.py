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

from pyrelctl import allowances, hooks, hostclaims
from pyrelctl.appsetup import AppSetup
from pyrelctl.archive import Artifact, Progress, open_artifact
from pyrelctl.defaults import DEFAULT_GRACE, DEFAULT_KEEP, DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT
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
from pyrelctl.readiness import Failure, Readiness, Watcher
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
from pyrelctl.retention import prune_plan, rollback_target
from pyrelctl.sockets import check_nothing_at, check_paths_for, check_release_socket
from pyrelctl.socketunit import SETTING as SOCKET_SETTING
from pyrelctl.socketunit import effective_socket
from pyrelctl.systemd import Systemd, UnitState

if TYPE_CHECKING:
    from pyrelctl import notify

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
        for tmp in app.base.glob(".current.*.tmp"):
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

    def verify(self, app: AppPaths, release: Release, readiness: Readiness) -> UnitState | Failure:
        """Restart ``app`` running ``release`` and wait until it is really up
        (what a configuration change needs too: appconfig/apply.py)."""
        return self._verify(app, release, readiness)

    def _verify(self, app: AppPaths, release: Release, readiness: Readiness) -> UnitState | Failure:
        """Restart the unit and wait until the release is really up (readiness.py).

        The socket unit, if any, keeps listening through the restart.
        """
        problem = self.setup.socket_unit(app).ensure_running(timeout=readiness.timeout)
        if problem is not None:
            return Failure(version=release.version, reason=problem, exit="not started")
        watcher = Watcher(self.systemd, self.say)
        runner = hooks.command_runner(self.layout.root, app, release)
        return watcher.restart_and_verify(app.service_name, release.version, readiness, runner)

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
                self._release_notification(event)

    def _release_notification(self, event: notify.Event) -> None:
        """The current release's own on_* hook, run as the service (hooks.py)."""
        app = self.layout.app(event.app)
        try:
            current = app.current_version()
            if current is None:
                return
            release = self.release_of(app, current)
            problem = hooks.run_notification(
                self.layout.root, app, release, event.event, event.environment()
            )
        except PyrelctlError as e:
            problem = e.message
        if problem is not None:
            self.say(f"warning: {problem}")

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
            self._check_host(app, release, opts)
            with app_lock(app, "install", wait=opts.wait_lock, on_wait=self.say):
                self.recover(app)
                previous = app.current_version()
                if signer is not None and not opts.allow_downgrade:
                    self._refuse_downgrade(app, release, previous)
                self._config_undo = self._stage_env(app, opts.env) if opts.env else None
                try:
                    if previous == release.version and app.release(previous).is_dir():
                        return self._reinstall_current(app, release, opts, started_at)
                    self._unpack(app, artifact, release)
                    return self._switch(
                        app, release, previous, opts, "install", started_at, changed=True
                    )
                except BaseException:
                    # A failed deploy restored the configuration (_fail); any
                    # other error before the restart does it here.
                    if self._config_undo is not None:
                        self._config_undo()
                    raise
                finally:
                    self._config_undo = None

    def _stage_env(self, app: AppPaths, env: dict[str, str]) -> Callable[[], None] | None:
        """Make ``env`` (set on top of the app's configuration) its current generation
        for this deploy; return what undoes it, or None if nothing changed."""
        from pyrelctl.appconfig import envfile
        from pyrelctl.appconfig.generations import Generations, GenMark, label

        gens = Generations(app)
        previous = gens.current()
        old = gens.read(previous)
        new = {**old, **env}
        if new == old:
            return None
        number = gens.create(new)
        gens.switch(number)
        summary = envfile.describe(envfile.diff(old, new))
        app.record("config", label(previous), label(number), f"with the deploy: {summary}")
        self.say(f"configuration generation {number} ({summary})")

        def undo() -> None:
            self.say(f"configuration generation {previous} restored")
            gens.set_mark(number, GenMark.FAILED)
            gens.switch(previous)
            self._config_undo = None

        return undo

    def _check_host(self, app: AppPaths, release: Release, opts: InstallOptions) -> None:
        """What the host must agree to before a release is installed as ``app``:
        the name claims nothing of the host's, the sockets are the app's to
        bind, and every widening of the sandbox is allowed (hostclaims.py,
        sockets.py, allowances.py)."""
        loaded: list[str] = []
        if self.online and not hostclaims.manages(app):
            loaded = [
                unit
                for unit in (app.service_name, app.socket_name)
                if self.systemd.state(unit).load_state not in ("not-found", "")
            ]
        hostclaims.check_free(app, loaded_units=loaded)
        settings = self._settings(app, opts)
        host_socket = bool(settings.get(SOCKET_SETTING))
        socket = effective_socket(settings, release)
        check_paths_for(socket, app.name)
        if not host_socket:
            check_release_socket(release.socket, app.name)
        check_nothing_at(socket, self.layout.root)
        widened = allowances.check(app.name, release, settings, host_socket=host_socket)
        if widened:
            self.say(
                f"sandbox widened for {app.name}, as the host allows: "
                + ", ".join(w.describe() for w in widened)
            )

    @staticmethod
    def _refuse_downgrade(app: AppPaths, release: Release, previous: str | None) -> None:
        """A signed release older than the current one needs ``--allow-downgrade``:
        an old release keeps its good signature after its flaws are known."""
        from pyrelctl.signatures import version_key

        if previous is None or version_key(release.version) >= version_key(previous):
            return
        raise BadInput(
            f"{release.version} is older than the current {previous} of {app.name}; "
            "a signed release is not downgraded without --allow-downgrade",
            hint=f"go back with: pyrelctl rollback {app.name} (or install --allow-downgrade)",
        )

    def _reinstall_current(
        self, app: AppPaths, release: Release, opts: InstallOptions, started_at: float
    ) -> Outcome:
        """Installing the current version again: converge, do not redeploy."""
        self.say(f"{app.name} {release.version} is already current")
        self.setup.configure(app, release)
        settings = self._settings(app, opts)
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
        settings = self._settings(app, opts)
        readiness = Readiness(
            timeout=opts.timeout,
            grace=float(settings.get("grace", DEFAULT_GRACE)),
            health=self._health(settings, release),
        )
        online_start = opts.start and self.online
        hooks = release.hooks if opts.run_hooks and online_start else {}
        if "pre_switch" in hooks:
            failure = self._hook(app, release, "pre_switch")
            if failure is not None:
                self._fail(app, release, previous, failure, readiness, action, switched=False)
        if self.online:
            self._end_watch(app)
        self.setup.write_units(app, release, settings)
        app.switch(release.version)
        self.say(f"current -> releases/{release.version}")
        if not online_start:
            app.update_index(release.version, widened=self._widened(release, settings))
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

        result = self._verify(app, release, readiness)
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
            widened=self._widened(release, settings),
        )
        self._config_good(app)
        self._start_watch(app, release, settings, action)
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

    @staticmethod
    def _settings(app: AppPaths, opts: InstallOptions) -> dict[str, Any]:
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
        if opts.reset_allow:
            updated.pop(allowances.SETTING, None)
        if opts.allow:
            updated[allowances.SETTING] = sorted({*allowances.granted(updated), *opts.allow})
        return updated

    # -- the watch window (watch.py) ----------------------------------------

    def _start_watch(
        self, app: AppPaths, release: Release, settings: dict[str, Any], action: str
    ) -> None:
        """Leave a transient unit watching the release, if the app asks for a window."""
        from pyrelctl import watch

        seconds = float(settings.get(watch.SETTING, release.watch) or 0)
        if seconds <= 0 or action not in ("install", "rollback") or watch.running_in_watch():
            return
        restarts = int(settings.get(watch.RESTARTS_SETTING, watch.DEFAULT_RESTARTS))
        from pyrelctl.run import run

        argv = watch.start_argv(app.name, release.version, seconds, restarts)
        proc = run(argv, check=False)
        if proc.returncode != 0:
            self.say(f"warning: the watch did not start: {proc.stderr.strip()}")
            return
        until = float(argv[argv.index("--until") + 1])
        state = watch.WatchState(release.version, until, restarts, watch.unit_name(app.name))
        app.update_index(watch.INDEX_KEY, watch=state.to_json())
        self.say(
            f"watching {app.name} {release.version} for {seconds:g} s: more than {restarts} "
            "restarts roll it back"
        )

    def end_watch(self, app: AppPaths) -> None:
        """End the watch of the app's release, if one runs (a change of the app)."""
        self._end_watch(app)

    def _end_watch(self, app: AppPaths) -> None:
        """A deploy of the app ends the watch of the release before it."""
        from pyrelctl import watch

        if watch.running_in_watch() or watch.recorded(app) is None:
            return
        unit = watch.unit_name(app.name)
        if self.systemd.state(unit).active_state in ("active", "activating"):
            self.systemd.stop(unit)
            self.say(f"the watch of {app.name} ends (a new deploy)")
        app.update_index(watch.INDEX_KEY, watch=None)

    def watch(self, name: str, version: str, until: float, max_restarts: int) -> str:
        """The watch unit's work (``pyrelctl _watch``): see watch.py."""
        from pyrelctl import watch

        app = self.layout.app(name).require()

        def rollback(reason: str) -> None:
            self._watch_rollback(app, version, reason)

        result = watch.loop(
            app,
            version,
            until,
            max_restarts,
            state=lambda: self.systemd.state(app.service_name),
            rollback=rollback,
            say=self.say,
        )
        if result == "ok":
            app.record("watch", version, version, "ok: stayed up")
        if app.read_index().get(watch.INDEX_KEY, {}).get("watch", {}) is not None:
            app.update_index(watch.INDEX_KEY, watch=None)
        return result

    def _watch_rollback(self, app: AppPaths, version: str, reason: str) -> None:
        """Roll ``app`` back from ``version``, which the watch saw failing."""
        from pyrelctl.notify import Event

        started_at = time.monotonic()
        with app_lock(app, "watch rollback", wait=True, on_wait=self.say):
            current = app.current_version()
            if current != version:
                return  # someone deployed meanwhile
            app.update_index(version, mark=Mark.FAILED, failed_at=time.time())
            app.record("watch", version, None, f"failed: {reason}")
            try:
                target = rollback_target(app, current, None)
            except (BadInput, NotInstalled) as e:
                self.say(f"nothing to roll back to: {e.message}")
                return
            release = self.release_of(app, target)
            opts = InstallOptions(keep=0, run_hooks=False)
            try:
                outcome = self._switch(
                    app, release, current, opts, "auto-rollback (watch)", started_at, changed=True
                )
            except DeployFailed as e:
                self.failed("watch", e)
                raise
        self.publish(
            Event(
                "rollback", "watch", app.name, version, outcome.version, "rolled-back", 3,
                summary=f"{app.name} {version}: {reason}; rolled back to {outcome.version}\n",
            )
        )  # fmt: skip

    @staticmethod
    def _config_good(app: AppPaths) -> None:
        """The release came up with the current configuration generation: mark it good."""
        from pyrelctl.appconfig.generations import Generations, GenMark

        gens = Generations(app)
        number = gens.current() if gens.dir.is_dir() else None
        if number is not None and gens.info(number).mark is not GenMark.GOOD:
            gens.set_mark(number, GenMark.GOOD)

    @staticmethod
    def _widened(release: Release, settings: dict[str, Any]) -> list[str]:
        """The allowances the release runs with (``status`` shows them from the index)."""
        host_socket = bool(settings.get(SOCKET_SETTING))
        return [w.allowance for w in allowances.requested(release, host_socket=host_socket)]

    @staticmethod
    def _remember(app: AppPaths, settings: dict[str, Any]) -> None:
        if settings != app.read_settings():
            app.write_settings(settings)

    @staticmethod
    def health_for(settings: dict[str, Any], release: Release) -> HealthCheck | None:
        """The host's health check for the app if one was set, else the release's own."""
        return Deployer._health(settings, release)

    @staticmethod
    def _health(settings: dict[str, Any], release: Release) -> HealthCheck | None:
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
        message = f"{app.name} {release.version} failed to come up: {failure.reason}"
        if failure.exit not in ("", "not started"):
            message += f" (main process {failure.exit})"
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
                hint=f"nothing to roll back to; the service is stopped (journalctl -u {app.name})",
            )
        if not switched:
            state = self.systemd.state(app.service_name)
            app.record(action, previous, release.version, f"failed: {failure.reason}")
            report["restored"] = {"version": previous, "main_pid": state.main_pid}
            raise DeployFailed(
                message,
                exit_code=ExitCode.ROLLED_BACK,
                report=report,
                hint=f"nothing was switched: {previous} kept running",
            )
        self.say(f"{release.version} failed; restoring {previous}")
        try:
            old = self.release_of(app, previous)
            self.setup.write_units(app, old)
            app.switch(previous)
            # The previous release is verified as it ran before this command:
            # its own health check, or the app's settings as they were.
            restored = self._verify(
                app,
                old,
                Readiness(
                    timeout=readiness.timeout,
                    grace=min(readiness.grace, 1.0),
                    health=self._health(app.read_settings(), old),
                ),
            )
        except HostError as e:
            restored = Failure(version=previous, reason=e.message)
        if isinstance(restored, Failure):
            app.record(
                action, previous, release.version, f"failed; restoring {previous} failed too"
            )
            report["restored"] = None
            report["restore_failure"] = restored.to_json()
            raise DeployFailed(
                message + f"; restoring {previous} FAILED too: {restored.reason}",
                exit_code=ExitCode.ROLLBACK_FAILED,
                report=report,
                hint=f"THE APP IS DOWN; see: journalctl -u {app.name}",
            )
        app.record(action, previous, release.version, f"failed: {failure.reason}")
        app.record("auto-rollback", release.version, previous, "ok")
        report["restored"] = {"version": previous, "main_pid": restored.main_pid}
        raise DeployFailed(
            message,
            exit_code=ExitCode.ROLLED_BACK,
            report=report,
            hint=f"{previous} was restored and runs (pid {restored.main_pid})",
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
            self._check_rollback(app, early)
        with app_lock(app, "rollback", wait=wait_lock, on_wait=self.say):
            self.recover(app)
            current = app.current_version()
            target = rollback_target(app, current, to)
            release = self._check_rollback(app, target)
            opts = InstallOptions(timeout=timeout, grace=grace, keep=0, run_hooks=False)
            return self._switch(app, release, current, opts, "rollback", started_at, changed=True)

    def _check_rollback(self, app: AppPaths, target: str) -> Release:
        """The release to roll back to, if the host's allowances as they are now
        let it run: one withdrawn since it was installed keeps it from coming back."""
        release = self.release_of(app, target)
        settings = app.read_settings()
        host_socket = bool(settings.get(SOCKET_SETTING))
        if not host_socket:
            check_release_socket(release.socket, app.name)
        allowances.check(app.name, release, settings, host_socket=host_socket)
        return release

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

        With socket activation, stop stops the socket unit too (else the next
        connection would start the service again); start and restart leave
        it listening, and the service's Requires= starts it if it is not.
        """
        app = self.layout.app(name).require()
        if not self.online:
            raise BadInput(f"{verb} needs the running systemd; it cannot work with --root")
        with app_lock(app, verb, wait=wait_lock, on_wait=self.say):
            if verb != "stop":
                self.systemd.reset_failed(app.service_name)  # see _verify
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

    # -- uninstall ---------------------------------------------------------

    def uninstall(self, name: str, *, purge: bool = False, wait_lock: bool = True) -> list[str]:
        """Stop and remove the app; with ``purge`` its settings, state and history too.

        Drop-ins (``<app>.service.d/``, ``<app>.socket.d/``) are the operator's and
        stay unless purged.
        """
        app = self.layout.app(name)
        if not app.base.is_dir():  # (a half-finished uninstall still has opt/APP)
            app.require()
        removed: list[str] = []
        with app_lock(app, "uninstall", wait=wait_lock, on_wait=self.say):
            removed.extend(self.setup.remove_units(app))
            # current first: a crash past this point leaves no link to a
            # half-deleted release; each release goes with an atomic rename,
            # so a second uninstall finishes what a crash interrupted.
            if app.current.is_symlink():
                app.current.unlink()
            for version in app.versions():
                remove_tree(app.release(version))
            # releases/ goes last: while it exists, a second uninstall knows
            # the app and finishes the job.
            for leftover in app.base.iterdir():
                if leftover != app.releases:
                    if leftover.is_dir() and not leftover.is_symlink():
                        shutil.rmtree(leftover)
                    else:
                        leftover.unlink()
            if app.releases.is_dir():
                shutil.rmtree(app.releases)
            app.base.rmdir()
            removed.append(str(app.base))
            app.record("uninstall", None, None, "ok")
            if purge:
                for path in (
                    app.etc,
                    app.state,
                    app.dropin_dir,
                    self.layout.unit_dir / f"{app.socket_name}.d",
                    self.layout.root / "var/lib" / app.name,
                    self.layout.root / "var/lib/private" / app.name,
                    self.layout.root / "var/log" / app.name,
                    # LogsDirectory= of a DynamicUser= service (systemd.exec(5)):
                    # the symlink above points here.
                    self.layout.root / "var/log/private" / app.name,
                ):
                    if path.is_symlink():
                        path.unlink()
                        removed.append(str(path))
                    elif path.exists():
                        remove_tree(path)
                        removed.append(str(path))
        return removed
