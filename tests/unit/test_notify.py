"""Which host hooks pyrelctl runs as root, and how it tells them (pure; tests/system/
test_notify.py runs them after real deploys)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyrelctl.errors import BadInput, DeployFailed, ExitCode
from pyrelctl.layout import Layout
from pyrelctl.notify import HOOKS_DIR, failure_event, hook_timeout, hooks


def hook(directory: Path, name: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership by root is part of the rule")
def test_only_roots_own_executables_run_in_name_order(tmp_path: Path) -> None:
    directory = tmp_path / HOOKS_DIR
    directory.mkdir(parents=True)
    good = [hook(directory, "20-b"), hook(directory, "10-a")]
    hook(directory, "30-off", 0o644)  # not executable: switched off, as run-parts does
    hook(directory, "40-wide", 0o777)
    hook(directory, "50-x~")
    hook(directory, ".hidden")
    nobody = hook(directory, "60-nobody")
    os.chown(nobody, 65534, 65534)
    run, skipped = hooks(Layout(tmp_path))
    assert run == sorted(good)
    assert [s.split(" not run: ")[1] for s in skipped] == [
        "writable by others than root",
        "owned by uid 65534, not root",
    ]


def test_a_directory_others_may_write_runs_nothing(tmp_path: Path) -> None:
    directory = tmp_path / HOOKS_DIR
    directory.mkdir(parents=True)
    hook(directory, "10-a")
    directory.chmod(0o777)
    run, skipped = hooks(Layout(tmp_path))
    assert run == [] and "no hook run" in skipped[0]


def test_timeout_setting(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert hook_timeout(layout) == 10.0
    (tmp_path / "etc/pyrelctl").mkdir(parents=True)
    (tmp_path / "etc/pyrelctl/notify.toml").write_text("timeout = 2.5\n")
    assert hook_timeout(layout) == 2.5
    (tmp_path / "etc/pyrelctl/notify.toml").write_text("timeout = 0\n")
    with pytest.raises(BadInput):
        hook_timeout(layout)


def test_a_failed_deploy_becomes_its_event() -> None:
    error = DeployFailed(
        "shop 2 failed to come up: exited",
        exit_code=ExitCode.ROLLED_BACK,
        report={
            "app": "shop",
            "failed": {"version": "2", "journal": ["boom"]},
            "previous": "1",
        },
    )
    event = failure_event("install", error)
    assert (event.event, event.result, event.version, event.previous) == (
        "rollback", "rolled-back", "2", "1",
    )  # fmt: skip
    assert event.summary == "shop 2 failed to come up: exited\nboom\n"
    env = event.environment()
    assert env["PYRELCTL_EXIT_CODE"] == "3" and env["PYRELCTL_APP"] == "shop"
