"""The pyrelctl command line: parse, call the domain modules, print.

Human output goes to stdout, progress and diagnostics to stderr; ``--json``
prints exactly one JSON document on stdout. Errors are one ``error:`` line
(plus a ``hint:``) and the exit code of DESIGN.md; tracebacks only with -v.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar

import click

from pyrelctl import __version__
from pyrelctl.completion import complete_app, complete_rollback_target, complete_version
from pyrelctl.defaults import DEFAULT_GRACE, DEFAULT_KEEP, DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT
from pyrelctl.errors import BadInput, DeployFailed, ExitCode, PyrelctlError
from pyrelctl.layout import Layout, Mark
from pyrelctl.systemd import OfflineSystemd, Systemd, UnitState

# The deploy stack (archive, release detection, units, jinja2, health checks)
# is imported by the commands that use it, not here: `pyrelctl status` and
# the other read-only commands start in a fraction of the time (bench/).
if TYPE_CHECKING:
    from pyrelctl.deploy import Deployer
    from pyrelctl.operate import Operator
    from pyrelctl.release import HealthCheck

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Ctx:
    """What every command gets: the host layout, output settings, and systemd (lazily)."""

    layout: Layout = field(default_factory=Layout)
    as_json: bool = False
    verbosity: int = 0
    _systemd: Systemd | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._systemd is not None:
            self._systemd.close()
            self._systemd = None

    @property
    def systemd(self) -> Systemd:
        if self._systemd is None:
            self._systemd = OfflineSystemd() if self.layout.offline else Systemd()
        return self._systemd

    def say(self, line: str) -> None:
        """Progress for the operator: stderr, silenced by -q and --json."""
        if self.verbosity >= 0 and not self.as_json:
            click.echo(line, err=True)

    @property
    def interactive(self) -> bool:
        """Progress bars only for a person watching a terminal."""
        return sys.stderr.isatty() and self.verbosity >= 0 and not self.as_json

    def progress(self, done: int, total: int) -> None:
        click.echo(f"\r  {done}/{total} files", err=True, nl=done == total)

    def deployer(self) -> Deployer:
        from pyrelctl.deploy import Deployer

        return Deployer(
            self.layout, self.systemd, self.say, self.progress if self.interactive else None
        )

    def operator(self) -> Operator:
        from pyrelctl.operate import Operator

        return Operator(self.layout, self.systemd, self.say)

    def emit(self, document: object, human: Callable[[], None]) -> None:
        if self.as_json:
            click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))
        else:
            human()


pass_ctx = click.make_pass_decorator(Ctx)


class ByteSize(click.ParamType):  # type: ignore[type-arg]  # generic only in click >= 8.2 stubs
    """A size in bytes, with an optional K, M, G or T suffix (powers of 1024)."""

    name = "size"
    _UNITS: ClassVar[dict[str, int]] = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        number, unit = text.rstrip("KMGT"), text[len(text.rstrip("KMGT")) :]
        if unit not in self._UNITS or not number.isascii() or not number.isdigit():
            self.fail(f"{value!r} is not a size such as 500M or 8G", param, ctx)
        return int(number) * self._UNITS[unit]


def _no_wait_option(f: F) -> F:
    return click.option(
        "--no-wait",
        is_flag=True,
        help="Fail (exit 5) instead of waiting when another pyrelctl "
        "operation holds the app's lock.",
    )(f)


def _timeout_option(f: F) -> F:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=1),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        metavar="S",
        help="Seconds to wait for systemd's job and for readiness.",
    )(f)


def _grace_option(f: F) -> F:
    return click.option(
        "--grace",
        type=click.FloatRange(min=0),
        default=None,
        metavar="S",
        help=f"Seconds the new release must stay up after it is ready (default "
        f"{DEFAULT_GRACE:g}); remembered for the app.",
    )(f)


def _health_options(f: F) -> F:
    options = [
        click.option(
            "--health-http",
            metavar="URL",
            help="Ready when GET URL answers 2xx; remembered for the app.",
        ),
        click.option(
            "--health-tcp",
            metavar="HOST:PORT",
            help="Ready when HOST:PORT accepts a connection; remembered.",
        ),
        click.option(
            "--health-command",
            metavar="CMD",
            help="Ready when CMD (run as the service's user) exits 0; remembered.",
        ),
        click.option(
            "--health-reset",
            is_flag=True,
            help="Forget the remembered check: use the release's own [health].",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _health_override(http: str | None, tcp: str | None, command: str | None) -> HealthCheck | None:
    """The health check given on the command line, checked like a manifest's."""
    given = {k: v for k, v in (("http", http), ("tcp", tcp), ("command", command)) if v}
    if len(given) > 1:
        raise BadInput("give at most one of --health-http, --health-tcp, --health-command")
    if not given:
        return None
    ((key, value),) = given.items()
    from pyrelctl.release import parse_health_table

    return parse_health_table({key: shlex.split(value) if key == "command" else value})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Work on the host tree below DIR, offline: files only, no systemd calls.",
    metavar="DIR",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document on stdout (install and read commands).",
)
@click.option("-v", "--verbose", count=True, help="Say more; -vv shows every subprocess.")
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
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
        # Only then: logging costs ~5 ms of every start, and without a
        # configuration warnings still reach stderr (logging.lastResort).
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(message)s", stream=sys.stderr)
    # main() passes in the object so that it can still read the settings
    # when it reports an error; CliRunner and other callers get a fresh one.
    obj = ctx.ensure_object(Ctx)
    obj.layout, obj.as_json, obj.verbosity = Layout(root), as_json, verbosity
    ctx.call_on_close(obj.close)


