"""Install, upgrade, roll back, prune and uninstall real releases under a real systemd."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from devtools.machine import Machine, MachineCommand
from devtools.proc import wait_until

GRACE = ("--grace", "1")


def running_release_line(machine: Machine, app: str, needle: str) -> str:
    """The line of the unit's *current* invocation that contains `needle`.

    Looking only at the current invocation's lines (not the whole unit
    journal) proves which release runs now, not which one ran once.
    """
    invocation = machine.systemctl("show", "-p", "InvocationID", "--value", app).stdout.strip()
    assert invocation, f"{app} has no current invocation"

    def lines() -> str | None:
        out = machine.journalctl(f"_SYSTEMD_INVOCATION_ID={invocation}", "-o", "cat").stdout
        return next((line for line in out.splitlines() if needle in line), None)

    return wait_until(lines, timeout=20, what=f"{needle!r} from {app}'s current invocation")


def readlink(machine: Machine, path: str) -> str:
    return machine.run(["readlink", path]).stdout.strip()


def releases(pyrelctl: MachineCommand, app: str) -> dict[str, dict[str, object]]:
    proc = pyrelctl("--json", "releases", app, check=True)
    return {r["version"]: r for r in json.loads(proc.stdout)["releases"]}


def test_mix_release_lifecycle(
    machine: Machine,
    pyrelctl: MachineCommand,
    mix_artifacts: dict[str, Path],
    cleanup: Callable[[str], None],
) -> None:
    cleanup("shop")
    first = pyrelctl("install", mix_artifacts["1.0.0"], *GRACE)
    assert first.returncode == 0, first.stderr
    assert "shop 1.0.0 installed and running" in first.stdout
    assert machine.systemctl("is-active", "shop", check=False).stdout.strip() == "active"
    assert machine.systemctl("is-enabled", "shop", check=False).stdout.strip() == "enabled"
    assert readlink(machine, "/opt/shop/current") == "releases/1.0.0"
    running_release_line(machine, "shop", "shop 1.0.0 started")
    machine.wait_for_journal("shop", "shop 1.0.0 started")  # plain journalctl -u works

    upgrade = pyrelctl("--json", "install", mix_artifacts["1.1.0"], *GRACE)
    assert upgrade.returncode == 0, upgrade.stderr
    doc = json.loads(upgrade.stdout)
    assert (doc["version"], doc["previous"], doc["started"]) == ("1.1.0", "1.0.0", True)
    assert readlink(machine, "/opt/shop/current") == "releases/1.1.0"
    running_release_line(machine, "shop", "shop 1.1.0 started")

    # Plain systemctl keeps working on the generated unit.
    machine.systemctl("stop", "shop")
    assert machine.systemctl("is-active", "shop", check=False).stdout.strip() == "inactive"
    machine.systemctl("start", "shop")
    running_release_line(machine, "shop", "shop 1.1.0 started")

    back = pyrelctl("rollback", "shop", *GRACE)
    assert back.returncode == 0, back.stderr
    assert readlink(machine, "/opt/shop/current") == "releases/1.0.0"
    running_release_line(machine, "shop", "shop 1.0.0 started")

    forward = pyrelctl("rollback", "shop", "--to", "1.1.0", *GRACE)
    assert forward.returncode == 0, forward.stderr
    running_release_line(machine, "shop", "shop 1.1.0 started")

    history = json.loads(pyrelctl("--json", "history", "shop", check=True).stdout)["history"]
    assert [(r["action"], r["to"], r["result"]) for r in history] == [
        ("install", "1.0.0", "ok"),
        ("install", "1.1.0", "ok"),
        ("rollback", "1.0.0", "ok"),
        ("rollback", "1.1.0", "ok"),
    ]

    status = json.loads(pyrelctl("--json", "status", "shop", check=True).stdout)
    main_pid = machine.systemctl("show", "-p", "MainPID", "--value", "shop").stdout.strip()
    assert status["current"] == "1.1.0"
    assert status["state"]["active_state"] == "active"
    assert str(status["state"]["main_pid"]) == main_pid


def test_failed_mix_upgrade_rolls_back_by_itself(
    machine: Machine,
    pyrelctl: MachineCommand,
    mix_artifacts: dict[str, Path],
    cleanup: Callable[[str], None],
) -> None:
    cleanup("shop-b")
    assert pyrelctl("install", "--app", "shop-b", mix_artifacts["1.1.0"], *GRACE).returncode == 0
    old_line = running_release_line(machine, "shop-b", "shop 1.1.0 started")

    # The BEAM takes over a second to boot before the app crashes: the
    # grace period must cover that (the default of 3 s does).
    failed = pyrelctl("install", "--app", "shop-b", mix_artifacts["2.0.0"], "--grace", "4")
    assert failed.returncode == 3, failed.stderr
    assert "error: shop-b 2.0.0 failed to come up" in failed.stderr
    assert "crashing on purpose" in failed.stderr  # the failed invocation's own output
    assert old_line not in failed.stderr  # ...and nothing of an earlier invocation
    assert "1.1.0 was restored" in failed.stderr
    assert readlink(machine, "/opt/shop-b/current") == "releases/1.1.0"
    assert machine.systemctl("is-active", "shop-b", check=False).stdout.strip() == "active"
    running_release_line(machine, "shop-b", "shop 1.1.0 started")
    marks = {v: r["mark"] for v, r in releases(pyrelctl, "shop-b").items()}
    assert marks == {"1.1.0": "good", "2.0.0": "failed"}


def test_failing_first_install_leaves_the_service_stopped(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    cleanup("crashy")
    artifact = make_release(name="crashy", version="1.0.0", behaviour="crash")
    proc = pyrelctl("install", artifact, *GRACE)
    assert proc.returncode == 1, proc.stderr
    assert "crashing on purpose" in proc.stderr
    state = machine.systemctl("is-active", "crashy", check=False).stdout.strip()
    assert state in ("inactive", "failed")
    assert releases(pyrelctl, "crashy")["1.0.0"]["mark"] == "failed"


def test_generic_release_lifecycle(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    cleanup("hello")
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
    artifacts = {v: make_release(name="hello", version=v) for v in versions}
    for v in versions:
        proc = pyrelctl("install", artifacts[v], "--keep", "2", *GRACE)
        assert proc.returncode == 0, proc.stderr
        running_release_line(machine, "hello", f"hello {v} started")
    # keep 2: the current and the one before it
    assert sorted(releases(pyrelctl, "hello")) == ["1.2.0", "1.3.0"]
    assert machine.systemctl("is-enabled", "hello", check=False).stdout.strip() == "enabled"

    assert pyrelctl("rollback", "hello", *GRACE).returncode == 0
    running_release_line(machine, "hello", "hello 1.2.0 started")

    crash = make_release(name="hello", version="2.0.0", behaviour="crash")
    failed = pyrelctl("install", crash, *GRACE)
    assert failed.returncode == 3, failed.stderr
    running_release_line(machine, "hello", "hello 1.2.0 started")

    gone = pyrelctl("uninstall", "hello")
    assert gone.returncode == 0, gone.stderr
    assert machine.run(["test", "-e", "/opt/hello"], check=False).returncode == 1
    assert (
        machine.run(["test", "-e", "/etc/systemd/system/hello.service"], check=False).returncode
        == 1
    )
    load = machine.systemctl("show", "-p", "LoadState", "--value", "hello").stdout.strip()
    assert load == "not-found"


def test_start_stop_restart_through_pyrelctl(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    cleanup("ctl")
    assert pyrelctl("install", make_release(name="ctl", version="1"), *GRACE).returncode == 0
    stopped = pyrelctl("stop", "ctl")
    assert stopped.returncode == 0 and "inactive" in stopped.stdout
    started = pyrelctl("start", "ctl")
    assert started.returncode == 0 and "active (running)" in started.stdout
    pid = machine.systemctl("show", "-p", "MainPID", "--value", "ctl").stdout.strip()
    restarted = pyrelctl("restart", "ctl")
    assert restarted.returncode == 0
    assert machine.systemctl("show", "-p", "MainPID", "--value", "ctl").stdout.strip() != pid

    def state() -> dict[str, object]:
        return dict(json.loads(pyrelctl("--json", "status", "ctl", check=True).stdout)["state"])

    # A crash: systemd restarts it by itself (Restart=on-failure), and status counts it.
    assert state()["restarts"] == 0
    # Memory is systemd's MemoryCurrent. This container's systemd has no memory
    # controller of its own (the host's cgroups are hybrid, and read-only
    # inside), so systemctl says "[not set]" here and pyrelctl "-"/null; on a
    # cgroup-v2 host both give the cgroup's bytes.
    shown = machine.systemctl("show", "-p", "MemoryCurrent", "--value", "ctl").stdout.strip()
    memory = state()["memory_bytes"]
    if shown == "[not set]":
        assert memory is None
    else:
        assert isinstance(memory, int) and memory > 0 and int(shown) > 0
    crashed_pid = state()["main_pid"]
    machine.run(["kill", "-KILL", str(crashed_pid)])
    wait_until(
        lambda: state()["main_pid"] not in (0, crashed_pid) or None,
        timeout=15,
        what="systemd's restart of the killed process",
    )
    assert state()["restarts"] == 1
    assert "RESTARTS" in pyrelctl("status").stdout
    # A start by hand (or a deploy) begins the count again.
    assert pyrelctl("restart", "ctl").returncode == 0
    assert state()["restarts"] == 0

    logs = pyrelctl("logs", "ctl", "-n", "50")
    assert logs.returncode == 0 and "ctl 1 started" in logs.stdout
    # journalctl's own filters, passed on: the start line is info, from the last hour.
    recent = pyrelctl("logs", "ctl", "--since", "-1h", "-p", "info")
    assert recent.returncode == 0 and "ctl 1 started" in recent.stdout, recent.stderr
    for args in (["--until", "2000-01-01"], ["-p", "err"]):
        filtered = pyrelctl("logs", "ctl", *args)
        assert filtered.returncode == 0 and "ctl 1 started" not in filtered.stdout, args
    bad = pyrelctl("logs", "ctl", "--since", "not a time")
    assert bad.returncode != 0 and "not a time" in bad.stderr, bad.stderr
