"""Restore: the new release did not come up, so the previous one comes back.

The failed release is marked failed (a rollback never chooses it), the
configuration a deploy set with it is undone, ``current`` goes back, and the
previous release is restarted and verified as the restart strategy would
(verify.py). The result is the failed deploy, raised with its exit code:
3 when the previous release runs again, 4 when it could not be restored
either, 1 when there was nothing to go back to (DESIGN.md, "Exit codes").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NoReturn

from pyrelctl.deploy.host import Host
from pyrelctl.deploy.readiness import Failure, Readiness
from pyrelctl.deploy.settings import health_for, release_of
from pyrelctl.deploy.verify import check_serving, verify
from pyrelctl.errors import DeployFailed, ExitCode, HostError
from pyrelctl.layout import AppPaths, Mark
from pyrelctl.release import Release


def restore(
    host: Host,
    app: AppPaths,
    release: Release,
    previous: str | None,
    failure: Failure,
    readiness: Readiness,
    action: str,
    *,
    switched: bool = True,
    undo_config: Callable[[], None] | None = None,
) -> NoReturn:
    """The new release did not come up: mark it, restore ``previous``, raise.

    With ``switched=False`` (a pre_switch hook failed) nothing was changed
    yet: the previous release never stopped serving. ``undo_config`` undoes
    the configuration generation the deploy set (``install --env``).
    """
    app.update_index(release.version, mark=Mark.FAILED, failed_at=time.time())
    if undo_config is not None:
        undo_config()  # the previous release comes back with its configuration
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
                host.systemd.stop(app.service_name, timeout=readiness.timeout)
            app.record(action, previous, release.version, f"failed: {failure.reason}")
            report["restored"] = None
            raise DeployFailed(
                message,
                exit_code=ExitCode.FAILED,
                report=report,
                hint=f"nothing to roll back to; the service is stopped (journalctl -u {app.name})",
            )
        if not switched:
            # Nothing was switched, but "kept running" needs evidence: a
            # failed start beside it once left the release that serves
            # alive and deaf (issue 27; docs/zero-downtime.md).
            serving = check_serving(host, app, previous, readiness)
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
            host.say(
                f"{previous} does not serve after the failed deploy: {serving.summary()}; "
                f"restarting {app.service_name} into it"
            )
        else:
            host.say(f"{release.version} failed; restoring {previous}")
        # Back to ``previous`` as the restart strategy does: restart the
        # service into it, wait for it, verify it.
        restoring = "restoring" if switched else "restarting"
        try:
            old = release_of(app, previous)
            host.setup.write_units(app, old)
            app.switch(previous)
            # The previous release is verified as it ran before this command:
            # its own health check, or the app's settings as they were.
            restored = verify(
                host, app, old, readiness.restoring(health_for(app.read_settings(), old))
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
