"""Long-lived connections held open through a deploy window (issue 30).

A websocket or LiveView client keeps one connection to a release for as
long as that release lets it, and reconnects when it is closed: each close
is a reconnect its user feels, and a deploy that closes every such
connection twice makes two waves of reconnects. A :class:`HeldConnections`
block opens a few such clients on ``GET /hold`` (devtools' test releases
answer ``NAME VERSION`` there and keep the connection open until the
client leaves or the release stops) and counts, per connection, how many
times it was cut and had to reconnect.

What counts as one cut: a connection that was established (the version
line read) and then ended by the server's side, by an end of stream or an
error (reset), before the block ended. A connection attempt that is refused
or times out is no cut, only a retry of the reconnect after a cut (or of the
first connect); closing the connections at the end of the block is the
client's doing, not counted.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field

#: How many connections a window holds ("a few" clients, beside the load).
HELD = 4
#: Pause between two connection attempts after a cut or a refused connect.
RECONNECT_PAUSE = 0.02
#: The timeout of a connect and of each send; the first connects must succeed
#: within ATTACH_TIMEOUT (the answer itself is waited for until the block ends).
SOCKET_TIMEOUT = 2.0
ATTACH_TIMEOUT = 5.0


@dataclass(frozen=True)
class HeldStats:
    """What happened to each held connection in one window."""

    cuts: tuple[int, ...]  # per connection: times it was closed on the client
    #: per connection, the versions it was attached to, in order (one more than its
    #: cuts when it reconnected after the last one)
    attached: tuple[tuple[str, ...], ...] = ()

    @property
    def max_cuts(self) -> int:
        return max(self.cuts, default=0)

    @property
    def total_cuts(self) -> int:
        return sum(self.cuts)


def read_version(conn: socket.socket, expect: str, stop: threading.Event) -> str | None:
    """Read ``/hold``'s answer up to the end of its body's first line: the version,
    or None when ``stop`` was set first (a connection waiting in the backlog of a
    socket nothing accepts from yet waits as long as that).

    Raises OSError when the stream ends or is not a 200 with ``expect`` (``NAME ``).
    """
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and b"\n" in body:
            break
        readable, _, _ = select.select([conn], [], [], 0.05)
        if stop.is_set():
            return None
        if not readable:
            continue
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionAbortedError("the stream ended before the version line")
        data += chunk
    status = head.split(b"\r\n", 1)[0].split()
    line = body.split(b"\n", 1)[0].decode(errors="replace").strip()
    if len(status) < 2 or status[1] != b"200" or not line.startswith(expect):
        raise ConnectionAbortedError(f"unexpected answer {data[:60]!r}")
    return line[len(expect) :].strip()


@dataclass
class _Client:
    cuts: int = 0
    attached: list[str] = field(default_factory=list)
    conn: socket.socket | None = None


class HeldConnections:
    """``count`` clients, each holding one connection to 127.0.0.1:``port``/hold
    inside a ``with`` block, and reconnecting whenever it is cut.

    Entering returns once every client is attached (or after
    ATTACH_TIMEOUT, when they keep trying); :meth:`stats` says what happened,
    after the block.
    """

    def __init__(
        self,
        port: int,
        expect: str,
        *,
        count: int = HELD,
        path: str = "/hold",
        pause: float = RECONNECT_PAUSE,
    ) -> None:
        self.port, self.expect, self.path, self.pause = port, expect, path, pause
        self._clients = [_Client() for _ in range(count)]
        self._stop = threading.Event()
        self._attached = threading.Semaphore(0)
        self._threads = [
            threading.Thread(target=self._hold, args=(c,), name=f"held-{port}-{i}", daemon=True)
            for i, c in enumerate(self._clients)
        ]

    def __enter__(self) -> HeldConnections:
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + ATTACH_TIMEOUT
        for _ in self._clients:
            if not self._attached.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def stats(self) -> HeldStats:
        return HeldStats(
            tuple(c.cuts for c in self._clients), tuple(tuple(c.attached) for c in self._clients)
        )

    def _connect(self) -> tuple[socket.socket, str] | None:
        """A connection and the version that answered it; None when none was
        established (refused, timed out, or the block ended first)."""
        try:
            conn = socket.create_connection(("127.0.0.1", self.port), timeout=SOCKET_TIMEOUT)
        except OSError:
            return None
        try:
            conn.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            version = read_version(conn, self.expect, self._stop)
        except OSError:
            conn.close()
            raise
        if version is None:
            conn.close()
            return None
        return conn, version

    def _hold(self, client: _Client) -> None:
        first = True
        while not self._stop.is_set():
            try:
                connected = self._connect()
            except OSError:
                # Accepted, then closed before it answered: a cut all the same.
                client.cuts += 1
                connected = None
            if connected is None:
                self._stop.wait(self.pause)
                continue
            conn, version = connected
            client.attached.append(version)
            if first:
                first = False
                self._attached.release()
            try:
                if self._wait_for_end(conn):
                    client.cuts += 1
            finally:
                conn.close()

    def _wait_for_end(self, conn: socket.socket) -> bool:
        """Wait until the server ends ``conn`` (True) or the block ends (False)."""
        while not self._stop.is_set():
            readable, _, _ = select.select([conn], [], [], 0.05)
            if not readable:
                continue
            try:
                if not conn.recv(4096):
                    return True  # end of stream: the release closed it
            except OSError:
                return True  # reset
        return False
