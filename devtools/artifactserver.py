"""An HTTP server on loopback that serves release artifacts well and badly,
for the tests of ``pyrelctl install URL`` (pyrelctl/download.py).

In a test process: ``with serve({"/hello-1.0.tar.gz": Route(data)}) as server:``
runs it in a thread (``server.url``, ``server.requests``). In a booted machine:
``python -m devtools.artifactserver DIR PORT`` serves the files of DIR,
each at ``/NAME`` and also at

- ``/nolength/NAME``: without Content-Length (the end is the connection's close);
- ``/stall/NAME``: headers and the first KiB, then nothing;
- ``/redirect-file/NAME``: a redirect to ``file:///etc/passwd``.
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: How long a stalled answer waits before it gives up by itself.
STALL_SECONDS = 120.0


@dataclass(frozen=True)
class Route:
    """One answer: ``body`` with ``status``; ``length`` False: no Content-Length;
    ``declared``: a Content-Length other than the body's; ``stall_after``: send
    that many bytes of the body, then nothing; ``answer`` False: not even the
    headers; ``pace``: seconds between pieces of PIECE bytes; ``location``: a
    redirect."""

    body: bytes = b""
    status: int = 200
    length: bool = True
    declared: int | None = None
    stall_after: int | None = None
    location: str | None = None
    answer: bool = True
    pace: float = 0.0


#: Bytes sent at a time by a paced answer.
PIECE = 256


class ArtifactServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        port: int,
        routes: Mapping[str, Route] | None,
        directory: Path | None,
        tls: ssl.SSLContext | None = None,
    ):
        super().__init__(("127.0.0.1", port), _Handler)
        self.scheme = "http" if tls is None else "https"
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.routes = dict(routes or {})
        self.directory = directory
        self.requests: list[str] = []  # the request lines seen, in order
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT`` (https with ``tls``)."""
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def route(self, path: str) -> Route | None:
        if path in self.routes:
            return self.routes[path]
        path = path.split("?", 1)[0]  # a token of a presigned link
        if path in self.routes:
            return self.routes[path]
        if self.directory is None:
            return None
        kind, _, name = path.lstrip("/").rpartition("/")
        file = self.directory / name
        if "/" in kind or not name or not file.is_file():
            return None
        body = file.read_bytes()
        return {
            "": Route(body),
            "nolength": Route(body, length=False),
            "stall": Route(body, stall_after=1024),
            "redirect-file": Route(status=302, location="file:///etc/passwd"),
        }.get(kind)


class _Handler(BaseHTTPRequestHandler):
    server: ArtifactServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # the tests look at server.requests

    def do_GET(self) -> None:
        self.server.requests.append(self.requestline)
        route = self.server.route(self.path)
        if route is None:
            route = Route(b"not found\n", status=404)
        if not route.answer:
            self.server.stop.wait(STALL_SECONDS)
            return
        self.send_response(route.status)
        if route.location is not None:
            self.send_header("Location", route.location)
        if route.length:
            size = route.declared if route.declared is not None else len(route.body)
            self.send_header("Content-Length", str(size))
        self.send_header("Connection", "close")
        self.end_headers()
        body = route.body if route.stall_after is None else route.body[: route.stall_after]
        for start in range(0, len(body), PIECE if route.pace else max(len(body), 1)):
            if start and self.server.stop.wait(route.pace):
                return
            self.wfile.write(body[start : start + (PIECE if route.pace else len(body))])
            self.wfile.flush()
        if route.stall_after is not None:
            self.server.stop.wait(STALL_SECONDS)
        self.close_connection = True


@contextlib.contextmanager
def serve(
    routes: Mapping[str, Route] | None = None,
    directory: Path | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[ArtifactServer]:
    """Serve ``routes`` (and ``directory``) on a free loopback port in a thread,
    over TLS with ``tls`` (a server context with its certificate loaded)."""
    server = ArtifactServer(0, routes, directory, tls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()  # ends stalled answers
        server.shutdown()
        server.server_close()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    server = ArtifactServer(args.port, None, args.directory)
    print(f"serving {args.directory} on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
