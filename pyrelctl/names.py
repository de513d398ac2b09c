"""App names and release versions: the only strings that become paths and unit names.

The rules are DESIGN.md's. Both patterns are ASCII-only on purpose: a unicode
look-alike ("shop" spelt with a Cyrillic s) must never become a second, confusable
unit or directory. ``re.ASCII`` plus ``fullmatch`` keeps ``\\d``/``$`` from
admitting anything else (``$`` would accept a trailing newline).
"""

from __future__ import annotations

import re

from pyrelctl.errors import BadInput

APP_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}", re.ASCII)
VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_~-]{0,63}", re.ASCII)
#: Environment variable names systemd accepts in Environment= (and shells export).
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def check_app_name(name: str) -> str:
    """Return ``name`` if it is a valid app name, else raise :class:`BadInput`."""
    if not APP_NAME_RE.fullmatch(name):
        raise BadInput(
            f"invalid app name {name!r}",
            hint="an app name is 1-31 characters: a lowercase letter, then a-z, 0-9 or '-'",
        )
    return name


def check_version(version: str) -> str:
    """Return ``version`` if it is a valid release version, else raise :class:`BadInput`."""
    # "." and ".." match neither pattern (first character must be alphanumeric),
    # so a version can never name the releases directory or its parent.
    if not VERSION_RE.fullmatch(version):
        raise BadInput(
            f"invalid release version {version!r}",
            hint="a version is 1-64 characters: a letter or digit, then letters, digits or .+_~-",
        )
    return version


def app_name_from_release(release_name: str) -> str:
    """The default app name for a release called ``release_name``.

    Elixir release names are atoms such as ``my_app``; unit and user names
    read better with dashes, so ``_`` becomes ``-`` (``--app`` overrides).
    """
    return release_name.replace("_", "-")


def is_env_name(name: str) -> bool:
    """Whether ``name`` is a valid environment variable name."""
    return ENV_NAME_RE.fullmatch(name) is not None