# -- install / rollback --------------------------------------------------------


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--app",
    "app_name",
    metavar="NAME",
    help="Install under this app name instead of the release's own name.",
)
@click.option(
    "--no-start",
    is_flag=True,
    help="Unpack, render units and switch `current`, but do not restart.",
)
@_timeout_option
@_grace_option
@_health_options
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=DEFAULT_KEEP,
    show_default=True,
    metavar="N",
    help="Releases to keep; older ones are pruned after a good install.",
)
@click.option(
    "--max-size",
    type=ByteSize(),
    default=DEFAULT_MAX_BYTES,
    show_default="8G",
    metavar="SIZE",
    help="Refuse a release that unpacks to more than SIZE (e.g. 500M, 20G).",
)
@click.option(
    "--signature",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="The artifact's ssh-keygen signature (default ARTIFACT.sig); required once "
    "/etc/pyrelctl/[APP/]allowed_signers exists.",
)
@click.option(
    "--listen",
    "listen",
    multiple=True,
    metavar="ADDR",
    help="Socket activation on ADDR (PORT, IP:PORT, [IPv6]:PORT or /path; repeatable): "
    "systemd holds the listener so restarts drop no connection. Remembered for the app; "
    "overrides the release's [socket] listen.",
)
@click.option(
    "--listen-reset",
    is_flag=True,
    help="Forget the remembered --listen: use the release's own [socket], if any.",
)
@_no_wait_option
@pass_ctx
def install(
    obj: Ctx,
    artifact: Path,
    app_name: str | None,
    no_start: bool,
    timeout: float,
    grace: float | None,
    health_http: str | None,
    health_tcp: str | None,
    health_command: str | None,
    health_reset: bool,
    keep: int,
    max_size: int,
    signature: Path | None,
    listen: tuple[str, ...],
    listen_reset: bool,
    no_wait: bool,
) -> None:
    """Install ARTIFACT (a release directory, .tar.gz, .tgz or .tar) and make it current.

    The service is restarted and must come up and stay up for --grace
    seconds; otherwise it is marked failed, the previous release is restored
    and pyrelctl exits with 3 (4 if the previous release fails too, 1 when
    there was no previous release).
    """
    if listen and listen_reset:
        raise BadInput("give either --listen or --listen-reset, not both")
    from pyrelctl.deploy import InstallOptions
    from pyrelctl.sockets import make_socket

    opts = InstallOptions(
        app=app_name,
        start=not no_start,
        timeout=timeout,
        grace=grace,
        keep=keep,
        wait_lock=not no_wait,
        max_bytes=max_size,
        health=_health_override(health_http, health_tcp, health_command),
        reset_health=health_reset,
        listen=make_socket(listen).listen if listen else (),
        reset_listen=listen_reset,
        signature=signature,
    )
    outcome = obj.deployer().install(artifact, opts)

    def human() -> None:
        if outcome.started:
            click.echo(
                f"{outcome.app} {outcome.version} installed and running "
                f"(pid {outcome.main_pid}, {outcome.seconds:.1f} s)"
            )
        elif outcome.changed:
            click.echo(f"{outcome.app} {outcome.version} installed (not started)")
        else:
            click.echo(f"{outcome.app} {outcome.version} is already current; nothing changed")

    obj.emit(outcome.to_json(), human)


