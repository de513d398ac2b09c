"""Doctor's check of the host's Erlang port mapper, for hosts with mix releases.

A mix release registers its node with EPMD on port 4369 and starts one,
bound to ``ERL_EPMD_ADDRESS`` (127.0.0.1, which pyrelctl sets), if none
answers. Debian's erlang-base ships ``epmd.socket``, enabled by its preset:
where it runs, systemd holds port 4369 itself and every release registers
through it, so two things can go wrong that the release cannot fix:

- the socket listens on every interface (``ListenStream=4369`` with
  ``BindIPv6Only=both``: ``[::]:4369``): ``ERL_EPMD_ADDRESS`` does not apply to
  a socket systemd opened, and the port mapper answers the network;
- ``epmd.service`` behind it cannot start (a root made without the ``epmd``
  user fails with status 217/USER): the socket still takes the connection,
  and every mix release dies at start with ``register/listen error:
  epmd_close``, so ``pyrelctl start APP`` fails again.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterator

from pyrelctl.doctor.checks import Checks
from pyrelctl.doctor.findings import Finding, Severity
from pyrelctl.errors import PyrelctlError

SOCKET = "epmd.socket"
SERVICE = "epmd.service"
#: Without epmd.socket, each release starts its own EPMD on ERL_EPMD_ADDRESS.
DISABLE = f"systemctl disable --now {SOCKET} {SERVICE} && systemctl reset-failed {SOCKET} {SERVICE}"


def loopback_only(address: str) -> bool:
    """Whether a socket unit's ``Listen`` address ("[::]:4369", "127.0.0.1:4369",
    "4369") is bound to loopback only; a bare port is every interface."""
    host, sep, _port = address.rpartition(":")
    if not sep or not host:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a path or a name: not a TCP address pyrelctl can vouch for


def loopback_fix(addresses: list[str]) -> str:
    """The shell line that puts epmd.socket's ``addresses`` on 127.0.0.1, same
    ports, with a drop-in (the empty ``ListenStream=`` resets Debian's list)."""
    ports = sorted({a.rpartition(":")[2] for a in addresses})
    # printf's own \n escapes: the fix stays one line to paste.
    lines = ["[Socket]", "ListenStream=", *(f"ListenStream=127.0.0.1:{p}" for p in ports)]
    dropin = "\\n".join([*lines, "BindIPv6Only=default", ""])
    path = f"/etc/systemd/system/{SOCKET}.d/loopback.conf"
    return (
        f"mkdir -p /etc/systemd/system/{SOCKET}.d && printf {shlex.quote(dropin)}"
        f" > {path} && systemctl daemon-reload && systemctl restart {SOCKET}"
    )


class EpmdChecks(Checks):
    """Debian's epmd.socket, as it affects the host's mix releases."""

    def _epmd(self) -> Iterator[Finding]:
        """Findings on epmd.socket; none when it is not loaded or not listening."""
        if self._systemd is None:
            return
        try:
            socket = self._systemd.state(SOCKET)
            if socket.load_state != "loaded" or socket.active_state not in ("active", "failed"):
                return  # not installed, or stopped: each release runs its own EPMD
            service = self._systemd.state(SERVICE)
        except PyrelctlError as e:
            yield Finding("epmd", "host", Severity.SKIPPED, f"{SOCKET}: {e.message}")
            return
        # A failing epmd.service also makes the socket give up after a few
        # triggers (service-start-limit-hit); at the next boot it listens again.
        if service.active_state == "failed":
            yield Finding(
                "epmd",
                "host",
                Severity.PROBLEM,
                f"{SERVICE} fails behind {SOCKET} ({service.result}; main process "
                f"{service.exit_description()}; journalctl -u {SERVICE} says why): every "
                "mix release dies at start with 'register/listen error: epmd_close' "
                "while the socket listens",
                fix=DISABLE,
            )
        if socket.active_state != "active":
            return
        wide = [a for a in socket.listen if not loopback_only(a)]
        if wide:
            yield Finding(
                "epmd",
                "host",
                Severity.PROBLEM,
                f"{SOCKET} listens on {', '.join(wide)}: the port mapper answers the "
                "network, and ERL_EPMD_ADDRESS does not apply to a socket systemd holds",
                fix=loopback_fix(wide),
            )
        elif service.active_state != "failed":
            yield Finding(
                "epmd", "host", Severity.OK, f"{SOCKET} listens on {', '.join(socket.listen)}"
            )
