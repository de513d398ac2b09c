"""Shell completion of app names and release versions, read from the host.

click's own completion machinery does the rest (``_PYRELCTL_COMPLETE=bash_source
pyrelctl`` prints the script a shell sources; the packages ship it). These
callbacks run on every <Tab>, so they read only the layout's small state
files, never talk to systemd, and swallow every error: a completion must
never print a traceback into the operator's prompt.

During completion click parses the command line without running the group's
callback, so the context object is not set up: ``--root`` is read from the
root context's parameters instead.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

import click
from click.shell_completion import CompletionItem

from pyrelctl.errors import PyrelctlError
from pyrelctl.layout import Layout, Mark

Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _layout(ctx: click.Context) -> Layout:
    # Given after the command (`pyrelctl status --root R`), it is in meta.
    root = ctx.meta.get("pyrelctl.root") or ctx.find_root().params.get("root")
    return Layout(Path(os.fspath(root)) if root else Path("/"))


def complete_app(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Installed app names starting with ``incomplete``, with their current release."""
    try:
        layout = _layout(ctx)
        items = []
        for name in layout.apps():
            if name.startswith(incomplete):
                current = layout.app(name).current_version()
                items.append(CompletionItem(name, help=f"current {current}" if current else None))
        return items
    except (OSError, PyrelctlError, ValueError):
        return []


def _app_on_line(ctx: click.Context) -> str | None:
    """The APP argument of the command being completed, if it is on the line yet.

    click parses the line leniently before completing an option's value; an
    option still waiting for that value (``rollback shop --to <Tab>``) makes
    it drop the other arguments, so ``ctx.params`` has no app then. The words
    are in ``COMP_WORDS`` (click's bash, zsh and fish scripts all set it).
    """
    app = ctx.params.get("app")
    if isinstance(app, str):
        return app
    line = os.environ.get("COMP_WORDS", "")
    try:
        words = shlex.split(line)
    except ValueError:  # an unclosed quote
        words = line.split()
    if ctx.info_name not in words:
        return None
    takes_value = {
        opt
        for p in ctx.command.params
        if isinstance(p, click.Option) and not p.is_flag and not p.count
        for opt in p.opts
    }
    skip = False
    for word in words[words.index(ctx.info_name) + 1 :]:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in takes_value
        else:
            return word
    return None


def version_completer(*, skip_current: bool = False, skip_failed: bool = False) -> Completer:
    """A completer of the installed versions of the app named earlier on the line.

    ``rollback --to`` skips the current release and failed ones (it refuses
    both); ``eval --release`` offers every version.
    """

    def complete(
        ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        app = _app_on_line(ctx)
        if app is None:
            return []
        try:
            paths = _layout(ctx).app(app)
            current = paths.current_version()
            index = paths.read_index()
            items = []
            for version in reversed(paths.versions()):  # newest first
                mark = index.get(version, {}).get("mark", Mark.NEW)
                if not version.startswith(incomplete):
                    continue
                if (skip_current and version == current) or (skip_failed and mark == Mark.FAILED):
                    continue
                help_text = f"{mark}, current" if version == current else str(mark)
                items.append(CompletionItem(version, help=help_text))
            return items
        except (OSError, PyrelctlError, ValueError):
            return []

    return complete


complete_version = version_completer()
complete_rollback_target = version_completer(skip_current=True, skip_failed=True)
