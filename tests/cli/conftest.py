"""Running the CLI in-process, through main(), as a user's shell would."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

import pyrelctl.cli.common
from pyrelctl.cli import main

# -- running the CLI ---------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def run(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> Result:
    """``pyrelctl ARGS`` through main(): its exit status, stdout and stderr."""
    capsys.readouterr()  # drop whatever came before
    with pytest.raises(SystemExit) as info:
        main([os.fspath(a) for a in args])
    out, err = capsys.readouterr()
    code = info.value.code
    return Result(0 if code is None else int(code), out, err)


@pytest.fixture(autouse=True)
def no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under --root pyrelctl must never connect to the running systemd."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pyrelctl tried to talk to systemd under --root")

    monkeypatch.setattr(pyrelctl.cli.common, "Systemd", refuse)


@pytest.fixture
def hello_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A --root tree with the generic release hello 1.0 installed (offline)."""
    from devtools.releases import make_generic_release

    root = tmp_path / "root"
    artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    assert run(capsys, "--root", root, "install", artifact).code == 0
    return root