@cli.command()
@click.argument("app", shell_complete=complete_app)
@click.option(
    "--to",
    "to_version",
    metavar="VERSION",
    shell_complete=complete_rollback_target,
    help="The release to go back to (default: the previous good one).",
)
@_timeout_option
@_grace_option
@_no_wait_option
@pass_ctx
def rollback(
    obj: Ctx, app: str, to_version: str | None, timeout: float, grace: float | None, no_wait: bool
) -> None:
    """Make an earlier release of APP current again and restart it.

    Without --to, the newest good release installed before the current one.
    Releases that failed to come up are never chosen.
    """
    outcome = obj.deployer().rollback(
        app, to=to_version, timeout=timeout, grace=grace, wait_lock=not no_wait
    )
    obj.emit(
        outcome.to_json(),
        lambda: click.echo(
            f"{outcome.app} rolled back from {outcome.previous} to {outcome.version}"
            + (f" (pid {outcome.main_pid})" if outcome.started else " (not started)")
        ),
    )


# -- read commands -------------------------------------------------------------


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    import datetime

    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]  # int becomes float for display only
    raise AssertionError


#: Words that get a colour in tables on a terminal.
_COLOURS = {
    "active": "green",
    "good": "green",
    "enabled": "green",
    "ok": "green",
    "failed": "red",
    "auto-rollback": "yellow",
    "activating": "yellow",
    "deactivating": "yellow",
}


def _colour_wanted() -> bool:
    # https://no-color.org: any non-empty NO_COLOR turns colour off.
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    """Aligned columns on a terminal (with colour); tab-separated when piped, for
    cut/awk, with the header as the first line."""
    if not sys.stdout.isatty():
        for row in [header, *rows]:
            click.echo("\t".join(str(c).strip() for c in row))
        return
    colour = _colour_wanted()
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for index, row in enumerate([header, *rows]):
        cells = []
        for cell, width in zip(row, widths, strict=True):
            text = str(cell).ljust(width)
            key = str(cell).split(" ")[0].split(":")[0]
            if colour and index > 0 and key in _COLOURS:
                text = click.style(text, fg=_COLOURS[key])
            cells.append(text)
        click.echo("  ".join(cells).rstrip())


@cli.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def releases(obj: Ctx, app: str) -> None:
    """List APP's releases: version, install time, size; marks current and failed ones."""
    paths = obj.layout.app(app).require()
    current = paths.current_version()
    index = paths.read_index()
    rows = []
    for version in paths.versions():
        facts = index.get(version, {})
        rows.append(
            {
                "version": version,
                "current": version == current,
                "mark": facts.get("mark", Mark.NEW),
                "installed_at": facts.get("installed_at"),
                "size": facts.get("size"),
                "artifact": facts.get("artifact"),
            }
        )
    obj.emit(
        {"app": app, "current": current, "releases": rows},
        lambda: _table(
            [
                (
                    "*" if r["current"] else " ",
                    r["version"],
                    _when(r["installed_at"]),
                    _size(r["size"]),
                    r["mark"],
                )
                for r in rows
            ],
            (" ", "VERSION", "INSTALLED", "SIZE", "MARK"),
        ),
    )


def _state_json(state: UnitState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "active_state": state.active_state,
        "sub_state": state.sub_state,
        "main_pid": state.main_pid,
        "enabled": state.unit_file_state,
        "since": state.state_change_usec / 1e6 if state.state_change_usec else None,
        "invocation_id": state.invocation_id,
        "result": state.result,
    }


def _socket_json(state: UnitState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "unit": state.name,
        "active_state": state.active_state,
        "sub_state": state.sub_state,
        "listen": list(state.listen),
    }


def _listening(socket: dict[str, Any] | None) -> str:
    """The SOCKET column: the addresses systemd holds, and its state unless listening."""
    if socket is None:
        return "-"
    addresses = ",".join(socket["listen"]) or socket["unit"]
    if socket["sub_state"] in ("listening", "running"):
        return addresses
    return f"{addresses} ({socket['active_state']})"


