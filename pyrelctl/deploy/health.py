"""Health checks: is a started release really serving?

One probe answers ``None`` (healthy) or the reason it is not, in words that
go straight into the failure report ("HTTP 503 from http://...", "connection
refused"): Kamal's "target failed to become healthy" without a reason
(kamal #1041) is what this avoids.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pyrelctl.release import HealthCheck, HealthKind

#: Seconds one probe may take before it counts as failed.
PER_TRY_TIMEOUT = 2.0

#: Runs an argv as the service would; returns (exit status, combined output).
CommandRunner = Callable[[Sequence[str], float], tuple[int, str]]
#: Opens the probe's connection to (host, port) within a timeout; raises OSError.
#: Plain socket.create_connection, or one that keeps only the connections a
#: given release accepted (deploy/owner.py, for overlap deploys).
Connect = Callable[[tuple[str, int], float], socket.socket]


class AnsweredElsewhere(OSError):
    """The probe's connection was accepted by another release (owner.py)."""


class NoVerdict(str):
    """A probe's words when it had no verdict: another release accepted it."""

    __slots__ = ()


def _create_connection(address: tuple[str, int], timeout: float) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


if TYPE_CHECKING:
    import urllib.request


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    # Health URLs point at the service on this host: never through a proxy
    # from the caller's environment (http_proxy would send the probe
    # elsewhere). urllib is imported on first use: ~20 ms that only deploys need.
    import urllib.request

    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe_http(
    url: str, timeout: float = PER_TRY_TIMEOUT, connect: Connect = _create_connection
) -> str | None:
    """GET ``url``: healthy on any 2xx answer (redirects are not followed)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        if connect is not _create_connection:
            return f"GET {url}: only an http:// check can be sent to one release alone"
        return _probe_urllib(url, timeout)
    # Plain http, the usual case of a service on loopback: one request on a
    # socket, read up to the status line. urllib and http.client cost ~20 ms
    # to import, between a release answering and the deploy seeing it.
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "User-Agent: pyrelctl health check\r\nConnection: close\r\n\r\n"
    )
    try:
        with connect((parts.hostname, parts.port or 80), timeout) as s:
            s.sendall(request.encode("ascii"))
            with s.makefile("rb") as answer:
                status_line = answer.readline(256)
    except AnsweredElsewhere as e:
        return NoVerdict(f"GET {url}: {e}")
    except (OSError, ValueError, UnicodeError) as e:
        return f"GET {url}: {e}"
    fields = status_line.split(None, 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        shown = status_line.decode("ascii", "replace").strip() or "nothing"
        return f"GET {url}: not an HTTP answer ({shown[:60]!r})"
    status = int(fields[1])
    if not 200 <= status < 300:
        return f"HTTP {status} from {url}"
    return None


def _probe_urllib(url: str, timeout: float) -> str | None:
    """The same through urllib: https (certificates and all) and anything unusual."""
    import urllib.error

    try:
        with _opener().open(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code} from {url}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return f"GET {url}: {reason}"
    if not 200 <= status < 300:
        return f"HTTP {status} from {url}"
    return None


def probe_tcp(
    address: str, timeout: float = PER_TRY_TIMEOUT, connect: Connect = _create_connection
) -> str | None:
    """Connect to ``HOST:PORT``: healthy once something accepts (with an owner's
    ``connect``: once that release accepts)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:80
    try:
        with connect((host, int(port)), timeout):
            return None
    except AnsweredElsewhere as e:
        return NoVerdict(f"connect {address}: {e}")
    except OSError as e:
        return f"connect {address}: {e.strerror or e}"


def probe(
    check: HealthCheck,
    run_command: CommandRunner | None = None,
    timeout: float = PER_TRY_TIMEOUT,
    connect: Connect = _create_connection,
) -> str | None:
    """Run one probe of ``check``; ``None`` when healthy, else why not."""
    if check.kind is HealthKind.HTTP:
        return probe_http(check.http, timeout, connect)
    if check.kind is HealthKind.TCP:
        return probe_tcp(check.tcp, timeout, connect)
    if run_command is None:
        raise ValueError("a command health check needs a runner")
    status, output = run_command(check.command, timeout)
    if status == 0:
        return None
    last = output.strip().splitlines()[-1] if output.strip() else ""
    return f"{check.describe()} exited with status {status}" + (f": {last}" if last else "")
