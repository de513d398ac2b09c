"""Experiments behind the second-generation overlap design (docs/zero-downtime.md).

Run as root (it makes private network namespaces for the tcp_migrate_req
experiment, so the host's setting is never touched)::

    python3 -m devtools.steering_lab [-n 200]

Everything runs on loopback with plain sockets; each experiment prints the
counts it measured. What is measured:

* ``index``: a SO_REUSEPORT group of listeners, a cBPF program returning a
  fixed index: who gets N connections for each index, before and after a
  listener leaves the group;
* ``probe``: the program of pyrelctl.steering that sends one probe
  connection (by source address and port) to the new listener and the rest
  to the serving one, for IPv4, IPv6 and a v4 client of a dual-stack listener;
* ``migrate``: connections queued on a listener when it closes, with
  net.ipv4.tcp_migrate_req 0 and 1: how many another listener accepts, how
  many clients see a reset;
* ``unix``: whether AF_UNIX listeners can share a path (they cannot), and
  what a symlink swap gives instead.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import multiprocessing
import os
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from pyrelctl import steering

CLONE_NEWNET = 0x40000000


def listener(host: str = "127.0.0.1", port: int = 0, *, reuseport: bool = True) -> socket.socket:
    """A listening TCP socket (in the ``SO_REUSEPORT`` group of its address), non-blocking."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def accept_all(sock: socket.socket) -> list[socket.socket]:
    """Every connection queued on ``sock`` now."""
    got: list[socket.socket] = []
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return got
        got.append(conn)


def spread(group: dict[str, socket.socket], host: str, port: int, n: int) -> dict[str, int]:
    """Connect ``n`` clients; how many each listener of ``group`` has queued."""
    clients = [socket.create_connection((host, port)) for _ in range(n)]
    counts = {}
    for name, sock in group.items():
        conns = accept_all(sock)
        counts[name] = len(conns)
        for conn in conns:
            conn.close()
    for client in clients:
        client.close()
    return counts


def index_experiment(n: int) -> None:
    host = "127.0.0.1"
    a = listener(host, 0)
    port = a.getsockname()[1]
    group = {"A": a, "B": listener(host, port), "C": listener(host, port)}
    print(f"[index] listeners A, B, C joined in that order; {n} connections each line")
    print(f"  no program: {spread(group, host, port, n)}")
    for k in range(4):
        steering.attach(a, steering.program(k))
        print(f"  ret {k}: {spread(group, host, port, n)}")
    a.close()
    del group["A"]
    for k in range(3):
        steering.attach(group["B"], steering.program(k))
        print(f"  A closed, ret {k}: {spread(group, host, port, n)}")
    for sock in group.values():
        sock.close()


def probe_experiment(n: int) -> None:
    print(
        f"[probe] {n} clients and one probe; program: probe -> new (index 1), rest -> serving (0)"
    )
    for listen_host, client_host in (
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("::", "127.0.0.1"),
    ):
        old = listener(listen_host, 0)
        port = old.getsockname()[1]
        new = listener(listen_host, port)
        probe_sock, probe = steering.probe_socket(client_host)
        steering.attach(old, steering.program(0, probe=probe, probe_to=1))
        clients = [socket.create_connection((client_host, port)) for _ in range(n)]
        probe_sock.connect((client_host, port))
        at_old, at_new = accept_all(old), accept_all(new)
        probe_ports = [conn.getpeername()[1] for conn in at_new]
        print(
            f"  listen {listen_host}, clients from {client_host}: serving {len(at_old)}, "
            f"new {len(at_new)} (peer ports {probe_ports}, probe port {probe.port})"
        )
        for sock in (*at_old, *at_new, *clients, probe_sock, old, new):
            sock.close()


def _name(error: OSError) -> str:
    return errno.errorcode.get(error.errno or 0, str(error))


def _outcome(client: socket.socket) -> str:
    """'reset', 'open' (still connected, nothing read) or 'eof'."""
    client.settimeout(0.2)
    try:
        data = client.recv(1)
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "open"
    return "eof" if data == b"" else "data"


