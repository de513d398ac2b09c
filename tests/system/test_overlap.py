"""The overlap strategy in a real systemd: the new release proves itself first.

The "serve" test release answers `NAME VERSION` on the socket systemd
passes. With `[socket]` a deploy starts the new release in `APP@overlap`
beside the running `APP.service`, on the same listener, and the old
release stops only once the new one is up (deploy/overlap.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.load import Background, Load
from devtools.machine import Machine, MachineCommand

PORT = 18400
URL = f"http://127.0.0.1:{PORT}/"
SOCKET = f'[socket]\nlisten = ["127.0.0.1:{PORT}"]\n'
HEALTH = f'[health]\nhttp = "{URL}"\n'
APP = "ovl"
OVERLAP_UNIT = f"{APP}@overlap.service"


def assert_served(summary: dict[str, Any], *, by: tuple[str, ...], never: str) -> None:
    """No request of the load failed, each of ``by`` answered many, ``never`` none."""
    assert summary["errors"] == [], summary["errors"][:5]
    served = summary["bodies"]
    assert all(served.get(body, 0) > 10 for body in by), served
    assert never not in served, served


def assert_overlap_ended(machine: Machine, app: str) -> None:
    """APP.service runs; the overlap unit is stopped and ``next`` gone."""
    assert machine.unit_property(f"{app}.service", "ActiveState") == "active"
    assert machine.unit_property(f"{app}@overlap.service", "ActiveState") == "inactive"
    assert machine.run(["test", "-L", f"/opt/{app}/next"], check=False).returncode != 0


def assert_one_release_serves(machine: Machine, version: str) -> None:
    """APP.service serves ``version``, alone."""
    assert_overlap_ended(machine, APP)
    assert machine.http_get(URL) == f"{APP} {version}"


def reloads(machine: Machine) -> int:
    """How many times systemd re-read its units (daemon-reload) since it booted."""
    lines = machine.run(["journalctl", "_PID=1", "-o", "cat", "--no-pager"]).stdout
    # systemd 252 logs "Reloading.", 257 "Reloading..." (then "Reloading finished in N ms.").
    return sum(line in ("Reloading.", "Reloading...") for line in lines.splitlines())


@pytest.fixture
def serving(make_release: Callable[..., Path]) -> Callable[..., Path]:
    def make(version: str, extra: str = SOCKET + HEALTH, behaviour: str = "serve") -> Path:
        return make_release(
            name=APP, version=version, behaviour=behaviour, port=PORT, extra_toml=extra
        )

    return make


@pytest.fixture
def app(pyrelctl: MachineCommand) -> Iterator[str]:
    yield APP
    pyrelctl("uninstall", "--purge", APP)


def test_no_request_waits_or_reaches_a_failing_release(
    machine: Machine,
    pyrelctl: MachineCommand,
    serving: Callable[..., Path],
    scratch: Path,
    app: str,
) -> None:
    releases = {v: serving(v) for v in ("1.0.0", "2.0.0")}
    releases["3.0.0"] = serving("3.0.0", behaviour="crash")

    def install(version: str, code: int = 0) -> str:
        proc = pyrelctl("install", releases[version], "--grace", "0.5")
        assert proc.returncode == code, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    install("1.0.0")  # a first install has nothing to overlap with
    assert_one_release_serves(machine, "1.0.0")
    load = Load(machine, URL, scratch / "stop-overlap-load")
    try:
        out = install("2.0.0")
        assert f"starting beside the running release: {OVERLAP_UNIT}" in out, out
        assert_one_release_serves(machine, "2.0.0")
        pid = machine.unit_property(f"{app}.service", "MainPID")
        # The overlap unit's file, written by the first overlap deploy, stays:
        # the next deploys make systemd re-read nothing.
        before = reloads(machine)
        assert before > 0  # the first installs wrote units: the count sees reloads
        out = install("3.0.0", code=3)  # exits at start, beside 2.0.0
        assert "nothing was switched: 2.0.0 kept running" in out, out
        # The old release never stopped: the same process serves.
        assert machine.unit_property(f"{app}.service", "MainPID") == pid
        assert_one_release_serves(machine, "2.0.0")
        rollback = pyrelctl("rollback", app, "--grace", "0.5")
        assert rollback.returncode == 0, rollback.stderr
        assert f"starting beside the running release: {OVERLAP_UNIT}" in rollback.stderr
        assert reloads(machine) == before
    finally:
        summary = load.stop()
    assert_served(summary, by=(f"{app} 1.0.0", f"{app} 2.0.0"), never=f"{app} 3.0.0")
    assert_one_release_serves(machine, "1.0.0")
    history = json.loads(pyrelctl("--json", "history", app).stdout)["history"]
    actions = [(r["action"], r["to"], r["result"].split(":")[0]) for r in history]
    # The failed deploy needed no automatic rollback: the old release never stopped.
    assert actions == [
        ("install", "1.0.0", "ok"),
        ("install", "2.0.0", "ok"),
        ("install", "3.0.0", "failed"),
        ("rollback", "1.0.0", "ok"),
    ], actions


def test_the_health_check_asks_the_new_release_itself(
    machine: Machine, pyrelctl: MachineCommand, serving: Callable[..., Path], app: str
) -> None:
    assert pyrelctl("install", serving("1.0.0"), "--grace", "0").returncode == 0
    # 2.0.0 answers 503 on /unhealthy/2.0.0, where 1.0.0 answers 200: a probe
    # answered by the running release would pass.
    sick = serving("2.0.0", extra=SOCKET + f'[health]\nhttp = "{URL}unhealthy/2.0.0"\n')
    proc = pyrelctl("install", sick, "--grace", "0", "--timeout", "4")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"HTTP 503 from {URL}unhealthy/2.0.0" in proc.stderr, proc.stderr
    assert machine.http_get(f"{URL}unhealthy/2.0.0") == f"{app} 1.0.0"
    assert_one_release_serves(machine, "1.0.0")


def test_restart_strategy_and_releases_that_cannot_run_twice(
    machine: Machine, pyrelctl: MachineCommand, serving: Callable[..., Path], app: str
) -> None:
    assert pyrelctl("install", serving("1.0.0"), "--grace", "0").returncode == 0
    # The host's choice, remembered: a plain restart.
    proc = pyrelctl("install", serving("2.0.0"), "--grace", "0", "--strategy", "restart")
    assert proc.returncode == 0, proc.stderr
    assert "beside" not in proc.stderr and f"restarting {app}.service" in proc.stderr
    settings = json.loads(machine.run(["cat", f"/etc/pyrelctl/{app}/settings.json"]).stdout)
    assert settings["strategy"] == "restart"
    proc = pyrelctl("install", serving("3.0.0"), "--grace", "0")
    assert "beside" not in proc.stderr, proc.stderr
    # Back to overlap; a release that binds a port of its own beside the
    # socket fails to start twice: said, and deployed with a restart instead.
    side = SOCKET + HEALTH + '[environment]\nSIDE_PORT = "18409"\n'
    assert pyrelctl("install", serving("4.0.0", side), "--strategy", "overlap").returncode == 0
    proc = pyrelctl("install", serving("5.0.0", side), "--grace", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cannot run beside 4.0.0: a port it binds itself is taken" in proc.stderr, proc.stderr
    assert_one_release_serves(machine, "5.0.0")
    # A release that binds the app's port itself (no [socket]) cannot overlap.
    proc = pyrelctl("install", serving("6.0.0", HEALTH), "--grace", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6.0.0 cannot overlap: it binds its port itself" in proc.stderr, proc.stderr
    assert machine.http_get(URL) == f"{app} 6.0.0"


def test_what_keeps_working_under_the_overlap_strategy(
    machine: Machine, pyrelctl: MachineCommand, serving: Callable[..., Path], app: str
) -> None:
    assert pyrelctl("install", serving("1.0.0"), "--grace", "0").returncode == 0
    # A drop-in of the operator's applies to the overlapping release too.
    machine.run(["mkdir", "-p", f"/etc/systemd/system/{app}.service.d"])
    machine.run(
        [
            "sh",
            "-c",
            f"printf '[Service]\\nEnvironment=FROM_DROPIN=yes\\n' "
            f"> /etc/systemd/system/{app}.service.d/override.conf",
        ]
    )
    machine.systemctl("daemon-reload")
    watcher = Background(machine, ["python3", "-c", WATCH_OVERLAP_UNIT, OVERLAP_UNIT], timeout=60)
    deploy = Background(
        machine,
        ["sh", "-c", f'{pyrelctl.prefix[0]} install {serving("2.0.0")} --grace 2; echo "rc=$?"'],
        timeout=60,
    )
    seen = json.loads(watcher.result(timeout=60))
    # Mid-overlap: the deploy holds the app's lock; status shows both releases.
    other = pyrelctl("install", serving("2.0.1"), "--no-wait")
    assert other.returncode == 5, other.stdout + other.stderr
    during = json.loads(pyrelctl("--json", "status", app).stdout)
    assert during["current"] == "1.0.0" and during["overlap"]["active_state"] == "active", during
    # It boots yielding the CPU to the release that serves (Nice= of the overlap unit).
    stat = machine.run(["cat", f"/proc/{during['overlap']['main_pid']}/stat"]).stdout
    assert int(stat.rsplit(")", 1)[1].split()[16]) == 10, stat
    assert deploy.result(timeout=60).strip().endswith("rc=0")
    assert "FROM_DROPIN=yes" in seen["Environment"], seen
    assert seen["DropInPaths"].endswith(f"{OVERLAP_UNIT}.d/override.conf"), seen
    # Its logs are under the app's name; journalctl -u APP has the release that serves.
    tagged = machine.run(["journalctl", "-t", app, "-o", "cat", "--no-pager"]).stdout
    assert tagged.count("serving on the socket from systemd") >= 3, tagged
    assert "started" in machine.run(["journalctl", "-u", app, "-o", "cat", "--no-pager"]).stdout
    # The release that serves is the one pyrelctl and systemctl see.
    assert pyrelctl("version", app).stdout.strip() == "2.0.0"
    pid = machine.unit_property(f"{app}.service", "MainPID")
    assert pyrelctl("pid", app).stdout.strip() == pid
    assert pyrelctl("eval", app, "hello").stdout.strip() == "hello"
    status = json.loads(pyrelctl("--json", "status", app).stdout)
    assert status["current"] == "2.0.0" and status["state"]["active_state"] == "active", status
    for verb in ("restart", "stop", "start"):
        assert machine.systemctl(verb, app, check=False).returncode == 0
    assert machine.http_get(URL) == f"{app} 2.0.0"
    # Stopped, it is started by the socket at the next connection: the overlap
    # unit, loaded between deploys and naming the socket, is not.
    assert machine.systemctl("stop", app, check=False).returncode == 0
    assert machine.http_get(URL) == f"{app} 2.0.0"
    assert machine.unit_property(f"{app}.service", "ActiveState") == "active"
    assert machine.unit_property(OVERLAP_UNIT, "ActiveState") == "inactive"
    assert machine.unit_property(f"{app}.service", "UnitFileState") == "enabled"  # boot-time start
    assert pyrelctl("uninstall", app).returncode == 0
    for unit in (f"{app}.service", f"{app}.socket", OVERLAP_UNIT):
        assert machine.unit_property(unit, "LoadState") == "not-found", unit


def test_a_deploy_killed_after_current_moved_keeps_the_release_that_serves(
    machine: Machine, pyrelctl: MachineCommand, serving: Callable[..., Path], app: str
) -> None:
    # The state a SIGKILL leaves between `current -> releases/NEW` and the
    # restart of APP.service: the old release serves there, the new one runs
    # beside it in the overlap unit, `next` and `current` point to the new.
    assert pyrelctl("install", serving("1.0.0"), "--grace", "0").returncode == 0
    assert pyrelctl("install", serving("2.0.0"), "--grace", "0").returncode == 0
    assert pyrelctl("rollback", app, "--grace", "0").returncode == 0
    pid = machine.unit_property(f"{app}.service", "MainPID")
    for link in ("next", "current"):
        machine.run(["ln", "-sfn", "releases/2.0.0", f"/opt/{app}/{link}"])
    machine.systemctl("start", OVERLAP_UNIT)
    proc = pyrelctl("prune", app)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"current -> releases/1.0.0, the release {app}.service runs" in proc.stderr
    # The release that served never stopped, and `current` says so again.
    assert machine.unit_property(f"{app}.service", "MainPID") == pid
    assert machine.run(["readlink", f"/opt/{app}/current"]).stdout.strip() == "releases/1.0.0"
    assert_one_release_serves(machine, "1.0.0")


# Polls systemd until the overlap unit runs, then prints what it sees of it.
WATCH_OVERLAP_UNIT = """
import json, subprocess, sys, time
unit = sys.argv[1]
end = time.monotonic() + 50
while time.monotonic() < end:
    out = subprocess.run(
        ["systemctl", "show", "-p", "ActiveState", "-p", "Environment", "-p", "DropInPaths", unit],
        capture_output=True, text=True,
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if props.get("ActiveState") == "active":
        print(json.dumps(props))
        break
    time.sleep(0.05)
"""


MIX_PORT = 18430
MIX_APP = "shopov"


@pytest.fixture(scope="module")
def serving_mix(scratch: Path) -> dict[str, Path]:
    """The mix app `shop` answering HTTP (on the socket systemd passes); 2.0.0
    exits at start."""
    from devtools.releases import build_mix_app

    return build_mix_app(
        scratch / "mix-overlap",
        ("1.0.0", "1.1.0", "2.0.0"),
        failing=("2.0.0",),
        http_port=MIX_PORT,
    )


def test_a_mix_release_overlaps_under_its_own_node_name(
    machine: Machine, pyrelctl: MachineCommand, serving_mix: dict[str, Path], scratch: Path
) -> None:
    url = f"http://127.0.0.1:{MIX_PORT}/"
    unit = f"{MIX_APP}@overlap.service"

    def install(version: str, *args: str, code: int = 0) -> str:
        proc = pyrelctl("install", serving_mix[version], "--app", MIX_APP, "--grace", "1", *args)
        assert proc.returncode == code, proc.stdout + proc.stderr
        return proc.stderr

    try:
        install("1.0.0", "--listen", f"127.0.0.1:{MIX_PORT}", "--health-http", url)
        assert machine.http_get(url) == "shop 1.0.0"
        load = Load(machine, url, scratch / "stop-mix-overlap-load")
        try:
            watcher = Background(machine, ["python3", "-c", NODE_OF_OVERLAP_UNIT, unit], timeout=90)
            out = install("1.1.0")
            assert f"starting beside the running release: {unit}" in out, out
            # Beside the running node, under a name of its own in the same EPMD.
            assert f"-name {MIX_APP}_overlap@127.0.0.1" in watcher.result(timeout=90)
            pid = machine.unit_property(f"{MIX_APP}.service", "MainPID")
            out = install("2.0.0", code=3)
            assert "crashing on purpose" in out, out
            assert machine.unit_property(f"{MIX_APP}.service", "MainPID") == pid  # never stopped
            rollback = pyrelctl("rollback", MIX_APP, "--grace", "1")
            assert rollback.returncode == 0, rollback.stderr
            assert f"starting beside the running release: {unit}" in rollback.stderr
        finally:
            summary = load.stop()
        assert_served(summary, by=("shop 1.0.0", "shop 1.1.0"), never="shop 2.0.0")
        # rpc reaches the node that serves, under the app's own node name.
        node = pyrelctl("rpc", MIX_APP, "IO.puts(node())")
        assert node.stdout.strip() == f"{MIX_APP}@127.0.0.1", node.stdout + node.stderr
        assert pyrelctl("version", MIX_APP).stdout.strip() == "1.0.0"
        assert_overlap_ended(machine, MIX_APP)
    finally:
        pyrelctl("uninstall", "--purge", MIX_APP)


# Polls until the overlap unit's main process is the BEAM; prints its argv.
NODE_OF_OVERLAP_UNIT = """
import subprocess, sys, time
unit = sys.argv[1]
end = time.monotonic() + 80
while time.monotonic() < end:
    pid = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit],
                         capture_output=True, text=True).stdout.strip()
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
    except OSError:
        argv = []
    text = " ".join(a.decode(errors="replace") for a in argv)
    if pid not in ("", "0") and " -name " in f" {text} ":
        print(text)
        break
    time.sleep(0.05)
"""
