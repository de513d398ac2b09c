"""The rpc/remote endpoint: Python evaluated inside the live service process.

A unix stream socket at ``$RUNTIME_DIRECTORY/rpc.sock`` (``/run/APP``),
mode 0600, bound under a temporary name and renamed into place so that it
never exists with wider permissions. Each connection's peer is checked with
``SO_PEERCRED``: only root and the service's own uid are served (the file
mode already keeps others out; the check holds even if the mode is changed).

Protocol: the client sends one JSON line ``{"op": ..., "code": ...}``.

* ``rpc``: the code (an expression, whose repr is printed as the REPL
  would, or statements) runs in the shared namespace; the reply is one JSON
  line ``{"status": 0|1, "output": "..."}`` with what it printed and, on an
  exception, the traceback.
* ``pid``: the reply's output is this process's pid.
* ``remote``: an interactive console; after the request line the
  connection is a plain text stream in both directions until either side
  closes it.
"""

from __future__ import annotations

import ast
import code
import io
import json
import logging
import os
import secrets
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager, suppress
from typing import Any, TextIO, cast

SOCKET_NAME = "rpc.sock"
#: Largest request line accepted (the code to run).
MAX_REQUEST = 1024 * 1024

log = logging.getLogger(__name__)


def socket_path(runtime_directory: str | None = None) -> str | None:
    """``$RUNTIME_DIRECTORY/rpc.sock`` (the first directory when several are set)."""
    directory = runtime_directory or os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return os.path.join(directory, SOCKET_NAME) if directory else None


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _ThreadStream:
    """Stands in for sys.stdout/sys.stderr: writes go to the stream the
    current thread redirected to, else to the original. Redirecting the
    process-wide sys.stdout (contextlib.redirect_stdout) would capture the
    service's own output while an rpc runs."""

    def __init__(self, fallback: TextIO) -> None:
        self._fallback = fallback
        self._local = threading.local()

    def _target(self) -> TextIO:
        return cast(TextIO, getattr(self._local, "target", None) or self._fallback)

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)

    @contextmanager
    def redirect(self, target: TextIO) -> Iterator[None]:
        previous = getattr(self._local, "target", None)
        self._local.target = target
        try:
            yield
        finally:
            self._local.target = previous


_install_lock = threading.Lock()


def _thread_streams() -> tuple[_ThreadStream, _ThreadStream]:
    with _install_lock:
        if not isinstance(sys.stdout, _ThreadStream):
            sys.stdout = cast(TextIO, _ThreadStream(sys.stdout))
        if not isinstance(sys.stderr, _ThreadStream):
            sys.stderr = cast(TextIO, _ThreadStream(sys.stderr))
    return cast(_ThreadStream, sys.stdout), cast(_ThreadStream, sys.stderr)


@contextmanager
def captured(target: TextIO) -> Iterator[None]:
    """Send this thread's prints (stdout and stderr) to ``target``."""
    out, err = _thread_streams()
    with out.redirect(target), err.redirect(target):
        yield


def run_code(source: str, namespace: MutableMapping[str, Any], out: TextIO) -> int:
    """Run ``source`` like the REPL would: when the last statement is an
    expression, its repr is printed (``import os; os.getpid()`` prints the pid).

    Returns 0, or 1 after writing the traceback when it raised (SystemExit
    included: an rpc must never end the service).
    """
    scope = cast(dict[str, Any], namespace)
    try:
        tree = ast.parse(source, "<rpc>", "exec")
        last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        if last is not None:
            tree.body.pop()
        exec(compile(tree, "<rpc>", "exec"), scope)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<rpc>", "eval"), scope)
            if value is not None:
                out.write(repr(value) + "\n")
        return 0
    except BaseException as e:
        # Without this function's own frame: the traceback starts in the code.
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        out.write("".join(traceback.format_exception(type(e), e, tb)))
        return 1


class _EndSession(Exception):
    pass


def _end_session(*_args: object) -> None:
    raise _EndSession


