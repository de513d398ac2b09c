"""A background worker beside the web process: where a real app runs Celery or RQ.

Declared in pyproject.toml's ``[tool.pyrelctl.processes.worker]``; pyrelctl
runs it as ``pyshop-worker@1.service`` (``@2``.. with ``pyrelctl scale``),
restarts it with every deploy and puts it back on the previous release when
a deploy fails (docs/deploys.md, "Processes and timers"). This one has no
queue to consume: it says which release it runs and waits for its stop.

SIGTERM (systemd's stop) ends it at once, as a worker that finished its job
in hand would.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import pyrelctl_runtime

from pyshop import __version__

log = logging.getLogger("pyshop.worker")


def main() -> None:
    pyrelctl_runtime.init()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("pyshop %s worker waiting for jobs (pid %d)", __version__, os.getpid())
    while not stop.wait(60):
        log.debug("pyshop %s worker: no job", __version__)
    log.info("pyshop %s worker stopped", __version__)


if __name__ == "__main__":
    main()