@cli.command()
@click.argument("app", required=False, shell_complete=complete_app)
@pass_ctx
def status(obj: Ctx, app: str | None) -> None:
    """Show the unit state and current release of APP (or of every app)."""
    names = [obj.layout.app(app).require().name] if app else obj.layout.apps()
    docs: list[dict[str, Any]] = []
    for name in names:
        paths = obj.layout.app(name)
        state = None if obj.layout.offline else obj.systemd.state(paths.service_name)
        socket = None
        if paths.socket_file.exists() and not obj.layout.offline:
            socket = obj.systemd.state(paths.socket_name)
        current = paths.current_version()
        docs.append(
            {
                "app": name,
                "current": current,
                "mark": paths.mark(current) if current else None,
                "unit": paths.service_name,
                "state": _state_json(state),
                "socket": _socket_json(socket),
            }
        )

    def human() -> None:
        if not docs:
            click.echo("no apps installed")
            return
        rows = []
        for d in docs:
            s = d["state"]
            rows.append(
                (
                    d["app"],
                    d["current"] or "-",
                    f"{s['active_state']} ({s['sub_state']})" if s else "offline",
                    _when(s["since"]) if s else "-",
                    str(s["main_pid"] or "-") if s else "-",
                    s["enabled"] if s else "-",
                    _listening(d["socket"]),
                )
            )
        _table(rows, ("APP", "CURRENT", "STATE", "SINCE", "PID", "ENABLED", "SOCKET"))

    obj.emit(docs[0] if app else {"apps": docs}, human)


@cli.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def history(obj: Ctx, app: str) -> None:
    """Show every install, rollback and automatic rollback of APP, with its result."""
    records = obj.layout.app(app).require().history()
    obj.emit(
        {"app": app, "history": records},
        lambda: _table(
            [
                (
                    _when(r.get("time")),
                    r.get("action", "?"),
                    r.get("from") or "-",
                    r.get("to") or "-",
                    r.get("result", ""),
                    r.get("user", ""),
                )
                for r in records
            ],
            ("TIME", "ACTION", "FROM", "TO", "RESULT", "USER"),
        ),
    )


@cli.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def unit(obj: Ctx, app: str) -> None:
    """Print APP's generated unit files, and the drop-ins that amend them."""
    paths = obj.layout.app(app).require()
    files = [
        paths.service_file,
        *sorted(paths.dropin_dir.glob("*.conf")),
        paths.socket_file,
        *sorted(paths.layout.unit_dir.glob(f"{paths.socket_name}.d/*.conf")),
    ]
    shown = [f for f in files if f.is_file()]
    if not shown:
        raise BadInput(
            f"{paths.service_file} does not exist", hint=f"install a release of {app} first"
        )
    docs = {str(f): f.read_text() for f in shown}

    def human() -> None:
        for name, text in docs.items():
            click.echo(f"# {name}")
            click.echo(text.rstrip("\n"))
            click.echo()

    obj.emit({"app": app, "files": docs}, human)


# -- service control -----------------------------------------------------------


def _control(verb: str) -> click.Command:
    @_timeout_option
    @_no_wait_option
    @click.argument("app", shell_complete=complete_app)
    @pass_ctx
    def command(obj: Ctx, app: str, timeout: float, no_wait: bool) -> None:
        state = obj.deployer().control(app, verb, timeout=timeout, wait_lock=not no_wait)
        obj.emit(
            {"app": app, "state": _state_json(state)},
            lambda: click.echo(
                f"{app}: {state.active_state} ({state.sub_state})"
                + (f", pid {state.main_pid}" if state.main_pid else "")
            ),
        )

    command.__doc__ = f"{verb.capitalize()} APP's service through systemd and wait for the job."
    return click.command(verb)(command)


for _verb in ("start", "stop", "restart"):
    cli.add_command(_control(_verb))


@cli.command()
@click.argument("app", shell_complete=complete_app)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "-n", "--lines", type=click.IntRange(min=0), metavar="N", help="Show the last N lines."
)
@pass_ctx
def logs(obj: Ctx, app: str, follow: bool, lines: int | None) -> None:
    """Show APP's journal (journalctl -u APP)."""
    paths = obj.layout.app(app).require()
    from pyrelctl import journal

    argv = journal.journalctl_argv(
        paths.service_name,
        root=obj.layout.root if obj.layout.offline else None,
        follow=follow,
        lines=lines,
    )
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError as e:
        raise PyrelctlError("journalctl not found", hint="install systemd's journalctl") from e


