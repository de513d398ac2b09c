"""``pyrelctl config``: an app's environment, changed as a verified deploy."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pyrelctl.cli.common import (
    Ctx,
    echo,
    echo_exact,
    no_wait_option,
    pass_ctx,
    table,
    timeout_option,
    when,
)
from pyrelctl.completion import complete_app
from pyrelctl.defaults import DEFAULT_KEEP
from pyrelctl.errors import BadInput

if TYPE_CHECKING:
    from pyrelctl.appconfig.apply import Configurator, Edit

MASK = "********"


def _configurator(obj: Ctx) -> Configurator:
    from pyrelctl.appconfig.apply import Configurator

    return Configurator(obj.deployer().host)


def _apply_options(f: Any) -> Any:
    """What every changing subcommand takes."""
    f = click.option(
        "--no-restart",
        is_flag=True,
        help="Stage the change: it becomes current, and the next start or deploy runs with it.",
    )(f)
    f = click.option(
        "--no-create",
        is_flag=True,
        help="Refuse an app that is not installed (by default its configuration is kept "
        "for its first install).",
    )(f)
    f = click.option(
        "--keep",
        type=click.IntRange(min=1),
        default=DEFAULT_KEEP,
        show_default=True,
        metavar="N",
        help="Configuration generations to keep.",
    )(f)
    return no_wait_option(timeout_option(f))


def _run(obj: Ctx, app: str, edit: Edit, opts: dict[str, Any]) -> None:
    outcome = _configurator(obj).change(
        app,
        edit,
        restart=not opts["no_restart"],
        create=not opts["no_create"],
        timeout=opts["timeout"],
        keep=opts["keep"],
        wait_lock=not opts["no_wait"],
    )
    from pyrelctl.appconfig.envfile import describe

    def human() -> None:
        if outcome.generation == outcome.previous:
            echo(f"{outcome.app}: nothing changed (generation {outcome.generation})")
            return
        how = "applied, the service is up" if outcome.applied else "staged for the next start"
        echo(
            f"{outcome.app}: configuration generation {outcome.generation} "
            f"({describe(outcome.change)}) {how}"
        )

    obj.emit(outcome.to_json(), human)


def parse_assignments(pairs: tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` words; ``KEY=-`` takes the value from stdin (one line, the
    trailing newline dropped), so that it enters no argv or shell history."""
    values: dict[str, str] = {}
    from_stdin = [p for p in pairs if p.endswith("=-")]
    if len(from_stdin) > 1:
        raise BadInput("only one KEY=- can read its value from stdin")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadInput(f"{pair!r} is not KEY=VALUE", hint="e.g. pyrelctl config set shop A=1")
        if value == "-":
            if sys.stdin.isatty():
                value = click.prompt(f"value of {key}", hide_input=True, err=True)
            else:
                value = sys.stdin.read()
                value = value[:-1] if value.endswith("\n") else value
                value = value[:-1] if value.endswith("\r") else value
        values[key] = value
    return values


@click.group()
def config() -> None:
    """APP's environment variables, each change applied and verified like a deploy.

    Every change makes a new configuration generation (root-only, in
    /etc/pyrelctl/APP/config, read by PID 1 with EnvironmentFile=, so no
    value shows in `systemctl show`). A running service restarts with it
    and must come up as after an install; if it does not, the previous
    generation is restored and restarted (exit 3). Values can be set before
    the first install, which then starts with them. Secrets the app can read
    from a file belong in `pyrelctl secret`.
    """


@config.command("set")
@click.argument("app", shell_complete=complete_app)
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@_apply_options
@pass_ctx
def config_set(obj: Ctx, /, app: str, pairs: tuple[str, ...], **opts: Any) -> None:
    """Set variables of APP: `pyrelctl config set shop POOL_SIZE=20 SECRET_KEY=-`.

    KEY=- reads that value from stdin (a terminal asks without echo).
    """
    from pyrelctl.appconfig import apply, envfile

    values = envfile.check(parse_assignments(pairs))
    _run(obj, app, apply.set_values(values), opts)


@config.command("unset")
@click.argument("app", shell_complete=complete_app)
@click.argument("names", nargs=-1, required=True, metavar="KEY...")
@_apply_options
@pass_ctx
def config_unset(obj: Ctx, /, app: str, names: tuple[str, ...], **opts: Any) -> None:
    """Remove variables of APP."""
    from pyrelctl.appconfig import apply

    _run(obj, app, apply.unset_values(list(names)), opts)


@config.command("import")
@click.argument("app", shell_complete=complete_app)
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--replace", is_flag=True, help="Make FILE the whole configuration.")
@_apply_options
@pass_ctx
def config_import(obj: Ctx, /, app: str, file: Path, replace: bool, **opts: Any) -> None:
    """Set APP's variables from a dotenv FILE (KEY=value lines, # comments)."""
    from pyrelctl.appconfig import apply, envfile

    values = envfile.parse(file.read_text(), source=str(file))
    _run(obj, app, apply.replace_values(values) if replace else apply.set_values(values), opts)


