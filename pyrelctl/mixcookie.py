"""A mix release's Erlang cookie, kept out of every process's command line.

Mix's start script (``bin/NAME``, written by ``mix release`` from
lib/mix/lib/mix/tasks/release.init.ex, alike from Elixir 1.14 to 1.18)
passes ``--cookie "$RELEASE_COOKIE"`` to the release's ``elixir`` script in
``start``, ``rpc``, ``eval``, ``remote`` (and ``stop``, ``pid``), and that
script turns it into ``-setcookie COOKIE`` on the VM's command line.
``/proc/PID/cmdline`` is readable by every local user, and with the cookie
and distribution on loopback they can connect to the node and run code as
the app (docs/hardening.md, "The cookie"). The EEF Security WG's deployment
guidelines say not to pass the cookie on the command line. pyrelctl must not
change the release's script, but it decides what ``RELEASE_COOKIE`` holds:

* ``RELEASE_COOKIE`` is :data:`PLACEHOLDER`, no secret, a word that starts
  with ``-``. The VM's init then reads ``-setcookie -pyrelctl_...`` as a
  ``-setcookie`` flag with *no* value, followed by a flag of its own that
  nothing reads; with no ``-setcookie`` that has exactly one value, the
  kernel's ``auth`` server reads the cookie from ``$HOME/.erlang.cookie``
  (lib/kernel/src/auth.erl, ``init_cookie``: OTP 25 accepts only
  ``{ok, [[Cookie]]}``; OTP 26 and later collect the values of arity 0 and
  1 and, unless there is exactly one, "pretend they were not there").
* The cookie itself is ``/etc/pyrelctl/APP/cookie`` (root's, 0600). PID 1
  reads it and hands each process of the app a copy as a credential
  (``LoadCredential=``), and an ``ExecStartPre=`` that runs as the app's
  user installs it as ``$HOME/.erlang.cookie`` with mode 0400, which
  ``auth`` demands ("must be accessible by owner only", mode & 077 == 0).
  Not ``HOME=$CREDENTIALS_DIRECTORY`` instead of the copy: systemd 257
  (Debian 13) keeps credentials on a tmpfs and grants the user read access
  with an ACL, so the file shows mode 0440 and the VM refuses it (seen in a
  booted Debian 13; systemd 252's ramfs gives the user a 0400 file of its
  own). ``HOME`` is the unit's runtime directory, so the copy goes when the
  unit stops.

Every VM pyrelctl starts for an app runs with the same exec settings
(:func:`pyrelctl.units.exec_settings`): the service, the second node of an
overlap deploy, and the transient units of ``rpc``, ``eval``, ``remote``,
hooks and command health checks; each finds the cookie in its own ``HOME``.

Ruled out: ``ERL_AFLAGS``/``ERL_ZFLAGS``/``ERL_FLAGS`` and ``-args_file``
(erlexec copies their words into beam.smp's argv: seen in
``/proc/PID/cmdline``); an empty ``RELEASE_COOKIE`` (the script's
``${RELEASE_COOKIE:-...}`` falls back to ``releases/COOKIE``, and the VM
takes ``-setcookie ''`` as the empty cookie); any ``Environment=`` holding
the cookie (a D-Bus property every user may read).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from pyrelctl.hostfiles import write_atomic

#: What ``RELEASE_COOKIE`` holds for a mix app: not a cookie but a word the
#: VM reads as a flag of its own, so that ``-setcookie`` before it has no
#: value and the VM reads ``$HOME/.erlang.cookie`` (see the module's text).
#: It names pyrelctl for whoever reads it in ``ps``.
PLACEHOLDER = "-pyrelctl_cookie_from_home"
#: The file below ``/etc/pyrelctl/APP`` that holds the cookie, bare.
COOKIE_FILE = "cookie"
#: Where pyrelctl kept the cookie before, as ``RELEASE_COOKIE=...`` read with
#: ``EnvironmentFile=``: taken over once, removed when no unit reads it.
LEGACY_FILE = "release.env"
#: The credential ID of the cookie. The ``+`` keeps it apart from every
#: secret's name (secrets allow none), as ``pyrelctl+expression`` does.
CREDENTIAL = "pyrelctl+erlang-cookie"
#: A cookie pyrelctl accepts from an older ``release.env``: what ``auth``
#: reads back unchanged (printable ASCII, no blank at either end).
_COOKIE_RE = re.compile(r"[!-~](?:[ -~]*[!-~])?", re.ASCII)


def source(app: str) -> str:
    """The cookie's file on the target system (never prefixed by --root)."""
    return f"/etc/pyrelctl/{app}/{COOKIE_FILE}"


def settings(app: str) -> list[tuple[str, str]]:
    """The exec settings that give every process of ``app`` its cookie in ``$HOME``.

    ``${...}`` is left for PID 1 to expand when it runs the command, in unit
    files and transient units alike (systemd.service(5), "Command lines");
    in braces each is one word whatever it holds. ``install`` replaces a
    file that is there already (a restart in the same runtime directory),
    where ``cp`` could not open its own 0400 copy for writing; ``-T`` never
    writes into a directory of that name.
    """
    return [
        ("LoadCredential", f"{CREDENTIAL}:{source(app)}"),
        (
            "ExecStartPre",
            "/usr/bin/install -m 0400 -T -- "
            f"${{CREDENTIALS_DIRECTORY}}/{CREDENTIAL} ${{HOME}}/.erlang.cookie",
        ),
    ]


def _legacy_cookie(etc: Path) -> str | None:
    """The cookie of an older pyrelctl's ``release.env``, if it holds a usable one.

    pyrelctl wrote it as one ``RELEASE_COOKIE=VALUE`` line; a value an
    operator put in quotes is taken without them. (appconfig.envfile refuses
    the name: it is reserved for what pyrelctl sets itself.)
    """
    try:
        text = (etc / LEGACY_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    value = None
    for line in text.splitlines():
        name, sep, rest = line.strip().partition("=")
        if sep and name == "RELEASE_COOKIE":
            value = rest
    if value is not None and len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value if value is not None and _COOKIE_RE.fullmatch(value) else None


def ensure(etc: Path) -> bool:
    """Give the app in ``etc`` (``/etc/pyrelctl/APP``) a cookie, once; return whether
    it was written now.

    One cookie per app, kept across upgrades (so ``rpc`` and ``remote`` keep
    reaching the running node) and root-only. An app set up by an older
    pyrelctl keeps the cookie of its ``release.env``: its running node still
    has it, and so may the other nodes of a cluster.
    """
    path = etc / COOKIE_FILE
    if path.is_file() and not path.is_symlink():
        return False
    cookie = _legacy_cookie(etc)
    if cookie is None:
        import secrets  # only here: it loads hmac and OpenSSL's hashes

        cookie = secrets.token_hex(32)
    write_atomic(path, cookie.encode(), mode=0o600)
    return True


def forget_legacy(etc: Path) -> None:
    """Remove an older pyrelctl's ``release.env`` once the units no longer read it
    and the cookie has its own file."""
    if (etc / COOKIE_FILE).is_file():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(etc / LEGACY_FILE)
