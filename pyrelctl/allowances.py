"""What a release may widen of its sandbox, and only with the host's consent.

A release can ask for less confinement than pyrelctl's defaults
(release.toml ``[service]``, ``[socket]``): a port below 1024
(``bind_privileged_ports``, which also turns ``PrivateUsers=`` off, or a
low port in ``[socket] listen``, which PID 1 binds as root), writable and
executable memory (``memory_deny_write_execute = false``) and places to
write outside its own directories (``writable_paths``). The artifact is
not trusted, so none of that takes effect because the artifact says so:
the host allows each widening by name, with ``pyrelctl install --allow
WHAT`` (remembered in ``/etc/pyrelctl/APP/settings.json`` like
``--listen``), and an install or rollback of a release that asks for more
than the host allowed is refused before anything changes (exit 2).

The allowances, as ``--allow`` takes them:

* ``low-ports``: a port below 1024, bound by the service or by its socket;
* ``wx-memory``: ``MemoryDenyWriteExecute=`` off;
* ``write:/PATH``: ``ReadWritePaths=`` of ``/PATH`` or anything below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyrelctl.errors import BadInput
from pyrelctl.manifest import check_writable_path
from pyrelctl.release import Release

#: The key of the host's allowances in the app's settings.json.
SETTING = "allow"
LOW_PORTS = "low-ports"
WX_MEMORY = "wx-memory"
WRITE = "write:"
#: Ports below this need root to bind (net.ipv4.ip_unprivileged_port_start).
FIRST_UNPRIVILEGED_PORT = 1024


@dataclass(frozen=True)
class Widening:
    """One thing a release asks for beyond the default sandbox."""

    allowance: str  # what --allow takes to permit it: "low-ports", "write:/srv/x"
    asked_by: str  # where the release asks for it, in its manifest's words

    def describe(self) -> str:
        return f"{self.allowance} ({self.asked_by})"


def parse_allowance(text: str) -> str:
    """One ``--allow`` value, checked and normalised."""
    if text in (LOW_PORTS, WX_MEMORY):
        return text
    if text.startswith(WRITE):
        path = text.removeprefix(WRITE).rstrip("/") or "/"
        try:
            check_writable_path(path, "--allow write:")
        except BadInput as e:
            raise BadInput(e.message, hint=e.hint) from None
        return WRITE + path
    raise BadInput(
        f"--allow {text!r} is not an allowance",
        hint=f"--allow takes {LOW_PORTS}, {WX_MEMORY} or write:/PATH",
    )


def _low_ports(addresses: Iterable[str]) -> list[str]:
    low = []
    for address in addresses:
        if address.startswith("/"):
            continue
        port = int(address.rpartition(":")[2])
        if port < FIRST_UNPRIVILEGED_PORT:
            low.append(address)
    return low


def requested(release: Release, *, host_socket: bool) -> list[Widening]:
    """Everything ``release`` asks for beyond pyrelctl's default sandbox.

    ``host_socket``: the host set the app's listen addresses itself
    (``install --listen``), so the release's own ``[socket]`` does not apply.
    """
    sandbox = release.sandbox
    asked: list[Widening] = []
    if sandbox.bind_privileged_ports:
        asked.append(Widening(LOW_PORTS, "service.bind_privileged_ports = true"))
    elif release.socket is not None and not host_socket:
        low = _low_ports(release.socket.listen)
        if low:
            asked.append(Widening(LOW_PORTS, f"socket.listen {low[0]!r}"))
    if not sandbox.memory_deny_write_execute:
        asked.append(Widening(WX_MEMORY, "service.memory_deny_write_execute = false"))
    asked.extend(
        Widening(WRITE + path, f"service.writable_paths {path!r}")
        for path in sandbox.writable_paths
    )
    return asked


def _allows(allowance: str, granted: frozenset[str]) -> bool:
    if allowance in granted:
        return True
    if not allowance.startswith(WRITE):
        return False
    path = allowance.removeprefix(WRITE)
    for grant in granted:
        if grant.startswith(WRITE):
            parent = grant.removeprefix(WRITE)
            if path.startswith(parent + "/"):
                return True
    return False


def granted(settings: Mapping[str, Any]) -> frozenset[str]:
    """The allowances remembered in an app's settings."""
    values = settings.get(SETTING, [])
    return frozenset(v for v in values if isinstance(v, str))


def check(
    app: str, release: Release, settings: Mapping[str, Any], *, host_socket: bool
) -> list[Widening]:
    """The widenings ``release`` asks for, all allowed by ``settings``; else
    :class:`BadInput` naming each one that is not, and the option that allows it."""
    asked = requested(release, host_socket=host_socket)
    allowed = granted(settings)
    missing = [w for w in asked if not _allows(w.allowance, allowed)]
    if missing:
        raise BadInput(
            f"{release.name} {release.version} asks to widen its sandbox, which the host "
            f"has not allowed for {app}: " + ", ".join(w.describe() for w in missing),
            hint="if you trust it: pyrelctl install ARTIFACT "
            + " ".join(f"--allow {w.allowance}" for w in missing),
        )
    return asked
