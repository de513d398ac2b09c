"""A bounded, open-loop HTTP load generator on loopback.

Requests go out at a steady rate whatever happens to earlier ones (an open
loop: a stalled server does not slow the generator down and so hide its
stall), each on a new TCP connection, each with its own timeout. Latency is
counted from the moment a request was *due*, so a late start on the
client's side counts against the figure rather than disappearing. Each
answer's body (``NAME VERSION``) says which release answered, so a window
can count the answers of each version, the failing release's among them.

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


@dataclass(frozen=True)
class Sample:
    """One request: when it was due (time.monotonic), and its latency and
    answering version, or None and why it failed."""

    due: float
    latency: float | None
    outcome: str  # the version that answered, or the cause of the failure


@dataclass
class _Outcome:
    samples: list[Sample] = field(default_factory=list)


class LoadGenerator:
    """Sends GET / to 127.0.0.1:``port`` at ``rate`` per second inside a ``with`` block.

    ``expect`` is the start every body must have (``NAME ``: any version of
    the app counts as an answer; what follows is the version). Leaving the
    block stops sending and waits for the requests in flight (each bounded
    by ``timeout``).
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

    @property
    def samples(self) -> list[Sample]:
        """Every request sent, in the order they were due (after the ``with`` block)."""
        return sorted(self._outcome.samples, key=lambda s: s.due)

    def stats(self) -> LoadStats:
        """What happened to the requests sent (call after the ``with`` block)."""
        latencies = [s.latency for s in self._outcome.samples if s.latency is not None]
        errors: dict[str, int] = {}
        answers: dict[str, int] = {}
        for s in self._outcome.samples:
            counts = answers if s.latency is not None else errors
            counts[s.outcome] = counts.get(s.outcome, 0) + 1
        return LoadStats(
            requests=len(self._outcome.samples),
            failed=sum(errors.values()),
            errors=errors,
            answers=answers,
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
            self._error(due, "timeout")
        except BadAnswer:
            self._error(due, "bad answer")
        except ConnectionRefusedError:
            self._error(due, "refused")
        except ConnectionResetError:  # with or without an errno (asyncio's "Connection lost")
            self._error(due, "reset")
        except OSError as e:
            self._error(due, errno.errorcode.get(e.errno or 0, type(e).__name__))
        except Exception as e:  # counted and named, rather than ending the whole window
            self._error(due, type(e).__name__)
        else:
            version = body[len(self.expect) :].strip()
            # asyncio's loop clock is time.monotonic(), as the deploy commands' are.
            self._outcome.samples.append(Sample(due, loop.time() - due, version))

    def _error(self, due: float, cause: str) -> None:
        self._outcome.samples.append(Sample(due, None, cause))

    async def _get(self) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            raw = await reader.read()  # HTTP/1.0: the server closes after the body
        finally:
            writer.close()
        return parse_response(raw)