@config.command("edit")
@click.argument("app", shell_complete=complete_app)
@_apply_options
@pass_ctx
def config_edit(obj: Ctx, /, app: str, **opts: Any) -> None:
    """Edit APP's variables in $VISUAL or $EDITOR; applied once the file is saved and valid."""
    from pyrelctl.appconfig import apply, envfile
    from pyrelctl.appconfig.generations import Generations

    current = Generations(_configurator(obj).app(app, create=not opts["no_create"])).values()
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "editor"
    header = f"{app}'s environment: KEY=value lines; save and quit to apply, empty to cancel."
    with tempfile.TemporaryDirectory(prefix="pyrelctl-config-") as tmp:  # 0700
        path = Path(tmp, f"{app}.env")
        path.write_bytes(envfile.render(current, header))
        path.chmod(0o600)
        status = subprocess.call([*shlex.split(editor), str(path)])
        if status != 0:
            raise BadInput(f"{editor} exited with status {status}; nothing changed")
        text = path.read_text()
    if not text.strip():
        raise BadInput("the file was emptied; nothing changed (use `config unset` to remove)")
    values = envfile.parse(text, source=f"the edited {app}.env")
    _run(obj, app, apply.replace_values(values), opts)


@config.command("get")
@click.argument("app", shell_complete=complete_app)
@click.argument("name", metavar="KEY")
@pass_ctx
def config_get(obj: Ctx, app: str, name: str) -> None:
    """Print the value of APP's variable KEY."""
    from pyrelctl.appconfig.generations import Generations

    values = Generations(obj.layout.app(app)).values()
    if name not in values:
        raise BadInput(f"{app} has no variable {name}", hint=f"see: pyrelctl config list {app}")
    # The value exactly as root set it, for $(pyrelctl config get APP KEY):
    # `config set` refuses control characters and line breaks in values.
    obj.emit({"app": app, "name": name, "value": values[name]}, lambda: echo_exact(values[name]))


@config.command("list")
@click.argument("app", shell_complete=complete_app)
@click.option("--show-values", is_flag=True, help="Print the values (masked by default).")
@pass_ctx
def config_list(obj: Ctx, app: str, show_values: bool) -> None:
    """List APP's variables (values masked unless --show-values) and its generation."""
    from pyrelctl.appconfig.generations import Generations

    gens = Generations(obj.layout.app(app))
    current = gens.current()
    values = gens.values()
    shown = {k: (v if show_values else MASK) for k, v in sorted(values.items())}
    info = gens.info(current).to_json() if current is not None else None
    doc = {"app": app, "generation": current, "info": info, "variables": shown}

    def human() -> None:
        if current is None:
            echo(f"{app} has no configuration")
            return
        echo(f"generation {current} ({info['mark'] if info else '?'})", err=True)
        table([(k, v) for k, v in shown.items()], ("NAME", "VALUE"))

    obj.emit(doc, human)


@config.command("history")
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def config_history(obj: Ctx, app: str) -> None:
    """APP's configuration generations: when, by whom, which names changed, how it went."""
    from pyrelctl.appconfig.envfile import describe
    from pyrelctl.appconfig.generations import Generations

    gens = Generations(obj.layout.app(app))
    current = gens.current()
    found = gens.all()
    obj.emit(
        {"app": app, "current": current, "generations": [g.to_json() for g in found]},
        lambda: table(
            [
                (
                    "*" if g.number == current else "",
                    str(g.number),
                    when(g.created_at),
                    g.user,
                    g.mark.value,
                    describe(g.change),
                )
                for g in found
            ],
            ("", "GEN", "CREATED", "BY", "MARK", "CHANGE"),
        ),
    )


@config.command("rollback")
@click.argument("app", shell_complete=complete_app)
@click.option("--to", "to", type=int, metavar="GEN", help="The generation to go back to.")
@timeout_option
@no_wait_option
@pass_ctx
def config_rollback(obj: Ctx, app: str, to: int | None, timeout: float, no_wait: bool) -> None:
    """Make APP's previous configuration generation (or --to GEN) current again, verified."""
    rollback_config(obj, app, to, timeout, no_wait)


def rollback_config(obj: Ctx, app: str, to: int | None, timeout: float, no_wait: bool) -> None:
    """``config rollback`` and ``rollback --config``."""
    outcome = _configurator(obj).rollback(app, to=to, timeout=timeout, wait_lock=not no_wait)
    obj.emit(
        outcome.to_json(),
        lambda: echo(
            f"{outcome.app}: configuration generation {outcome.previous} -> {outcome.generation}"
            + (" (the service is up)" if outcome.applied else " (staged)")
        ),
    )
