"""The generic test release's HTTP server (devtools.releases), as an overlap deploy uses it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from devtools.releases import Behaviour, make_generic_release

TRIES = 5
#: Become the server with the listening socket as descriptor 3 and LISTEN_PID
#: its own pid (sd_listen_fds(3)), as systemd starts it.
EXEC_WITH_FD_3 = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, sys.argv[2], "srv 1.0.0", "0"])
"""


def test_two_copies_on_one_socket_stop_at_once_after_one_answered(tmp_path: Path) -> None:
    # During an overlap deploy two releases accept from one socket (fd 3);
    # a connection wakes both. The one that does not get it must not block
    # in accept() (it would not stop on SIGTERM until the next client came:
    # seen as an overlap unit's 30 s stop, on a host with no traffic).
    release = make_generic_release(
        tmp_path, name="srv", version="1.0.0", behaviour=Behaviour.SERVE, tarball=False
    )
    serve = release / "bin" / "serve.py"
    for _ in range(TRIES):
        listener = socket.create_server(("127.0.0.1", 0))
        port, fd = listener.getsockname()[1], os.dup(listener.fileno())
        listener.close()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", EXEC_WITH_FD_3, str(fd), str(serve)],
                pass_fds=(fd,),
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        os.close(fd)
        try:
            for proc in procs:
                assert proc.stdout is not None
                assert proc.stdout.readline().startswith("serving on the socket from systemd")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert c.recv(100).startswith(b"HTTP/1.0 200")
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                # A bounded wait for an exit, not a timing: a blocked accept()
                # never returns here.
                assert proc.wait(timeout=10) == 0
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
