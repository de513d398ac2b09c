"""Output for people and for scripts (issue 8): tables, colour, NO_COLOR, --json, progress."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from tests.cli.conftest import run

ANSI = "\x1b["


@pytest.fixture
def root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    root = tmp_path / "root"
    for version in ("1.0", "2.0"):
        artifact = make_generic_release(tmp_path / "a", name="hello", version=version)
        assert run(capsys, "--root", root, "install", artifact).code == 0
    root_app = root / "var/lib/pyrelctl/hello/releases.json"
    index = json.loads(root_app.read_text())
    index["1.0"]["mark"] = "failed"
    root_app.write_text(json.dumps(index))
    return root


def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)


def test_piped_tables_are_tab_separated(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = run(capsys, "--root", root, "releases", "hello").out.splitlines()
    assert lines[0] == "\tVERSION\tINSTALLED\tSIZE\tMARK"
    assert lines[1].split("\t")[1::3] == ["1.0", "failed"]
    assert ANSI not in "".join(lines)


def test_terminal_tables_are_aligned_and_coloured(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal(monkeypatch)
    out = run(capsys, "--root", root, "releases", "hello").out
    assert "\t" not in out
    assert f"{ANSI}31m" in out  # "failed" in red
    header = out.splitlines()[0]
    assert header.split() == ["VERSION", "INSTALLED", "SIZE", "MARK"]


def test_no_color_means_no_colour(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    terminal(monkeypatch)
    out = run(capsys, "--root", root, "releases", "hello").out
    assert ANSI not in out and "failed" in out


@pytest.mark.parametrize(
    ("argv", "fields"),
    [
        (["releases", "hello"], {"app", "current", "releases"}),
        (["status"], {"apps"}),
        (["status", "hello"], {"app", "current", "mark", "unit", "state"}),
        (["history", "hello"], {"app", "history"}),
        (["unit", "hello"], {"app", "files"}),
        (["secret", "list", "hello"], {"app", "secrets"}),
        (["prune", "hello", "--keep", "5"], {"app", "pruned"}),
        (["rollback", "hello", "--to", "2.0"], set()),  # refused: already current
    ],
)
def test_json_documents(
    root: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fields: set[str]
) -> None:
    result = run(capsys, "--root", root, "--json", *argv)
    if not fields:
        assert result.code == 2 and result.out == ""  # errors stay on stderr
        return
    assert result.code == 0, result.err
    assert fields <= set(json.loads(result.out))  # exactly one document, parseable


def test_install_json_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    doc = json.loads(run(capsys, "--root", tmp_path / "r", "--json", "install", artifact).out)
    assert {"app", "action", "version", "previous", "changed", "started", "pruned"} <= set(doc)


def test_unpack_progress_only_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    piped = run(capsys, "--root", tmp_path / "r1", "install", artifact)
    assert " files" not in piped.err
    terminal(monkeypatch)
    shown = run(capsys, "--root", tmp_path / "r2", "install", artifact)
    assert "\r" in shown.err and " files" in shown.err
    quiet = run(capsys, "--root", tmp_path / "r3", "-q", "install", artifact)
    assert quiet.err == ""
