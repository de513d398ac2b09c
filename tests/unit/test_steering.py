"""pyrelctl.steering against the real kernel: SO_REUSEPORT groups on loopback.

Every test counts where real connections were queued, so a wrong program
(a bad jump, a wrong offset, the wrong byte order) fails it: the kernel
would spread the connections by hash, or send them all elsewhere.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from devtools.steering_lab import accept_all, listener
from pyrelctl import steering

N = 200


def queued(*listeners: socket.socket, host: str = "127.0.0.1", n: int = N) -> list[int]:
    """Connect ``n`` clients; how many were queued on each listener."""
    port = listeners[0].getsockname()[1]
    clients = [socket.create_connection((host, port)) for _ in range(n)]
    counts = []
    for sock in listeners:
        conns = accept_all(sock)
        counts.append(len(conns))
        for conn in conns:
            conn.close()
    for client in clients:
        client.close()
    return counts


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The serving release's listener (joined first: index 0) and the new one's (1)."""
    old = listener()
    new = listener(port=old.getsockname()[1])
    yield old, new
    old.close()
    new.close()


def test_no_program_spreads_connections_over_the_group(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # What the program is for: without it the new listener takes its share.
    old_count, new_count = queued(*pair)
    assert old_count > 0 and new_count > 0


def test_the_program_sends_every_connection_to_one_listener_and_the_switch_moves_them(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    old, new = pair
    steering.attach(old, steering.program(0))
    assert queued(old, new) == [N, 0]  # the new release accepted 0 of 200
    steering.attach(old, steering.program(1))  # the switch, through either socket
    assert queued(old, new) == [0, N]
    steering.attach(new, steering.program(0))
    assert queued(old, new) == [N, 0]


def test_the_program_outlives_the_socket_it_was_attached_through(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    old, new = pair
    duplicate = socket.socket(fileno=os.dup(old.fileno()))
    steering.attach(duplicate, steering.program(1))
    duplicate.close()
    assert queued(old, new) == [0, N]


def test_a_listener_that_leaves_is_replaced_by_the_last_one() -> None:
    # The index is the order of listen(2); the last listener fills a hole.
    a = listener()
    b, c = listener(port=a.getsockname()[1]), listener(port=a.getsockname()[1])
    steering.attach(a, steering.program(0))
    assert queued(a, b, c) == [N, 0, 0]
    a.close()
    assert queued(b, c) == [0, N]  # c is index 0 now
    steering.attach(b, steering.program(1))
    assert queued(b, c) == [N, 0]
    b.close()
    c.close()


def test_an_index_beyond_the_group_spreads_by_hash_over_every_listener(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # Why a program must never name a listener that may not be there.
    old, new = pair
    steering.attach(old, steering.program(2))
    old_count, new_count = queued(old, new)
    assert old_count > 0 and new_count > 0


def test_listening_again_keeps_the_index(pair: tuple[socket.socket, socket.socket]) -> None:
    # gen_tcp's fd option (a BEAM taking the socket from systemd) calls listen(2) again.
    old, new = pair
    steering.attach(old, steering.program(0))
    old.listen(1024)
    new.listen(1024)
    assert queued(old, new) == [N, 0]


@pytest.mark.parametrize(
    ("listen_host", "client_host"),
    [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("::", "127.0.0.1"), ("::", "::1")],
)
def test_the_probe_alone_reaches_the_new_listener(listen_host: str, client_host: str) -> None:
    old = listener(listen_host)
    port = old.getsockname()[1]
    new = listener(listen_host, port)
    probe_sock, probe = steering.probe_socket(client_host)
    try:
        steering.attach(old, steering.program(0, probe=probe, probe_to=1))
        clients = [socket.create_connection((client_host, port)) for _ in range(N)]
        probe_sock.connect((client_host, port))
        at_old, at_new = accept_all(old), accept_all(new)
        assert len(at_old) == N
        assert [conn.getpeername()[1] for conn in at_new] == [probe.port]
        for conn in (*at_old, *at_new, *clients):
            conn.close()
    finally:
        probe_sock.close()
        old.close()
        new.close()


def test_the_probe_is_matched_by_address_and_port(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    old, new = pair
    port = old.getsockname()[1]
    probe_sock, probe = steering.probe_socket("127.0.0.1")
    steering.attach(old, steering.program(0, probe=probe, probe_to=1))
    # The same port from another loopback address is not the probe.
    other = socket.socket()
    other.bind(("127.0.0.2", probe.port))
    other.connect(("127.0.0.1", port))
    assert [len(accept_all(old)), len(accept_all(new))] == [1, 0]
    probe_sock.connect(("127.0.0.1", port))
    assert [len(accept_all(old)), len(accept_all(new))] == [0, 1]
    other.close()
    probe_sock.close()


def test_attach_refuses_a_listener_without_reuseport() -> None:
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen()
    with pytest.raises(steering.SteeringError, match="refused"):
        steering.attach(plain, steering.program(0))
    plain.close()


def test_detach_spreads_again(pair: tuple[socket.socket, socket.socket]) -> None:
    old, new = pair
    steering.attach(old, steering.program(0))
    steering.detach(new)
    steering.detach(new)  # nothing attached: no error
    old_count, new_count = queued(old, new)
    assert old_count > 0 and new_count > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"serving": -1}, "not a listener index"),
        ({"serving": 0, "probe": steering.Probe("127.0.0.1", 1)}, "needs the index"),
        ({"serving": 0, "probe": steering.Probe("127.0.0.1", 0), "probe_to": 1}, "not a port"),
    ],
)
def test_program_refuses_bad_arguments(args: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        steering.program(**args)  # type: ignore[arg-type]  # deliberately loose


def test_jumps_of_the_probe_program_land_on_the_serving_exit() -> None:
    for host in ("127.0.0.1", "::1"):
        insns = steering.program(3, probe=steering.Probe(host, 4321), probe_to=7)
        assert insns[-2:] == (steering.Insn(0x06, k=7), steering.Insn(0x06, k=3))
        for at, insn in enumerate(insns[:-2]):
            if insn.code == 0x15:  # BPF_JMP | BPF_JEQ | BPF_K
                assert at + 1 + insn.jf == len(insns) - 1


def test_listening_inodes_counts_the_group(pair: tuple[socket.socket, socket.socket]) -> None:
    old, _ = pair
    port = old.getsockname()[1]
    assert len(steering.listening_inodes("127.0.0.1", port)) == 2
    assert steering.listening_inodes("127.0.0.2", port) == []


_HOLDER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", 0))
s.listen(4096)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_a_program_attached_through_a_listener_taken_from_another_process() -> None:
    # How pyrelctl reaches a socket unit's listener: PID 1 holds it.
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        ours = listener(port=port)
        inodes = steering.listening_inodes("127.0.0.1", port)
        assert len(inodes) == 2
        try:
            taken = steering.group_member(holder.pid, inodes)
        except steering.SteeringError as e:
            pytest.skip(f"no pidfd_getfd here: {e}")
        steering.attach(taken, steering.program(1))
        taken.close()
        assert queued(ours) == [N]  # every one here: none queued on the holder's
        steering.attach(ours, steering.program(0))
        assert queued(ours) == [0]
        ours.close()
    finally:
        holder.kill()
        holder.wait()


def test_group_member_says_when_the_process_holds_none() -> None:
    with pytest.raises(steering.SteeringError, match="holds none"):
        steering.group_member(os.getpid(), [1])


_MIGRATE = """
import ctypes, errno, socket, subprocess, sys
sys.path.insert(0, sys.argv[2])
from devtools.steering_lab import accept_all, listener
from pyrelctl import steering
if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
    print("no netns"); sys.exit(0)
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
try:
    steering.set_migration(True) if sys.argv[1] == "1" else None
except steering.SteeringError as e:
    # A container's /proc/sys is read-only (systemd-nspawn mounts it so).
    if getattr(e.__cause__, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM):
        print("sysctl read-only"); sys.exit(0)
    raise
print(steering.migration_enabled(), end=" ")
old = socket.socket(); old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
old.bind(("127.0.0.1", 0)); old.listen(4096)
port = old.getsockname()[1]
new = socket.socket(); new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
new.bind(("127.0.0.1", port)); new.listen(4096); new.setblocking(False)
steering.attach(old, steering.program(0))
clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
steering.attach(old, steering.program(1))
old.close()
moved = 0
while True:
    try:
        new.accept()[0].close(); moved += 1
    except BlockingIOError:
        break
print(moved)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace of its own")
@pytest.mark.parametrize(("migrate", "moved"), [("0", "0"), ("1", "50")])
def test_queued_connections_move_to_the_new_listener_only_with_migration(
    migrate: str, moved: str
) -> None:
    # In a network namespace of its own: the host's setting is never touched.
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", _MIGRATE, migrate, repo], capture_output=True, text=True, check=True
    ).stdout.split()
    if out == ["no", "netns"]:
        pytest.skip("cannot make a network namespace here")
    if out == ["sysctl", "read-only"]:
        pytest.skip("net.ipv4.tcp_migrate_req is read-only here (a container's /proc/sys)")
    assert out == [str(migrate == "1"), moved]


def test_probe_socket_is_bound_to_the_address_it_names() -> None:
    sock, probe = steering.probe_socket("::1")
    assert sock.getsockname()[:2] == ("::1", probe.port)
    sock.close()
    assert (
        steering.Probe("::ffff:127.0.0.1", 80).address()
        == steering.Probe("127.0.0.1", 80).address()
    )


def test_take_fd_reports_a_process_that_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(OSError):
        steering.take_fd(child.pid, 0)


def test_a_program_attached_before_listen_takes_the_socket_out_of_the_group() -> None:
    # Why pyrelctl attaches through a listening member: a bound socket that
    # gets a program first has a group of its own, and cannot listen then.
    serving = listener()
    port = serving.getsockname()[1]
    early = socket.socket()
    early.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    early.bind(("127.0.0.1", port))
    steering.attach(early, steering.program(0))
    with pytest.raises(OSError) as raised:
        early.listen(16)
    assert raised.value.errno == errno.EADDRINUSE
    early.close()
    serving.close()


def test_group_steers_through_a_member_and_refuses_an_index_it_lacks(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    old, new = pair
    group = steering.Group("127.0.0.1", old.getsockname()[1], pid=os.getpid())
    assert group.size() == 2
    try:
        group.steer(1)
    except steering.SteeringError as e:
        pytest.skip(f"no pidfd_getfd here: {e}")
    assert queued(old, new) == [0, N]
    group.steer(0)
    assert queued(old, new) == [N, 0]
    with pytest.raises(steering.SteeringError, match="no index 2"):
        group.steer(2)
    probe = steering.Probe("127.0.0.1", 1234)
    with pytest.raises(steering.SteeringError, match="no index 2"):
        group.steer(0, probe=probe, probe_to=2)
    assert queued(old, new) == [N, 0]  # a refused program changed nothing
