"""Deploy orchestration: install, rollback, prune, start/stop/restart, uninstall.

The CLI's entry to the deploy family. Each operation takes the app's lock,
recovers what an interrupted one left (recovery.py) and calls the steps of
a deploy in order (the package docstring lists them); it holds no deploy
logic of its own and nothing it calls imports it back.

The order of every operation keeps one invariant through any crash:
``current`` points to a complete release. Releases are unpacked under an
``.incomplete-`` name and renamed into place only when fully on disk;
``current`` moves with one rename; deletions rename first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pyrelctl.archive import Progress
from pyrelctl.defaults import DEFAULT_KEEP, DEFAULT_TIMEOUT
from pyrelctl.deploy import admission
from pyrelctl.deploy.host import Host, Say, quiet
from pyrelctl.deploy.options import InstallOptions, Outcome
from pyrelctl.deploy.publish import failed, published
from pyrelctl.deploy.readiness import Failure
from pyrelctl.deploy.recovery import recover
from pyrelctl.deploy.retention import prune, rollback_target
from pyrelctl.deploy.settings import readiness_for, release_of, remember, settings_for
from pyrelctl.deploy.switch import switch
from pyrelctl.deploy.unpack import unpack
from pyrelctl.deploy.verify import verify
from pyrelctl.errors import BadInput, DeployFailed, HostError, NotInstalled
from pyrelctl.layout import AppPaths, Layout, app_lock
from pyrelctl.manifest import detect
from pyrelctl.names import app_name_from_release
from pyrelctl.openartifact import open_artifact
from pyrelctl.release import Kind, Release
from pyrelctl.systemd import Systemd, UnitState


class Deployer:
    """Carries out pyrelctl's operations on one host.

    ``systemd`` is never called when ``layout.offline`` (``--root``).
    ``say`` receives progress lines for the operator.
    """

    def __init__(
        self,
        layout: Layout,
        systemd: Systemd,
        say: Say = quiet,
        progress: Progress | None = None,
    ) -> None:
        self.host = Host(layout, systemd, say, progress)

    @property
    def layout(self) -> Layout:
        return self.host.layout

    def recover(self, app: AppPaths) -> list[str]:
        """Clean up after an interrupted operation; return what was done (recovery.py)."""
        return recover(self.host, app)

    # -- install -----------------------------------------------------------

    def install(self, artifact_path: Path, opts: InstallOptions) -> Outcome:
        """Install a release and make it current (DESIGN.md, "What an install does").

        Every check that can refuse the artifact runs before the first write.
        """
        try:
            outcome = self._install(artifact_path, opts)
        except DeployFailed as e:
            raise failed(self.host, "install", e) from None
        if not outcome.changed:
            return outcome  # converged, nothing deployed: nobody to tell
        return published(self.host, "install", outcome)

    def _install(self, artifact_path: Path, opts: InstallOptions) -> Outcome:
        started_at = time.monotonic()
        from pyrelctl import checksums, signatures

        verification = signatures.Verification(
            self.host.layout, opts.app, artifact_path, opts.signature
        )
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
            app = self.host.layout.app(name)
            signer = verification.confirm(app, own_name)
            if signer is not None:
                self.host.say(f"signature good: signed by {signer}")
            admission.check_host(self.host, app, release, settings_for(app, opts))
            with app_lock(app, "install", wait=opts.wait_lock, on_wait=self.host.say):
                recover(self.host, app)
                previous = app.current_version()
                if signer is not None and not opts.allow_downgrade:
                    admission.refuse_downgrade(app, release, previous)
                undo_config = self._stage_env(app, opts.env)
                try:
                    if previous == release.version and app.release(previous).is_dir():
                        return self._reinstall_current(app, release, opts, started_at, undo_config)
                    unpack(self.host, app, artifact, release)
                    return switch(
                        self.host, app, release, previous, opts, "install", started_at,
                        changed=True, undo_config=undo_config,
                    )  # fmt: skip
                except BaseException:
                    # A failed deploy restored the configuration (restore.py);
                    # any other error before the restart does it here (an
                    # undo runs once).
                    if undo_config is not None:
                        undo_config()
                    raise

    def _reinstall_current(
        self,
        app: AppPaths,
        release: Release,
        opts: InstallOptions,
        started_at: float,
        undo_config: Callable[[], None] | None,
    ) -> Outcome:
        """Installing the current version again: converge, do not redeploy."""
        host = self.host
        host.say(f"{app.name} {release.version} is already current")
        host.setup.configure(app, release)
        settings = settings_for(app, opts)
        changed = host.setup.write_units(app, release, settings)
        state = host.systemd.state(app.service_name) if host.online else None
        if opts.start and host.online and (changed or state is None or not state.running):
            return switch(
                host, app, release, release.version, opts, "install", started_at,
                changed=True, undo_config=undo_config,
            )  # fmt: skip
        remember(app, settings)  # the units now follow them
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

    def _stage_env(self, app: AppPaths, env: dict[str, str] | None) -> Callable[[], None] | None:
        """``install --env``: a configuration generation for this deploy, and its undo."""
        if not env:
            return None
        from pyrelctl.appconfig.generations import stage_with_deploy

        return stage_with_deploy(app, env, self.host.say)

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
            raise failed(self.host, "rollback", e) from None
        return published(self.host, "rollback", outcome)

    def _rollback(
        self, name: str, *, to: str | None, timeout: float, grace: float | None, wait_lock: bool
    ) -> Outcome:
        started_at = time.monotonic()
        app = self.host.layout.app(name).require()
        # Checked before the lock too, so that a refusal changes nothing at all
        # (a target that cannot be found is reported under the lock, as before).
        try:
            early = rollback_target(app, app.current_version(), to)
        except (NotInstalled, BadInput, HostError):
            early = None
        if early is not None:
            admission.check_rollback(app, release_of(app, early))
        with app_lock(app, "rollback", wait=wait_lock, on_wait=self.host.say):
            recover(self.host, app)
            current = app.current_version()
            target = rollback_target(app, current, to)
            release = admission.check_rollback(app, release_of(app, target))
            opts = InstallOptions(timeout=timeout, grace=grace, keep=0, run_hooks=False)
            return switch(
                self.host, app, release, current, opts, "rollback", started_at, changed=True
            )

    # -- prune ---------------------------------------------------------------

    def prune(
        self, name: str, *, keep: int = DEFAULT_KEEP, wait_lock: bool = True
    ) -> tuple[str, ...]:
        app = self.host.layout.app(name).require()
        if keep < 1:
            raise BadInput("--keep must be at least 1")
        with app_lock(app, "prune", wait=wait_lock, on_wait=self.host.say):
            recover(self.host, app)
            pruned = prune(app, keep, self.host.say)
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
        app = self.host.layout.app(name).require()
        if not self.host.online:
            raise BadInput(f"{verb} needs the running systemd; it cannot work with --root")
        with app_lock(app, verb, wait=wait_lock, on_wait=self.host.say):
            current = app.current_version()
            running = self.host.systemd.state(app.service_name).running
            restarts = verb == "restart" or (verb == "start" and not running)
            if restarts and current is not None and app.release(current).is_dir():
                return self._restart_ready(app, current, verb, timeout)
            if verb != "stop":
                self.host.systemd.reset_failed(app.service_name)  # see verify
            elif app.socket_file.exists():
                self.host.systemd.stop(app.socket_name, timeout=timeout)
            method = {
                "start": self.host.systemd.start,
                "stop": self.host.systemd.stop,
                "restart": self.host.systemd.restart,
            }[verb]
            job = method(app.service_name, timeout=timeout)
            state = self.host.systemd.state(app.service_name)
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
        release = release_of(app, version)
        readiness = readiness_for(app.read_settings(), release, timeout)
        result = verify(self.host, app, release, readiness)
        if isinstance(result, Failure):
            last = [line for line in result.journal if line.strip()][-3:]
            raise HostError(
                f"{verb} {app.service_name}: {version} did not come up: {result.summary()}"
                + "".join(f"\n  {line}" for line in last),
                hint=f"see: pyrelctl logs {app.name}",
            )
        self.host.say(f"{app.name} {version} is up (pid {result.main_pid})")
        return result

    # -- uninstall ---------------------------------------------------------

    def uninstall(self, name: str, *, purge: bool = False, wait_lock: bool = True) -> list[str]:
        """Stop and remove the app; with ``purge`` its settings, state and history too
        (uninstall.py)."""
        from pyrelctl.uninstall import uninstall

        host = self.host
        return uninstall(host.layout, host.setup, host.say, name, purge=purge, wait_lock=wait_lock)
