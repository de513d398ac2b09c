"""Issue 30's bench columns: boots counted from journal entries, and cuts of
held connections counted against a real loopback server that closes them."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bench import held as held_module
from bench.boots import count_boots
from bench.held import HeldConnections, HeldStats
from bench.report import Availability, LoadStats, Measure, Report, Target

# -- boots ----------------------------------------------------------------------


def entry(
    message: object, unit: str = "shop.service", invocation: str = "", pid: int = 10
) -> dict[str, object]:
    found: dict[str, object] = {"MESSAGE": message, "_SYSTEMD_UNIT": unit, "_PID": str(pid)}
    if invocation:
        found["_SYSTEMD_INVOCATION_ID"] = invocation
    return found


def test_the_overlap_deploys_two_boots_are_two() -> None:
    journal = [
        entry("shop 1.0.1 started", "shop@overlap.service", "aaa", pid=11),
        entry("serving on the socket from systemd", "shop@overlap.service", "aaa", pid=11),
        entry("shop 1.0.1 started", "shop.service", "bbb", pid=12),
    ]
    assert count_boots(journal, "shop", "1.0.1") == 2


def test_one_process_is_one_boot_and_other_releases_do_not_count() -> None:
    journal = [
        entry("shop 1.0.1 started", invocation="aaa", pid=1),
        # Said twice, and filed under the next invocation: one process, one start.
        entry("shop 1.0.1 started", invocation="bbb", pid=1),
        entry("shop 1.0.0 started", invocation="ccc", pid=2),  # the release rolled back to
        entry("shop 1.0.1 started", "other.service", "ddd", pid=3),  # another app's unit
        entry("shop 1.0.1 started", "shop@overlap2.service", "eee", pid=4),
        entry([115, 104, 111, 112], invocation="fff", pid=5),  # not UTF-8: a list of bytes
        entry("shop 1.0.1 started later", invocation="ggg", pid=6),
    ]
    assert count_boots(journal, "shop", "1.0.1") == 1
    assert count_boots(journal, "shop", "1.0.0") == 1
    assert count_boots(journal, "shop", "2.0.0") == 0


def test_restarts_of_a_crashing_release_each_count() -> None:
    journal = [
        entry("shop 1.0.1-broken crashing on purpose\n", invocation=f"i{n}", pid=n)
        for n in range(3)
    ]
    assert count_boots(journal, "shop", "1.0.1-broken") == 3


def test_a_line_of_the_apps_identifier_counts_without_its_unit() -> None:
    tagged = {"MESSAGE": "shop 1.0.1 started", "SYSLOG_IDENTIFIER": "shop", "_PID": "7"}
    other = {"MESSAGE": "shop 1.0.1 started", "SYSLOG_IDENTIFIER": "nginx", "_PID": "8"}
    assert count_boots([tagged, other], "shop", "1.0.1") == 1


# -- held connections -----------------------------------------------------------


class HoldServer:
    """Answers GET /hold with `app VERSION` and keeps the connection until told
    to cut it; can stop listening for a while (connects are refused)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.version = "1.0.0"
        self.answer = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self.listener.settimeout(0.05)  # closed while it stops listening: retry
                conn, _ = self.listener.accept()
            except OSError:
                time.sleep(0.01)
                continue
            conn.recv(4096)
            if not self.answer:
                conn.close()  # accepted, closed before the answer
                continue
            conn.sendall(f"HTTP/1.0 200 OK\r\n\r\napp {self.version}\n".encode())
            with self._lock:
                self.held.append(conn)

    def wait_held(self, n: int) -> None:
        deadline = time.monotonic() + 5
        while len(self.held) < n:
            assert time.monotonic() < deadline, f"{len(self.held)} connections held, not {n}"
            time.sleep(0.01)

    def cut_all(self, reset: bool = False) -> None:
        with self._lock:
            for conn in self.held:
                if reset:  # SO_LINGER 0: the close sends RST
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                conn.close()
            self.held.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.cut_all()
        self.listener.close()


@pytest.fixture
def server() -> Iterator[HoldServer]:
    found = HoldServer()
    yield found
    found.close()


def test_each_cut_counts_once_per_connection(server: HoldServer) -> None:
    with HeldConnections(server.port, "app ", count=3) as held:
        server.wait_held(3)
        server.version = "1.0.1"
        server.cut_all()  # first wave (the old release stops)
        server.wait_held(3)
        server.version = "1.0.2"
        server.cut_all(reset=True)  # second wave, by resets this time
        server.wait_held(3)
    stats = held.stats()
    assert stats.cuts == (2, 2, 2)
    assert stats.max_cuts == 2 and stats.total_cuts == 6
    assert stats.attached == (("1.0.0", "1.0.1", "1.0.2"),) * 3


