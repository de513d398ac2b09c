"""Release commands run as the service runs: hooks and command health checks.

Each runs in a transient unit (``systemd-run --wait --pipe``, transient.py)
with the service's user, sandbox, environment and credentials, so a
pre_switch migration or a health command sees exactly what the service
will.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyrelctl import mixcookie
from pyrelctl.deploy.host import Host
from pyrelctl.deploy.readiness import Failure
from pyrelctl.deploy.settings import release_of
from pyrelctl.errors import HostError
from pyrelctl.layout import AppPaths
from pyrelctl.pyspec import venv_argv
from pyrelctl.release import Kind, Release
from pyrelctl.units import default_environment_files

if TYPE_CHECKING:
    from pyrelctl import notify
    from pyrelctl.deploy import health

#: Longest a pre_switch or post_switch hook may run (migrations can be slow).
HOOK_TIMEOUT = 900.0


def run_as_service(
    root: Path,
    app: AppPaths,
    release: Release,
    argv: Sequence[str],
    *,
    purpose: str,
    timeout: float,
    release_dir: Path | None = None,
    environment_files: Sequence[str] | None = None,
) -> tuple[int, str]:
    """Run ``argv`` in a transient unit with the service's user and environment.

    ``systemd-run --wait --pipe`` gives the command's exit status and
    output; the program of a release-relative argv runs from
    ``release_dir`` (a hook runs the *new* release, before ``current``
    points to it), else through ``current``. ``root`` is the layout's root.
    ``environment_files`` replaces the service's (deploy/overlap.py).
    """
    from pyrelctl.run import run
    from pyrelctl.transient import transient_argv

    base = release_dir if release_dir is not None else app.current
    if release.kind is Kind.MIX:
        mixcookie.ensure(app.etc)  # an app set up by an older pyrelctl (mixcookie.py)
    command = transient_argv(
        app.name,
        release,
        purpose,
        argv,
        release_dir=Path("/") / base.relative_to(root),
        environment_files=(
            default_environment_files(app.name, release)
            if environment_files is None
            else environment_files
        ),
        token=os.urandom(3).hex(),
        credentials=app.secrets(),
    ).argv
    try:
        proc = run(command, check=False, timeout=timeout + 5)
    except HostError as e:
        return 124, e.message
    return proc.returncode, proc.stdout + proc.stderr


def run_hook(
    root: Path, app: AppPaths, release: Release, name: str, say: Callable[[str], None]
) -> Failure | None:
    """Run a release's hook from its own directory, as the service's user."""
    from pyrelctl.transient import dropins_note

    argv = release.hooks[name]
    # A python release's `python -m django migrate`: the new release's venv,
    # never a host program of that name (pyspec.venv_argv).
    command = venv_argv(argv) if release.kind is Kind.PYTHON else argv
    note = dropins_note(app, f"the {name} hook")
    if note is not None:
        say(note)
    say(f"running {name} hook: {' '.join(argv)}")
    status, output = run_as_service(
        root,
        app,
        release,
        command,
        purpose=name.replace("_", "-"),
        timeout=HOOK_TIMEOUT,
        release_dir=app.release(release.version),
    )
    _report(app, name, status, output, say)
    if status == 0:
        return None
    return Failure(
        version=release.version,
        reason=f"{name} hook {' '.join(argv)} exited with status {status}",
        hook_output=output.splitlines()[-60:],
    )


#: A passing hook's last lines shown in the install output (all are in the journal).
HOOK_LINES_SHOWN = 60


def _report(app: AppPaths, name: str, status: int, output: str, say: Callable[[str], None]) -> None:
    """A hook's output goes into the app's journal (``journalctl -u APP``), and a
    passing hook's into the install output too: a migration says what it did
    (a failing hook's is in the failure report)."""
    from pyrelctl import journal

    lines = output.splitlines()
    if not lines:
        return
    journal.send_lines(app.service_name, f"{app.name}-{name.replace('_', '-')}", lines,
                       priority=6 if status == 0 else 3)  # fmt: skip
    if status != 0:
        return
    hidden = len(lines) - HOOK_LINES_SHOWN
    say(
        f"{name} hook output"
        + (f" (last {HOOK_LINES_SHOWN} of {len(lines)} lines):" if hidden > 0 else ":")
    )
    for line in lines[-HOOK_LINES_SHOWN:]:
        say(f"  {line}")


def command_runner(root: Path, app: AppPaths, release: Release) -> health.CommandRunner:
    """How a ``[health] command`` runs: through the release's ``current``, as the service."""

    def run_check(argv: Sequence[str], timeout: float) -> tuple[int, str]:
        return run_as_service(root, app, release, argv, purpose="health", timeout=timeout)

    return run_check


#: The release's own notification hook for each event (notify.Event.event).
NOTIFICATION_HOOKS = {"success": "on_success", "failure": "on_failure", "rollback": "on_rollback"}
#: Longest a notification may take; it never changes the outcome.
NOTIFICATION_TIMEOUT = 10.0


def run_notification(
    root: Path, app: AppPaths, release: Release, event: str, env: dict[str, str]
) -> str | None:
    """Run ``release``'s ``on_success``/``on_failure``/``on_rollback`` hook, if it has
    one, as the service (never as root: it comes from the artifact), with the
    ``PYRELCTL_*`` variables of the event; return what went wrong, or None."""
    name = NOTIFICATION_HOOKS.get(event)
    argv = release.hooks.get(name) if name else None
    if name is None or argv is None:
        return None
    command = venv_argv(argv) if release.kind is Kind.PYTHON else tuple(argv)
    # env(1) sets the variables: the transient unit takes its environment
    # from the service's definition alone (transient.py).
    full = ("/usr/bin/env", *(f"{k}={v}" for k, v in sorted(env.items())), *command)
    status, output = run_as_service(
        root, app, release, full, purpose=name.replace("_", "-"), timeout=NOTIFICATION_TIMEOUT
    )
    if status == 0:
        return None
    last = (output.strip().splitlines() or [""])[-1]
    return f"{name} hook {' '.join(argv)} exited with status {status}: {last}".strip()


def notify_release(host: Host, event: notify.Event) -> None:
    """After an outcome: the current release's own on_* hook, run as the service."""
    from pyrelctl.errors import PyrelctlError

    app = host.layout.app(event.app)
    try:
        current = app.current_version()
        if current is None:
            return
        release = release_of(app, current)
        problem = run_notification(host.layout.root, app, release, event.event, event.environment())
    except PyrelctlError as e:
        problem = e.message
    if problem is not None:
        host.say(f"warning: {problem}")