# -- the release's own commands -------------------------------------------------


def _release_command(
    obj: Ctx, app: str, verb: str, args: Sequence[str] = (), version: str | None = None
) -> int:
    # Root first, before systemd or any file is touched: the command runs as
    # the service's user with root-only settings (the cookie).
    from pyrelctl.operate import require_root

    require_root(verb, app)
    return obj.operator().run_command(
        app, verb, args, version=version, stdin_tty=sys.stdin.isatty()
    )


@cli.command()
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
    """
    return _release_command(obj, app, "rpc", [expr])


@cli.command("eval")
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
    return _release_command(obj, app, "eval", [expr], release_version)


@cli.command()
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
    return _release_command(obj, app, "remote")


@cli.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def pid(obj: Ctx, app: str) -> None:
    """Print the PID of APP's main process (systemd's MainPID); exit 1 if it is not running."""
    main_pid = obj.operator().pid(app)
    obj.emit({"app": app, "pid": main_pid}, lambda: click.echo(str(main_pid)))


@cli.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def version(obj: Ctx, app: str) -> None:
    """Print the version of the release APP runs; if it is stopped, the current one.

    The running release is read from the main process itself (its working
    directory is the release it started from), so after `install --no-start`
    this still names the old release until the service restarts. stderr (and
    --json) says where the answer came from.
    """
    found = obj.operator().version(app)

    def human() -> None:
        click.echo(found.version)
        if found.source == "process":
            where = f"running (pid {found.main_pid})"
        else:
            where = f"current release; {found.detail}" if found.detail else "current release"
        if found.current is not None and found.current != found.version:
            where += f"; current is {found.current} (runs after a restart)"
        obj.say(f"{app} {found.version}: {where}")

    obj.emit(found.to_json(), human)


# -- build ---------------------------------------------------------------------


@cli.command("build")
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
    index here; `pyrelctl install` later needs no network. See docs/python.md.
    """
    from pyrelctl.build import build as build_release  # only here: ~30 ms of imports

    # Progress for the slow steps on a terminal (or with -v); logs stay clean.
    say = obj.say if sys.stderr.isatty() or obj.verbosity >= 1 else (lambda _line: None)
    result = build_release(project_dir, output, python=python, say=say)
    obj.emit(
        result.to_json(),
        lambda: click.echo(
            f"{result.artifact}\n  {result.name} {result.version}, "
            f"{len(result.packages)} packages, sha256 {result.sha256}"
        ),
    )


# -- doctor --------------------------------------------------------------------


@cli.command()
@click.argument("app", required=False, shell_complete=complete_app)
@pass_ctx
def doctor(obj: Ctx, app: str | None) -> int:
    """Check this host and APP (default: every app); print each problem and its fix.

    The host: systemd's version and the features pyrelctl relies on, D-Bus,
    the ownership and modes of /opt, /etc/pyrelctl (0700) and pyrelctl's
    state, free space for the next release. Each app: its current release
    (complete, root-owned, matching its SHA256SUMS), the unit file against
    what pyrelctl renders now, drop-ins (listed), settings and secrets
    (root-only), and the unit's state in systemd. Under --root only the
    files are checked. Changes nothing; exits 1 when it found a problem.
    """
    from pyrelctl.doctor import Doctor, report_lines

    report = Doctor(obj.layout, lambda: obj.systemd).run([app] if app else None)
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

    def human() -> None:
        for line in report_lines(report, quiet=obj.verbosity < 0, colour=colour):
            click.echo(line)

    obj.emit(report.to_json(), human)
    return int(ExitCode.FAILED) if report.problems else 0


# -- secrets -----------------------------------------------------------------


@cli.group()
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
@_no_wait_option
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
    from pyrelctl import credentials

    needs_restart = credentials.set_secret(deployer, app, name, value, wait_lock=not no_wait)
    if needs_restart and restart:
        deployer.control(app, "restart", wait_lock=not no_wait)
        needs_restart = False
    obj.emit(
        {"app": app, "secret": name, "size": len(value), "restart_needed": needs_restart},
        lambda: click.echo(
            f"stored secret {name} of {app} ({len(value)} bytes)"
            + (f"; restart to apply: pyrelctl restart {app}" if needs_restart else "")
        ),
    )


