"""Commands around the deploys: build a Python release, manage secrets."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from pyrelctl.cli.common import Ctx, echo, no_wait_option, pass_ctx, table, when
from pyrelctl.completion import complete_app


@click.command("build")
@click.argument(
    "project_dir", required=False, default=".", type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Where to write the tarball (default: PROJECT_DIR/dist).",
)
@click.option(
    "--python",
    default=sys.executable,
    show_default="pyrelctl's own Python",
    metavar="PYTHON",
    help="The interpreter (with pip) to resolve wheels for: the X.Y the target host runs.",
)
@pass_ctx
def build_command(obj: Ctx, project_dir: Path, output: Path | None, python: str) -> None:
    """Build a python release tarball from the Python project in PROJECT_DIR.

    Writes NAME-VERSION.tar.gz: the project and every dependency as wheels
    (pinned by pylock.toml, requirements.lock or requirements.txt when the
    project has one), pyrelctl_runtime, release.toml (from [project] and
    [tool.pyrelctl]) and SHA256SUMS. The same input gives the same bytes;
    SOURCE_DATE_EPOCH sets every time stamp. pip may download from your
    index here; `pyrelctl install` later needs no network. Run as root, pip
    and the project's build code run as an unprivileged user on a copy of
    the project (a sandboxed dynamic user under systemd, else nobody). See
    docs/python.md.
    """
    from pyrelctl.build import build as build_release  # only here: ~30 ms of imports

    # Progress for the slow steps on a terminal (or with -v); logs stay clean.
    say = obj.say if sys.stderr.isatty() or obj.verbosity >= 1 else (lambda _line: None)
    result = build_release(project_dir, output, python=python, say=say)
    obj.emit(
        result.to_json(),
        lambda: echo(
            f"{result.artifact}\n  {result.name} {result.version}, "
            f"{len(result.packages)} packages, sha256 {result.sha256}"
        ),
    )


@click.group()
def secret() -> None:
    """Manage APP's secrets, handed to the service as systemd credentials.

    The service reads secret NAME from the file $CREDENTIALS_DIRECTORY/NAME.
    Secrets are stored root-only under /etc/pyrelctl/APP/credentials and are
    never put in the environment, where `systemctl show` would print them to
    any user. A running service sees a new or changed secret after a restart.
    """


@secret.command("set")
@click.argument("app", shell_complete=complete_app)
@click.argument("name")
@click.option(
    "--file",
    "source",
    type=click.File("rb"),
    metavar="PATH",
    help="Read the value from PATH instead of stdin (never from the command line).",
)
@click.option("--restart", is_flag=True, help="Restart the service so that it sees the value.")
@no_wait_option
@pass_ctx
def secret_set(obj: Ctx, app: str, name: str, source: Any, restart: bool, no_wait: bool) -> None:
    """Store secret NAME of APP, read from stdin (or --file).

    On a terminal the value is asked for without echo; piped, stdin is read
    to its end: `printf %s "$TOKEN" | pyrelctl secret set shop api-token`.
    """
    if source is not None:
        value = source.read()
    elif sys.stdin.isatty():
        value = click.prompt(f"value of {name}", hide_input=True, err=True).encode()
    else:
        value = sys.stdin.buffer.read()
    deployer = obj.deployer()
    from pyrelctl.appconfig import secrets as credentials

    needs_restart = credentials.set_secret(deployer.host, app, name, value, wait_lock=not no_wait)
    if needs_restart and restart:
        deployer.control(app, "restart", wait_lock=not no_wait)
        needs_restart = False
    obj.emit(
        {"app": app, "secret": name, "size": len(value), "restart_needed": needs_restart},
        lambda: echo(
            f"stored secret {name} of {app} ({len(value)} bytes)"
            + (f"; restart to apply: pyrelctl restart {app}" if needs_restart else "")
        ),
    )


@secret.command("list")
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def secret_list(obj: Ctx, app: str) -> None:
    """List APP's secrets: names, sizes and times, never values."""
    from pyrelctl.appconfig import secrets as credentials

    found = credentials.list_secrets(obj.layout.app(app).require())
    obj.emit(
        {"app": app, "secrets": [dataclasses.asdict(s) for s in found]},
        lambda: table(
            [(s.name, f"{s.size} B", when(s.modified)) for s in found],
            ("NAME", "SIZE", "MODIFIED"),
        ),
    )


@secret.command("rm")
@click.argument("app", shell_complete=complete_app)
@click.argument("name")
@no_wait_option
@pass_ctx
def secret_rm(obj: Ctx, app: str, name: str, no_wait: bool) -> None:
    """Delete secret NAME of APP (the running service keeps its copy until restarted)."""
    from pyrelctl.appconfig import secrets as credentials

    needs_restart = credentials.remove_secret(obj.deployer().host, app, name, wait_lock=not no_wait)
    obj.emit(
        {"app": app, "secret": name, "removed": True, "restart_needed": needs_restart},
        lambda: echo(f"removed secret {name} of {app}"),
    )