def _migrate_child(n: int, migrate: int, out: multiprocessing.queues.SimpleQueue[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        out.put(f"unshare: {os.strerror(ctypes.get_errno())}")
        return
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Path("/proc/sys/net/ipv4/tcp_migrate_req").write_text(f"{migrate}\n")
    host = "127.0.0.1"
    old = listener(host, 0)
    port = old.getsockname()[1]
    new = listener(host, port)
    steering.attach(old, steering.program(0))
    clients = [socket.create_connection((host, port)) for _ in range(n)]
    for i, client in enumerate(clients):
        client.sendall(f"{i}\n".encode())  # so the new listener can tell who it got
    steering.attach(new, steering.program(1))  # the switch
    old.close()  # the old release is gone with connections still queued on it
    moved = accept_all(new)
    intact = 0
    for conn in moved:
        conn.setblocking(True)
        conn.settimeout(1)
        intact += conn.recv(16).decode().strip().isdigit()  # the client's bytes came along
    outcomes: dict[str, int] = {}
    for client in clients:
        what = _outcome(client)
        outcomes[what] = outcomes.get(what, 0) + 1
    late = [socket.create_connection((host, port)) for _ in range(n)]
    after = len(accept_all(new))
    out.put(
        f"  tcp_migrate_req={migrate}: {n} queued on the closing listener: "
        f"{len(moved)} accepted by the other ({intact} with their data), clients: {outcomes}; "
        f"then {after} of {n} new connections reach the remaining listener"
    )
    for sock in (*moved, *clients, *late, new):
        sock.close()


def migrate_experiment(n: int) -> None:
    print(
        f"[migrate] {n} connections queued (not accepted) on the serving listener, switch, close it"
    )
    ctx = multiprocessing.get_context("fork")
    for migrate in (0, 1):
        out: multiprocessing.queues.SimpleQueue[str] = ctx.SimpleQueue()
        child = ctx.Process(target=_migrate_child, args=(n, migrate, out))
        child.start()
        child.join()
        print(
            out.get()
            if not out.empty()
            else f"  tcp_migrate_req={migrate}: failed ({child.exitcode})"
        )


def unix_experiment(n: int) -> None:
    print("[unix] SO_REUSEPORT on AF_UNIX, and a symlink swap")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "app.sock")
        first = socket.socket(socket.AF_UNIX)
        try:
            first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            print("  setsockopt(SO_REUSEPORT) on AF_UNIX: accepted")
        except OSError as e:
            print(f"  setsockopt(SO_REUSEPORT) on AF_UNIX: {_name(e)}")
        first.bind(path)
        first.listen(128)
        second = socket.socket(socket.AF_UNIX)
        with contextlib.suppress(OSError):
            second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            second.bind(path)
            print("  a second listener bound the same path")
        except OSError as e:
            print(f"  a second listener on the same path: {_name(e)}")
        second.close()
        first.close()
        os.unlink(path)
        # Each release listens on a path of its own; the app's path is a
        # symlink, replaced atomically (a temp link + rename(2)).
        old_path, new_path = os.path.join(tmp, "a.sock"), os.path.join(tmp, "b.sock")
        old, new = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
        for sock, where in ((old, old_path), (new, new_path)):
            sock.bind(where)
            sock.listen(4096)
            sock.setblocking(False)
        os.symlink(old_path, path)

        def count(label: str, make: Callable[[], None]) -> None:
            make()
            print(f"  {label}: old {len(accept_all(old))}, new {len(accept_all(new))}")

        def connect_n() -> None:
            for _ in range(n):
                client = socket.socket(socket.AF_UNIX)
                client.connect(path)
                client.close()

        count(f"{n} connections through the link to the old path", connect_n)
        os.symlink(new_path, path + ".tmp")
        os.rename(path + ".tmp", path)
        count(f"{n} connections after the swap", connect_n)
        queued = []
        for _ in range(n):
            client = socket.socket(socket.AF_UNIX)
            client.connect(old_path)
            queued.append(client)
        old.close()
        outcomes: dict[str, int] = {}
        for client in queued:
            what = _outcome(client)
            outcomes[what] = outcomes.get(what, 0) + 1
            client.close()
        print(f"  {n} queued on the old unix listener when it closes: clients {outcomes}")
        new.close()


EXPERIMENTS = {
    "index": index_experiment,
    "probe": probe_experiment,
    "migrate": migrate_experiment,
    "unix": unix_experiment,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="connections per measurement")
    parser.add_argument("only", nargs="*", choices=[*EXPERIMENTS, []], help="experiments to run")
    args = parser.parse_args()
    print(f"kernel {os.uname().release}")
    for name in args.only or EXPERIMENTS:
        EXPERIMENTS[name](args.n)


if __name__ == "__main__":
    main()
