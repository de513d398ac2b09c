"""Transient units that run a release's commands as its service would.

``systemd-run --wait`` starts a unit with the service's exec settings (the
same data the unit file is rendered from, see units.exec_settings) and a
runtime directory of its own: ``RuntimeDirectory=APP`` would be removed
under the running service when the transient unit stops. Used by
rpc/eval/remote (operate.py) and by hooks and command health checks
(deploy.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyrelctl.errors import BadInput
from pyrelctl.layout import AppPaths
from pyrelctl.release import Release
from pyrelctl.units import ServiceSpec, exec_settings

SYSTEMD_RUN = "systemd-run"
#: Parent of the transient units' runtime directories (``/run/pyrelctl/APP-VERB-TOKEN``).
RUNTIME_PARENT = "pyrelctl"


def transient_stem(app: str, verb: str, token: str) -> str:
    """The name (without ``.service``) of one command's transient unit."""
    return f"pyrelctl-{app}-{verb}-{token}"


def dropins_note(app: AppPaths, what: str) -> str | None:
    """A warning for the operator when ``APP.service.d/`` has drop-ins, else None.

    A transient unit is built from what pyrelctl generates, so the
    operator's drop-ins (``systemctl edit APP``) amend the service only: a
    variable set there is missing from a migration hook or an ``eval``.
    """
    if not any(app.dropin_dir.glob("*.conf")):
        return None
    return (
        f"note: {app.dropin_dir} is not applied to {what}; settings both need "
        f"belong in /etc/pyrelctl/{app.name}/env"
    )


def _no_expansion(arg: str) -> str:
    # PID 1 expands $VAR and ${VAR} in the ExecStart= of transient units too
    # (systemd-run's --expand-environment=no only exists from v254): `$$` is
    # a literal `$` in every version. `%` needs nothing: properties set over
    # D-Bus expand no specifiers.
    return arg.replace("$", "$$")


@dataclass(frozen=True)
class TransientCommand:
    """A release command ready to run: the transient unit's name and systemd-run's argv."""

    unit: str
    argv: tuple[str, ...]


def transient_command(
    app: str,
    release: Release,
    verb: str,
    args: Sequence[str],
    *,
    release_dir: Path,
    environment_files: Sequence[str],
    token: str,
    pty: bool = False,
    credentials: Sequence[str] = (),
) -> TransientCommand:
    """The ``systemd-run`` command line that runs ``release``'s ``verb`` (plus ``args``)
    as ``app``'s service would, from ``release_dir``.

    ``--wait`` keeps systemd-run until the command ends and exits with its
    status; ``--pipe`` hands it pyrelctl's own stdin, stdout and stderr
    (``--pty`` a new pseudo-terminal instead, for a console); ``--collect``
    unloads the unit even when the command fails, so nothing is left behind;
    ``--quiet`` keeps systemd-run's own chatter out of the command's output.
    """
    command = release.command(verb)
    if command is None:
        raise BadInput(f"{release.name} {release.version} has no {verb} command")
    return transient_argv(
        app,
        release,
        verb,
        [*command, *args],
        release_dir=release_dir,
        environment_files=environment_files,
        token=token,
        pty=pty,
        credentials=credentials,
    )


def transient_argv(
    app: str,
    release: Release,
    purpose: str,
    argv: Sequence[str],
    *,
    release_dir: Path,
    environment_files: Sequence[str],
    token: str,
    pty: bool = False,
    credentials: Sequence[str] = (),
) -> TransientCommand:
    """Like :func:`transient_command`, for any release-relative ``argv`` (hooks,
    command health checks); ``purpose`` names the unit."""
    stem = transient_stem(app, purpose, token)
    spec = ServiceSpec(
        app=app,
        release=release,
        environment_files=tuple(environment_files),
        credentials=tuple(credentials),
    )
    runtime = f"{RUNTIME_PARENT}/{app}-{purpose}-{token}"
    settings = exec_settings(spec, root=release_dir, runtime_directory=runtime)
    full = spec.absolute_argv(argv, root=release_dir)
    unit = f"{stem}.service"
    systemd_run = (
        SYSTEMD_RUN,
        f"--unit={unit}",
        f"--description=pyrelctl {purpose} {app} ({release.kind} release {release.version})",
        "--quiet",
        "--collect",
        "--wait",
        "--pty" if pty else "--pipe",
        *(f"--property={key}={value}" for key, value in settings),
        "--",
        *(_no_expansion(arg) for arg in full),
    )
    return TransientCommand(unit, systemd_run)
