"""What a Python service needs to be a first-class systemd service.

One import, one call::

    import pyrelctl_runtime

    pyrelctl_runtime.serve(namespace={"app": app})   # logging, rpc, READY=1

or the pieces, for servers that fork (gunicorn: :func:`init` in the master,
:func:`serve` in the worker; see examples/pyshop):

* :func:`init`: journal log levels on stderr, the notify socket taken out of
  the environment, the watchdog kept alive.
* :func:`ready`, :func:`status`, :func:`stopping`, :func:`notify`: sd_notify
  messages (through sdnotify).
* :func:`listen_sockets`: the sockets systemd passes (``LISTEN_FDS``).
* :func:`start_rpc`: the unix socket behind ``bin/APP rpc`` and ``remote``.

Outside systemd every call is harmless: there is no notify socket to send
to, no watchdog, no runtime directory (rpc then stays off).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

import sdnotify

from pyrelctl_runtime.journal import JournalFormatter, configure_logging, stderr_is_journal
from pyrelctl_runtime.rpc import RpcServer, socket_path

__version__ = "0.1.0"
__all__ = [
    "JournalFormatter",
    "RpcServer",
    "configure_logging",
    "expose",
    "init",
    "listen_sockets",
    "notify",
    "ready",
    "serve",
    "start_rpc",
    "status",
    "stderr_is_journal",
    "stopping",
]

#: sd_listen_fds(3): passed sockets start at fd 3.
LISTEN_FDS_START = 3

log = logging.getLogger(__name__)


class _State:
    """What this process set up. Process-wide by nature: there is one notify
    socket, one watchdog and one rpc endpoint per service process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.initialised = False
        self.notifier: Any = None
        self.watchdog: threading.Thread | None = None
        self.rpc: RpcServer | None = None
        self.namespace: dict[str, Any] = {}


_state = _State()


def init(*, level: int = logging.INFO, logging_setup: bool = True) -> None:
    """Set up the process once (later calls do nothing).

    * Logging: the root logger writes to stderr with a ``<N>`` syslog
      priority prefix when stderr is the journal (``journalctl -p err`` then
      shows errors only), plain lines otherwise.
    * ``NOTIFY_SOCKET`` is taken out of the environment, as sd_notify(3)'s
      ``unset_environment`` does: child processes must not report readiness
      for the service (gunicorn's master would send READY=1 itself, before a
      worker has loaded the app). Only this runtime notifies, from any
      process forked after this call (the unit has ``NotifyAccess=all``).
    * The watchdog is kept alive when the unit sets ``WatchdogSec=``.
    """
    with _state.lock:
        if _state.initialised:
            return
        _state.initialised = True
        if logging_setup:
            configure_logging(level)
        if os.environ.get("NOTIFY_SOCKET"):
            _state.notifier = sdnotify.SystemdNotifier()
            del os.environ["NOTIFY_SOCKET"]
        _start_watchdog()


def notify(**fields: object) -> None:
    """Send sd_notify fields, e.g. ``notify(READY=1, STATUS="serving")``.

    sdnotify encodes as latin-1 and silently drops a message it cannot
    encode, so characters outside latin-1 are replaced first.
    """
    init()
    if _state.notifier is None:
        return
    message = "\n".join(f"{key}={value}" for key, value in fields.items())
    clean = message.encode("latin-1", "replace").decode("latin-1")
    _state.notifier.notify(clean)


def ready(status_text: str | None = None) -> None:
    """Tell systemd the service is up (``READY=1``): a Type=notify unit becomes active."""
    fields: dict[str, object] = {"READY": 1}
    if status_text:
        fields["STATUS"] = status_text
    notify(**fields)


def status(text: str) -> None:
    """Set the one-line status that ``systemctl status`` shows."""
    notify(STATUS=text.replace("\n", " "))


def stopping(status_text: str | None = None) -> None:
    """Tell systemd the service is shutting down (``STOPPING=1``)."""
    fields: dict[str, object] = {"STOPPING": 1}
    if status_text:
        fields["STATUS"] = status_text
    notify(**fields)


def _start_watchdog() -> None:
    """Ping WATCHDOG=1 at half the interval the unit asks for (sd_watchdog_enabled(3))."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return
    interval = int(usec) / 1e6 / 2
    stop = threading.Event()

    def ping() -> None:
        while not stop.wait(interval):
            notify(WATCHDOG=1)

    # A daemon thread: it must never keep a stopping process alive; if the
    # process hangs without exiting, the pings go on, which is why apps with
    # a main loop should call notify(WATCHDOG=1) from that loop instead.
    _state.watchdog = threading.Thread(target=ping, name="pyrelctl-watchdog", daemon=True)
    _state.watchdog.start()


def listen_sockets(*, unset_environment: bool = True) -> dict[str, list[socket.socket]]:
    """The sockets systemd passed (sd_listen_fds(3)), by name (``LISTEN_FDNAMES``).

    Unnamed sockets are listed under ``"unknown"``, as systemd names them.
    Empty unless ``LISTEN_PID`` is this process. pyrelctl's units pass them
    non-blocking (``NonBlocking=yes``: during an overlap deploy another
    release accepts from the same sockets, and their ``O_NONBLOCK`` is
    shared), but the socket objects report themselves blocking: a server
    that polls and then accepts calls ``sock.setblocking(False)`` first
    (asyncio, uvicorn and gunicorn do it themselves), and nothing may make
    them blocking: docs/zero-downtime.md.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return {}
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    if unset_environment:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
    found: dict[str, list[socket.socket]] = {}
    for index in range(count):
        fd = LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) and names[index] else "unknown"
        found.setdefault(name, []).append(socket.socket(fileno=fd))
    return found


def expose(**objects: object) -> None:
    """Make objects visible to ``rpc`` and ``remote`` under these names."""
    _state.namespace.update(objects)
    if _state.rpc is not None:
        _state.rpc.namespace.update(objects)


def start_rpc(namespace: Mapping[str, object] | None = None) -> str | None:
    """Serve rpc/remote on ``$RUNTIME_DIRECTORY/rpc.sock``; return its path.

    Without a runtime directory (not under systemd) nothing is started and
    None is returned. A second call in the same process only adds names.
    """
    init()
    if namespace:
        _state.namespace.update(namespace)
    with _state.lock:
        if _state.rpc is not None and _state.rpc.pid == os.getpid():
            _state.rpc.namespace.update(_state.namespace)
            return _state.rpc.path
        path = socket_path()
        if path is None:
            log.debug("no RUNTIME_DIRECTORY: rpc endpoint not started")
            return None
        server = RpcServer(path, _state.namespace)
        server.start()
        _state.rpc = server
        return path


def serve(
    namespace: Mapping[str, object] | None = None,
    *,
    status_text: str | None = None,
    level: int = logging.INFO,
) -> None:
    """Everything at once: :func:`init`, :func:`start_rpc`, then :func:`ready`.

    Call it when the service accepts work; the unit becomes active then.
    """
    init(level=level)
    start_rpc(namespace)
    ready(status_text or f"ready (pid {os.getpid()})")


def _default_namespace() -> dict[str, Any]:
    return {"__name__": "__rpc__", "sys": sys, "os": os, "logging": logging}


_state.namespace.update(_default_namespace())
