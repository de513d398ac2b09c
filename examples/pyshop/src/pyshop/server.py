"""Run the app under gunicorn, as a systemd Type=notify service.

gunicorn forks: the master (the unit's main process) supervises, one worker
serves. pyrelctl_runtime is set up in the master (journal log levels,
watchdog, NOTIFY_SOCKET taken from the environment so that gunicorn's own
early READY=1 is not sent), and the worker reports READY=1 and serves rpc
once it has loaded the app: the unit turns active only when a request can
really be answered.

Socket activation ([tool.pyrelctl] socket): systemd passes the listening
socket (LISTEN_FDS) and gunicorn serves on it, so connections wait in its
backlog while the service restarts for a deploy. On SIGTERM (systemd's stop,
sent to the master alone: KillMode=mixed) gunicorn stops accepting, lets
the worker finish the requests in flight (graceful_timeout) and exits.

Environment: PYSHOP_BIND (host:port when systemd passes no socket, default
127.0.0.1:8000),
PYSHOP_START_DELAY (seconds of warm-up before serving, for the tests),
PYSHOP_FAIL_AT_START (any value: exit 3 before serving, for the tests).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import Any

import pyrelctl_runtime
from gunicorn.app.base import BaseApplication
from pyrelctl_runtime.journal import dict_config

from pyshop import __version__
from pyshop.app import INVENTORY, STATS, create_app

log = logging.getLogger("pyshop")


class Server(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.application


def _systemd_address() -> str | None:
    """``host:port`` of the socket systemd passes, if it passes one (gunicorn
    finds it in LISTEN_FDS by itself; this is only for the status line)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    listener = socket.socket(fileno=pyrelctl_runtime.LISTEN_FDS_START)
    try:
        host, port = listener.getsockname()[:2]
    finally:
        listener.detach()  # gunicorn's to use: do not close it
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main() -> None:
    pyrelctl_runtime.init()
    if os.environ.get("PYSHOP_FAIL_AT_START"):
        log.error("pyshop %s: PYSHOP_FAIL_AT_START is set, exiting", __version__)
        sys.exit(3)
    delay = float(os.environ.get("PYSHOP_START_DELAY", "0") or 0)
    if delay > 0:
        pyrelctl_runtime.status(f"warming up for {delay:g} s")
        time.sleep(delay)
    bind = _systemd_address() or os.environ.get("PYSHOP_BIND", "127.0.0.1:8000")
    app = create_app()

    def worker_ready(worker: Any) -> None:
        pyrelctl_runtime.serve(
            {"app": app, "STATS": STATS, "INVENTORY": INVENTORY, "worker": worker},
            status_text=f"pyshop {__version__} serving on {bind}",
        )
        log.info("pyshop %s ready on %s (worker %d)", __version__, bind, os.getpid())

    def on_exit(_server: Any) -> None:
        pyrelctl_runtime.stopping("stopped")

    options = {
        "bind": bind,
        # Requests in flight get 25 s to finish at a stop, within systemd's
        # TimeoutStopSec (30 s by default, [service] stop_timeout).
        "graceful_timeout": 25,
        "workers": 1,
        "threads": 4,
        "worker_class": "gthread",
        # gunicorn's own loggers do not propagate: give them the journal format.
        "logconfig_dict": dict_config(loggers=("gunicorn.error",)),
        # No control socket: it would go to $HOME/.gunicorn, and the
        # service's HOME (DynamicUser) is read-only.
        "control_socket_disable": True,
        "post_worker_init": worker_ready,
        "on_exit": on_exit,
    }
    Server(app, options).run()


if __name__ == "__main__":
    main()
