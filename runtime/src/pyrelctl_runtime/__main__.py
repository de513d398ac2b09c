"""The verbs behind a python release's ``bin/APP``: rpc, remote, pid, eval.

``python -m pyrelctl_runtime [--socket PATH] VERB [CODE]``. rpc, remote and
pid talk to the live service over its socket (see :mod:`pyrelctl_runtime.rpc`);
eval runs the code in this fresh interpreter, with the release's packages
importable and nothing of the service started, as ``mix eval`` does.
Exit status: the code's (0, or 1 when it raised); 1 when the service cannot
be reached; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
from typing import Any

from pyrelctl_runtime.rpc import MAX_REQUEST, run_code, socket_path


class Unreachable(Exception):
    pass


def _connect(path: str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise Unreachable(f"cannot reach the service at {path}: {e.strerror or e}") from e
    return sock


def request(path: str, op: str, source: str = "", timeout: float | None = 60.0) -> dict[str, Any]:
    """One rpc or pid request; returns ``{"status": ..., "output": ...}``."""
    with _connect(path, timeout) as sock:
        try:
            sock.sendall((json.dumps({"op": op, "code": source}) + "\n").encode())
            with sock.makefile("r", encoding="utf-8", errors="replace") as stream:
                line = stream.readline(MAX_REQUEST * 16)
        except (ConnectionResetError, BrokenPipeError):
            # The service closes at once on a peer it does not serve (SO_PEERCRED).
            line = ""
    if not line:
        raise Unreachable(
            f"the service at {path} closed the connection without answering "
            "(only root and the service's own user may connect)"
        )
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise Unreachable(f"the service at {path} sent a malformed reply")
    return reply


def remote(path: str) -> int:
    """Relay this terminal to the service's console until either side closes."""
    sock = _connect(path, None)
    with sock:
        sock.sendall(b'{"op": "remote"}\n')
        header = b""
        while not header.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                raise Unreachable(f"the service at {path} closed the connection")
            header += chunk
        stdin = sys.stdin.fileno()
        out = sys.stdout.buffer
        open_fds = [sock.fileno(), stdin]
        while True:
            readable, _, _ = select.select(open_fds, [], [])
            if sock.fileno() in readable:
                data = sock.recv(65536)
                if not data:
                    return 0
                out.write(data)
                out.flush()
            if stdin in readable:
                data = os.read(stdin, 65536)
                if data:
                    sock.sendall(data)
                else:
                    # End of input: let the console finish what it has and close.
                    sock.shutdown(socket.SHUT_WR)
                    open_fds.remove(stdin)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=os.environ.get("PYRELCTL_PROG", "pyrelctl_runtime"))
    parser.add_argument("--socket", help="the service's rpc socket (default: $RUNTIME_DIRECTORY)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for rpc")
    parser.add_argument("verb", choices=("rpc", "remote", "pid", "eval"))
    parser.add_argument("code", nargs="*", help="Python expression or statements (rpc, eval)")
    args = parser.parse_args(argv)
    source = " ".join(args.code)
    if args.verb in ("rpc", "eval") and not source:
        parser.error(f"{args.verb} needs the code to run")
    if args.verb == "eval":
        return run_code(source, {"__name__": "__main__"}, sys.stdout)
    path = args.socket or socket_path()
    if not path:
        parser.error("no --socket and no $RUNTIME_DIRECTORY")
    try:
        if args.verb == "remote":
            return remote(path)
        reply = request(path, args.verb, source, args.timeout)
    except (Unreachable, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        print(
            "hint: is the service running, and did it call pyrelctl_runtime.serve()?",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(str(reply.get("output", "")))
    sys.stdout.flush()
    status = reply.get("status", 1)
    return status if isinstance(status, int) else 1


if __name__ == "__main__":
    sys.exit(main())
