"""The units of a release's processes and timers (issue 32), loaded and run by a
real systemd.

Until the deploy writes them (the next step, docs/deploys.md "The plan"),
the test writes what ``pyrelctl.procs.units`` renders for the installed
release, with the links ``wants_links`` gives, and takes them away again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand
from pyrelctl.manifest import detect
from pyrelctl.openartifact import open_artifact
from pyrelctl.procs import units as procs_units
from pyrelctl.release import Release
from pyrelctl.units import ServiceSpec, default_environment_files

APP = "procs"
UNITS = "/etc/systemd/system"
EXTRA = """
[processes.worker]
command = ["bin/procs", "start"]
instances = 2

[timers.report]
command = ["bin/procs", "eval", "report", "ran"]
on_calendar = "*-*-* 03:00:00"
"""


def wait_active(machine: Machine, units: list[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = {u: machine.unit_property(u, "ActiveState") for u in units}
        if all(s == "active" for s in states.values()):
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.2)


def owner(machine: Machine, unit: str) -> str:
    pid = machine.unit_property(unit, "MainPID")
    assert pid not in ("", "0"), f"{unit} has no main process"
    return machine.run(["stat", "-c", "%u", f"/proc/{pid}"]).stdout.strip()


@pytest.fixture
def release(
    machine: Machine, pyrelctl: MachineCommand, make_release: Callable[..., Path]
) -> Iterator[Release]:
    """The app installed, its process and timer units written; all gone afterwards."""
    artifact = make_release(name=APP, version="1.0.0", extra_toml=EXTRA)
    installed = pyrelctl("install", artifact, "--grace", "1")
    assert installed.returncode == 0, installed.stderr
    with open_artifact(artifact) as a:
        rel = detect(a)
    spec = ServiceSpec(APP, rel, environment_files=default_environment_files(APP, rel))
    names = list(procs_units.units(spec))
    try:
        for name, unit in procs_units.units(spec).items():
            machine.run(["sh", "-c", f'cat > "{UNITS}/{name}"'], input=unit.render())
        wants = f"{UNITS}/{APP}.service.wants"
        machine.run(["mkdir", "-p", wants])
        for link, target in procs_units.wants_links(APP, rel, {}).items():
            machine.run(["ln", "-sfn", target, f"{wants}/{link}"])
        machine.systemctl("daemon-reload")
        yield rel
    finally:
        # Nothing of it may reach a later test's app.
        machine.systemctl("stop", f"{APP}.service", f"{APP}-*", check=False)
        machine.run(["rm", "-rf", f"{UNITS}/{APP}.service.wants"])
        machine.run(["rm", "-f", *(f"{UNITS}/{n}" for n in names)])
        pyrelctl("uninstall", "--purge", APP)
        machine.systemctl("daemon-reload")


def test_processes_and_a_timer_run_as_the_app_and_go_with_it(
    machine: Machine, release: Release
) -> None:
    instances = [f"{APP}-worker@1.service", f"{APP}-worker@2.service"]
    # A restart of the running app starts the wanted instances and the timer.
    machine.systemctl("restart", APP)
    wait_active(machine, [APP, *instances, f"{APP}-report.timer"])
    assert machine.systemctl(
        "show", "-p", "NextElapseUSecRealtime", "--value", f"{APP}-report.timer"
    ).stdout.strip()

    # The app's dynamic user, sandbox and release; a runtime directory each.
    web_uid = owner(machine, APP)
    for unit, number in zip(instances, ("1", "2"), strict=True):
        assert owner(machine, unit) == web_uid
        assert machine.unit_property(unit, "User") == APP
        assert machine.unit_property(unit, "ProtectSystem") == "strict"
        assert machine.unit_property(unit, "WorkingDirectory") == f"/opt/{APP}/current"
        path = f"/run/pyrelctl/{APP}.worker.{number}"
        assert machine.run(["stat", "-c", "%u", path]).stdout.strip() == web_uid
        log = machine.journalctl("-u", unit, "-o", "cat", "--no-pager").stdout
        assert f"{APP} 1.0.0 started" in log
    assert machine.run(["test", "-d", f"/run/{APP}"]).returncode == 0  # still the web's

    # A job: started by hand, it runs once to its end, as the app's user.
    machine.systemctl("start", f"{APP}-report.service")  # oneshot: returns when done
    assert machine.unit_property(f"{APP}-report.service", "Result") == "success"
    out = machine.journalctl("-u", f"{APP}-report", "-o", "cat", "--no-pager").stdout
    assert "report ran" in out

    # Stopping the app stops its instances and its timer.
    machine.systemctl("stop", APP)
    for unit in (*instances, f"{APP}-report.timer"):
        assert machine.unit_property(unit, "ActiveState") == "inactive", unit
    for number in ("1", "2"):
        gone = machine.run(["test", "-e", f"/run/pyrelctl/{APP}.worker.{number}"], check=False)
        assert gone.returncode == 1
