"""Who may deploy an app without root: ``/etc/pyrelctl/APP/grants.toml``.

The file is root's, written only by ``pyrelctl grant`` / ``revoke``
(atomically, mode 0600 inside the app's root-only directory)::

    # Who may deploy shop's signed releases without root (pyrelctl grant/revoke).
    users = ["ci"]
    groups = ["deployers"]

Names, not numeric ids, as sudoers and polkit rules name them: the helper
resolves the caller's uid to a name and the name's groups from the user
database at each connection (:func:`groups_of`), so removing a user from a
group revokes at once, not at its next login. Anything else in the file
(another key, a value that is not a list of valid names) makes the file
unusable: every delegated command of that app is refused until root fixes it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pyrelctl.errors import BadInput, HostError
from pyrelctl.hostfiles import ensure_dir, write_atomic
from pyrelctl.layout import AppPaths, Layout

FILE_NAME = "grants.toml"
#: A user or group name as Debian's adduser accepts it by default (NAME_REGEX),
#: at most 32 characters (useradd's limit); never all digits (a uid, not a name).
NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

_HEADER = "# Who may deploy {app}'s signed releases without root (pyrelctl grant / revoke).\n"


def check_name(name: str, what: str) -> str:
    """``name`` if it is a valid user or group name, else :class:`BadInput`."""
    if not NAME_RE.fullmatch(name):
        raise BadInput(
            f"{what} name {name!r} is not valid",
            hint="a name as adduser makes them: lowercase letters, digits, _ and -",
        )
    return name


@dataclass(frozen=True)
class Grants:
    """The users and groups one app is granted to."""

    app: str
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.users and not self.groups

    def allows(self, user: str, groups: Iterable[str]) -> bool:
        """Whether ``user``, member of ``groups``, may deploy the app."""
        return user in self.users or not set(self.groups).isdisjoint(groups)

    def with_(self, *, user: str | None = None, group: str | None = None) -> Grants:
        users = self.users + ((user,) if user and user not in self.users else ())
        groups = self.groups + ((group,) if group and group not in self.groups else ())
        return Grants(self.app, tuple(sorted(users)), tuple(sorted(groups)))

    def without(self, *, user: str | None = None, group: str | None = None) -> Grants:
        return Grants(
            self.app,
            tuple(u for u in self.users if u != user),
            tuple(g for g in self.groups if g != group),
        )

    def text(self) -> str:
        def names(values: tuple[str, ...]) -> str:
            return "[" + ", ".join(f'"{v}"' for v in values) + "]"

        return (
            _HEADER.format(app=self.app)
            + f"users = {names(self.users)}\ngroups = {names(self.groups)}\n"
        )

    def to_json(self) -> dict[str, object]:
        return {"app": self.app, "users": list(self.users), "groups": list(self.groups)}


def path_of(app: AppPaths) -> Path:
    return app.etc / FILE_NAME


def parse(app: str, text: str, source: str) -> Grants:
    """The grants of ``app`` from the text of its grants file (strict)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise HostError(f"{source}: {e}", hint="fix or remove it: pyrelctl revoke") from e
    unknown = sorted(set(doc) - {"users", "groups"})
    if unknown:
        raise HostError(f"{source}: unknown key {unknown[0]!r} (only users and groups)")
    found: dict[str, tuple[str, ...]] = {}
    for key, what in (("users", "user"), ("groups", "group")):
        values = doc.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise HostError(f"{source}: {key} must be a list of names")
        try:
            found[key] = tuple(sorted({check_name(v, what) for v in values}))
        except BadInput as e:
            raise HostError(f"{source}: {e.message}") from e
    return Grants(app, found["users"], found["groups"])


def read(app: AppPaths) -> Grants:
    """``app``'s grants; none when it has no grants file."""
    path = path_of(app)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Grants(app.name)
    except (OSError, UnicodeDecodeError) as e:
        raise HostError(f"{path}: cannot read ({e})") from e
    return parse(app.name, text, str(path))


def write(app: AppPaths, grants: Grants) -> bool:
    """Store ``grants`` (atomically); an empty set removes the file. True if it changed."""
    path = path_of(app)
    if grants.empty:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
    ensure_dir(app.etc, 0o700)
    return write_atomic(path, grants.text().encode(), mode=0o600)


@dataclass(frozen=True)
class HostGrants:
    """Every app's grants on one host."""

    apps: tuple[Grants, ...] = field(default=())

    def for_user(self, user: str, groups: Iterable[str]) -> tuple[str, ...]:
        member = tuple(groups)
        return tuple(g.app for g in self.apps if g.allows(user, member))


def read_all(layout: Layout) -> HostGrants:
    """The grants of every app that has a grants file, by app name."""
    found = []
    for path in sorted((layout.root / "etc/pyrelctl").glob(f"*/{FILE_NAME}")):
        try:
            app = layout.app(path.parent.name)
        except BadInput:
            continue  # not an app's directory
        grants = read(app)
        if not grants.empty:
            found.append(grants)
    return HostGrants(tuple(found))


def groups_of(user: str) -> tuple[str, ...]:
    """The names of ``user``'s groups in the user database (primary and supplementary).

    Read from the database, not from the caller's process (``SO_PEERGROUPS``):
    a process keeps the groups it had at login, so a user removed from a
    group would keep deploying until it logs in again.
    """
    import grp
    import pwd

    entry = pwd.getpwnam(user)
    names = []
    for gid in os.getgrouplist(user, entry.pw_gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return tuple(names)
