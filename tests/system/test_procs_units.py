"""A release's processes and timers (issue 32), deployed with it in a real systemd.

The app ``procs`` serves on a socket (the "serve" test release) and declares
a worker with two instances and two timers; every deploy must take the
instances with it (each runs the release ``current`` names, checked through
``/proc/PID/cwd``), a release whose worker crashes is refused and every
instance goes back, and a job in progress is never cut by a deploy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand

APP = "procs"
PORT = 18470
UNITS = "/etc/systemd/system"
WORKERS = [f"{APP}-worker@1.service", f"{APP}-worker@2.service"]
SOCKET = f'[socket]\nlisten = ["127.0.0.1:{PORT}"]\n[health]\nhttp = "http://127.0.0.1:{PORT}/"\n'
WORKER = """
[processes.worker]
command = ["sh", "-c", "echo worker of $(cat www/index.html); exec sleep infinity"]
instances = 2
"""
CRASHING_WORKER = """
[processes.worker]
command = ["sh", "-c", "echo worker failing on purpose; exit 1"]
instances = 2
"""
# `tick` runs every 2 seconds and prints the release it ran from; `long`
# never elapses on its own (the test starts it) and takes a while.
TICK = """
[timers.tick]
command = ["sh", "-c", "echo tick from $(cat www/index.html)"]
on_calendar = "*:*:0/2"
"""
LONG = """
[timers.long]
command = ["sh", "-c", "echo long from $(cat www/index.html); sleep 6; echo long finished"]
on_calendar = "*-01-01 03:00:00"
"""


def wait_for(what: Callable[[], bool], message: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


def release_of(machine: Machine, unit: str) -> str:
    """The release directory the unit's main process runs in (its cwd, resolved)."""
    pid = machine.unit_property(unit, "MainPID")
    assert pid not in ("", "0"), f"{unit} has no main process"
    cwd = machine.run(["readlink", f"/proc/{pid}/cwd"]).stdout.strip()
    return cwd.rsplit("/", 1)[-1]


def main_pids(machine: Machine, units: list[str]) -> dict[str, str]:
    return {u: machine.unit_property(u, "MainPID") for u in units}


@pytest.fixture
def releases(make_release: Callable[..., Path]) -> dict[str, Path]:
    def make(version: str, extra: str) -> Path:
        return make_release(
            name=APP, version=version, behaviour="serve", port=PORT, extra_toml=SOCKET + extra
        )

    return {
        "1.0.0": make("1.0.0", WORKER + TICK + LONG),
        "1.1.0": make("1.1.0", WORKER + TICK + LONG),
        "1.2.0": make("1.2.0", CRASHING_WORKER + TICK + LONG),
        # One worker instance less, the tick timer gone.
        "1.3.0": make("1.3.0", WORKER.replace("instances = 2", "instances = 1") + LONG),
    }


@pytest.fixture
def procs_app(machine: Machine, pyrelctl: MachineCommand) -> Iterator[str]:
    yield APP
    pyrelctl("uninstall", "--purge", APP)
    # Nothing of it may reach a later test's app (uninstall's own checks are below).
    machine.systemctl("stop", f"{APP}-*", check=False)


