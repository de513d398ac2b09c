"""Socket activation: listening sockets that systemd holds for a service.

With ``[socket] listen = [...]`` in release.toml (or ``pyrelctl install
--listen``), pyrelctl writes ``<app>.socket`` next to ``<app>.service``. PID 1
binds the addresses and passes the listening sockets to every new process of
the service (``LISTEN_FDS``, sd_listen_fds(3)). The sockets outlive the
process: while the service restarts, the kernel queues new connections in
the socket's backlog instead of refusing them, so an upgrade or a rollback
loses no request. That holds only as long as the socket unit itself keeps
running; pyrelctl restarts it only when its own settings change.

This module holds the value and its validation; units.py renders it and
deploy/verify.py keeps the unit running.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrelctl.errors import BadInput

#: ``FileDescriptorName=`` when the release names none: what the app looks up
#: in ``LISTEN_FDNAMES`` (pyrelctl_runtime.listen_sockets()["listen"]).
DEFAULT_NAME = "listen"

# systemd's fdname_is_valid() takes printable ASCII without ":" up to 255
# characters; a name also has to be easy to write in code and a unit file.
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A unix socket path: sun_path has 108 bytes with the final NUL; nothing that
# needs quoting or escaping in a unit file.
_PATH_RE = re.compile(r"/[A-Za-z0-9._/@+-]{1,106}")
_HOST_PORT_RE = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[^:\[\]]+)):(?P<port>[0-9]{1,5})")


@dataclass(frozen=True)
class Socket:
    """The app's listening sockets (``ListenStream=``), passed under one name."""

    listen: tuple[str, ...]
    name: str = DEFAULT_NAME

    def to_json(self) -> dict[str, Any]:
        return {"listen": list(self.listen), "name": self.name}


def socket_from_json(data: Mapping[str, Any]) -> Socket:
    return Socket(listen=tuple(data["listen"]), name=data.get("name", DEFAULT_NAME))


