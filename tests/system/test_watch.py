"""The watch window in a real systemd: a release that passes its grace period and then
keeps crashing is rolled back with nobody at the keyboard (issue 20)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from devtools.machine import Machine, MachineCommand
from tests.system.test_notify import HOOKS, LOG, RECORD, events

#: Up for the grace period, then exits with status 1 after LIFE seconds, every time.
LATE_CRASH = """#!/bin/sh
case "$1" in
start) echo "{name} {version} started"; sleep {life}; echo "{name} {version} gave up"; exit 1 ;;
version) echo "{name} {version}" ;;
esac
"""


def release(scratch: Path, name: str, version: str, life: str) -> Path:
    root = scratch / "watch" / f"{name}-{version}"
    # The Debian 13 tier runs these tests too, with the same scratch directory.
    shutil.rmtree(root, ignore_errors=True)
    (root / "bin").mkdir(parents=True)
    (root / "release.toml").write_text(
        f'[release]\nname = "{name}"\nversion = "{version}"\n\n'
        f'[commands]\nstart = ["bin/{name}", "start"]\n'
    )
    script = root / "bin" / name
    script.write_text(LATE_CRASH.format(name=name, version=version, life=life))
    script.chmod(0o755)
    return root


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_release_that_crashes_after_its_grace_is_rolled_back_by_the_watch(
    machine: Machine,
    pyrelctl: MachineCommand,
    scratch: Path,
    cleanup: Callable[[str], None],
) -> None:
    app = "watched"
    cleanup(app)
    # The host's notification hook hears the watch's rollback (test_notify.py's recorder).
    machine.run(["mkdir", "-p", HOOKS])
    machine.run(["sh", "-c", f"cat > {HOOKS}/10-record && chmod 755 {HOOKS}/10-record"],
                input=RECORD)  # fmt: skip
    machine.run(["rm", "-f", LOG])
    try:
        _crash_after_grace(machine, pyrelctl, scratch, app)
        watch_events = [e for e in events(machine) if e["PYRELCTL_ACTION"] == "watch"]
        assert [(e["PYRELCTL_EVENT"], e["PYRELCTL_VERSION"], e["PYRELCTL_PREVIOUS"])
                for e in watch_events] == [("rollback", "2", "1")], watch_events  # fmt: skip
        assert "systemd restarted it" in watch_events[0]["stdin"]
    finally:
        machine.run(["rm", "-rf", HOOKS, LOG])


def _crash_after_grace(machine: Machine, pyrelctl: MachineCommand, scratch: Path, app: str) -> None:
    good = pyrelctl("install", release(scratch, app, "1", "infinity"), "--grace", "0.5")
    assert good.returncode == 0, good.stderr
    # Passes a 1 s grace, then dies after 2 s, again and again (Restart=on-failure).
    late = pyrelctl("install", release(scratch, app, "2", "2"), "--grace", "1", "--watch", "60s")
    assert late.returncode == 0, late.stderr  # the deploy itself looked fine
    assert "watching watched 2 for 60 s" in late.stderr
    status = json.loads(pyrelctl("--json", "status", app).stdout)
    assert status["watch"]["version"] == "2"
    assert "watching 2 until" in pyrelctl("status", app).stdout

    # Nobody at the keyboard: the watch rolls back once systemd restarted it 3 times.
    def history() -> list[tuple[str, str]]:
        history = json.loads(pyrelctl("--json", "history", app).stdout)["history"]
        return [(r["action"], r["result"]) for r in history]

    # (current moves first; the record comes once 1 is verified up again)
    wait_for(lambda: ("auto-rollback (watch)", "ok") in history(), 60, "the watch's rollback")
    assert pyrelctl("version", app).stdout.strip() == "1"
    actions = history()
    assert any(a == "watch" and r.startswith("failed: systemd restarted it") for a, r in actions)
    listed = json.loads(pyrelctl("--json", "releases", app).stdout)["releases"]
    marks = {r["version"]: r["mark"] for r in listed}
    assert marks == {"1": "good", "2": "failed"}
    metrics = pyrelctl("metrics").stdout
    assert f'pyrelctl_auto_rollbacks_total{{app="{app}"}} 1' in metrics
    assert machine.systemctl("is-active", app, check=False).stdout.strip() == "active"
    # The watch unit is gone, and status no longer shows a watch.
    wait_for(
        lambda: (
            machine.systemctl("is-active", f"pyrelctl-watch-{app}", check=False).stdout.strip()
            != "active"
        ),
        10,
        "the watch unit to end",
    )
    assert json.loads(pyrelctl("--json", "status", app).stdout)["watch"] is None


def test_a_release_that_stays_up_ends_its_watch_good_and_a_deploy_ends_a_watch(
    machine: Machine,
    pyrelctl: MachineCommand,
    scratch: Path,
    cleanup: Callable[[str], None],
) -> None:
    app = "steady"
    cleanup(app)
    proc = pyrelctl(
        "install", release(scratch, app, "1", "infinity"), "--grace", "0.5", "--watch", "4s"
    )
    assert proc.returncode == 0, proc.stderr
    wait_for(
        lambda: any(
            r["action"] == "watch" and r["result"].startswith("ok")
            for r in json.loads(pyrelctl("--json", "history", app).stdout)["history"]
        ),
        30,
        "the watch to end well",
    )
    # Remembered: the next deploy is watched too; a deploy meanwhile ends that watch.
    second = pyrelctl("install", release(scratch, app, "2", "infinity"), "--grace", "0.5")
    assert "watching steady 2" in second.stderr, second.stderr
    third = pyrelctl("install", release(scratch, app, "3", "infinity"), "--grace", "0.5",
                     "--watch", "0")  # fmt: skip
    assert third.returncode == 0, third.stderr
    assert "the watch of steady ends" in third.stderr
    assert machine.systemctl("is-active", "pyrelctl-watch-steady", check=False).stdout.strip() in (
        "inactive",
        "failed",
        "unknown",
    )
    assert json.loads(pyrelctl("--json", "status", app).stdout)["watch"] is None


def test_the_watch_restores_the_release_that_ran_before_the_deploy(
    machine: Machine,
    pyrelctl: MachineCommand,
    scratch: Path,
    cleanup: Callable[[str], None],
) -> None:
    """After ``rollback`` 2 -> 1, the deploy of 3 replaced 1: a failing 3 goes back
    to 1, not to 2, the newest release older than it (issue 27)."""
    app = "rewatched"
    cleanup(app)
    for version in ("1", "2"):
        proc = pyrelctl("install", release(scratch, app, version, "infinity"), "--grace", "0.5")
        assert proc.returncode == 0, proc.stderr
    back = pyrelctl("rollback", app)
    assert back.returncode == 0, back.stderr
    assert pyrelctl("version", app).stdout.strip() == "1"
    late = pyrelctl("install", release(scratch, app, "3", "2"), "--grace", "1", "--watch", "60s")
    assert late.returncode == 0, late.stderr
    assert json.loads(pyrelctl("--json", "status", app).stdout)["watch"]["previous"] == "1"

    def history() -> list[tuple[str, str | None, str | None, str]]:
        history = json.loads(pyrelctl("--json", "history", app).stdout)["history"]
        return [(r["action"], r["from"], r["to"], r["result"]) for r in history]

    wait_for(
        lambda: any(h[0] == "auto-rollback (watch)" and h[3] == "ok" for h in history()),
        60,
        "the watch's rollback",
    )
    assert ("auto-rollback (watch)", "3", "1", "ok") in history(), history()
    assert pyrelctl("version", app).stdout.strip() == "1"