@secret.command("list")
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def secret_list(obj: Ctx, app: str) -> None:
    """List APP's secrets: names, sizes and times, never values."""
    from pyrelctl import credentials

    found = credentials.list_secrets(obj.layout.app(app).require())
    obj.emit(
        {"app": app, "secrets": [dataclasses.asdict(s) for s in found]},
        lambda: _table(
            [(s.name, f"{s.size} B", _when(s.modified)) for s in found],
            ("NAME", "SIZE", "MODIFIED"),
        ),
    )


@secret.command("rm")
@click.argument("app", shell_complete=complete_app)
@click.argument("name")
@_no_wait_option
@pass_ctx
def secret_rm(obj: Ctx, app: str, name: str, no_wait: bool) -> None:
    """Delete secret NAME of APP (the running service keeps its copy until restarted)."""
    from pyrelctl import credentials

    needs_restart = credentials.remove_secret(obj.deployer(), app, name, wait_lock=not no_wait)
    obj.emit(
        {"app": app, "secret": name, "removed": True, "restart_needed": needs_restart},
        lambda: click.echo(f"removed secret {name} of {app}"),
    )


# -- housekeeping --------------------------------------------------------------


@cli.command()
@click.argument("app", shell_complete=complete_app)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=DEFAULT_KEEP,
    show_default=True,
    metavar="N",
    help="Good releases to keep.",
)
@_no_wait_option
@pass_ctx
def prune(obj: Ctx, app: str, keep: int, no_wait: bool) -> None:
    """Remove old releases of APP, keeping N; never the current or last good one.

    Releases that failed to come up do not count towards N and go first.
    """
    pruned = obj.deployer().prune(app, keep=keep, wait_lock=not no_wait)
    obj.emit(
        {"app": app, "pruned": list(pruned)},
        lambda: click.echo(f"removed {', '.join(pruned)}" if pruned else "nothing to prune"),
    )


@cli.command()
@click.argument("app", shell_complete=complete_app)
@click.option(
    "--purge",
    is_flag=True,
    help="Also delete settings, secrets, state (/var/lib/APP), logs and history.",
)
@_no_wait_option
@pass_ctx
def uninstall(obj: Ctx, app: str, purge: bool, no_wait: bool) -> None:
    """Stop APP, disable and remove its unit and releases.

    Settings under /etc/pyrelctl/APP, the service's state and pyrelctl's
    history stay unless --purge is given; drop-ins too.
    """
    removed = obj.deployer().uninstall(app, purge=purge, wait_lock=not no_wait)
    obj.emit(
        {"app": app, "removed": removed},
        lambda: click.echo(
            f"uninstalled {app}"
            + ("" if purge else f" (kept /etc/pyrelctl/{app} and state; --purge removes them)")
        ),
    )


# -- entry point ---------------------------------------------------------------


def _fail(e: PyrelctlError, obj: Ctx) -> NoReturn:
    if isinstance(e, DeployFailed):
        if obj.as_json:
            click.echo(
                json.dumps({"error": e.message, **e.report}, indent=2, sort_keys=True, default=str)
            )
        _print_report(e.report)
    _error_lines(e.message, e.hint)
    sys.exit(int(e.exit_code))


def _error_lines(message: str, hint: str | None) -> None:
    """The one ``error:`` line (and ``hint:`` line) a failure prints on stderr."""
    click.echo("error: " + " ".join(message.split()), err=True)
    if hint:
        click.echo("hint: " + " ".join(hint.split()), err=True)


def _print_report(report: dict[str, Any]) -> None:
    failed = report.get("failed") or {}
    hook_lines = failed.get("hook_output") or []
    if hook_lines:
        click.echo("output of the failed hook:", err=True)
        for line in hook_lines:
            click.echo(f"  {line}", err=True)
    lines = failed.get("journal") or []
    if lines:
        click.echo(
            f"journal of the failed start (invocation {failed.get('invocation_id')}):", err=True
        )
        for line in lines:
            click.echo(f"  {line}", err=True)


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
            import traceback

            traceback.print_exc()
        _fail(e, obj)
    except click.UsageError as e:
        command = e.ctx.command_path if e.ctx is not None else "pyrelctl"
        _error_lines(e.format_message(), f"see: {command} --help")
        sys.exit(ExitCode.BAD_INPUT)
    except click.ClickException as e:
        _error_lines(e.format_message(), None)
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as e:
        if obj.verbosity >= 1:
            raise
        click.echo(
            f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), err=True
        )
        sys.exit(ExitCode.FAILED)
