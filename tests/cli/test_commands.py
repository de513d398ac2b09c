"""The CLI's read commands, --json, locking and option parsing, offline under --root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from pyrelctl.cli.common import ByteSize
from pyrelctl.layout import Layout, app_lock
from tests.cli.conftest import run


@pytest.fixture
def root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A root with app `hello` installed in 1.0 and 2.0 (offline)."""
    root = tmp_path / "root"
    root.mkdir()
    for version in ("1.0", "2.0"):
        artifact = make_generic_release(tmp_path / "a", name="hello", version=version)
        assert run(capsys, "--root", root, "install", artifact).code == 0
    return root


def test_json_read_commands(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    releases = json.loads(run(capsys, "--root", root, "--json", "releases", "hello").out)
    assert releases["current"] == "2.0"
    assert [(r["version"], r["current"], r["mark"]) for r in releases["releases"]] == [
        ("1.0", False, "new"),
        ("2.0", True, "new"),
    ]
    assert all(r["size"] > 0 and r["installed_at"] > 0 for r in releases["releases"])

    status = json.loads(run(capsys, "--root", root, "--json", "status").out)
    assert [(a["app"], a["current"], a["state"]) for a in status["apps"]] == [
        ("hello", "2.0", None)  # offline: no unit state
    ]
    history = json.loads(run(capsys, "--root", root, "--json", "history", "hello").out)
    assert [(h["action"], h["from"], h["to"]) for h in history["history"]] == [
        ("install", None, "1.0"),
        ("install", "1.0", "2.0"),
    ]
    unit = json.loads(run(capsys, "--root", root, "--json", "unit", "hello").out)
    text = unit["files"][str(root / "etc/systemd/system/hello.service")]
    assert "ExecStart=" in text


def test_human_tables(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "--root", root, "releases", "hello").out.splitlines()
    assert out[0].split() == ["VERSION", "INSTALLED", "SIZE", "MARK"]
    assert out[2].startswith("*") and "2.0" in out[2]
    status = run(capsys, "--root", root, "status").out
    assert "hello" in status and "offline" in status


def test_status_of_every_app_lists_one_it_cannot_read_with_its_problem(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = make_generic_release(tmp_path / "a", name="other", version="1.0")
    assert run(capsys, "--root", root, "install", artifact).code == 0
    # Another tool (Capistrano's ln -s) made `current` an absolute link.
    current = root / "opt/other/current"
    current.unlink()
    current.symlink_to(root / "opt/other/releases/1.0")
    result = run(capsys, "--root", root, "--json", "status")
    assert result.code == 1, result
    apps = {a["app"]: a for a in json.loads(result.out)["apps"]}
    assert apps["hello"]["current"] == "2.0"
    assert apps["other"]["current"] is None and "not releases/<version>" in apps["other"]["problem"]
    assert "1 of 2 apps could not be read" in result.err
    human = run(capsys, "--root", root, "status")
    assert human.code == 1 and "hello" in human.out and "other: " in human.out
    single = run(capsys, "--root", root, "status", "other")  # asked for by name: its error
    assert single.code == 1 and "not releases/<version>" in single.err


def test_quiet_and_json_keep_progress_off_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    result = run(capsys, "--root", tmp_path / "r", "--json", "install", artifact)
    assert json.loads(result.out)["version"] == "1.0"  # exactly one JSON document
    assert result.err == ""
    result = run(capsys, "--root", tmp_path / "q", "-q", "install", artifact)
    assert result.err == "" and "installed" in result.out


def test_a_held_lock_gives_exit_5_with_no_wait(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = Layout(root).app("hello")
    with app_lock(app, "test"):
        result = run(capsys, "--root", root, "rollback", "hello", "--no-wait")
        assert result.code == 5
        assert result.err.startswith("error: hello is locked by pid")
        assert "(test)" in result.err
    assert run(capsys, "--root", root, "rollback", "hello", "--no-wait").code == 0


def test_rollback_and_prune_through_the_cli(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "--root", root, "rollback", "hello")
    assert result.code == 0 and "from 2.0 to 1.0" in result.out
    # keep 1 keeps the newest (2.0), and the current one (1.0) on top of that
    result = run(capsys, "--root", root, "--json", "prune", "hello", "--keep", "1")
    assert json.loads(result.out)["pruned"] == []
    assert run(capsys, "--root", root, "rollback", "hello", "--to", "2.0").code == 0
    result = run(capsys, "--root", root, "--json", "prune", "hello", "--keep", "1")
    assert json.loads(result.out)["pruned"] == ["1.0"]
    result = run(capsys, "--root", root, "rollback", "hello", "--to", "3.0")
    assert result.code == 2 and "not installed" in result.err


def test_unknown_app_is_bad_input(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["releases", "nope"], ["history", "nope"], ["rollback", "nope"]):
        result = run(capsys, "--root", root, *argv)
        assert result.code == 2 and result.err_lines[0] == "error: app 'nope' is not installed"


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert "pyrelctl, version" in run(capsys, "--version").out
    helptext = run(capsys, "--help").out
    for command in ("install", "rollback", "releases", "status", "history", "logs", "prune"):
        assert command in helptext


@pytest.mark.parametrize(
    ("text", "size"),
    [("500", 500), ("1K", 1024), ("2M", 2 * 1024**2), ("8G", 8 * 1024**3), ("3GiB", 3 * 1024**3)],
)
def test_byte_sizes(text: str, size: int) -> None:
    assert ByteSize().convert(text, None, None) == size


def test_bad_byte_size_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "install", tmp_path, "--max-size", "lots")
    assert result.code == 2
    assert result.err_lines[0].startswith("error: Invalid value for '--max-size'")


def _tree(root: Path) -> dict[str, bytes | str]:
    return {
        str(p.relative_to(root)): (
            p.read_bytes() if p.is_file() and not p.is_symlink() else str(p.readlink())
        )
        for p in sorted(root.rglob("*"))
        if not p.is_dir() or p.is_symlink()
    }


def test_install_dry_run_renders_with_the_apps_settings_and_changes_nothing(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """install --dry-run: the units as the install would write them (the app's
    remembered settings and this command's options), and not one file changed."""
    artifact = make_generic_release(tmp_path / "b", name="hello", version="3.0")
    assert run(capsys, "--root", root, "install", artifact, "--listen", "8123").code == 0
    before = _tree(root)
    newer = make_generic_release(tmp_path / "c", name="hello", version="4.0")
    result = run(capsys, "--root", root, "--json", "install", newer, "--dry-run")
    assert result.code == 0, result.err
    seen = json.loads(result.out)
    assert (seen["version"], seen["previous"], seen["changed"]) == ("4.0", "3.0", True)
    assert seen["unit_changes"] == []  # the socket remembered, the unit follows `current`
    assert (
        seen["units"]["/etc/systemd/system/hello.socket"]
        == (root / "etc/systemd/system/hello.socket").read_text()
    )
    result = run(capsys, "--root", root, "install", newer, "--dry-run", "--listen", "9000")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "would install hello 4.0 (current: 3.0)",
        "  /etc/systemd/system/hello.service: unchanged",
        "  /etc/systemd/system/hello.socket: would change",
    ]
    result = run(capsys, "--root", root, "install", newer, "--dry-run", "--app", "systemd-x")
    assert result.code == 2
    assert "reserved" in result.err
    assert _tree(root) == before
