"""`pyrelctl config` offline (--root): generations, refusals, history, install --env (issue 18).

What a running service does with a change (restart, verify, restore) is in
tests/system/test_config.py, against a real systemd.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from tests.cli.conftest import run
from tests.cli.test_bad_input import assert_one_error_line, snapshot


def config_dir(root: Path, app: str = "hello") -> Path:
    return root / "etc/pyrelctl" / app / "config"


def test_set_before_the_first_install_then_install_uses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    result = run(capsys, "--root", root, "config", "set", "hello", "A=1", "B=two words")
    assert result.code == 0, result.err
    assert "generation 1" in result.out and "staged" in result.out
    artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    assert run(capsys, "--root", root, "install", artifact, "--env", "C=3").code == 0
    unit = (root / "etc/systemd/system/hello.service").read_text()
    assert "EnvironmentFile=-/etc/pyrelctl/hello/config/current.env" in unit
    assert os.readlink(config_dir(root) / "current.env") == "000002.env"
    values = json.loads(run(capsys, "--root", root, "--json", "config", "list", "hello",
                            "--show-values").out)["variables"]  # fmt: skip
    assert values == {"A": "1", "B": "two words", "C": "3"}
    status = json.loads(run(capsys, "--root", root, "--json", "status", "hello").out)
    assert status["config"] == 2


def test_values_are_root_only_and_masked(
    hello_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "--root", hello_root, "config", "set", "hello", "TOKEN=s3cret").code == 0
    listed = run(capsys, "--root", hello_root, "config", "list", "hello")
    assert "s3cret" not in listed.out and "********" in listed.out
    assert run(capsys, "--root", hello_root, "config", "get", "hello", "TOKEN").out == "s3cret\n"
    for path in config_dir(hello_root).iterdir():
        if not path.is_symlink():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(config_dir(hello_root).stat().st_mode) == 0o700
    # The history names the keys, never the values.
    history = run(capsys, "--root", hello_root, "history", "hello").out
    assert "TOKEN" in history and "s3cret" not in history
    assert "s3cret" not in (hello_root / "var/lib/pyrelctl/hello/config.json").read_text()


def test_value_from_stdin(
    hello_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    assert run(capsys, "--root", hello_root, "config", "set", "hello", "KEY=-").code == 0
    assert run(capsys, "--root", hello_root, "config", "get", "hello", "KEY").out == "from-stdin\n"


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["set", "hello", "1BAD=x"], "invalid variable name"),
        (["set", "hello", "A-B=x"], "invalid variable name"),
        (["set", "hello", "NOTIFY_SOCKET=/x"], "set by systemd"),
        (["set", "hello", "RELEASE_COOKIE=x"], "set by systemd"),
        (["set", "hello", "LISTEN_FDS=3"], "set by systemd"),
        (["set", "hello", "CREDENTIALS_DIRECTORY=/x"], "set by systemd"),
        (["set", "hello", "A=line\nbreak"], "control character"),
        (["set", "hello", "A=nul\0"], "control character"),
        (["set", "hello", "NOEQUALS"], "not KEY=VALUE"),
        (["set", "hello", "A=-", "B=-"], "only one"),
        (["unset", "hello", "NEVER_SET"], "is not set"),
        (["set", "--no-create", "ghost", "A=1"], "not installed"),
        (["get", "hello", "MISSING"], "no variable"),
        (["rollback", "hello"], "no earlier"),
    ],
)
def test_bad_input_changes_nothing(
    hello_root: Path, capsys: pytest.CaptureFixture[str], args: list[str], word: str
) -> None:
    before = snapshot(hello_root)
    result = run(capsys, "--root", hello_root, "config", *args)
    assert_one_error_line(result, word)
    assert snapshot(hello_root) == before


def test_import_edit_and_rollback(
    hello_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    dotenv = tmp_path / "prod.env"
    dotenv.write_text(
        '# production\nexport DATABASE_URL="ecto://u:p@db/x"\nPOOL_SIZE=10 # comment\n'
        'PHX_HOST=\'shop.example.com\'\nQUOTED="a \\"b\\" \\$c"\n'
    )
    assert run(capsys, "--root", hello_root, "config", "import", "hello", dotenv).code == 0
    got = json.loads(run(capsys, "--root", hello_root, "--json", "config", "list", "hello",
                         "--show-values").out)["variables"]  # fmt: skip
    assert got == {
        "DATABASE_URL": "ecto://u:p@db/x",
        "POOL_SIZE": "10",
        "PHX_HOST": "shop.example.com",
        "QUOTED": 'a "b" $c',
    }
    # An editor that changes one value; the result is a new generation.
    editor = tmp_path / "editor"
    editor.write_text('#!/bin/sh\nsed -i \'s/^POOL_SIZE=.*/POOL_SIZE="20"/\' "$1"\n')
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    assert run(capsys, "--root", hello_root, "config", "edit", "hello").code == 0
    assert run(capsys, "--root", hello_root, "config", "get", "hello", "POOL_SIZE").out == "20\n"
    history = json.loads(run(capsys, "--root", hello_root, "--json", "config", "history",
                             "hello").out)  # fmt: skip
    assert history["generations"][-1]["change"] == {
        "added": [],
        "changed": ["POOL_SIZE"],
        "removed": [],
    }
    # rollback --config goes back one generation; the release stays.
    assert run(capsys, "--root", hello_root, "rollback", "hello", "--config").code == 0
    assert run(capsys, "--root", hello_root, "config", "get", "hello", "POOL_SIZE").out == "10\n"
    assert os.readlink(hello_root / "opt/hello/current") == "releases/1.0"


def test_keep_prunes_old_generations(hello_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(6):
        args = ["config", "set", "hello", f"N={i}", "--keep", "3"]
        assert run(capsys, "--root", hello_root, *args).code == 0
    names = sorted(p.name for p in config_dir(hello_root).iterdir())
    assert names == ["000004.env", "000005.env", "000006.env", "current.env"]


def test_a_failed_install_keeps_the_configuration(
    hello_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--env belongs to the deploy: refused input (here a bad artifact) sets nothing."""
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    before = snapshot(hello_root)
    result = run(capsys, "--root", hello_root, "install", bad, "--env", "A=1")
    assert result.code == 2
    assert snapshot(hello_root) == before