class _SocketConsole(code.InteractiveConsole):
    """code.InteractiveConsole reading from and writing to one connection."""

    def __init__(self, rfile: TextIO, wfile: TextIO, namespace: dict[str, Any]) -> None:
        # The builtins exit()/quit() close sys.stdin and raise SystemExit,
        # which must end the session, not touch the service's stdin.
        namespace.update(exit=_end_session, quit=_end_session)
        super().__init__(namespace, filename="<remote>")
        self.rfile = rfile
        self.stream = wfile

    def raw_input(self, prompt: str = "") -> str:
        self.stream.write(prompt)
        self.stream.flush()
        line = self.rfile.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def write(self, data: str) -> None:
        self.stream.write(data)
        self.stream.flush()

    def runcode(self, compiled: Any) -> None:
        try:
            exec(compiled, self.locals)
        except (_EndSession, SystemExit):
            raise _EndSession from None
        except BaseException:
            self.showtraceback()
        self.stream.flush()


class RpcServer:
    """Serves rpc and remote on a unix socket from a daemon thread."""

    def __init__(self, path: str, namespace: dict[str, Any]) -> None:
        self.path = path
        self.namespace = namespace
        self.pid = os.getpid()
        self._sock: socket.socket | None = None
        self._eval_lock = threading.Lock()

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        directory = os.path.dirname(self.path)
        tmp = os.path.join(directory, f".{SOCKET_NAME}.{secrets.token_hex(4)}")
        old_umask = os.umask(0o177)  # the socket is created 0600, never wider
        try:
            sock.bind(tmp)
        finally:
            os.umask(old_umask)
        os.chmod(tmp, 0o600)
        sock.listen(8)
        # Atomic: a client never finds no socket or a stale one of a
        # previous process (a restarted gunicorn worker takes it over).
        os.replace(tmp, self.path)
        self._sock = sock
        thread = threading.Thread(target=self._accept_loop, name="pyrelctl-rpc", daemon=True)
        thread.start()
        log.debug("rpc endpoint at %s", self.path)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._handle, args=(conn,), name="pyrelctl-rpc-conn", daemon=True
            ).start()

    def _allowed(self, conn: socket.socket) -> bool:
        uid = peer_uid(conn)
        if uid in (0, os.getuid()):
            return True
        log.warning("rpc: refused a connection from uid %d", uid)
        return False

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                if not self._allowed(conn):
                    return
                # Separate reader and writer: a TextIOWrapper opened "rw"
                # drops what it read ahead whenever it is written to.
                rfile = conn.makefile("r", encoding="utf-8", errors="replace", newline="\n")
                stream = conn.makefile("w", encoding="utf-8", errors="replace", newline="\n")
                line = rfile.readline(MAX_REQUEST + 1)
                request = json.loads(line) if line.endswith("\n") else None
                if not isinstance(request, dict):
                    self._reply(stream, 2, "bad request\n")
                    return
                op = request.get("op")
                if op == "pid":
                    self._reply(stream, 0, f"{os.getpid()}\n")
                elif op == "rpc" and isinstance(request.get("code"), str):
                    self._rpc(stream, request["code"])
                elif op == "remote":
                    self._remote(rfile, stream)
                else:
                    self._reply(stream, 2, f"unknown operation {op!r}\n")
            except (OSError, ValueError) as e:
                log.debug("rpc connection ended: %s", e)

    @staticmethod
    def _reply(stream: TextIO, status: int, output: str) -> None:
        stream.write(json.dumps({"status": status, "output": output}) + "\n")
        stream.flush()

    def _rpc(self, stream: TextIO, source: str) -> None:
        buffer = io.StringIO()
        # One rpc at a time: they share one namespace.
        with self._eval_lock, captured(buffer):
            status = run_code(source, self.namespace, buffer)
        self._reply(stream, status, buffer.getvalue())

    def _remote(self, rfile: TextIO, stream: TextIO) -> None:
        self._reply(stream, 0, "")
        # A session's own variables stay in its own namespace; the objects
        # it reaches are the live ones.
        console = _SocketConsole(rfile, stream, dict(self.namespace))
        banner = (
            f"remote console in pid {os.getpid()} (Python {sys.version.split()[0]}); "
            "the names exposed by the service are defined; exit with Ctrl-D or exit()"
        )
        with captured(stream), suppress(_EndSession):
            console.interact(banner=banner, exitmsg="")
