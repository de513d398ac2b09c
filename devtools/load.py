"""Steady HTTP load inside a booted machine, for tests and the demo.

`Load(machine, url, stop_file)` starts a client in the machine (one new
connection every 10 ms, a 5 s timeout per request) and `stop()` ends it and
returns what it saw: the bodies of the answers, counted, and the errors. The
client runs until the stop file exists (or for at most five minutes).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from devtools.machine import Machine

_CLIENT = """
import collections, json, os, sys, time, urllib.request
url, stop = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
bodies, errors = collections.Counter(), []
end = time.monotonic() + 300
while not os.path.exists(stop) and time.monotonic() < end:
    try:
        with opener.open(url, timeout=5) as response:
            bodies[response.read().decode().strip()] += 1
    except Exception as e:
        errors.append(repr(e))
    time.sleep(0.01)
print(json.dumps({"bodies": bodies, "errors": errors}))
"""


class Background:
    """A command in the machine, run from a thread; ``result()`` waits for its stdout."""

    def __init__(self, machine: Machine, argv: list[str], timeout: float = 330) -> None:
        self._out: list[str] = []
        self._thread = threading.Thread(
            target=lambda: self._out.append(machine.run(argv, timeout=timeout).stdout),
            daemon=True,
        )
        self._thread.start()

    def result(self, timeout: float = 330) -> str:
        self._thread.join(timeout)
        if not self._out:
            raise RuntimeError("the background command failed or is still running")
        return self._out[0]


class Load:
    """Requests to ``url`` from inside ``machine`` until :meth:`stop`."""

    def __init__(self, machine: Machine, url: str, stop_file: Path) -> None:
        stop_file.unlink(missing_ok=True)
        self._stop_file = stop_file
        self._run = Background(machine, ["python3", "-c", _CLIENT, url, str(stop_file)])

    def stop(self) -> dict[str, Any]:
        """End the load; return ``{"bodies": {body: count}, "errors": [repr, ...]}``."""
        self._stop_file.touch()
        summary: dict[str, Any] = json.loads(self._run.result())
        return summary