def _port(text: str, address: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise BadInput(f"listen address {address!r}: port {port} is not in 1-65535")
    return port


def listen_address(value: object) -> str:
    """One ``ListenStream=`` address, checked: ``PORT`` (every interface),
    ``IPV4:PORT``, ``[IPV6]:PORT`` or an absolute unix socket path.

    Host names are refused: systemd does not resolve them, and the address
    a socket binds must not depend on a resolver at boot.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise BadInput(f"listen address {value!r} must be a non-empty string")
    if re.fullmatch(r"[0-9]{1,5}", value):  # not isdigit(): "¹".isdigit() is true
        return str(_port(value, value))
    if value.startswith("/"):
        parts = value.split("/")
        if not _PATH_RE.fullmatch(value) or ".." in parts or "" in parts[1:]:
            raise BadInput(
                f"listen address {value!r} is not a plain absolute unix socket path",
                hint="letters, digits and ._/@+- only, at most 107 bytes",
            )
        return value
    match = _HOST_PORT_RE.fullmatch(value)
    if match is None:
        raise BadInput(
            f"listen address {value!r} is not PORT, IPV4:PORT, [IPV6]:PORT or /path",
            hint='e.g. "127.0.0.1:8000", "[::1]:8000", "8000" or "/run/shop-http/http.sock"',
        )
    host = match["v6"] or match["v4"]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise BadInput(
            f"listen address {value!r}: {host!r} is not an IP address",
            hint="systemd binds addresses, it does not resolve host names",
        ) from None
    if (ip.version == 6) != bool(match["v6"]):
        raise BadInput(f"listen address {value!r}: write an IPv6 address in brackets")
    port = _port(match["port"], value)
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip.compressed}:{port}"


def fd_name(value: object) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise BadInput(
            f"socket name {value!r} is not a descriptor name",
            hint="letters, digits and ._- only, up to 64 characters",
        )
    return value


def make_socket(listen: Sequence[object], name: object = DEFAULT_NAME) -> Socket:
    """A checked :class:`Socket`; duplicates are refused (systemd would fail to bind)."""
    if not listen:
        raise BadInput("a socket needs at least one listen address")
    addresses = tuple(listen_address(a) for a in listen)
    seen: set[str] = set()
    for address in addresses:
        if address in seen:
            raise BadInput(f"listen address {address!r} is given twice")
        seen.add(address)
    return Socket(listen=addresses, name=fd_name(name))


def parse_socket_table(table: Mapping[str, Any], where: str) -> Socket | None:
    """``[socket]`` of a manifest: ``listen`` (a list) and an optional ``name``."""
    if not table:
        return None
    listen = table.get("listen")
    if not isinstance(listen, list) or not listen:
        raise BadInput(
            f"{where}: socket.listen must be a non-empty list of addresses",
            hint='e.g. listen = ["127.0.0.1:8000"]',
        )
    try:
        return make_socket(listen, table.get("name", DEFAULT_NAME))
    except BadInput as e:
        raise BadInput(f"{where}: {e.message}", hint=e.hint) from None


def in_runtime_directory(address: str, app: str) -> bool:
    """Whether ``address`` is a unix socket path inside ``/run/APP``."""
    return address == f"/run/{app}" or address.startswith(f"/run/{app}/")


def out_of_runtime_directory(address: str, app: str) -> str:
    """``address``, moved out of ``/run/APP`` if it is inside: ``/run/APP/x.sock``
    becomes ``/run/APP.x.sock``. No app's runtime directory has a dot in its
    name, and distinct paths below it stay distinct."""
    if not in_runtime_directory(address, app):
        return address
    if address == f"/run/{app}":
        return f"/run/{app}.sock"
    return f"/run/{app}." + address.removeprefix(f"/run/{app}/")


def check_paths_for(socket: Socket | None, app: str) -> None:
    """Refuse a unix socket path inside ``/run/APP``, the service's ``RuntimeDirectory=``.

    systemd removes that directory whenever the service stops
    (systemd.exec(5), RuntimeDirectory=), so a restart would delete the
    socket's file while the socket unit still listens: from then on, clients
    could not connect, without any error from systemd.
    """
    if socket is None:
        return
    for address in socket.listen:
        if in_runtime_directory(address, app):
            raise BadInput(
                f"listen address {address!r} of {app} is inside /run/{app}, the service's "
                "RuntimeDirectory=: systemd empties it at every stop, socket file included",
                hint=f"use a path outside it, e.g. {out_of_runtime_directory(address, app)}",
            )


def owned_socket_path(address: str, app: str) -> bool:
    """Whether ``address`` is a unix socket path of the app's own:
    ``/run/APP.sock`` or ``/run/APP.NAME`` (no further directory)."""
    rest = address.removeprefix(f"/run/{app}.")
    return rest != address and bool(rest) and "/" not in rest


def check_release_socket(socket: Socket | None, app: str) -> None:
    """Refuse a unix socket path of the release's own ``[socket]`` outside the app's prefix.

    PID 1 binds ``ListenStream=`` paths as root, outside any sandbox, and
    first unlinks whatever file is at the path (systemd.socket(5),
    RemoveOnStop=; src/core/socket.c): ``listen = ["/etc/shadow"]`` would
    delete it, ``/run/dbus/system_bus_socket`` would take the system bus'
    address. So the artifact may only name ``/run/APP.*``, a prefix nothing
    but this app can have (app names have no dot); any other path is the
    host's choice, made with ``install --listen``.
    """
    if socket is None:
        return
    for address in socket.listen:
        if address.startswith("/") and not owned_socket_path(address, app):
            raise BadInput(
                f"release.toml: socket.listen {address!r} is outside /run/{app}.*, the unix "
                f"socket paths a release of {app} may name",
                hint=f"use e.g. /run/{app}.sock, or let the host choose: "
                f"pyrelctl install ARTIFACT --listen {address}",
            )


def check_nothing_at(socket: Socket | None, root: Path) -> None:
    """Refuse a unix socket path where something other than a socket exists.

    PID 1 unlinks the file at a ``ListenStream=`` path before it binds
    there: whoever chose the path, a file or a directory in its place would be
    lost (or the bind would fail at every start)."""
    if socket is None:
        return
    for address in socket.listen:
        if not address.startswith("/"):
            continue
        try:
            st = os.lstat(root / address.lstrip("/"))
        except FileNotFoundError:
            continue
        if not stat.S_ISSOCK(st.st_mode):
            raise BadInput(
                f"listen address {address!r}: that path exists and is not a socket; "
                "systemd would delete it to bind there",
                hint="choose a path where nothing is, e.g. /run/APP.sock",
            )
