"""`pyrelctl scale` in a real systemd (issue 32), with `status` and `logs` of the processes.

The app ``scaled`` serves on a socket and declares a worker (two instances)
and a timer. Scaling up starts and verifies only the new instances, scaling
down stops only the surplus ones: the web process and the instances that
stay keep their main PIDs. A new instance that crashes undoes the scale
(exit 3, its journal, the old count back) and stops nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand

APP = "scaled"
PORT = 18480
WEB = f"{APP}.service"
SOCKET = f'[socket]\nlisten = ["127.0.0.1:{PORT}"]\n[health]\nhttp = "http://127.0.0.1:{PORT}/"\n'
# A worker crashes while /run/scaled-crash exists: instances started then fail.
WORKER_SCRIPT = (
    "[ -e /run/scaled-crash ] && echo worker crashing on purpose && exit 1; "
    "echo worker from $(cat www/index.html); exec sleep infinity"
)
WORKER = f"""
[processes.worker]
command = ["sh", "-c", {json.dumps(WORKER_SCRIPT)}]
instances = 2

[timers.tick]
command = ["sh", "-c", "echo tick from $(cat www/index.html)"]
on_calendar = "*:*:0/2"

[timers.hourly]
command = ["sh", "-c", "echo hourly"]
every = "1h"
"""


def worker(n: int) -> str:
    return f"{APP}-worker@{n}.service"


def wait_for(what: Callable[[], bool], message: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


@pytest.fixture
def scaled_app(
    machine: Machine, pyrelctl: MachineCommand, make_release: Callable[..., Path]
) -> Iterator[Path]:
    artifact = make_release(
        name=APP, version="1.0.0", behaviour="serve", port=PORT, extra_toml=SOCKET + WORKER
    )
    yield artifact
    machine.run(["rm", "-f", "/run/scaled-crash"])
    pyrelctl("uninstall", "--purge", APP)
    machine.systemctl("stop", f"{APP}-*", check=False)


def test_scale_up_down_a_crashing_count_status_and_logs(
    machine: Machine, pyrelctl: MachineCommand, scaled_app: Path
) -> None:
    def pid(unit: str) -> str:
        return machine.unit_property(unit, "MainPID")

    def scale(*args: str, code: int = 0) -> str:
        proc = pyrelctl("scale", APP, *args, "--grace", "1")
        assert proc.returncode == code, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    def links() -> list[str]:
        listed = machine.run(["ls", f"/etc/systemd/system/{APP}.service.wants"]).stdout
        return sorted(listed.split())

    def settings() -> object:
        text = machine.run(["cat", f"/etc/pyrelctl/{APP}/settings.json"]).stdout
        return json.loads(text).get("scale")

    proc = pyrelctl("install", scaled_app, "--grace", "1")
    assert proc.returncode == 0, proc.stderr
    kept = {u: pid(u) for u in (WEB, worker(1), worker(2))}

    # 2 -> 4: two instances started and verified, nothing restarted.
    out = scale("worker=4")
    assert f"starting {worker(3)}" in out and f"starting {worker(4)}" in out, out
    assert f"starting {worker(2)}" not in out, out
    for n in (1, 2, 3, 4):
        assert machine.unit_property(worker(n), "SubState") == "running", n
    assert {u: pid(u) for u in kept} == kept
    assert settings() == {"worker": 4}

    # 4 -> 1: the surplus stops, the rest keeps running.
    scale("worker=1")
    for n in (2, 3, 4):
        assert machine.unit_property(worker(n), "ActiveState") == "inactive", n
    assert pid(worker(1)) == kept[worker(1)] and pid(WEB) == kept[WEB]
    assert links() == [f"{APP}-hourly.timer", f"{APP}-tick.timer", worker(1)]

    # 1 -> 3 with crashing workers: exit 3, its journal, the count back to 1.
    machine.run(["touch", "/run/scaled-crash"])
    out = scale("worker=3", code=3)
    machine.run(["rm", "-f", "/run/scaled-crash"])
    assert "worker crashing on purpose" in out, out
    assert f"{APP}-worker@" in out, out
    for n in (2, 3):
        assert machine.unit_property(worker(n), "ActiveState") in ("inactive", "failed"), n
    assert pid(worker(1)) == kept[worker(1)] and pid(WEB) == kept[WEB]
    assert links() == [f"{APP}-hourly.timer", f"{APP}-tick.timer", worker(1)]
    assert settings() == {"worker": 1}
    history = json.loads(pyrelctl("--json", "history", APP).stdout)["history"]
    assert [r["result"].split(":")[0] for r in history if r["action"] == "scale"] == [
        "ok",
        "ok",
        "failed",
    ], history

    # status: a line per instance (its release) and per timer (last run, result, next).
    scale("worker=2")
    wait_for(
        lambda: (
            machine.unit_property(f"{APP}-tick.service", "ExecMainExitTimestampMonotonic")
            not in ("", "0")
        ),
        "the tick job never ran",
    )
    # Read between two ticks: while a job runs, systemd has no next elapse for
    # its timer yet (the status then says "running").
    for _ in range(20):
        doc = json.loads(pyrelctl("--json", "status", APP).stdout)
        if doc["timers"][1]["job_state"] != "activating":
            break
        time.sleep(0.3)
    assert [(p["unit"], p["sub_state"], p["release"]) for p in doc["processes"]] == [
        (worker(1), "running", "1.0.0"),
        (worker(2), "running", "1.0.0"),
    ], doc["processes"]
    hourly, tick = doc["timers"]
    # every = "1h": systemd's next elapse is monotonic, shown on the wall clock.
    assert hourly["unit"] == f"{APP}-hourly.timer" and hourly["last"] is None, hourly
    assert 3000 < hourly["next"] - time.time() <= 3600, hourly
    assert tick["unit"] == f"{APP}-tick.timer" and tick["active_state"] == "active", tick
    assert tick["last"] and tick["next"] and tick["next"] > tick["last"], tick
    assert tick["result"] == "success", tick
    lines = pyrelctl("status", APP).stdout.splitlines()
    assert any(line.split()[:3] == [worker(2), "active", "(running)"] for line in lines), lines
    assert any(line.split()[:2] == [f"{APP}-tick.timer", "active"] for line in lines), lines

    # logs --process worker: the worker's lines and none of the timer's.
    logs = pyrelctl("logs", APP, "--process", "worker").stdout
    assert f"worker from {APP} 1.0.0" in logs and "tick from" not in logs, logs
    assert "tick from" in pyrelctl("logs", APP).stdout
    assert pyrelctl("logs", APP, "--process", "nope").returncode == 2
