#!/usr/bin/env python3
"""Write pyrelctl's man page and shell completion scripts from its click CLI.

    python3 packaging/gendocs.py --man DIR --completions DIR

* ``DIR/pyrelctl.1``: one page for the command and all its subcommands
  (generated units say ``Documentation=man:pyrelctl(1)``), from the same
  help texts ``pyrelctl COMMAND --help`` prints, so the two never drift.
* ``DIR/bash/pyrelctl``, ``DIR/zsh/_pyrelctl``, ``DIR/fish/pyrelctl.fish``:
  click's completion scripts, named as each shell's lazy loader expects. They
  are the text ``_PYRELCTL_COMPLETE=bash_source pyrelctl`` prints; at <Tab>
  they call pyrelctl, which completes app names and versions from the host.

The Debian and RPM builds run this against the package they just built
(``PYTHONPATH`` pointing at it). The page's date is ``SOURCE_DATE_EPOCH``
when set (dpkg sets it from debian/changelog), so builds are reproducible.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from click.shell_completion import get_completion_class

PROG = "pyrelctl"
COMPLETE_VAR = "_PYRELCTL_COMPLETE"
#: Where each shell's completion loader looks for a command's script, by file name.
COMPLETION_FILES = {"bash": "bash/pyrelctl", "zsh": "zsh/_pyrelctl", "fish": "fish/pyrelctl.fish"}

EXIT_STATUS = (
    ("0", "Done."),
    ("1", "Failed: systemd or the host refused something."),
    ("2", "Bad input (usage, artifact, manifest, name, checksum); nothing was changed."),
    ("3", "The new release failed to come up; the previous release was restored and runs."),
    ("4", "The new release failed and the previous one could not be restored either."),
    ("5", "Another pyrelctl operation holds this app's lock."),
)
FILES = (
    (
        "/opt/APP/releases/VERSION/",
        "One installed release, owned by root, read-only to the service.",
    ),
    ("/opt/APP/current", "Symlink to releases/VERSION, replaced atomically."),
    (
        "/etc/systemd/system/APP.service",
        "Generated unit; put changes in drop-ins (APP.service.d/*.conf), never overwritten.",
    ),
    ("/etc/pyrelctl/APP/", "Root-only settings, environment file (env), mix cookie (cookie)."),
    ("/var/lib/pyrelctl/APP/", "pyrelctl's state: releases.json and history.jsonl."),
)
SEE_ALSO = "systemctl(1), journalctl(1), systemd-run(1), systemd.service(5), systemd.exec(5)"


def roff_text(text: str) -> str:
    """Text safe in a roff paragraph: backslashes escaped, no line read as a request."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        # A leading . or ' would start a request; \& is a zero-width guard.
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def roff_options(text: str) -> str:
    """Option names in bold, their hyphens as minus signs (man-pages(7))."""
    escaped = roff_text(text)
    return re.sub(
        r"(?<![\w-])(--?[A-Za-z][\w-]*)",
        lambda m: "\\fB" + m.group(1).replace("-", "\\-") + "\\fR",
        escaped,
    )


def paragraphs(help_text: str) -> Iterator[str]:
    """click's help paragraphs as roff: ``\\b`` paragraphs keep their lines."""
    for block in re.split(r"\n[ \t]*\n", inspect.cleandoc(help_text)):
        if block.startswith("\b"):
            body = block.partition("\n")[2]
            yield f".PP\n.nf\n{roff_text(body.rstrip())}\n.fi"
        else:
            yield ".PP\n" + roff_text(" ".join(block.split()))


def option_items(command: click.Command, ctx: click.Context) -> Iterator[str]:
    for param in command.get_params(ctx):
        # Arguments are described in the command's text (click >= 8.2 gives
        # them a bare help record too); hidden options have none.
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record is None or (param.name == "help" and ctx.parent is not None):
            continue  # --help is documented once, with the global options
        names, help_text = record
        yield f".TP\n{roff_options(names)}\n{roff_text(' '.join(help_text.split()))}"


def walk(
    command: click.Command, ctx: click.Context
) -> Iterator[tuple[click.Command, click.Context]]:
    """Every subcommand, in the order `pyrelctl --help` lists them."""
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = click.Context(sub, info_name=name, parent=ctx)
            if isinstance(sub, click.Group):
                yield from walk(sub, sub_ctx)
            else:
                yield sub, sub_ctx


def man_page(cli: click.Group, version: str, date: str) -> str:
    ctx = click.Context(cli, info_name=PROG)
    help_text = inspect.cleandoc(cli.help or "")
    summary = help_text.splitlines()[0].rstrip(".")
    out = [
        f'.TH PYRELCTL 1 "{date}" "{PROG} {version}" "User Commands"',
        ".SH NAME",
        f"{PROG} \\- {roff_text(summary[0].lower() + summary[1:])}",
        ".SH SYNOPSIS",
        f".B {PROG}\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        *paragraphs(help_text.partition("\n")[2]),
        ".SH OPTIONS",
        *option_items(cli, ctx),
        ".SH COMMANDS",
    ]
    for command, sub_ctx in walk(cli, ctx):
        usage = " ".join([sub_ctx.command_path, *command.collect_usage_pieces(sub_ctx)])
        out.append(f'.SS "{roff_text(usage)}"')
        out.extend(paragraphs(command.help or command.short_help or ""))
        out.extend(option_items(command, sub_ctx))
    out.append(".SH EXIT STATUS")
    out.extend(f".TP\n.B {code}\n{roff_text(text)}" for code, text in EXIT_STATUS)
    out.append(".SH FILES")
    out.extend(f".TP\n.I {path}\n{roff_text(text)}" for path, text in FILES)
    out.extend(
        [
            ".SH ENVIRONMENT",
            ".TP\n.B NO_COLOR\nWhen set, output is never coloured.",
            f".TP\n.B {COMPLETE_VAR}\nSet by the shell completion scripts; "
            f"\\fB{COMPLETE_VAR}=bash_source {PROG}\\fR (or \\fBzsh_source\\fR, "
            f"\\fBfish_source\\fR) prints the script for a shell.",
            ".SH SEE ALSO",
            SEE_ALSO,
        ]
    )
    return "\n".join(out) + "\n"


def completion_script(cli: click.Group, shell: str) -> str:
    cls = get_completion_class(shell)
    if cls is None:
        raise SystemExit(f"click has no completion for {shell}")
    return cls(cli, {}, PROG, COMPLETE_VAR).source()


def build_date() -> str:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    when = (
        datetime.datetime.fromtimestamp(epoch, datetime.UTC)
        if epoch
        else datetime.datetime.now(datetime.UTC)
    )
    return when.strftime("%Y-%m-%d")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--man", type=Path, metavar="DIR", help="write DIR/pyrelctl.1")
    parser.add_argument(
        "--completions", type=Path, metavar="DIR", help="write DIR/{bash,zsh,fish}/..."
    )
    args = parser.parse_args(argv)
    if args.man is None and args.completions is None:
        parser.error("give --man and/or --completions")

    from pyrelctl import __version__
    from pyrelctl.cli import cli

    if args.man is not None:
        args.man.mkdir(parents=True, exist_ok=True)
        (args.man / f"{PROG}.1").write_text(man_page(cli, __version__, build_date()))
    if args.completions is not None:
        for shell, name in COMPLETION_FILES.items():
            path = args.completions / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(completion_script(cli, shell))
    return 0


if __name__ == "__main__":
    sys.exit(main())
