"""After a deploy, in a real systemd: a failing job is reported, a crashing worker is
rolled back by the watch, and prune keeps the release of a job that still runs (issue 32).

The app ``jobs`` has the shapes of test_procs_units.py (a web process that
serves on a socket, a worker, timers) on a port of its own. One test per
feature; each installs the app afresh and removes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand
from tests.system.test_notify import recording_hook
from tests.system.test_procs_units import release_of, wait_for

APP = "jobs"
PORT = 18471
SOCKET = f'[socket]\nlisten = ["127.0.0.1:{PORT}"]\n[health]\nhttp = "http://127.0.0.1:{PORT}/"\n'
HOOKS = "/etc/pyrelctl/hooks.d"
LOG = "/run/procs-jobs-hook.log"
RECORD = recording_hook(LOG)
#: A job that fails; it never elapses on its own (the test starts it).
FAILING = """
[timers.nightly]
command = ["sh", "-c", "echo nightly failing on purpose; exit 4"]
on_calendar = "*-01-01 03:00:00"
"""
#: A worker that runs until a file named `crash` appears in its release.
WORKER = """
[processes.worker]
command = [
  "sh", "-c", "if [ -e crash ]; then echo worker crashing on purpose; exit 1; fi; exec sleep 1000",
]
"""
LONG = """
[timers.long]
command = ["sh", "-c", "echo long from $(cat www/index.html); sleep 120"]
on_calendar = "*-01-01 03:00:00"
"""


@pytest.fixture
def release(make_release: Callable[..., Path]) -> Callable[[str, str], Path]:
    def make(version: str, extra: str) -> Path:
        return make_release(
            name=APP, version=version, behaviour="serve", port=PORT, extra_toml=SOCKET + extra
        )

    return make


@pytest.fixture
def app(machine: Machine, pyrelctl: MachineCommand) -> Iterator[str]:
    yield APP
    pyrelctl("uninstall", "--purge", APP)
    machine.systemctl("stop", f"{APP}-*", check=False)


@pytest.fixture
def install(pyrelctl: MachineCommand) -> Callable[..., str]:
    def run(artifact: Path, *args: str, code: int = 0) -> str:
        proc = pyrelctl("install", artifact, "--grace", "1", *args)
        assert proc.returncode == code, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    return run


def test_a_failing_job_reaches_the_hooks(
    machine: Machine,
    release: Callable[[str, str], Path],
    install: Callable[..., str],
    app: str,
) -> None:
    # Root's only, as pyrelctl makes /etc/pyrelctl (doctor checks it, in later tests too).
    machine.run(["install", "-d", "-m", "0700", "/etc/pyrelctl", HOOKS])
    machine.run(["sh", "-c", f"cat > {HOOKS}/10-record && chmod 755 {HOOKS}/10-record"],
                input=RECORD)  # fmt: skip
    machine.run(["rm", "-f", LOG])
    try:
        install(release("1.0.0", FAILING))
        job = f"{APP}-nightly.service"
        machine.systemctl("start", job, check=False)
        assert machine.unit_property(job, "Result") == "exit-code"

        def reported() -> list[dict[str, str]]:
            text = machine.run(["cat", LOG], check=False).stdout
            events = [json.loads(line) for line in text.splitlines()]
            return [e for e in events if e["PYRELCTL_ACTION"] == "job"]  # not the install's

        wait_for(lambda: bool(reported()), "the failed job never reached the hook", 30)
        [event] = reported()
        assert {k: v for k, v in event.items() if k != "stdin"} == {
            "PYRELCTL_EVENT": "failure",
            "PYRELCTL_ACTION": "job",
            "PYRELCTL_APP": APP,
            "PYRELCTL_VERSION": "1.0.0",
            "PYRELCTL_PREVIOUS": "",
            "PYRELCTL_USER": "root",
            "PYRELCTL_RESULT": "failed",
            "PYRELCTL_EXIT_CODE": "4",
            "PYRELCTL_JOB": "nightly",
            "PYRELCTL_JOB_RESULT": "exit-code",
        }, event
        lines = event["stdin"].splitlines()
        assert lines[0] == (
            f"{APP} job nightly ({job}) failed: exit-code, main process exited with status 4"
        ), lines
        assert any(line.endswith("nightly failing on purpose") for line in lines), lines

        # An instance that names no job of an installed app does nothing.
        bogus = "pyrelctl-job-failed@jobs-nosuch.service"
        assert machine.systemctl("start", bogus, check=False).returncode != 0
        said = machine.journalctl("-u", bogus, "-o", "cat", "--no-pager").stdout
        assert "is not the job unit of an installed app's timer" in said, said
        machine.systemctl("reset-failed", bogus, check=False)
        assert len(reported()) == 1
    finally:
        machine.run(["rm", "-rf", f"{HOOKS}/10-record", LOG])


def test_a_worker_that_starts_crashing_after_the_deploy_is_rolled_back_by_the_watch(
    machine: Machine,
    pyrelctl: MachineCommand,
    release: Callable[[str, str], Path],
    install: Callable[..., str],
    app: str,
) -> None:
    worker = f"{APP}-worker@1.service"
    install(release("1.0.0", WORKER))
    out = install(release("1.1.0", WORKER), "--watch", "90s")
    assert f"watching {APP} 1.1.0" in out, out
    assert release_of(machine, worker) == "1.1.0"

    # The web process stays up; its worker starts crashing at its next start.
    machine.run(["touch", f"/opt/{APP}/releases/1.1.0/crash"])
    machine.systemctl("kill", "--signal=KILL", "--kill-whom=main", worker)

    def history() -> list[tuple[str, str]]:
        entries = json.loads(pyrelctl("--json", "history", APP).stdout)["history"]
        return [(e["action"], e["result"]) for e in entries]

    try:
        wait_for(lambda: ("auto-rollback (watch)", "ok") in history(), "no rollback", 60)
    except AssertionError:
        watch = machine.journalctl("-u", f"pyrelctl-watch-{APP}", "-o", "cat", check=False)
        crashes = machine.journalctl("-u", worker, "-n", "20", "-o", "cat", check=False)
        raise AssertionError(
            f"no rollback: {history()}\n{watch.stdout}\n{crashes.stdout}"
        ) from None
    failed = [r for a, r in history() if a == "watch"]
    # Restarted 3 times, or failed at systemd's start limit: named either way.
    assert failed and failed[-1].startswith("failed: ") and worker in failed[-1], failed
    assert machine.run(["readlink", f"/opt/{APP}/current"]).stdout.strip().endswith("1.0.0")
    assert machine.unit_property(worker, "SubState") == "running"
    assert release_of(machine, worker) == "1.0.0"
    assert machine.http_get(f"http://127.0.0.1:{PORT}/") == f"{APP} 1.0.0"


def test_prune_keeps_the_release_a_long_job_still_runs(
    machine: Machine,
    pyrelctl: MachineCommand,
    release: Callable[[str, str], Path],
    install: Callable[..., str],
    app: str,
) -> None:
    job = f"{APP}-long.service"
    install(release("1.0.0", LONG))
    machine.systemctl("start", "--no-block", job)
    wait_for(lambda: machine.unit_property(job, "ActiveState") == "activating", "no job", 30)
    install(release("1.1.0", LONG))
    install(release("1.2.0", LONG))

    def installed() -> list[str]:
        return machine.run(["ls", f"/opt/{APP}/releases"]).stdout.split()

    out = pyrelctl("prune", APP, "--keep", "1")
    assert out.returncode == 0, out.stderr
    assert f"keeping {APP} 1.0.0: {job} (pid " in out.stderr, out.stderr
    assert installed() == ["1.0.0", "1.2.0"]
    assert machine.unit_property(job, "ActiveState") == "activating"  # untouched

    # Once the job is done, the next prune removes its release.
    machine.systemctl("stop", job)
    out = pyrelctl("prune", APP, "--keep", "1")
    assert out.returncode == 0, out.stderr
    assert installed() == ["1.2.0"]
