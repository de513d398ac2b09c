"""Asking a release over HTTP whether it is up, and which version answers.

The "serve" test release (devtools.releases) answers ``NAME VERSION`` on
every path. :func:`http_get` asks once, on a new TCP connection; a
:class:`Poller` asks every few milliseconds in a thread and remembers when
it got which answer, so a benchmark can say afterwards when a given version
first answered, without polling in the code it times.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]


class BadAnswer(OSError):
    """The server answered, but not with 200 and a body."""


def parse_response(raw: bytes) -> str:
    """The body of an HTTP/1.x response with status 200, stripped; else BadAnswer."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status) < 2 or status[1] != b"200":
        raise BadAnswer(f"unexpected answer {raw[:60]!r}")
    return body.decode(errors="replace").strip()


def http_get(port: int, path: str = "/", *, timeout: float = 1.0) -> str:
    """GET ``path`` from 127.0.0.1:``port`` on a new connection; return the body.

    Raises OSError (refused, reset, timed out, or BadAnswer) when the
    service does not answer 200. ``timeout`` applies to each socket operation.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return parse_response(b"".join(chunks))


class Poller:
    """GETs 127.0.0.1:PORT every ``interval`` seconds; remembers when what answered.

    A context manager: the polling thread runs inside the ``with`` block.
    Times come from ``clock`` (monotonic by default; bench.rollback compares
    them with journal timestamps, so it passes ``time.time``).
    """

    def __init__(self, port: int, *, interval: float = 0.002, clock: Clock = time.monotonic):
        self.port, self.interval, self.clock = port, interval, clock
        self.answers: list[tuple[float, str]] = []  # (clock time, body) of each 200
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"poll-{port}", daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                body = http_get(self.port, timeout=0.5)
            except OSError:  # refused, reset, timed out, not a 200: "down"
                pass
            else:
                # list.append is atomic under the GIL: readers see whole entries.
                self.answers.append((self.clock(), body))
            self._stop.wait(self.interval)

    def first_answer_after(
        self, after: float, *, body: str | None = None, timeout: float = 30.0
    ) -> float:
        """The clock time of the first answer later than ``after`` (with ``body``, if
        given); waits up to ``timeout`` seconds for one, then raises TimeoutError."""
        end = time.monotonic() + timeout
        while True:
            for when, answered in list(self.answers):
                if when > after and (body is None or answered == body):
                    return when
            if time.monotonic() >= end:
                last = self.answers[-1][1] if self.answers else "nothing"
                raise TimeoutError(
                    f"127.0.0.1:{self.port} did not answer {body or 'anything'!r} within "
                    f"{timeout:g} s (last answer: {last!r})"
                )
            self._stop.wait(0.005)
