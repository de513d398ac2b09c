"""The overlap strategy's own logic: which strategy, node names, clash signs, and
whose answer a probe got, against real processes sharing one loopback socket."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyrelctl.deploy import health, owner, strategy
from pyrelctl.deploy.overlap import Overlap, node_name, renice
from pyrelctl.deploy.readiness import Failure
from pyrelctl.deploy.strategy import Strategy
from pyrelctl.errors import BadInput
from pyrelctl.manifest import parse_settings
from pyrelctl.release import Kind, Release
from pyrelctl.sockets import Socket

# A release in miniature: accepts HTTP on the inherited socket (fd 3) and
# answers every request with the status given as argv[1].
SERVER = """
import socket, sys
listener = socket.socket(fileno=3)
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    conn.recv(4096)
    conn.sendall(b"HTTP/1.0 " + sys.argv[1].encode() + b" X\\r\\n\\r\\n")
    conn.close()
"""


def spawn(listener: socket.socket, status: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, status],
        pass_fds=(3,),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def shared() -> Iterator[tuple[int, subprocess.Popen[str], subprocess.Popen[str]]]:
    """Two servers accepting from one listening socket: "old" answers 200, "new" 503."""
    listener = socket.create_server(("127.0.0.1", 0))
    saved = os.dup(3) if _fd_open(3) else None
    os.dup2(listener.fileno(), 3)
    try:
        old, new = spawn(listener, "200"), spawn(listener, "503")
    finally:
        if saved is None:
            os.close(3)
        else:
            os.dup2(saved, 3)
            os.close(saved)
    port = listener.getsockname()[1]
    listener.close()  # only the two servers hold it now
    yield port, old, new
    for proc in (old, new):
        proc.kill()
        proc.wait()


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def probes(probe: Callable[[], str | None], until: set[str | None]) -> set[str | None]:
    """The answers of 40 probes, and of more until all of ``until`` came or
    10 s passed: which server accepts is up to the kernel and the scheduler
    (one that lags on a busy host may take none of 40)."""
    seen: set[str | None] = set()
    deadline = time.monotonic() + 10
    for n in itertools.count():
        seen.add(probe())
        if n >= 40 and (until <= seen or time.monotonic() > deadline):
            return seen
    raise AssertionError("unreachable")


def test_a_probe_counts_only_the_answers_of_the_given_release(
    shared: tuple[int, subprocess.Popen[str], subprocess.Popen[str]],
) -> None:
    port, old, new = shared
    url = f"http://127.0.0.1:{port}/"
    # Plain probes get either answer: the reason a probe must be attributed.
    answers = probes(lambda: health.probe_http(url), until={None, f"HTTP 503 from {url}"})
    assert answers == {None, f"HTTP 503 from {url}"}, answers

    to_new = owner.connector("new.service", lambda: {new.pid}, lambda: {old.pid})
    to_old = owner.connector("old.service", lambda: {old.pid}, lambda: {new.pid})
    new_answers = probes(
        lambda: health.probe_http(url, connect=to_new), until={f"HTTP 503 from {url}"}
    )
    assert f"HTTP 503 from {url}" in new_answers
    assert None not in new_answers  # the old release's 200 never passes for the new one
    elsewhere = [str(a) for a in new_answers if a != f"HTTP 503 from {url}"]
    assert all("accepted by the running release, not by new.service" in a for a in elsewhere)
    old_answers = probes(lambda: health.probe_http(url, connect=to_old), until={None})
    assert None in old_answers and f"HTTP 503 from {url}" not in old_answers
    # tcp: healthy once a process of that release accepted.
    assert health.probe_tcp(f"127.0.0.1:{port}", connect=to_old) in (
        None,
        f"connect 127.0.0.1:{port}: accepted by the running release, not by old.service: "
        "asked again",
    )


def test_an_https_check_cannot_be_attributed() -> None:
    to_new = owner.connector("new.service", lambda: set(), lambda: set())
    error = health.probe_http("https://127.0.0.1:1/", connect=to_new)
    assert (
        error == "GET https://127.0.0.1:1/: only an http:// check can be sent to one release alone"
    )


def test_an_unaccepted_connection_has_no_inode_and_an_accepted_one_is_found() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        assert owner.accepted_inode(client) == 0  # waiting in the accept queue
        conn, _ = listener.accept()
        inode = owner.accepted_inode(client)
        assert inode == os.fstat(conn.fileno()).st_ino
        assert owner.holder(inode, {os.getpid()}) is not None
        assert owner.holder(inode, {1 << 22}) is None  # no such process
        conn.close()
        client.close()


def release(**kw: object) -> Release:
    base: dict[str, object] = {"name": "shop", "version": "1.0", "kind": Kind.GENERIC}
    return Release(**{**base, **kw})  # type: ignore[arg-type]


SOCKET = Socket(listen=("127.0.0.1:4000",))


def test_the_host_choice_wins_then_the_release_then_the_socket_decides() -> None:
    assert strategy.chosen({}, release()) is Strategy.RESTART
    assert strategy.chosen({}, release(socket=SOCKET)) is Strategy.OVERLAP
    assert strategy.chosen({}, release(socket=SOCKET, strategy="restart")) is Strategy.RESTART
    assert strategy.chosen({"strategy": "overlap"}, release(strategy="restart")) is (
        Strategy.OVERLAP
    )
    # The host's --listen counts as a socket.
    assert strategy.chosen({"socket": {"listen": ["4000"]}}, release()) is Strategy.OVERLAP


def test_what_keeps_a_release_from_overlapping() -> None:
    assert "binds its port itself" in str(strategy.overlap_blocker({}, release(), ""))
    sock = release(socket=SOCKET)
    assert strategy.overlap_blocker({}, sock, "http://127.0.0.1:4000/") is None
    assert "cannot be sent to one release alone" in str(
        strategy.overlap_blocker({}, sock, "https://shop.example/")
    )


def test_the_manifest_names_a_strategy_or_is_refused() -> None:
    settings = parse_settings({"service": {"strategy": "overlap"}})
    assert settings.strategy == "overlap"
    with pytest.raises(BadInput, match=r'service\.strategy must be "restart" or "overlap"'):
        parse_settings({"service": {"strategy": "blue-green"}})


def test_the_overlapping_node_has_a_name_no_app_can_have() -> None:
    assert node_name("shop@127.0.0.1") == "shop_overlap@127.0.0.1"
    assert node_name("shop") == "shop_overlap"  # an sname


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("OSError: [Errno 98] Address already in use", "a port it binds itself"),
        (
            "Protocol 'inet_tcp': the name shop@127.0.0.1 seems to be in use by another "
            "Erlang node",
            "BEAM node name",
        ),
        ("database is already locked", "a lock it takes"),
    ],
)
def test_signs_that_a_release_cannot_run_twice(line: str, reason: str) -> None:
    failure = Failure(version="2.0", reason="start job failed", journal=[f"shop[1]: {line}"])
    assert reason in str(Overlap.cannot_run_twice(failure))


def test_an_ordinary_failure_is_no_sign() -> None:
    failure = Failure(version="2.0", reason="x", journal=["shop[1]: crashing on purpose"])
    assert Overlap.cannot_run_twice(failure) is None


THREADS = """
import threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


def niceness(pid: int) -> dict[int, int]:
    """Each thread's niceness, from /proc/PID/task/TID/stat (field 19)."""
    seen = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text(encoding="ascii")
        seen[int(tid)] = int(stat.rsplit(")", 1)[1].split()[16])
    return seen


@pytest.mark.parametrize("nice", [7, -5])
def test_every_thread_of_a_release_is_reniced(nice: int) -> None:
    if nice < 0 and os.geteuid() != 0:
        pytest.skip("a lower niceness needs CAP_SYS_NICE: run as root, as make test does")
    proc = subprocess.Popen([sys.executable, "-c", THREADS], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        before = niceness(proc.pid)
        assert len(before) == 4 and set(before.values()) == {os.getpriority(os.PRIO_PROCESS, 0)}
        assert renice([proc.pid, 2**22 + 1], nice) == 4  # a pid that is gone is passed over
        assert niceness(proc.pid) == dict.fromkeys(before, nice)
    finally:
        proc.kill()
        proc.wait()
