"""Transient units that run a release's commands as its service would.

``systemd-run --wait`` starts a unit with the service's exec settings (the
same data the unit file is rendered from, see units.exec_settings) and a
runtime directory of its own: ``RuntimeDirectory=APP`` would be removed
under the running service when the transient unit stops. Used by
rpc/eval/remote (operate.py) and by hooks and command health checks
(deploy/hooks.py).

The expression of rpc/eval is kept out of every command line but the
release script's own (security issue 15): systemd-run's argv is in
``ps`` for every local user, and the transient unit's ``ExecStart`` is a
D-Bus property any user may read (``systemctl show``). It travels as a
credential instead (see :func:`transient_command`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyrelctl.errors import BadInput
from pyrelctl.hostfiles import ensure_dir
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


#: Where pyrelctl stages an expression for PID 1 to read (below the layout's
#: root): root-only, on /run's tmpfs, so it never reaches a disk.
INPUT_DIR = "run/pyrelctl-input"
#: The credential ID of the expression. The ``+`` keeps it apart from every
#: secret's name (credentials.NAME_RE has none); systemd allows it
#: (credential_name_valid: a file name and an fdname, no ``:``).
EXPRESSION_CREDENTIAL = "pyrelctl+expression"
#: Linux's limit on one argument (MAX_ARG_STRLEN, 32 pages, with its NUL):
#: the release script gets the expression as one.
MAX_EXPRESSION = 32 * 4096 - 1
#: The wrapper that turns the credential back into the last argument.
#: ``$(...)`` strips trailing newlines, so an ``x`` is appended after the
#: file and cut again: the expression arrives byte for byte, trailing
#: newlines included. 125 when the file cannot be read (cat says why).
EXPRESSION_WRAPPER = (
    f'e=$(/bin/cat -- "$CREDENTIALS_DIRECTORY/{EXPRESSION_CREDENTIAL}" && echo x) || exit 125; '
    'exec "$@" "${e%x}"'
)


@dataclass(frozen=True)
class StagedInput:
    """A file pyrelctl writes before systemd-run starts and removes after it ends."""

    path: Path
    data: bytes


@dataclass(frozen=True)
class TransientCommand:
    """A release command ready to run: the transient unit's name and systemd-run's argv.

    ``staged``, when set, must exist while systemd-run starts the unit: run
    the argv inside :func:`staged_input`.
    """

    unit: str
    argv: tuple[str, ...]
    staged: StagedInput | None = None


def expression_bytes(expression: str) -> bytes:
    """The bytes of an expression as the caller typed them, or :class:`BadInput`.

    ``os.fsencode`` gives back the exact bytes of a command-line argument
    that was not valid UTF-8 (Python decoded it with surrogateescape).
    """
    try:
        data = os.fsencode(expression)
    except UnicodeEncodeError as e:
        raise BadInput(f"the expression cannot be encoded ({e.reason})") from e
    if b"\0" in data:
        raise BadInput("the expression contains a NUL byte, which no argument can hold")
    if len(data) > MAX_EXPRESSION:
        raise BadInput(
            f"the expression is {len(data)} bytes; Linux passes at most {MAX_EXPRESSION} "
            "in one argument",
            hint="put the code into a module of the release and call that",
        )
    return data


@contextlib.contextmanager
def staged_input(command: TransientCommand) -> Iterator[None]:
    """Write ``command.staged`` (root-only, never through a link), remove it afterwards.

    PID 1 reads it when it starts the unit (``LoadCredential=``) and hands
    the unit's user a private copy in ``$CREDENTIALS_DIRECTORY``; so the
    file can go as soon as systemd-run returns.
    """
    staged = command.staged
    if staged is None:
        yield
        return
    ensure_dir(staged.path.parent, 0o700)
    # O_EXCL: the name is new (a random token), and a link planted there fails.
    fd = os.open(
        staged.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        with open(fd, "wb") as f:
            f.write(staged.data)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.path.unlink()


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
    expression: str | None = None,
    input_dir: Path | None = None,
) -> TransientCommand:
    """The ``systemd-run`` command line that runs ``release``'s ``verb`` (plus ``args``)
    as ``app``'s service would, from ``release_dir``.

    ``--wait`` keeps systemd-run until the command ends and exits with its
    status; ``--pipe`` hands it pyrelctl's own stdin, stdout and stderr
    (``--pty`` a new pseudo-terminal instead, for a console); ``--collect``
    unloads the unit even when the command fails, so nothing is left behind;
    ``--quiet`` keeps systemd-run's own chatter out of the command's output.

    ``expression`` (rpc, eval) becomes the command's last argument without
    being in systemd-run's argv or the unit's ``ExecStart``: it is staged in
    ``input_dir`` (root-only), loaded with ``LoadCredential=`` and read back
    by a fixed ``/bin/sh`` wrapper (:data:`EXPRESSION_WRAPPER`) that execs
    the release's command with it. stdin stays the caller's.
    """
    command = release.command(verb)
    if command is None:
        raise BadInput(f"{release.name} {release.version} has no {verb} command")
    staged = None
    if expression is not None:
        if input_dir is None:
            raise ValueError("an expression needs an input_dir to be staged in")
        stem = transient_stem(app, verb, token)
        staged = StagedInput(input_dir / stem, expression_bytes(expression))
    built = transient_argv(
        app,
        release,
        verb,
        [*command, *args],
        release_dir=release_dir,
        environment_files=environment_files,
        token=token,
        pty=pty,
        credentials=credentials,
        expression_file=None if staged is None else staged.path,
    )
    return TransientCommand(built.unit, built.argv, staged)


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
    expression_file: Path | None = None,
) -> TransientCommand:
    """Like :func:`transient_command`, for any release-relative ``argv`` (hooks,
    command health checks); ``purpose`` names the unit. With
    ``expression_file``, the content of that file becomes the last argument
    (through :data:`EXPRESSION_WRAPPER`); the caller writes it."""
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
    if expression_file is not None:
        # PID 1 reads the file as root when the unit starts; the unit's user
        # gets its own copy in $CREDENTIALS_DIRECTORY (systemd.exec(5)).
        settings = (*settings, ("LoadCredential", f"{EXPRESSION_CREDENTIAL}:{expression_file}"))
        # "sh" is the wrapper's $0; the release's command is "$@".
        full = ["/bin/sh", "-c", EXPRESSION_WRAPPER, "sh", *full]
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
