"""pyrelctl secret set/list/rm, offline under --root (issue 6)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import run


@pytest.fixture
def root(hello_root: Path) -> Path:
    return hello_root


def unit(root: Path) -> str:
    return (root / "etc/systemd/system/hello.service").read_text()


def test_set_list_rm(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    value = tmp_path / "value"
    value.write_bytes(b"s3cr3t-from-file")
    assert (
        run(capsys, "--root", root, "secret", "set", "hello", "db-password", "--file", value).code
        == 0
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"tok\n")))
    assert run(capsys, "--root", root, "secret", "set", "hello", "api.token").code == 0

    store = root / "etc/pyrelctl/hello/credentials"
    assert store.stat().st_mode & 0o777 == 0o700
    assert (store / "db-password").read_bytes() == b"s3cr3t-from-file"
    assert (store / "db-password").stat().st_mode & 0o777 == 0o600
    assert (store / "api.token").read_bytes() == b"tok\n"  # byte for byte, newline kept

    text = unit(root)
    assert "LoadCredential=db-password:/etc/pyrelctl/hello/credentials/db-password" in text
    assert "LoadCredential=api.token:/etc/pyrelctl/hello/credentials/api.token" in text
    assert "s3cr3t" not in text  # the unit names files, never values

    listed = json.loads(run(capsys, "--root", root, "--json", "secret", "list", "hello").out)
    assert [(s["name"], s["size"]) for s in listed["secrets"]] == [
        ("api.token", 4),
        ("db-password", 16),
    ]
    out = run(capsys, "--root", root, "secret", "list", "hello").out
    assert "db-password" in out and "s3cr3t" not in out

    assert run(capsys, "--root", root, "secret", "rm", "hello", "db-password").code == 0
    assert not (store / "db-password").exists()
    assert "db-password" not in unit(root)
    missing = run(capsys, "--root", root, "secret", "rm", "hello", "db-password")
    assert missing.code == 2 and "no secret 'db-password'" in missing.err


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x" * 65, "é"])
def test_bad_secret_names_are_refused(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    value = tmp_path / "v"
    value.write_bytes(b"x")
    result = run(capsys, "--root", root, "secret", "set", "hello", name, "--file", value)
    assert result.code == 2 and "invalid secret name" in result.err
    assert not (root / "etc/pyrelctl/hello/credentials").exists()


def test_secret_of_an_unknown_app(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value = tmp_path / "v"
    value.write_bytes(b"x")
    result = run(capsys, "--root", root, "secret", "set", "nope", "k", "--file", value)
    assert result.code == 2 and "not installed" in result.err
