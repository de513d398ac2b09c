"""The wire between an unprivileged ``pyrelctl`` and the root helper.

One request, one reply, on a local stream socket:

* request: a 4-byte big-endian length and a JSON object of at most
  :data:`MAX_REQUEST` bytes (``argv``: the command and its arguments as the
  caller typed them; ``json``, ``verbosity``: the options given before the
  command; ``files``: what the descriptors after stdout and stderr are).
  The caller's open descriptors travel with its first bytes (SCM_RIGHTS,
  unix(7)): its stdout and stderr, then the artifact and its signature it
  opened with its own rights. The helper never opens a path the caller
  names.
* reply: one JSON line, ``{"exit": N}`` once the command ended, or
  ``{"fallback": true}`` when a read command is not granted and the caller
  should answer it with its own rights, as it did before grants existed.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from pyrelctl.errors import BadInput

#: Where ``pyrelctl-delegate.socket`` listens.
SOCKET_PATH = "/run/pyrelctl/delegate.sock"
MAX_REQUEST = 64 * 1024
#: stdout, stderr, artifact, signature.
MAX_FDS = 4
_LENGTH = struct.Struct(">I")


@dataclass
class Request:
    argv: list[str]
    as_json: bool = False
    verbosity: int = 0
    files: list[str] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)  # stdout, stderr, then one per file

    def header(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "json": self.as_json,
            "verbosity": self.verbosity,
            "files": self.files,
        }


def send_request(sock: socket.socket, request: Request) -> None:
    data = json.dumps(request.header()).encode()
    if len(data) > MAX_REQUEST:
        raise BadInput("the command line is too long to forward to the root helper")
    message = _LENGTH.pack(len(data)) + data
    sent = socket.send_fds(sock, [message], request.fds)
    if sent < len(message):
        sock.sendall(message[sent:])


def receive_request(sock: socket.socket) -> Request:
    """The caller's request; the descriptors received are closed if it is refused."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_REQUEST + _LENGTH.size, MAX_FDS)
    try:
        if flags & socket.MSG_CTRUNC:
            raise BadInput(f"more than {MAX_FDS} descriptors sent")
        if len(data) < _LENGTH.size:
            raise BadInput("no request")
        (length,) = _LENGTH.unpack_from(data)
        if length > MAX_REQUEST:
            raise BadInput("request too long")
        body = bytearray(data[_LENGTH.size :])
        while len(body) < length:
            more = sock.recv(length - len(body))
            if not more:
                raise BadInput("request cut short")
            body += more
        if len(body) != length:
            raise BadInput("more than one request")
        return _parse(bytes(body), fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _parse(body: bytes, fds: list[int]) -> Request:
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise BadInput("request is not JSON") from e
    if not isinstance(doc, dict):
        raise BadInput("request is not a JSON object")
    argv, files = doc.get("argv"), doc.get("files", [])
    as_json, verbosity = doc.get("json", False), doc.get("verbosity", 0)
    if (
        not isinstance(argv, list)
        or not argv
        or not all(isinstance(a, str) for a in argv)
        or not isinstance(files, list)
        or not all(f in ("artifact", "signature") for f in files)
        or len(set(files)) != len(files)
        or not isinstance(as_json, bool)
        or not isinstance(verbosity, int)
        or isinstance(verbosity, bool)
    ):
        raise BadInput("malformed request")
    if len(fds) != 2 + len(files):
        raise BadInput(f"expected {2 + len(files)} descriptors, got {len(fds)}")
    return Request(argv, as_json, max(-1, min(verbosity, 3)), files, fds)


def send_reply(sock: socket.socket, reply: dict[str, Any]) -> None:
    sock.sendall(json.dumps(reply).encode() + b"\n")


def receive_reply(sock: socket.socket) -> dict[str, Any]:
    """The helper's reply; {} when it closed the connection without one."""
    data = b""
    while not data.endswith(b"\n") and len(data) < 4096:
        more = sock.recv(4096)
        if not more:
            break
        data += more
    try:
        reply = json.loads(data) if data.strip() else {}
    except ValueError:
        return {}
    return reply if isinstance(reply, dict) else {}