def test_processes_and_timers_deploy_fail_and_roll_back_with_the_app(
    machine: Machine, pyrelctl: MachineCommand, releases: dict[str, Path], procs_app: str
) -> None:
    def install(version: str, *args: str, code: int = 0) -> str:
        proc = pyrelctl("install", releases[version], "--grace", "1", *args)
        assert proc.returncode == code, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    install("1.0.0")
    for unit in (f"{APP}-worker@.service", f"{APP}-tick.timer", f"{APP}-tick.service"):
        assert machine.run(["test", "-f", f"{UNITS}/{unit}"], check=False).returncode == 0, unit
    for unit in WORKERS:
        assert machine.unit_property(unit, "ActiveState") == "active", unit
        assert release_of(machine, unit) == "1.0.0"
    assert machine.unit_property(f"{APP}-tick.timer", "ActiveState") == "active"

    # A timer's job runs on the current release.
    def ticked(version: str) -> Callable[[], bool]:
        def seen() -> bool:
            log = machine.journalctl("-u", f"{APP}-tick", "-o", "cat", "--no-pager").stdout
            return f"tick from {APP} {version}" in log

        return seen

    wait_for(ticked("1.0.0"), "the tick job never ran on 1.0.0")

    # An upgrade (overlap: the web process starts beside the old one) takes
    # every instance to the new release.
    before = main_pids(machine, WORKERS)
    out = install("1.1.0")
    assert f"starting beside the running release: {APP}@overlap.service" in out, out
    for unit in WORKERS:
        assert machine.unit_property(unit, "MainPID") != before[unit], unit
        assert release_of(machine, unit) == "1.1.0"
    wait_for(ticked("1.1.0"), "the tick job never ran on 1.1.0")

    # A job in progress is not cut by a deploy: it finishes on its release.
    machine.systemctl("start", "--no-block", f"{APP}-long.service")
    wait_for(
        lambda: machine.unit_property(f"{APP}-long.service", "ActiveState") == "activating",
        "the long job did not start",
    )
    job = machine.unit_property(f"{APP}-long.service", "InvocationID")

    # A release whose worker crashes fails (exit 3): everything is back on 1.1.0.
    before = main_pids(machine, WORKERS)
    out = install("1.2.0", code=3)
    assert f"{APP}-worker@" in out, out
    assert "worker failing on purpose" in out, out
    assert machine.run(["readlink", f"/opt/{APP}/current"]).stdout.strip().endswith("1.1.0")
    for unit in WORKERS:
        assert machine.unit_property(unit, "SubState") == "running", unit  # verified
        assert release_of(machine, unit) == "1.1.0"
        assert machine.unit_property(unit, "NRestarts") == "0"
    assert machine.http_get(f"http://127.0.0.1:{PORT}/") == f"{APP} 1.1.0"

    # The job ran through the deploy and its restore, and finished.
    wait_for(
        lambda: machine.unit_property(f"{APP}-long.service", "ActiveState") == "inactive",
        "the long job did not finish",
    )
    assert machine.unit_property(f"{APP}-long.service", "Result") == "success"
    log = machine.journalctl(
        f"_SYSTEMD_INVOCATION_ID={job}", "-o", "cat", "--no-pager"
    ).stdout.splitlines()
    assert log[:1] == [f"long from {APP} 1.1.0"] and "long finished" in log, log

    # A rollback takes every instance back.
    rollback = pyrelctl("rollback", APP, "--grace", "1")
    assert rollback.returncode == 0, rollback.stderr
    for unit in WORKERS:
        assert release_of(machine, unit) == "1.0.0"

    # A configuration change restarts and verifies every instance with it.
    before = main_pids(machine, WORKERS)
    config = pyrelctl("config", "set", APP, "QUEUE_URL=redis://q")
    assert config.returncode == 0, config.stderr
    for unit in WORKERS:
        pid = machine.unit_property(unit, "MainPID")
        assert pid != before[unit], unit
        environ = machine.run(["cat", f"/proc/{pid}/environ"]).stdout
        assert "QUEUE_URL=redis://q" in environ.split("\0"), unit

    # A release with fewer instances and without a timer: what it drops stops.
    install("1.3.0")
    assert machine.unit_property(WORKERS[0], "SubState") == "running"
    assert release_of(machine, WORKERS[0]) == "1.3.0"
    assert machine.unit_property(WORKERS[1], "ActiveState") == "inactive"
    assert machine.unit_property(f"{APP}-tick.timer", "ActiveState") == "inactive"
    assert machine.run(["test", "-e", f"{UNITS}/{APP}-tick.timer"], check=False).returncode == 1
    wanted = machine.run(["ls", f"{UNITS}/{APP}.service.wants"]).stdout.split()
    assert wanted == [f"{APP}-long.timer", WORKERS[0]], wanted

    # `systemctl stop APP` stops the instances and the timers too.
    machine.systemctl("stop", APP)
    assert machine.unit_property(WORKERS[0], "ActiveState") == "inactive"
    assert machine.unit_property(f"{APP}-long.timer", "ActiveState") == "inactive"
    start = pyrelctl("start", APP)
    assert start.returncode == 0, start.stderr
    assert machine.unit_property(WORKERS[0], "SubState") == "running"

    # uninstall takes every unit, link and stamp with it.
    assert pyrelctl("uninstall", APP).returncode == 0
    left = machine.run(["sh", "-c", f"ls {UNITS} | grep '^{APP}[-.]' || true"]).stdout.split()
    assert left == [], left
    assert machine.unit_property(WORKERS[0], "ActiveState") == "inactive"
