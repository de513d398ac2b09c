"""A bounded, open-loop HTTP load generator on loopback.

Requests go out at a steady rate whatever happens to earlier ones (an open
loop: a stalled server does not slow the generator down and so hide its
stall), each on a new TCP connection, each with its own timeout. Latency is
counted from the moment a request was *due*, so a late start on the
client's side counts against the figure rather than disappearing.

The generator is bounded twice: it stops after ``max_requests`` or
``max_seconds``, whichever comes first, even if nobody stops it.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from dataclasses import dataclass, field

from bench.probe import BadAnswer, parse_response
from bench.report import LoadStats, percentile

RATE = 200.0  # requests per second
REQUEST_TIMEOUT = 5.0  # seconds, connect to last byte
MAX_SECONDS = 60.0


@dataclass
class _Outcome:
    latencies: list[float] = field(default_factory=list)  # of the requests that succeeded
    errors: dict[str, int] = field(default_factory=dict)


class LoadGenerator:
    """Sends GET / to 127.0.0.1:``port`` at ``rate`` per second inside a ``with`` block.

    ``expect`` is the start every body must have (``NAME ``: any version of
    the app counts as an answer). Leaving the block stops sending and waits
    for the requests in flight (each bounded by ``timeout``).
    """

    def __init__(
        self,
        port: int,
        expect: str,
        *,
        rate: float = RATE,
        timeout: float = REQUEST_TIMEOUT,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        self.port, self.expect, self.rate, self.timeout = port, expect, rate, timeout
        self.max_seconds = max_seconds
        self.max_requests = int(rate * max_seconds)
        self._outcome = _Outcome()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"load-{port}", daemon=True)

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def stats(self) -> LoadStats:
        """What happened to the requests sent (call after the ``with`` block)."""
        latencies = self._outcome.latencies
        failed = sum(self._outcome.errors.values())
        return LoadStats(
            requests=len(latencies) + failed,
            failed=failed,
            errors=dict(self._outcome.errors),
            p50=percentile(latencies, 0.50),
            p99=percentile(latencies, 0.99),
            max=max(latencies, default=float("nan")),
        )

    def _main(self) -> None:
        asyncio.run(self._send_all())

    async def _send_all(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending: set[asyncio.Task[None]] = set()
        for i in range(self.max_requests):
            due = start + i / self.rate
            if self._stop.is_set() or due - start >= self.max_seconds:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._request(due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    async def _request(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            body = await asyncio.wait_for(self._get(), self.timeout)
            if not body.startswith(self.expect):
                raise BadAnswer(f"unexpected body {body[:40]!r}")
        except TimeoutError:
            self._error("timeout")
        except BadAnswer:
            self._error("bad answer")
        except ConnectionRefusedError:
            self._error("refused")
        except ConnectionResetError:  # with or without an errno (asyncio's "Connection lost")
            self._error("reset")
        except OSError as e:
            self._error(errno.errorcode.get(e.errno or 0, type(e).__name__))
        except Exception as e:  # counted and named, rather than ending the whole window
            self._error(type(e).__name__)
        else:
            self._outcome.latencies.append(loop.time() - due)

    def _error(self, cause: str) -> None:
        self._outcome.errors[cause] = self._outcome.errors.get(cause, 0) + 1

    async def _get(self) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            raw = await reader.read()  # HTTP/1.0: the server closes after the body
        finally:
            writer.close()
        return parse_response(raw)
