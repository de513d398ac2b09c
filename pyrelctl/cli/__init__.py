"""The pyrelctl command line: parse, call the domain modules, print.

Human output goes to stdout, progress and diagnostics to stderr; ``--json``
prints exactly one JSON document on stdout. Errors are one ``error:`` line
(plus a ``hint:``), at most a few hundred characters, and the exit code of
DESIGN.md; tracebacks only with -v. Whatever a release or an artifact wrote
is shown, not obeyed, by the terminal (cli.common.echo, pyrelctl.terminal).

Each command lives in a module of this package, imported only when it runs
(:class:`LazyGroup`, after click's "Lazily Loading Subcommands" pattern): a
command loads what it uses and no other command's code (bench/, issue 7).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from pyrelctl import __version__
from pyrelctl.cli.common import Ctx, echo, echo_exact, json_text
from pyrelctl.errors import DeployFailed, ExitCode, PyrelctlError
from pyrelctl.layout import Layout
from pyrelctl.terminal import ERROR_LINE_LIMIT, LINE_LIMIT, visible

#: Every command, in the order `pyrelctl --help` lists them, and where it is.
COMMANDS = {
    "install": "deploys:install",
    "rollback": "deploys:rollback",
    "status": "reads:status",
    "releases": "reads:releases",
    "history": "reads:history",
    "logs": "reads:logs",
    "unit": "reads:unit",
    "start": "deploys:start",
    "stop": "deploys:stop",
    "restart": "deploys:restart",
    "scale": "deploys:scale",
    "rpc": "console:rpc",
    "eval": "console:eval_",
    "remote": "console:remote",
    "pid": "reads:pid",
    "version": "reads:version",
    "config": "config:config",
    "secret": "admin:secret",
    "build": "admin:build_command",
    "doctor": "reads:doctor",
    "metrics": "reads:metrics",
    "prune": "deploys:prune",
    "uninstall": "deploys:uninstall",
    "grant": "grants:grant",
    "revoke": "grants:revoke",
    "grants": "grants:grants_command",
    "_watch": "deploys:watch_command",
    "_job-failed": "deploys:job_failed_command",
}


#: The options of every command, accepted before or after its name
#: (``pyrelctl --json releases shop`` and ``pyrelctl releases shop --json``, as
#: systemctl, kubectl and gh take them): one definition each, given to the
#: group (:func:`cli`) and to each command (:func:`_take_global_options`).
GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("--root",),
        {
            "type": click.Path(file_okay=False, path_type=Path),
            "help": "Work on the host tree below DIR, offline: files only, no systemd calls.",
            "metavar": "DIR",
        },
    ),
    (
        ("--json", "as_json"),
        {"is_flag": True, "help": "Print one JSON document on stdout (install and read commands)."},
    ),
    (("-v", "--verbose"), {"count": True, "help": "Say more; -vv shows every subprocess."}),
    (("-q", "--quiet"), {"is_flag": True, "help": "Print only results and errors."}),
)


def _apply_global(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Record one global option in the command's :class:`Ctx`, when it was given."""
    if value in (None, False, 0):
        return value
    obj = ctx.ensure_object(Ctx)
    if param.name == "root":
        obj.layout = Layout(value)
        ctx.meta["pyrelctl.root"] = value  # for completion, which runs no group callback
    elif param.name == "as_json":
        obj.as_json = True
    elif param.name == "quiet":
        obj.verbosity = -1  # -q wins over -v, wherever each stands
    elif param.name == "verbose" and obj.verbosity >= 0:
        obj.verbosity += value
        if obj.verbosity >= 2:
            _debug_logging()
    return value


def _debug_logging() -> None:
    # Only then: logging costs ~5 ms of every start, and without a
    # configuration warnings still reach stderr (logging.lastResort).
    import logging

    class Visible(logging.Formatter):
        # `+ argv` lines name artifacts and release paths: shown, not obeyed.
        def format(self, record: logging.LogRecord) -> str:
            return visible(super().format(record), newlines=True)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Visible("%(message)s"))
    logging.basicConfig(level=logging.DEBUG, handlers=[handler])