def test_refused_reconnects_are_retries_not_cuts(server: HoldServer) -> None:
    with HeldConnections(server.port, "app ", count=1) as held:
        server.wait_held(1)
        # Nothing listens: every reconnect is refused. shutdown() first: a close
        # alone leaves the socket listening until the accept() blocked on it returns.
        server.listener.shutdown(socket.SHUT_RDWR)
        server.listener.close()
        server.cut_all()
        time.sleep(0.3)
        server.listener = socket.create_server(("127.0.0.1", server.port))
        server.wait_held(1)
    assert held.stats().cuts == (1,)


def test_accepted_then_closed_before_the_answer_is_a_cut(server: HoldServer) -> None:
    with HeldConnections(server.port, "app ", count=1) as held:
        server.wait_held(1)
        server.answer = False
        server.cut_all()
        time.sleep(0.2)  # each reconnect is accepted and closed
        server.answer = True
        server.wait_held(1)
    assert held.stats().cuts[0] >= 2


def test_closing_at_the_end_of_the_block_is_no_cut(server: HoldServer) -> None:
    with HeldConnections(server.port, "app ", count=2) as held:
        server.wait_held(2)
    assert held.stats() == HeldStats((0, 0), (("1.0.0",), ("1.0.0",)))


def test_a_connection_waiting_for_its_answer_ends_with_the_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A listener nobody accepts from (a socket unit while its service restarts).
    listener = socket.create_server(("127.0.0.1", 0))
    monkeypatch.setattr(held_module, "ATTACH_TIMEOUT", 0.2)
    started = time.monotonic()
    with HeldConnections(listener.getsockname()[1], "app ", count=1) as held:
        pass
    listener.close()
    assert time.monotonic() - started < 2
    assert held.stats() == HeldStats((0,), ((),))


# -- the report -------------------------------------------------------------------


def stats(boots: int | None, cuts: tuple[int, ...]) -> LoadStats:
    return LoadStats(100, 0, {}, {"1.0.1": 100}, 0.001, 0.002, 0.003, boots=boots, held_cuts=cuts)


def row(runs: tuple[LoadStats, ...], targets: tuple[Target, ...] = ()) -> Availability:
    return Availability(
        "upgrade", True, runs, (stats(None, ()),), targets, strategy="overlap", release="mix"
    )


def test_boots_and_cuts_against_their_targets() -> None:
    one_boot, once = Target(Measure.BOOTS, 1), Target(Measure.HELD_CUTS, 1)
    today = row((stats(2, (2, 2, 1, 2)), stats(2, (2, 2, 2, 2))), (one_boot, once))
    assert today.value(Measure.BOOTS) == 2 and not today.target_met(one_boot)
    assert today.held_cuts == (2, 15, 8) and not today.target_met(once)
    assert today.boots_text() == "2, 2" and today.held_text() == "2 / 15 of 8"
    goal = row((stats(1, (1, 1, 0, 1)), stats(1, (1, 1, 1, 1))), (one_boot, once))
    assert goal.met is True
    assert (one_boot.describe(), once.describe()) == ("1 boot", "each held cut <= 1x")


def test_boots_not_counted_or_none_found_cannot_meet_the_target() -> None:
    assert row((stats(1, (0,)), stats(None, (0,)))).value(Measure.BOOTS) == math.inf
    assert row((stats(0, (0,)),)).value(Measure.BOOTS) == math.inf
    assert row((stats(1, ()),)).value(Measure.HELD_CUTS) == math.inf


def test_the_table_has_the_new_columns_for_measured_and_skipped_rows() -> None:
    skipped = Availability("upgrade", True, (), (), skipped="no socket unit", strategy="overlap")
    report = Report(
        meta={
            "date": "d",
            "runs": 1,
            "machine": {"cpus": 2, "memory": "1 GiB", "kernel": "k", "systemd": "s"},
        },
        availability=[row((stats(2, (2, 2)),)), skipped],
    )
    lines = report.render().splitlines()
    header = next(line for line in lines if line.startswith("scenario"))
    assert "boots" in header and "held cut max / total of" in header
    assert any("2 / 4 of 2" in line for line in lines)
    document = report.to_json()["availability"][0]
    assert document["boots"] == [2] and document["held_cuts_max"] == 2
