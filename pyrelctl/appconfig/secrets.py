"""Secrets of an app, handed to its service as systemd credentials.

A secret is a root-only file, ``/etc/pyrelctl/APP/credentials/NAME`` (0600
in a 0700 directory). The unit loads each with ``LoadCredential=NAME:PATH``:
PID 1 reads it as root and gives the service (and pyrelctl's transient units
for rpc/eval/remote and hooks) a private copy at
``$CREDENTIALS_DIRECTORY/NAME``. Secrets never go into ``Environment=``,
which ``systemctl show`` prints to any local user (systemd.exec(5),
"Credentials"). Values come from stdin or a file, never from the command
line, where ``ps`` and shell history would keep them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyrelctl.deploy.host import Host
from pyrelctl.deploy.settings import release_of
from pyrelctl.errors import BadInput, NotInstalled
from pyrelctl.hostfiles import ensure_dir, write_atomic
from pyrelctl.layout import AppPaths, app_lock

#: Credential IDs: what systemd accepts, kept to a portable, path-safe subset.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", re.ASCII)
#: systemd refuses credentials above 1 MiB (CREDENTIAL_SIZE_MAX).
MAX_SIZE = 1024 * 1024


@dataclass(frozen=True)
class SecretInfo:
    name: str
    size: int
    modified: float


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise BadInput(
            f"invalid secret name {name!r}",
            hint="1-64 characters: letters, digits, '_', '.', '-' (not first)",
        )
    return name


def _apply(host: Host, app: AppPaths) -> bool:
    """Re-render the unit with the app's current secrets; whether a restart is needed."""
    current = app.current_version()
    if current is None:
        return False
    host.setup.write_units(app, release_of(app, current))
    if not host.online:
        return False
    return host.systemd.state(app.service_name).running


def set_secret(host: Host, name: str, secret: str, value: bytes, *, wait_lock: bool = True) -> bool:
    """Store ``value`` as secret ``secret`` of app ``name``; return whether the
    running service must be restarted to see it."""
    app = host.layout.app(name).require()
    check_name(secret)
    if len(value) > MAX_SIZE:
        raise BadInput(f"secret {secret} is larger than {MAX_SIZE} bytes (systemd's limit)")
    with app_lock(app, "secret set", wait=wait_lock, on_wait=host.say):
        ensure_dir(app.etc, 0o700)
        ensure_dir(app.credentials_dir, 0o700)
        write_atomic(app.credentials_dir / secret, value, mode=0o600)
        return _apply(host, app)


def remove_secret(host: Host, name: str, secret: str, *, wait_lock: bool = True) -> bool:
    app = host.layout.app(name).require()
    check_name(secret)
    with app_lock(app, "secret rm", wait=wait_lock, on_wait=host.say):
        path = app.credentials_dir / secret
        if not path.is_file():
            raise NotInstalled(
                f"{name} has no secret {secret!r}",
                hint=f"see them with: pyrelctl secret list {name}",
            )
        path.unlink()
        return _apply(host, app)


def list_secrets(app: AppPaths) -> list[SecretInfo]:
    """Names, sizes and times of the app's secrets (never their values)."""
    found = []
    for secret in app.secrets():
        st = (app.credentials_dir / secret).stat()
        found.append(SecretInfo(secret, st.st_size, st.st_mtime))
    return found
