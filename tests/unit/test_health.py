"""Health probes against real sockets on loopback (no systemd needed)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator, Sequence

import pytest

from pyrelctl.deploy import health
from pyrelctl.release import HealthCheck, HealthKind


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = int(self.path.partition("?")[0].strip("/") or 200)
        self.send_response(code)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


def test_http_any_2xx_is_healthy(server: int) -> None:
    assert health.probe_http(f"http://127.0.0.1:{server}/200") is None
    assert health.probe_http(f"http://127.0.0.1:{server}/204") is None


@pytest.mark.parametrize("code", [301, 404, 500, 503])
def test_http_other_statuses_say_which(server: int, code: int) -> None:
    url = f"http://127.0.0.1:{server}/{code}"
    assert health.probe_http(url) == f"HTTP {code} from {url}"


def test_http_connection_refused_is_reported() -> None:
    error = health.probe_http(f"http://127.0.0.1:{closed_port()}/")
    assert error is not None and "Connection refused" in error


def test_http_ignores_proxy_settings(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port()}")
    assert health.probe_http(f"http://127.0.0.1:{server}/200") is None


def test_tcp(server: int) -> None:
    assert health.probe_tcp(f"127.0.0.1:{server}") is None
    error = health.probe_tcp(f"127.0.0.1:{closed_port()}")
    assert error is not None and error.startswith("connect 127.0.0.1:")


def test_command_probe_uses_the_runner() -> None:
    calls: list[Sequence[str]] = []

    def runner(argv: Sequence[str], timeout: float) -> tuple[int, str]:
        calls.append(argv)
        return (0, "") if argv[-1] == "ok" else (7, "first\nlast words\n")

    ok = HealthCheck(HealthKind.COMMAND, command=("bin/check", "ok"))
    bad = HealthCheck(HealthKind.COMMAND, command=("bin/check", "bad"))
    assert health.probe(ok, runner) is None
    assert health.probe(bad, runner) == "command bin/check bad exited with status 7: last words"
    assert calls == [("bin/check", "ok"), ("bin/check", "bad")]
    with pytest.raises(ValueError, match="runner"):
        health.probe(ok)


def test_http_answers_that_are_not_http_are_reported() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer_garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        thread = threading.Thread(target=answer_garbage)
        thread.start()
        error = health.probe_http(f"http://127.0.0.1:{port}/")
        thread.join()
    assert error == f"GET http://127.0.0.1:{port}/: not an HTTP answer ('SSH-2.0-OpenSSH_9.2')"


def test_http_query_and_timeout(server: int) -> None:
    assert health.probe_http(f"http://127.0.0.1:{server}/200?x=1") is None
    with socket.socket() as silent:  # accepts (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        assert health.probe_http(url, timeout=0.2) == f"GET {url}: timed out"
