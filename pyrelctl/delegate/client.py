"""The caller's side: an unprivileged ``pyrelctl`` forwards a delegable command.

The command line is parsed here first, as any command's is (so ``--help``
and usage errors stay local), and forwarded only when all of these hold: the
caller is not root, it works on the real host (no ``--root``), the command
names an app or an artifact, and the helper's socket exists (root has
granted something on this host). Otherwise the command runs here with the
caller's own rights, as before grants existed.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
from pathlib import Path
from typing import Any

from pyrelctl.delegate import policy, wire
from pyrelctl.errors import BadInput, HostError


def wanted(command: str, params: dict[str, Any], *, offline: bool) -> bool:
    """Whether ``command`` with ``params`` goes to the root helper."""
    if command not in policy.DELEGABLE or offline or os.geteuid() == 0:
        return False
    target = params.get("artifact") if command == "install" else params.get("app")
    if not target:
        return False  # `status` of every app: the caller's own rights
    if "://" in str(target):
        if os.path.exists(wire.SOCKET_PATH):
            # Root fetching an address a user chose would reach what only the
            # host can reach (its loopback, its network): a granted user hands
            # over a file it read itself.
            raise BadInput(
                "a granted user installs from a file, not from a URL",
                hint="download the release and its .sig first (curl -fO URL -O URL.sig), "
                "then: pyrelctl install FILE",
            )
        return False  # no grants on this host: the caller's own rights
    return os.path.exists(wire.SOCKET_PATH)


def refuse_root_only(command: str, *, offline: bool) -> None:
    """On a host with grants, tell a user without root that ``command`` is root's (exit 2).

    Without this it would meet the permission error of the first root-only
    file it touches (exit 1), which says nothing about grants.
    """
    if command not in policy.ROOT_ONLY or offline or os.geteuid() == 0:
        return
    if os.path.exists(wire.SOCKET_PATH):
        policy.check(command, {}, {})


def _open_readable(path: Path, what: str) -> int:
    """``path`` opened for reading with the caller's rights, a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise BadInput(f"cannot read {what} {path}: {e.strerror}") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadInput(
            f"{path} is not a file: a granted user installs a release tarball",
            hint="pack it: tar -czf APP-VERSION.tar.gz -C DIR .",
        )
    return fd


def forward(
    command: str,
    argv: list[str],
    params: dict[str, Any],
    *,
    as_json: bool,
    verbosity: int,
    path: str = wire.SOCKET_PATH,
) -> int | None:
    """Run ``command`` through the root helper; its exit status, or None to run it here.

    None when the helper cannot be reached or, for a read command, when the
    caller has no grant for the app (it then reads what its own rights show).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    opened: list[int] = []
    try:
        try:
            sock.connect(path)
        except OSError:
            return None
        files = []
        if command == "install":
            artifact = Path(params["artifact"])
            opened.append(_open_readable(artifact, "artifact"))
            files.append("artifact")
            given = params.get("signature")
            signature = Path(given) if given else artifact.with_name(artifact.name + ".sig")
            try:
                opened.append(_open_readable(signature, "signature"))
                files.append("signature")
            except BadInput:
                if given:
                    raise
                # No signature: the helper refuses the install and says so.
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # what was printed here comes before the helper's lines
        request = wire.Request(
            argv, as_json, verbosity, files, [sys.stdout.fileno(), sys.stderr.fileno(), *opened]
        )
        wire.send_request(sock, request)
        for fd in opened:
            os.close(fd)
        opened.clear()
        reply = wire.receive_reply(sock)
    finally:
        for fd in opened:
            os.close(fd)
        sock.close()
    if reply.get("fallback") is True:
        return None
    if isinstance(reply.get("error"), str):
        error = BadInput if reply.get("exit") == 2 else HostError
        raise error(reply["error"], hint=reply.get("hint") or None)
    code = reply.get("exit")
    if not isinstance(code, int) or isinstance(code, bool):
        raise HostError(
            "the root helper ended without a result",
            hint="see: journalctl -u 'pyrelctl-delegate@*'",
        )
    return code