def test_doctor_checks_the_configuration(
    hello_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "--root", hello_root, "config", "set", "hello", "A=1").code == 0

    def finding() -> dict[str, str]:
        report = json.loads(run(capsys, "--root", hello_root, "--json", "doctor", "hello").out)
        found = [f for f in report["findings"] if f["check"] in ("config", "secrets")]
        bad = [f for f in found if f["severity"] == "problem"]
        return bad[0] if bad else next(f for f in found if f["check"] == "config")

    assert finding()["severity"] == "ok"  # the link's own mode is no problem
    (config_dir(hello_root) / "current.env").unlink()
    broken = finding()
    assert broken["severity"] == "problem" and "missing" in broken["message"]
    fix = broken["fix"].split()
    assert fix[:2] == ["pyrelctl", "--root"], fix
    assert run(capsys, *fix[1:]).code == 0
    assert finding()["severity"] == "ok"


#: Every character str.splitlines() ends a line at, and a C1 control.
LINE_BREAKS = ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x9b"]


@pytest.mark.parametrize("char", LINE_BREAKS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
def test_a_line_break_in_a_value_is_refused_by_set_import_and_edit(
    hello_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, char: str,
) -> None:  # fmt: skip
    """Issue 26: a value with U+2028 was stored, and pyrelctl could not read its
    configuration back until `config rollback`."""
    assert run(capsys, "--root", hello_root, "config", "set", "hello", "A=1").code == 0
    before = snapshot(hello_root)
    result = run(capsys, "--root", hello_root, "config", "set", "hello", f"B=x{char}y")
    assert_one_error_line(result, f"U+{ord(char):04X}")
    dotenv = tmp_path / "prod.env"
    dotenv.write_text(f'B="x{char}y"\nC=z{char}\n', newline="")
    result = run(capsys, "--root", hello_root, "config", "import", "hello", dotenv)
    assert result.code == 2 and "error: " in result.err, result
    editor = tmp_path / "editor"
    editor.write_text(f'#!/bin/sh\nprintf \'B="x{char}y"\\n\' >> "$1"\n', newline="")
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    result = run(capsys, "--root", hello_root, "config", "edit", "hello")
    assert result.code == 2 and "error: " in result.err, result
    assert snapshot(hello_root) == before
    listed = run(capsys, "--root", hello_root, "--json", "config", "list", "hello", "--show-values")
    assert json.loads(listed.out)["variables"] == {"A": "1"}


def test_a_stored_line_separator_is_read_back(
    hello_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A generation an older pyrelctl wrote with U+2028 in a value (systemd reads
    it as one line) is read, kept, and does not block changes of other names."""
    assert run(capsys, "--root", hello_root, "config", "set", "hello", "A=1").code == 0
    generation = config_dir(hello_root) / "000001.env"
    generation.write_text(generation.read_text() + 'SEP="a\u2028b\u0085c"\n')
    got = run(capsys, "--root", hello_root, "--json", "config", "list", "hello", "--show-values")
    assert got.code == 0, got.err
    assert json.loads(got.out)["variables"] == {"A": "1", "SEP": "a\u2028b\u0085c"}
    assert run(capsys, "--root", hello_root, "config", "set", "hello", "B=2").code == 0
    got = run(capsys, "--root", hello_root, "--json", "config", "get", "hello", "SEP")
    assert json.loads(got.out)["value"] == "a\u2028b\u0085c"
    # Shown on a terminal as escapes, like any text that is no plain line.
    table = run(capsys, "--root", hello_root, "config", "list", "hello", "--show-values")
    assert "a\\u2028b\\x85c" in table.out
