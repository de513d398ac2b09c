"""The release's own commands, run as the service would run them: rpc, eval,
remote."""

from __future__ import annotations

import sys

import click

from pyrelctl.cli.common import Ctx, pass_ctx
from pyrelctl.completion import complete_app, complete_version


def release_command(
    obj: Ctx, app: str, verb: str, expression: str | None = None, version: str | None = None
) -> int:
    # Root first, before systemd or any file is touched: the command runs as
    # the service's user with root-only settings (the cookie).
    from pyrelctl.operate import require_root

    require_root(verb, app)
    return obj.operator().run_command(
        app, verb, expression, version=version, stdin_tty=sys.stdin.isatty()
    )


@click.command()
@click.argument("app", shell_complete=complete_app)
@click.argument("expr")
@pass_ctx
def rpc(obj: Ctx, app: str, expr: str) -> int:
    """Evaluate EXPR inside APP's running service.

    For a mix release this is `bin/NAME rpc EXPR`: Elixir code run in the
    service's node, e.g. 'IO.inspect(Application.started_applications())'.
    Other releases run the `rpc` argv of their release.toml with EXPR
    appended.

    Like eval and remote, the command runs exactly as the service would: as
    its (dynamic) user, with its environment, environment files (the mix
    cookie), working directory and sandbox, from the current release, in a
    transient systemd unit. stdin, stdout and stderr pass through, and
    pyrelctl exits with the command's own status. Needs root, and the service
    running (exit 1 otherwise).

    EXPR arrives byte for byte as the command's last argument, and is in no
    other command line: not systemd-run's, not the unit's ExecStart (it is
    handed over as a credential; `$`, quotes, newlines stay as typed).
    """
    return release_command(obj, app, "rpc", expr)


@click.command("eval")
@click.argument("app", shell_complete=complete_app)
@click.argument("expr")
@click.option(
    "--release",
    "release_version",
    metavar="VERSION",
    shell_complete=complete_version,
    help="Run it from this installed release instead of the current one.",
)
@pass_ctx
def eval_(obj: Ctx, app: str, expr: str, release_version: str | None) -> int:
    """Evaluate EXPR in a fresh instance of APP's release; the service need not run.

    For a mix release this is `bin/NAME eval EXPR`: a new VM with the
    release's code loaded and its applications not started, the place for
    migrations ('Shop.Release.migrate()'). Other releases run the `eval` argv
    of their release.toml with EXPR appended.

    It runs as the service would (its user, environment, environment files,
    working directory and sandbox; see `pyrelctl rpc --help`), from the
    current release or from --release VERSION. pyrelctl exits with the
    command's own status. Needs root.
    """
    return release_command(obj, app, "eval", expr, release_version)


@click.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def remote(obj: Ctx, app: str) -> int:
    """Open an interactive console attached to APP's running service.

    For a mix release this is `bin/NAME remote`: an IEx shell whose
    expressions run in the service's node (so System.halt() there stops the
    service). Leave it with Ctrl-C twice. Other releases run the `remote`
    argv of their release.toml.

    It runs as the service would (see `pyrelctl rpc --help`) on a
    pseudo-terminal of its own. Needs root, a terminal on stdin (exit 2
    otherwise) and the service running (exit 1 otherwise).
    """
    return release_command(obj, app, "remote")
