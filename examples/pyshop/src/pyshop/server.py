"""Run the app under gunicorn, as a systemd Type=notify service.

gunicorn forks: the master (the unit's main process) supervises, one worker
serves. pyrelctl_runtime is set up in the master (journal log levels,
watchdog, NOTIFY_SOCKET taken from the environment so that gunicorn's own
early READY=1 is not sent), and the worker reports READY=1 and serves rpc
once it has loaded the app: the unit turns active only when a request can
really be answered.

Environment: PYSHOP_BIND (host:port, default 127.0.0.1:8000),
PYSHOP_START_DELAY (seconds of warm-up before serving, for the tests),
PYSHOP_FAIL_AT_START (any value: exit 3 before serving, for the tests).
"""

from __future__ import annotations

import logging
import os
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


def main() -> None:
    pyrelctl_runtime.init()
    if os.environ.get("PYSHOP_FAIL_AT_START"):
        log.error("pyshop %s: PYSHOP_FAIL_AT_START is set, exiting", __version__)
        sys.exit(3)
    delay = float(os.environ.get("PYSHOP_START_DELAY", "0") or 0)
    if delay > 0:
        pyrelctl_runtime.status(f"warming up for {delay:g} s")
        time.sleep(delay)
    bind = os.environ.get("PYSHOP_BIND", "127.0.0.1:8000")
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
