"""What the command modules share: the context object, options, output helpers.

Commands get a :class:`Ctx` (``pass_ctx``): the host layout, the output
settings and the systemd client, built once per invocation. Human output
goes to stdout, progress and diagnostics to stderr; ``--json`` prints
exactly one JSON document on stdout (:meth:`Ctx.emit`). Every line for
people is printed by :func:`echo`, which shows what a release or an
artifact wrote instead of letting the terminal obey it (pyrelctl.terminal);
only :func:`echo_exact` prints text as it is (JSON, pyrelctl's own colours).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click

from pyrelctl.defaults import DEFAULT_GRACE, DEFAULT_TIMEOUT
from pyrelctl.errors import BadInput
from pyrelctl.layout import Layout
from pyrelctl.systemd import OfflineSystemd, Systemd, UnitState
from pyrelctl.terminal import LINE_LIMIT, bounded, visible

# The deploy stack (archive, release detection, units, jinja2, health checks)
# is imported by the commands that use it, not here: `pyrelctl status` and
# the other read-only commands start in a fraction of the time (bench/).
if TYPE_CHECKING:
    from pyrelctl.deploy.deployer import Deployer
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
            echo(line, err=True, limit=LINE_LIMIT)

    @property
    def interactive(self) -> bool:
        """Progress bars only for a person watching a terminal."""
        return sys.stderr.isatty() and self.verbosity >= 0 and not self.as_json

    def progress(self, done: int, total: int) -> None:
        # The carriage return is pyrelctl's own: the count rewrites its line.
        echo_exact(f"\r  {done}/{total} files", err=True, nl=done == total)

    def deployer(self) -> Deployer:
        from pyrelctl.deploy.deployer import Deployer

        return Deployer(
            self.layout, self.systemd, self.say, self.progress if self.interactive else None
        )

    def operator(self) -> Operator:
        from pyrelctl.operate import Operator

        return Operator(self.layout, self.systemd, self.say)

    def emit(self, document: object, human: Callable[[], None]) -> None:
        if self.as_json:
            echo_exact(json_text(document))
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


def no_wait_option(f: F) -> F:
    return click.option(
        "--no-wait",
        is_flag=True,
        help="Fail (exit 5) instead of waiting when another pyrelctl "
        "operation holds the app's lock.",
    )(f)


def timeout_option(f: F) -> F:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=1),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        metavar="S",
        help="Seconds to wait for systemd's job and for readiness.",
    )(f)


def grace_option(f: F) -> F:
    return click.option(
        "--grace",
        type=click.FloatRange(min=0),
        default=None,
        metavar="S",
        help=f"Seconds the new release must stay up after it is ready (default "
        f"{DEFAULT_GRACE:g}); remembered for the app.",
    )(f)


def health_options(f: F) -> F:
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


def health_override(http: str | None, tcp: str | None, command: str | None) -> HealthCheck | None:
    """The health check given on the command line, checked like a manifest's."""
    given = {k: v for k, v in (("http", http), ("tcp", tcp), ("command", command)) if v}
    if len(given) > 1:
        raise BadInput("give at most one of --health-http, --health-tcp, --health-command")
    if not given:
        return None
    ((key, value),) = given.items()
    from pyrelctl.manifest import parse_health_table

    return parse_health_table({key: shlex.split(value) if key == "command" else value})


# -- output ------------------------------------------------------------------


def echo(
    text: str = "", *, err: bool = False, nl: bool = True, lines: bool = False,
    limit: int | None = None,
) -> None:  # fmt: skip
    """Print ``text`` for people, every character a terminal would obey shown instead.

    ``lines`` keeps the newlines of a block of lines (a unit file); else
    the text is one line whatever it holds. ``limit`` cuts a longer line
    (pyrelctl.terminal.bounded).
    """
    shown = visible(text, newlines=lines) if limit is None else bounded(text, limit)
    click.echo(shown, err=err, nl=nl)


def echo_exact(text: str, *, err: bool = False, nl: bool = True) -> None:
    """Print ``text`` as it is: a JSON document (JSON escapes every control
    character), a line pyrelctl composed itself from text already made
    visible (its own colours, its progress line's carriage return), or a
    value root set, for scripts (``config get``)."""
    click.echo(text, err=err, nl=nl)


def json_text(document: object) -> str:
    """``--json``'s document: ASCII, every control character escaped (RFC 8259)."""
    return json.dumps(document, indent=2, sort_keys=True, default=str)


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    import datetime

    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def size(n: int | None) -> str:
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


def colour_wanted() -> bool:
    # https://no-color.org: any non-empty NO_COLOR turns colour off.
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    """Aligned columns on a terminal (with colour); tab-separated when piped, for
    cut/awk, with the header as the first line."""
    # Cells made visible before they are joined, measured and coloured: a
    # release's text (history's reasons) is shown, never obeyed, and a tab
    # in it does not make another column.
    rows = [[visible(str(c)).replace("\t", "\\t") for c in row] for row in rows]
    if not sys.stdout.isatty():
        for row in [header, *rows]:
            echo_exact("\t".join(str(c).strip() for c in row))
        return
    colour = colour_wanted()
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for index, row in enumerate([header, *rows]):
        cells = []
        for cell, width in zip(row, widths, strict=True):
            text = str(cell).ljust(width)
            key = str(cell).split(" ")[0].split(":")[0]
            if colour and index > 0 and key in _COLOURS:
                text = click.style(text, fg=_COLOURS[key])
            cells.append(text)
        echo_exact("  ".join(cells).rstrip())


def state_json(state: UnitState | None) -> dict[str, Any] | None:
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
        "restarts": state.n_restarts,
        "memory_bytes": state.memory_bytes,
    }
