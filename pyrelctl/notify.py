"""Telling people what a deploy did: the host's hooks in ``/etc/pyrelctl/hooks.d/``.

After every install, rollback and configuration change, and after an
automatic rollback, pyrelctl runs each executable in ``/etc/pyrelctl/hooks.d/``
in name order (as run-parts does), as root: they are the host's own scripts
(a curl to a chat webhook, a page). Each gets

* ``PYRELCTL_EVENT``: ``success``, ``failure`` (the app did not come up and
  nothing could be restored, or restoring failed too) or ``rollback``
  (pyrelctl restored the previous release or configuration by itself);
* ``PYRELCTL_ACTION`` (``install``, ``rollback``, ``config``, ``watch``,
  ``job``: a scheduled job of the app failed, procs/failed.py),
  ``PYRELCTL_APP``, ``PYRELCTL_VERSION``, ``PYRELCTL_PREVIOUS``,
  ``PYRELCTL_USER``, ``PYRELCTL_RESULT`` (``ok``, ``rolled-back``,
  ``failed``, ``down``), ``PYRELCTL_EXIT_CODE`` (for a job: its command's
  exit status, 128 + the signal that killed it);
* for a job only, ``PYRELCTL_JOB`` (the timer's name in release.toml) and
  ``PYRELCTL_JOB_RESULT`` (systemd's ``Result``: ``exit-code``, ``timeout``,
  ``signal``, ...);
* on stdin, the failure summary: the error line, then the failed start's
  journal lines (empty on success).

A hook runs at most :data:`HOOK_TIMEOUT` seconds (``timeout`` in
``/etc/pyrelctl/notify.toml``). Whatever it does (fails,
hangs, is not executable), the deploy's result and exit code stay what
they were; pyrelctl says what went wrong with it. A file pyrelctl would not
trust as root's own (not owned by root, writable by others, in a directory
others may write) is skipped with a warning, never run.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrelctl.errors import BadInput, DeployFailed, ExitCode
from pyrelctl.layout import Layout, who

HOOKS_DIR = "etc/pyrelctl/hooks.d"
HOOK_TIMEOUT = 10.0
#: ``timeout = SECONDS`` here sets how long each hook may run.
SETTINGS = "etc/pyrelctl/notify.toml"


def hook_timeout(layout: Layout) -> float:
    """Seconds each host hook may run (notify.toml, else :data:`HOOK_TIMEOUT`)."""
    path = layout.root / SETTINGS
    try:
        import tomllib

        value = tomllib.loads(path.read_text()).get("timeout", HOOK_TIMEOUT)
    except FileNotFoundError:
        return HOOK_TIMEOUT
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: {e}") from e
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 600:
        raise BadInput(f"{path}: timeout must be seconds, more than 0 and at most 600")
    return float(value)


@dataclass(frozen=True)
class Event:
    """What happened, as a notification hook is told it."""

    event: str  # success | failure | rollback
    action: str  # install | rollback | config | watch | job
    app: str
    version: str | None
    previous: str | None
    result: str  # ok | rolled-back | failed | down
    exit_code: int
    summary: str = ""
    job: str = ""  # a failed job's timer name (action "job")
    job_result: str = ""  # its systemd Result

    def environment(self) -> dict[str, str]:
        job = {"PYRELCTL_JOB": self.job, "PYRELCTL_JOB_RESULT": self.job_result}
        return {
            "PYRELCTL_EVENT": self.event,
            "PYRELCTL_ACTION": self.action,
            "PYRELCTL_APP": self.app,
            "PYRELCTL_VERSION": self.version or "",
            "PYRELCTL_PREVIOUS": self.previous or "",
            "PYRELCTL_USER": who(),
            "PYRELCTL_RESULT": self.result,
            "PYRELCTL_EXIT_CODE": str(self.exit_code),
            **(job if self.job else {}),
        }


def _trusted(path: Path, st: os.stat_result) -> str | None:
    """Why ``path`` is not run as root, or None if it may be."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not st.st_mode & stat.S_IXUSR:
        return "not executable"
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return "writable by others than root"
    return None


def hooks(layout: Layout) -> tuple[list[Path], list[str]]:
    """The hooks to run, in name order, and warnings about the files skipped."""
    directory = layout.root / HOOKS_DIR
    try:
        dst = os.stat(directory, follow_symlinks=False)
    except FileNotFoundError:
        return [], []
    if not stat.S_ISDIR(dst.st_mode) or dst.st_uid != 0 or dst.st_mode & 0o022:
        return [], [f"{directory} is not a directory only root can write: no hook run"]
    run: list[Path] = []
    skipped: list[str] = []
    for name in sorted(os.listdir(directory)):
        # run-parts(8) leaves these alone too: editor backups, package leftovers.
        if name.startswith(".") or name.endswith(("~", ".dpkg-old", ".dpkg-dist", ".dpkg-new")):
            continue
        path = directory / name
        why = _trusted(path, os.stat(path, follow_symlinks=False))
        if why == "not executable":
            continue  # as run-parts: a way to switch a hook off
        if why is not None:
            skipped.append(f"{path} not run: {why}")
            continue
        run.append(path)
    return run, skipped


def notify(layout: Layout, event: Event, say: Callable[[str], None]) -> list[str]:
    """Run the host's hooks for ``event``; return what went wrong (also said)."""
    if layout.offline:
        return []  # offline (--root) nothing runs on the host
    found, problems = hooks(layout)
    if not found and not problems:
        return []
    from pyrelctl.run import run

    env: Mapping[str, str] = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        **event.environment(),
    }
    try:
        timeout = hook_timeout(layout)
    except BadInput as e:
        problems.append(e.message)
        timeout = HOOK_TIMEOUT
    for path in found:
        try:
            proc = run([path], check=False, input=event.summary, env=env, timeout=timeout)
        except Exception as e:  # a notification never changes the outcome
            problems.append(f"{path.name}: {getattr(e, 'message', e)}")
            continue
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [""])[-1]
            problems.append(f"{path.name} exited with status {proc.returncode}: {last}".strip())
    for problem in problems:
        say(f"warning: notification hook {problem}")
    return problems


def failure_event(action: str, error: DeployFailed) -> Event:
    """The event of a failed deploy, from its report (deploy/restore.py, appconfig/apply.py)."""
    report: dict[str, Any] = dict(error.report)
    failed: dict[str, Any] = report.get("failed") or {}
    restored = error.exit_code == ExitCode.ROLLED_BACK
    journal = failed.get("journal") or []
    return Event(
        event="rollback" if restored else "failure",
        action=action,
        app=str(report.get("app", "")),
        version=str(failed.get("version") or report.get("generation") or "") or None,
        previous=None if report.get("previous") is None else str(report["previous"]),
        result="rolled-back"
        if restored
        else ("down" if error.exit_code == ExitCode.ROLLBACK_FAILED else "failed"),
        exit_code=int(error.exit_code),
        summary="\n".join([error.message, *journal]) + "\n",
    )
