"""`pyrelctl scale`, and `status`/`logs` of processes and timers, offline (issue 32).

Under --root a scale writes the settings and the links alone; every bad
request is one line, exit 2, and nothing written. The running side (new
instances started and verified, the old count back after a failure) is
tests/system/test_procs_scale.py's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli.conftest import run
from tests.cli.test_bad_input import (
    assert_one_error_line,
    manifest,
    release_members,
    snapshot,
    tarball,
)

PROCS = (
    '[processes.w]\ncommand = ["bin/app", "w"]\ninstances = 2\n'
    '[timers.t]\ncommand = ["bin/app"]\nevery = "5m"\n'
)


def release(tmp: Path, version: str, extra: str) -> Path:
    directory = tmp / version
    directory.mkdir()
    return tarball(
        directory / f"app-{version}.tar.gz",
        release_members(manifest(name="app", version=version, extra=extra)),
    )


@pytest.fixture
def root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A --root tree with app 1.0.0 installed: process w (2 instances), timer t."""
    root = tmp_path / "root"
    root.mkdir()
    result = run(capsys, "--root", root, "install", "--no-start", release(tmp_path, "1.0.0", PROCS))
    assert result.code == 0, result
    return root


def links(root: Path) -> list[str]:
    wants = root / "etc/systemd/system/app.service.wants"  # gone with the last link
    return sorted(p.name for p in wants.iterdir()) if wants.is_dir() else []


def settings(root: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((root / "etc/pyrelctl/app/settings.json").read_text())
    return data


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (("nope", "w=2"), "not installed"),
        (("app", "x=2"), "'x' is not a process of it"),
        (("app", "t=2"), "'t' is a timer, not a process"),
        (("app", "w=65"), "0 to 64"),
        (("app", "w=-1"), "0 to 64"),
        (("app", "w"), "is not NAME=N"),
        (("app", "w=two"), "is not NAME=N"),
        (("app", "w=+2"), "is not NAME=N"),
        (("app", "=2"), "is not NAME=N"),
        (("app", "w=1", "w=2"), "given twice"),
        (("app",), "Missing argument"),
    ],
)
def test_a_bad_scale_changes_nothing(
    root: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], word: str
) -> None:
    before = snapshot(root)
    result = run(capsys, "--root", root, "scale", *args)
    assert_one_error_line(result, word)
    assert snapshot(root) == before


def test_offline_scale_writes_the_settings_and_links_and_later_releases_keep_it(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert links(root) == ["app-t.timer", "app-w@1.service", "app-w@2.service"]

    result = run(capsys, "--root", root, "--json", "scale", "app", "w=4")
    assert result.code == 0, result
    outcome = json.loads(result.out)
    assert outcome["counts"] == {"w": 4} and outcome["previous"] == {"w": 2}
    assert outcome["applied"] is False and outcome["changed"] is True
    assert settings(root)["scale"] == {"w": 4}
    assert links(root) == ["app-t.timer"] + [f"app-w@{i}.service" for i in range(1, 5)]
    link = root / "etc/systemd/system/app.service.wants/app-w@4.service"
    assert os.readlink(link) == "/etc/systemd/system/app-w@.service"

    result = run(capsys, "--root", root, "scale", "app", "w=1")
    assert result.code == 0, result
    assert "w=1" in result.out
    assert links(root) == ["app-t.timer", "app-w@1.service"]
    history = run(capsys, "--root", root, "--json", "history", "app")
    scales = [r for r in json.loads(history.out)["history"] if r["action"] == "scale"]
    assert [r["to"] for r in scales] == ["w=2->4", "w=4->1"], scales

    # A release without w ignores the count and keeps it; the next one with w runs 1.
    assert run(capsys, "--root", root, "install", release(tmp_path, "1.1.0", "")).code == 0
    assert links(root) == []
    assert settings(root)["scale"] == {"w": 1}
    assert run(capsys, "--root", root, "install", release(tmp_path, "1.2.0", PROCS)).code == 0
    assert links(root) == ["app-t.timer", "app-w@1.service"]

    # Scaling to 0 removes every link of w, and nothing else.
    assert run(capsys, "--root", root, "scale", "app", "w=0").code == 0
    assert links(root) == ["app-t.timer"]
    assert (root / "etc/systemd/system/app-w@.service").is_file()


def test_status_lists_the_instances_and_timers(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(capsys, "--root", root, "status", "app")
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert any(line.split()[:2] == ["app-w@2.service", "offline"] for line in lines), lines
    assert any(line.split()[:2] == ["app-t.timer", "offline"] for line in lines), lines
    doc = json.loads(run(capsys, "--root", root, "--json", "status", "app").out)
    assert [p["unit"] for p in doc["processes"]] == ["app-w@1.service", "app-w@2.service"]
    assert [t["unit"] for t in doc["timers"]] == ["app-t.timer"]


@pytest.fixture
def journalctl(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """What `logs` would run, instead of running it."""
    seen: list[list[str]] = []

    def execvp(_file: str, argv: list[str]) -> None:
        seen.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execvp", execvp)
    return seen


def units_of(argv: list[str]) -> list[str]:
    return [a.removeprefix("--unit=") for a in argv if a.startswith("--unit=")] + [
        argv[i + 1] for i, a in enumerate(argv) if a == "--unit"
    ]


def test_logs_reads_every_unit_of_the_release_by_name(
    root: Path, capsys: pytest.CaptureFixture[str], journalctl: list[list[str]]
) -> None:
    assert run(capsys, "--root", root, "logs", "app").code == 0
    assert sorted(units_of(journalctl[-1])) == [
        "app-t.service",
        "app-t.timer",
        "app-w@*.service",
        "app.service",
        "app@overlap.service",
    ]
    assert run(capsys, "--root", root, "logs", "app", "--process", "w").code == 0
    assert units_of(journalctl[-1]) == ["app-w@*.service"]
    assert run(capsys, "--root", root, "logs", "app", "--process", "web").code == 0
    assert sorted(units_of(journalctl[-1])) == ["app.service", "app@overlap.service"]


def test_logs_of_a_process_the_release_lacks_is_refused(
    root: Path, capsys: pytest.CaptureFixture[str], journalctl: list[list[str]]
) -> None:
    result = run(capsys, "--root", root, "logs", "app", "--process", "mail")
    assert_one_error_line(result, "no process or timer 'mail'")
    assert journalctl == []
