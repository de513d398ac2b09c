"""Deploys by grant: grant, revoke, grants (pyrelctl.delegate)."""

from __future__ import annotations

import os

import click

from pyrelctl.cli.common import Ctx, echo, pass_ctx, table
from pyrelctl.completion import complete_app
from pyrelctl.errors import BadInput, NotRoot


def _who_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option("--group", metavar="GROUP", help="Every member of this group.")(f)
    return click.option("--user", metavar="USER", help="This user.")(f)


def _target(user: str | None, group: str | None) -> tuple[str | None, str | None]:
    from pyrelctl.delegate.grants import check_name

    if (user is None) == (group is None):
        raise BadInput("give either --user or --group")
    if user is not None:
        return check_name(user, "user"), None
    assert group is not None
    return None, check_name(group, "group")


def _require_root(obj: Ctx, verb: str) -> None:
    if not obj.layout.offline and os.geteuid() != 0:
        raise NotRoot(f"pyrelctl {verb} changes who may deploy: it must run as root")


def _check_exists(user: str | None, group: str | None) -> None:
    """On the real host, the user or group must exist (a typo grants nobody)."""
    import grp
    import pwd

    try:
        if user is not None:
            pwd.getpwnam(user)
        if group is not None:
            grp.getgrnam(group)
    except KeyError:
        raise BadInput(
            f"no {'user' if user else 'group'} {user or group!r} on this host",
            hint="create it first (adduser --system ci), then grant",
        ) from None


@click.command()
@click.argument("app", shell_complete=complete_app)
@_who_options
@pass_ctx
def grant(obj: Ctx, app: str, user: str | None, group: str | None) -> None:
    """Let a user or group deploy APP's signed releases without root.

    That user may then run, with no sudo: `pyrelctl install APP-VERSION.tar.gz`
    (signed by a key in /etc/pyrelctl/APP/allowed_signers, without the host's
    options: --allow, --listen, --env, --strategy, --app, ...), `pyrelctl
    rollback APP`, and `status`, `releases`, `history`, `logs` of APP. It
    installs and starts pyrelctl-delegate.socket, the local socket of the
    root helper that carries these commands out (docs/hardening.md). Refused
    (exit 2) for an app without a signing key.
    """
    from pyrelctl.delegate import grants, setup

    _require_root(obj, "grant")
    user, group = _target(user, group)
    paths = obj.layout.app(app).require()
    signers = paths.etc / "allowed_signers"
    if not signers.is_file():
        raise BadInput(
            f"{app} has no signing key: a grant allows signed releases only",
            hint=f"list the release key in {signers} (ssh-keygen(1) ALLOWED SIGNERS), "
            "then grant again",
        )
    if not obj.layout.offline:
        _check_exists(user, group)
    current = grants.read(paths)
    grants.write(paths, current.with_(user=user, group=group))
    setup.install(obj.layout, obj.systemd)
    who = f"user {user}" if user else f"group {group}"
    obj.emit(
        grants.read(paths).to_json(),
        lambda: echo(f"{who} may now deploy {app}'s signed releases (pyrelctl revoke undoes it)"),
    )


@click.command()
@click.argument("app", shell_complete=complete_app)
@_who_options
@pass_ctx
def revoke(obj: Ctx, app: str, user: str | None, group: str | None) -> None:
    """Take back a grant on APP from a user or group.

    It applies to the next command: one already running finishes. When the
    host has no grant left, pyrelctl-delegate.socket is stopped and removed.
    """
    from pyrelctl.delegate import grants, setup

    _require_root(obj, "revoke")
    user, group = _target(user, group)
    paths = obj.layout.app(app)
    current = grants.read(paths)
    missing = user not in current.users if user is not None else group not in current.groups
    if missing:
        who = f"user {user}" if user else f"group {group}"
        raise BadInput(f"{who} has no grant on {app}", hint=f"see: pyrelctl grants {app}")
    grants.write(paths, current.without(user=user, group=group))
    if not grants.read_all(obj.layout).apps:
        setup.remove(obj.layout, obj.systemd)
    who = f"user {user}" if user else f"group {group}"
    obj.emit(grants.read(paths).to_json(), lambda: echo(f"{who} may no longer deploy {app}"))


@click.command("grants")
@click.argument("app", required=False, shell_complete=complete_app)
@pass_ctx
def grants_command(obj: Ctx, app: str | None) -> None:
    """Who may deploy which app without root (all apps, or APP)."""
    from pyrelctl.delegate import grants

    _require_root(obj, "grants")
    found = (
        [grants.read(obj.layout.app(app))]
        if app is not None
        else list(grants.read_all(obj.layout).apps)
    )
    found = [g for g in found if not g.empty]

    def human() -> None:
        if not found:
            echo("no grants: only root deploys" + (f" {app}" if app else ""))
            return
        rows = [[g.app, "user", u] for g in found for u in g.users]
        rows += [[g.app, "group", n] for g in found for n in g.groups]
        table(sorted(rows), ["APP", "KIND", "NAME"])

    obj.emit([g.to_json() for g in found], human)
