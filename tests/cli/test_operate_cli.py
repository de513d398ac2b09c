"""rpc, eval, remote, pid and version through the command line (main()).

systemd is replaced by a fake that answers the unit's state, and the host is a
tree below tmp_path that pyrelctl is made to treat as live; the command that
would run (systemd-run) is captured instead of run. The real thing is
tests/system/test_operate.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import pyrelctl.cli.common
from devtools.releases import make_generic_release
from pyrelctl import operate
from pyrelctl.deploy.deployer import Deployer
from pyrelctl.deploy.options import InstallOptions
from pyrelctl.layout import Layout
from pyrelctl.systemd import OfflineSystemd
from tests.cli.conftest import Result, run
from tests.unit.test_operate import FakeSystemd, fake_mix_release

VERBS = ("rpc", "eval", "remote", "pid", "version")
ARGS = {"rpc": ["x"], "eval": ["x"], "remote": [], "pid": [], "version": []}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """shop 1.1.0 (current, 1.0.0 before it) and hello 1 installed below tmp_path/root."""
    root = tmp_path / "root"
    root.mkdir()
    installer = Deployer(Layout(root), OfflineSystemd())
    for version in ("1.0.0", "1.1.0"):
        installer.install(fake_mix_release(tmp_path / "src", version), InstallOptions())
    hello = make_generic_release(tmp_path / "src", name="hello", version="1", tarball=False)
    installer.install(hello, InstallOptions())
    return root


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)


Live = Callable[..., Result]


@pytest.fixture
def live(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[Live, list[tuple[str, ...]]]:
    """`live(*args, main_pid=N)`: pyrelctl --root ROOT ARGS, with ROOT taken for the live
    host, systemd faked (the service's main PID is N, 0 for stopped), and the
    systemd-run command captured (it "exits" with 7). Returns the captured argvs too."""
    monkeypatch.setattr(Layout, "offline", property(lambda self: False))
    ran: list[tuple[str, ...]] = []

    def fake_run(argv: Sequence[str], *, interrupted: object) -> int:
        ran.append(tuple(argv))
        return 7

    monkeypatch.setattr(operate, "run_attached", fake_run)

    def call(*args: str, main_pid: int = 4242) -> Result:
        monkeypatch.setattr(pyrelctl.cli.common, "Systemd", lambda: FakeSystemd(main_pid))
        return run(capsys, "--root", root, *args)

    return call, ran


def one_error(result: Result, code: int, words: str) -> None:
    assert result.code == code, result
    errors = [line for line in result.err_lines if line.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0], result.err


@pytest.mark.usefixtures("as_root")
@pytest.mark.parametrize("verb", VERBS)
def test_offline_refuses_every_verb(
    capsys: pytest.CaptureFixture[str], root: Path, verb: str
) -> None:
    result = run(capsys, "--root", root, verb, "shop", *ARGS[verb])
    one_error(result, 2, f"{verb} needs the running systemd; it cannot work with --root")
    assert result.out == ""


@pytest.mark.parametrize("verb", ["rpc", "eval", "remote"])
def test_non_root_is_refused_before_systemd_or_files(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    # Not even --root: the autouse no_systemd fixture fails the test if
    # pyrelctl so much as connects to systemd.
    result = run(capsys, verb, "no-such-app", *ARGS[verb])
    one_error(result, 1, f"pyrelctl {verb} must run as root")
    assert "hint: sudo pyrelctl" in result.err


@pytest.mark.usefixtures("as_root")
def test_rpc_runs_systemd_run_and_exits_with_its_status(
    live: tuple[Live, list[tuple[str, ...]]], root: Path
) -> None:
    call, ran = live
    result = call("rpc", "shop", "IO.puts(:pong)")
    assert result.code == 7 and result.out == "" and result.err == ""
    (argv,) = ran
    assert argv[0] == "systemd-run" and "--pipe" in argv
    assert argv[-2:] == (str(root / "opt/shop/releases/1.1.0/bin/shop"), "rpc")
    # The expression is handed over as a credential, in no command line (issue 15).
    assert not any("IO.puts" in word for word in argv)


@pytest.mark.usefixtures("as_root")
def test_eval_release_option_and_stopped_service(
    live: tuple[Live, list[tuple[str, ...]]], root: Path
) -> None:
    call, ran = live
    assert call("eval", "shop", "--release", "1.0.0", "1", main_pid=0).code == 7
    assert ran[-1][-2] == str(root / "opt/shop/releases/1.0.0/bin/shop")
    one_error(call("eval", "shop", "--release", "9.9", "1"), 2, "release 9.9 of shop")


@pytest.mark.usefixtures("as_root")
def test_clear_errors(live: tuple[Live, list[tuple[str, ...]]]) -> None:
    call, ran = live
    one_error(call("rpc", "nope", "x"), 2, "app 'nope' is not installed")
    stopped = call("rpc", "shop", "x", main_pid=0)
    one_error(stopped, 1, "shop is not running (inactive/dead)")
    assert "hint: start it: pyrelctl start shop" in stopped.err
    one_error(call("rpc", "hello", "x"), 2, "does not declare the rpc command")
    # capsys gives stdin no terminal
    one_error(call("remote", "shop"), 2, "needs a terminal: stdin is not a TTY")
    assert ran == []


@pytest.mark.usefixtures("as_root")
def test_pid_prints_the_main_pid(live: tuple[Live, list[tuple[str, ...]]]) -> None:
    call, _ = live
    assert call("pid", "shop").out == "4242\n"
    assert json.loads(call("--json", "pid", "shop").out) == {"app": "shop", "pid": 4242}
    one_error(call("pid", "shop", main_pid=0), 1, "shop is not running")


@pytest.mark.usefixtures("as_root")
def test_version_of_a_stopped_service_is_the_current_one_and_says_so(
    live: tuple[Live, list[tuple[str, ...]]],
) -> None:
    call, _ = live
    human = call("version", "shop", main_pid=0)
    assert human.code == 0 and human.out == "1.1.0\n"
    assert "current release; not running" in human.err
    doc = json.loads(call("--json", "version", "shop", main_pid=0).out)
    assert doc["version"] == "1.1.0" and doc["source"] == "current" and doc["running"] is False
    assert call("-q", "version", "shop", main_pid=0).err == ""


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(capsys: pytest.CaptureFixture[str], verb: str) -> None:
    result = run(capsys, verb, "--help")
    assert result.code == 0
    assert f"Usage: pyrelctl {verb} [OPTIONS] APP" in result.out
    assert "APP" in result.out.split("\n\n", 2)[1]  # the summary line names APP