def _take_global_options(command: click.Command) -> None:
    """Give ``command`` (and a group's subcommands) the global options, once."""
    if getattr(command, "_pyrelctl_globals", False):
        return
    known = {opt for param in command.params for opt in getattr(param, "opts", ())}
    for decls, attrs in GLOBAL_OPTIONS:
        if known.isdisjoint(decls):
            command.params.append(
                click.Option(decls, expose_value=False, callback=_apply_global, **attrs)
            )
    command._pyrelctl_globals = True  # type: ignore[attr-defined]  # a marker of ours
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _take_global_options(sub)


class LazyGroup(click.Group):
    """A group whose subcommands are imported from :data:`COMMANDS` when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        # `_watch` and `_job-failed` are pyrelctl's own, run by its units: not for people.
        return [name for name in COMMANDS if not name.startswith("_")]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, name = where.split(":")
        command = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        assert isinstance(command, click.Command), where
        _take_global_options(command)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name not in _DELEGABLE | _ROOT_ONLY or command is None:
            return name, command, rest
        if not isinstance(command, click.Group):
            return name, _Delegating(command), rest
        # config, secret: groups, which shell completion must still see as
        # groups; refused here unless completing, asking for help or --root.
        obj = ctx.find_object(Ctx)
        if not (ctx.resilient_parsing or {"-h", "--help", "--root"} & set(rest) or obj is None):
            from pyrelctl.delegate import client

            client.refuse_root_only(name, offline=obj.layout.offline)
        return name, command, rest


#: The commands a user without root may run by grant (delegate/policy.py's RULES),
#: and those the issue names as root's alone (policy.ROOT_ONLY).
_DELEGABLE = frozenset({"install", "rollback", "status", "releases", "history", "logs"})
_ROOT_ONLY = frozenset(
    {"config", "secret", "uninstall", "prune", "grant", "revoke", "grants", "scale"}
)


class _Delegating(click.Command):
    """A delegable command: parsed here as usual, then run by the root helper when the
    caller is not root and holds a grant (pyrelctl.delegate.client), else here; a
    root-only one is refused for a caller without root on a host with grants."""

    def __init__(self, real: click.Command) -> None:
        super().__init__(real.name, params=real.params)
        self.real = real

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        argv = list(args)
        ctx = self.real.make_context(info_name, args, parent=parent, **extra)
        ctx.meta["pyrelctl.argv"] = [info_name or "", *argv]
        ctx.command = self
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        ctx.command = self.real
        obj = ctx.find_object(Ctx)
        assert obj is not None
        if obj.layout.offline or os.geteuid() == 0:
            return self.real.invoke(ctx)
        from pyrelctl.delegate import client

        name = self.real.name or ""
        client.refuse_root_only(name, offline=obj.layout.offline)
        if not client.wanted(name, ctx.params, offline=obj.layout.offline):
            return self.real.invoke(ctx)
        code = client.forward(
            name,
            ctx.meta["pyrelctl.argv"],
            ctx.params,
            as_json=obj.as_json,
            verbosity=obj.verbosity,
        )
        if code is None:
            return self.real.invoke(ctx)
        sys.exit(code)


def _group_options(f: Any) -> Any:
    for decls, attrs in reversed(GLOBAL_OPTIONS):
        extra: dict[str, Any] = (
            {"default": Path("/"), "show_default": True} if decls == ("--root",) else {}
        )
        f = click.option(*decls, **attrs, **extra)(f)
    return f


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@_group_options
@click.version_option(__version__, prog_name="pyrelctl")
@click.pass_context
def cli(ctx: click.Context, root: Path, as_json: bool, verbose: int, quiet: bool) -> None:
    """Deploy self-contained releases as systemd services.

    pyrelctl installs a release (a `mix release` tarball, or any directory or
    tarball with a release.toml) into /opt/APP/releases/VERSION, generates
    APP.service, switches /opt/APP/current atomically, restarts through
    systemd and waits until the new release is up; if it is not, the previous
    release is restored by itself.

    \b
    Start with:
      pyrelctl install shop-1.0.0.tar.gz
      pyrelctl status
      journalctl -u shop      (or: pyrelctl logs shop)
      pyrelctl rollback shop
    """
    verbosity = -1 if quiet else verbose
    if verbosity >= 2:
        _debug_logging()
    # main() passes in the object so that it can still read the settings
    # when it reports an error; CliRunner and other callers get a fresh one.
    obj = ctx.ensure_object(Ctx)
    obj.layout, obj.as_json, obj.verbosity = Layout(root), as_json, verbosity
    ctx.call_on_close(obj.close)


def _fail(e: PyrelctlError, obj: Ctx) -> NoReturn:
    if isinstance(e, DeployFailed):
        if obj.as_json:
            echo_exact(json_text({"error": e.message, **e.report}))
        _print_report(e.report)
    _error_lines(e.message, e.hint)
    sys.exit(int(e.exit_code))


def _error_lines(message: str, hint: str | None) -> None:
    """The one ``error:`` line (and ``hint:`` line) a failure prints on stderr.

    Each is one line of at most ERROR_LINE_LIMIT characters (and a note of
    the length), whatever an artifact put in it: a member's 32 MiB name, a
    hook's escape sequences (shown, pyrelctl.terminal).
    """
    echo("error: " + " ".join(message.split()), err=True, limit=ERROR_LINE_LIMIT)
    if hint:
        echo("hint: " + " ".join(hint.split()), err=True, limit=ERROR_LINE_LIMIT)


def _print_report(report: dict[str, Any]) -> None:
    failed = report.get("failed") or {}
    hook_lines = failed.get("hook_output") or []
    if hook_lines:
        echo("output of the failed hook:", err=True)
        for line in hook_lines:
            echo(f"  {line}", err=True, limit=LINE_LIMIT)
    lines = failed.get("journal") or []
    if lines:
        echo(f"journal of the failed start (invocation {failed.get('invocation_id')}):", err=True)
        for line in lines:
            echo(f"  {line}", err=True, limit=LINE_LIMIT)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point."""
    obj = Ctx()
    try:
        status = cli.main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name="pyrelctl",
            standalone_mode=False,
            obj=obj,
        )
        sys.exit(status if isinstance(status, int) else 0)
    except PyrelctlError as e:
        if obj.verbosity >= 1:
            _traceback()
        _fail(e, obj)
    except click.UsageError as e:
        command = e.ctx.command_path if e.ctx is not None else "pyrelctl"
        _error_lines(e.format_message(), f"see: {command} --help")
        sys.exit(ExitCode.BAD_INPUT)
    except click.ClickException as e:
        _error_lines(e.format_message(), None)
        sys.exit(e.exit_code)
    except click.Abort:
        echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as e:
        if obj.verbosity >= 1:
            _traceback()
        # The file name may be an artifact's member's.
        _error_lines(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""), None)
        sys.exit(ExitCode.FAILED)


def _traceback() -> None:
    """-v's traceback, its messages shown as text (they may quote a release's)."""
    import traceback

    echo(traceback.format_exc().rstrip("\n"), err=True, lines=True)


def run() -> NoReturn:
    """The ``pyrelctl`` program: :func:`main`, then an exit without interpreter teardown.

    A process that has imported click and the standard library it needs
    spends about 30 ms at exit (median in the bench's container) freeing
    every module's objects one by one, work whose result nobody sees. So,
    once main() is done, this does what the interpreter's own shutdown does
    that matters (joins the threads it would join, runs the atexit
    handlers, flushes stdout and stderr) and ends the process with
    ``os._exit`` (the technique of "Dismissing Python Garbage Collection at
    Instagram", 2017). main() itself still raises SystemExit, so tests and
    in-process callers see no difference.
    """
    import atexit
    import contextlib
    import os

    try:
        main()
    except SystemExit as e:  # main() always ends so; anything else is a bug, shown as usual
        code = e.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)  # what the interpreter does with sys.exit("text")
        code = 1
    threading = sys.modules.get("threading")
    if threading is not None:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A reader that went away (`| head`), or a closed stream: nothing to lose.
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.flush()
    os._exit(int(code))
