"""pyrelctl_runtime outside systemd: journal priorities, rpc evaluation, the socket, notify.

Each test that needs the runtime's process-wide state (notify socket, rpc
server) runs it in a child interpreter, so tests do not share it.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyrelctl_runtime.__main__ import request
from pyrelctl_runtime.journal import JournalFormatter, priority
from pyrelctl_runtime.rpc import captured, run_code

RUNTIME_SRC = Path(__file__).resolve().parents[2] / "runtime" / "src"


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (logging.CRITICAL, 2),
        (logging.ERROR, 3),
        (logging.WARNING, 4),
        (25, 5),
        (logging.INFO, 6),
        (logging.DEBUG, 7),
    ],
)
def test_levels_map_to_syslog_priorities(level: int, expected: int) -> None:
    assert priority(level) == expected


def test_every_line_of_a_record_carries_its_priority() -> None:
    record = logging.LogRecord("app", logging.ERROR, __file__, 1, "first\nsecond", None, None)
    assert JournalFormatter(prefix=True).format(record) == "<3>app: first\n<3>second"
    assert JournalFormatter(prefix=False).format(record) == "app: first\nsecond"


def test_prefix_only_when_stderr_is_the_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert JournalFormatter().prefix is False
    st = os.fstat(sys.stderr.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert JournalFormatter().prefix is True


def test_run_code_prints_the_last_expression_like_the_repl() -> None:
    out = io.StringIO()
    scope: dict[str, object] = {"items": [1, 2]}
    with captured(out):  # as the rpc server runs it: this thread's prints go to `out`
        assert run_code("x = len(items); print('n'); x * 10", scope, out) == 0
    assert out.getvalue() == "n\n20\n"
    assert scope["x"] == 2
    out = io.StringIO()
    assert run_code("raise SystemExit(4)", scope, out) == 1  # never ends the process
    assert out.getvalue().startswith("Traceback") and "SystemExit: 4" in out.getvalue()
    assert "run_code" not in out.getvalue()  # the traceback starts in the code


SERVICE = textwrap.dedent(
    """
    import os, socket, sys, time
    import pyrelctl_runtime
    state = {"hits": 41}
    state["hits"] += 1
    pyrelctl_runtime.serve({"state": state}, status_text="up")
    print("NOTIFY_SOCKET" in os.environ, flush=True)  # taken out for children
    time.sleep(30)
    """
)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], socket.socket, Path]]:
    # Not below pytest's tmp_path (0700): another uid must reach the socket
    # for SO_PEERCRED to be what refuses it.
    tmp_path = Path(tempfile.mkdtemp(prefix="pyrelctl-rt-"))
    tmp_path.chmod(0o755)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(os.fspath(tmp_path / "notify"))
    notify.settimeout(20)
    env = {
        **os.environ,
        "PYTHONPATH": os.fspath(RUNTIME_SRC),
        "NOTIFY_SOCKET": os.fspath(tmp_path / "notify"),
        "RUNTIME_DIRECTORY": os.fspath(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE], env=env, stdout=subprocess.PIPE, text=True
    )
    yield proc, notify, tmp_path / "rpc.sock"
    proc.kill()
    proc.wait()
    notify.close()
    shutil.rmtree(tmp_path)


def test_serve_notifies_and_answers_rpc(
    service: tuple[subprocess.Popen[str], socket.socket, Path],
) -> None:
    proc, notify, sock = service
    assert notify.recv(4096) == b"READY=1\nSTATUS=up"
    assert proc.stdout is not None and proc.stdout.readline().strip() == "False"
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    assert request(os.fspath(sock), "rpc", "state['hits']") == {"status": 0, "output": "42\n"}
    assert request(os.fspath(sock), "pid") == {"status": 0, "output": f"{proc.pid}\n"}
    bad = request(os.fspath(sock), "rpc", "undefined_name")
    assert bad["status"] == 1 and "NameError" in bad["output"]


def test_rpc_refuses_other_users(
    service: tuple[subprocess.Popen[str], socket.socket, Path],
) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to connect as another uid")
    _proc, notify, sock = service
    notify.recv(4096)  # ready
    os.chmod(sock, 0o666)  # even with the file open to all, SO_PEERCRED decides
    # Imported before the uid is dropped: nobody may not reach the checkout
    # (under /root, 0700); all the client then needs is the socket.
    client = (
        "import os, sys; from pyrelctl_runtime.__main__ import request; "
        "os.setgroups([]); os.setgid(65534); os.setuid(65534); "
        "print(request(sys.argv[1], 'rpc', '1 + 1'))"
    )
    denied = subprocess.run(
        [sys.executable, "-c", client, sock],
        env={**os.environ, "PYTHONPATH": os.fspath(RUNTIME_SRC)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert denied.returncode == 1
    assert "closed the connection without answering" in denied.stderr


def test_listen_sockets_by_name(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import os, socket
        a = socket.socket(); a.bind(("127.0.0.1", 0)); a.listen()
        b = socket.socket(); b.bind(("127.0.0.1", 0)); b.listen()
        os.dup2(a.fileno(), 3); os.dup2(b.fileno(), 4)
        os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="2", LISTEN_FDNAMES="web:admin")
        import pyrelctl_runtime
        found = pyrelctl_runtime.listen_sockets()
        print(sorted(found), found["web"][0].getsockname() == a.getsockname(),
              "LISTEN_FDS" in os.environ)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": os.fspath(RUNTIME_SRC)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "['admin', 'web'] True False"
