"""Global options stand before or after the command (issue 16): `pyrelctl releases
shop --json` as well as `pyrelctl --json releases shop`, like systemctl and kubectl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from pyrelctl.cli import COMMANDS
from tests.cli.conftest import run


@pytest.fixture
def root(hello_root: Path) -> Path:
    return hello_root


@pytest.mark.parametrize(
    "command",
    [["releases", "hello"], ["history", "hello"], ["status", "hello"], ["secret", "list", "hello"]],
)
def test_json_and_root_after_the_command(
    root: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    before = run(capsys, "--root", root, "--json", *command)
    after = run(capsys, *command, "--json", "--root", root)
    assert before.code == after.code == 0, after.err
    assert json.loads(after.out) == json.loads(before.out)


def test_install_with_root_after_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    root = tmp_path / "r"
    result = run(capsys, "install", artifact, "--root", root, "-q")
    assert result.code == 0, result.err
    assert result.err == ""  # -q after the command silences progress too
    assert (root / "opt/hello/current").is_symlink()


def test_quiet_wins_over_verbose_wherever_each_stands(
    root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    artifact = make_generic_release(tmp_path / "b", name="hello", version="2.0")
    loud = run(capsys, "--root", root, "install", artifact, "-v", "-q")
    assert loud.code == 0 and loud.err == "", loud.err


def test_every_command_lists_the_global_options_in_its_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in COMMANDS:
        result = run(capsys, name, "--help")
        assert result.code == 0, name
        for option in ("--root DIR", "--json", "-v, --verbose", "-q, --quiet"):
            assert option in result.out, (name, option)


def test_an_unknown_option_is_still_a_usage_error(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(capsys, "--root", root, "releases", "hello", "--jsn")
    assert result.code == 2 and "No such option" in result.err
