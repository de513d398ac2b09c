"""Which release answered a probe? The kernel says which process accepted it.

During an overlap deploy two releases accept connections from one
listening socket (deploy/overlap.py), so a health probe sent to the app's
address may be answered by the running release instead of the new one. No
app cooperation is needed to tell them apart: once a process has accepted
the probe's connection, the server's end of it is a socket with an inode
(``/proc/net/tcp``, the ``inode`` column, 0 while it waits in the accept
queue; proc(5)), and that inode is among the open files of the process that
accepted it (``/proc/PID/fd/N -> socket:[INODE]``). :func:`connector` gives
health.py a ``connect`` that hands back only connections accepted by one
unit's processes; any other is closed unused (nothing was sent on it) and
counts as a probe without a verdict (health.NoVerdict), which the health
check retries.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable, Collection
from pathlib import Path

from pyrelctl.deploy.health import AnsweredElsewhere, Connect

#: How often the connection table is read while the probe waits to be accepted.
ACCEPT_POLL = 0.002

PROC = Path("/proc")


def _hex_address(family: int, host: str, port: int) -> str:
    """An address as ``/proc/net/tcp{,6}`` prints it: the address as native-order
    32-bit words in hex, a colon, the port in hex."""
    packed = socket.inet_pton(family, host)
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def accepted_inode(sock: socket.socket, proc: Path = PROC) -> int:
    """The inode of the server's end of ``sock``'s connection: 0 while nobody has
    accepted it (or the table does not show it)."""
    family = sock.family
    ours, theirs = sock.getsockname()[:2], sock.getpeername()[:2]
    local = _hex_address(family, theirs[0], theirs[1])  # the server's end is local there
    remote = _hex_address(family, ours[0], ours[1])
    table = proc / "net" / ("tcp6" if family == socket.AF_INET6 else "tcp")
    with open(table, encoding="ascii") as lines:
        next(lines, None)  # the header
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[1] == local and fields[2] == remote:
                return int(fields[9])
    return 0


def holder(inode: int, pids: Collection[int], proc: Path = PROC) -> int | None:
    """Which of ``pids`` has the socket ``inode`` open, if any."""
    target = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = proc / str(pid) / "fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue  # exited meanwhile
        for name in names:
            try:
                if os.readlink(fd_dir / name) == target:
                    return pid
            except OSError:
                continue
    return None


def connector(
    unit: str, pids: Callable[[], Collection[int]], others: Callable[[], Collection[int]]
) -> Connect:
    """A ``connect`` for health.py whose connections were accepted by ``unit``
    (``pids`` lists its processes); one that a process of ``others`` accepted
    raises :class:`~pyrelctl.deploy.health.AnsweredElsewhere`.

    The connection table shows the accepted socket a moment before the
    accepting process has it among its files (accept(2) attaches the socket,
    then installs the descriptor), so the owner is looked for until one of
    the two sides has it.
    """

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        sock = socket.create_connection(address, timeout=timeout)
        try:
            deadline = time.monotonic() + timeout
            while (inode := accepted_inode(sock)) == 0:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no process of {unit} or any other accepted it")
                time.sleep(ACCEPT_POLL)
            while holder(inode, pids()) is None:
                if holder(inode, others()) is not None:
                    raise AnsweredElsewhere(
                        f"accepted by the running release, not by {unit}: asked again"
                    )
                if time.monotonic() >= deadline:
                    raise AnsweredElsewhere(f"accepted by a process outside {unit}: asked again")
                time.sleep(ACCEPT_POLL)
        except BaseException:
            sock.close()
            raise
        return sock

    return connect
