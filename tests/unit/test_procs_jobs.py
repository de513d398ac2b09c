"""A failing job reaches the hooks, prune keeps what runs, doctor sees the units (issue 32).

The pure parts and the refusals, on trees installed offline; the real
systemd runs them in tests/system/test_procs_jobs.py.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from pyrelctl.deploy.deployer import Deployer
from pyrelctl.deploy.options import InstallOptions
from pyrelctl.deploy.retention import prune
from pyrelctl.errors import BadInput
from pyrelctl.layout import AppPaths, Layout
from pyrelctl.notify import Event
from pyrelctl.procs import failed
from pyrelctl.procs.host import releases_in_use
from pyrelctl.systemd import OfflineSystemd, UnitState
from tests.cli.conftest import run
from tests.unit.test_doctor import FakeSystemd, OnlineLayout, check

TIMER = """
[timers.report]
command = ["sh", "-c", "echo report"]
every = "15m"
"""
WORKER = """
[processes.worker]
command = ["sh", "-c", "sleep 1000"]
"""


def install(root: Path, tmp: Path, name: str, version: str, extra: str = TIMER) -> AppPaths:
    artifact = make_generic_release(
        tmp / f"{name}-{version}", name=name, version=version, extra_toml=extra
    )
    Deployer(Layout(root), OfflineSystemd()).install(artifact, InstallOptions())
    return Layout(root).app(name)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


# -- the OnFailure= template ----------------------------------------------------


def test_a_release_with_timers_writes_the_template_and_its_jobs_name_it(
    root: Path, tmp_path: Path
) -> None:
    install(root, tmp_path, "shop", "1.0", WORKER)
    template = root / "etc/systemd/system" / failed.UNIT
    assert not template.exists()  # no timer, no template
    install(root, tmp_path, "shop", "1.1")
    text = template.read_text()
    assert f'ExecStart="{sys.executable}" "-I" "-m" "pyrelctl" "_job-failed" %i' in text
    job = (root / "etc/systemd/system/shop-report.service").read_text()
    assert "\nOnFailure=pyrelctl-job-failed@%n.service\n" in job


@pytest.mark.parametrize("app", ["shop", "my-shop", "a-b-c"])
def test_an_installed_apps_job_is_accepted(root: Path, tmp_path: Path, app: str) -> None:
    install(root, tmp_path, app, "1.0")
    job = failed.failed_job(Layout(root), f"{app}-report.service")
    assert (job.app, job.name, job.unit) == (app, "report", f"{app}-report.service")


@pytest.mark.parametrize(
    "instance",
    [
        "shop-report.timer",  # the timer, not its job
        "shop-nosuch.service",  # no such timer
        "other-report.service",  # no such app
        "shop-report",
        "../shop-report.service",
        "shop-report.service\n",
        "Shop-report.service",
        "shop-%n.service",
        "shop-hand.service",  # a unit pyrelctl did not write for shop
        "shop-lone.service",  # no timer of shop's starts it
        "",
    ],
)
def test_anything_else_is_refused_before_anything_happens(
    root: Path, tmp_path: Path, instance: str
) -> None:
    install(root, tmp_path, "shop", "1.0")
    unit_dir = root / "etc/systemd/system"
    (unit_dir / "shop-hand.service").write_text("[Service]\nExecStart=/bin/true\n")
    # A job of pyrelctl's without its timer (a copy of one).
    (unit_dir / "shop-lone.service").write_text((unit_dir / "shop-report.service").read_text())
    # Its timer is pyrelctl's (a copy of one), the job is not.
    (unit_dir / "shop-hand.timer").write_text((unit_dir / "shop-report.timer").read_text())
    with pytest.raises(BadInput, match="is not the job unit of an installed app's timer"):
        failed.failed_job(Layout(root), instance)


def test_the_cli_refuses_a_bad_instance_in_one_line_exit_2(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(root, tmp_path, "shop", "1.0")
    result = run(capsys, "--root", root, "_job-failed", "shop-x.service")
    assert result.code == 2, result
    assert result.err_lines[0] == (
        "error: 'shop-x.service' is not the job unit of an installed app's timer"
    ), result.err


@dataclass
class JobSystemd:
    states: dict[str, UnitState] = field(default_factory=dict)

    def state(self, unit: str) -> UnitState:
        return self.states.get(unit, UnitState(unit))


def test_the_event_carries_the_job_its_result_and_its_runs_journal(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(root, tmp_path, "shop", "1.0")
    asked: list[str] = []

    def lines(invocation: str, **_: object) -> list[str]:
        asked.append(invocation)
        return ["report: database gone"]

    monkeypatch.setattr("pyrelctl.journal.invocation_lines", lines)
    systemd = JobSystemd(
        {
            "shop-report.service": UnitState(
                "shop-report.service",
                active_state="failed",
                result="exit-code",
                exec_main_code=1,
                exec_main_status=4,
                invocation_id="a" * 32,
            )
        }
    )
    job = failed.failed_job(Layout(root), "shop-report.service")
    event = failed.event(Layout(root), systemd, job, "b" * 32)  # type: ignore[arg-type]
    assert asked == ["b" * 32]  # PID 1's $MONITOR_INVOCATION_ID, when it is one
    env = event.environment()
    assert {k: env[k] for k in ("PYRELCTL_EVENT", "PYRELCTL_ACTION", "PYRELCTL_APP")} == {
        "PYRELCTL_EVENT": "failure",
        "PYRELCTL_ACTION": "job",
        "PYRELCTL_APP": "shop",
    }
    assert env["PYRELCTL_JOB"] == "report" and env["PYRELCTL_JOB_RESULT"] == "exit-code"
    assert env["PYRELCTL_EXIT_CODE"] == "4" and env["PYRELCTL_VERSION"] == "1.0"
    assert event.summary.splitlines() == [
        "shop job report (shop-report.service) failed: exit-code, main process exited with "
        "status 4",
        "report: database gone",
    ]
    failed.event(Layout(root), systemd, job, "not-an-id")  # type: ignore[arg-type]
    assert asked[-1] == "a" * 32  # else the unit's own


def test_a_deploys_event_has_no_job_variables() -> None:
    env = Event("success", "install", "shop", "1.0", None, "ok", 0).environment()
    assert not [k for k in env if k.startswith("PYRELCTL_JOB")]


# -- prune keeps what runs ---------------------------------------------------------


def fake_process(proc: Path, pid: int, cgroup: str, cwd: Path) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(f"0::{cgroup}\n")
    os.symlink(cwd, proc / str(pid) / "cwd")


def test_prune_keeps_a_release_a_job_still_runs(root: Path, tmp_path: Path) -> None:
    for version in ("1.0", "1.1", "1.2", "1.3"):
        app = install(root, tmp_path, "shop", version)
    proc = tmp_path / "proc"
    fake_process(proc, 10, "/system.slice/shop-report.service", app.release("1.0").resolve())
    fake_process(proc, 11, "/system.slice/shop-worker@2.service", app.release("1.1").resolve())
    fake_process(proc, 9, "/system.slice/shop.service/sub", app.release("1.2").resolve())
    # Not the app's units: an operator's shell there, another app's job.
    fake_process(proc, 12, "/user.slice/user-0.slice/session-1.scope", app.release("1.2"))
    fake_process(proc, 13, "/system.slice/shopx-report.service", app.release("1.2").resolve())
    in_use = releases_in_use(app, proc)
    assert in_use == {
        "1.0": "shop-report.service (pid 10)",
        "1.1": "shop-worker@2.service (pid 11)",
        "1.2": "shop.service (pid 9)",
    }
    said: list[str] = []
    del in_use["1.2"]
    assert prune(app, 1, said.append, in_use) == ("1.2",)
    assert app.versions() == ["1.0", "1.1", "1.3"]
    assert "keeping shop 1.0: shop-report.service (pid 10) still runs it" in said


# -- doctor --------------------------------------------------------------------


def test_doctor_names_stale_units_dangling_links_and_a_failed_job(
    root: Path, tmp_path: Path
) -> None:
    install(root, tmp_path, "shop", "1.0", TIMER + WORKER)
    unit_dir = root / "etc/systemd/system"
    (root / "run/systemd/system").mkdir(parents=True)
    host = OnlineLayout(root)
    systemd = FakeSystemd(
        states={
            "shop.service": UnitState(
                "shop.service",
                load_state="loaded",
                active_state="active",
                sub_state="running",
            )
        }
    )
    found = [f for f in check(host, systemd) if f.check in ("process-units", "jobs")]
    assert [(f.check, f.severity.name) for f in found] == [("process-units", "OK")]

    # A unit an earlier release had; a link whose unit is gone; a failed run.
    text = (unit_dir / "shop-report.service").read_text()
    (unit_dir / "shop-old.service").write_text(text)
    os.symlink(
        "/etc/systemd/system/shop-gone@.service",
        unit_dir / "shop.service.wants/shop-gone@1.service",
    )
    systemd.states["shop-report.service"] = UnitState(
        "shop-report.service",
        active_state="failed",
        result="exit-code",
        exec_main_code=1,
        exec_main_status=1,
    )
    found = [f for f in check(host, systemd) if f.check in ("process-units", "jobs")]
    assert [(f.check, f.severity.name) for f in found] == [
        ("process-units", "WARNING"),
        ("process-units", "PROBLEM"),
        ("jobs", "WARNING"),
    ]
    assert found[0].details == (str(unit_dir / "shop-old.service"),)
    assert found[1].details == (str(unit_dir / "shop.service.wants/shop-gone@1.service"),)
    assert "shop-report.service failed (exit-code" in found[2].message


def test_systemd_analyze_verify_finds_nothing_wrong_in_the_template(tmp_path: Path) -> None:
    from tests.unit.test_procs_units import analyze_verify

    # An instance of it, as systemd starts one for the job shop-report.service.
    instance = "pyrelctl-job-failed@shop-report.service.service"
    said = analyze_verify(tmp_path, {instance: failed.unit_text()})
    assert said == [], said
    broken = failed.unit_text().replace("TimeoutStartSec=", "TimeoutStrtSec=")
    said = analyze_verify(tmp_path / "2", {"pyrelctl-job-failed@x.service": broken})
    assert any("TimeoutStrtSec" in line for line in said), said
