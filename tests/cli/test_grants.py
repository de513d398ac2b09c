"""Deploys by grant, offline: grant/revoke/grants under --root, and the root helper
(delegate/serve.py) answering a request in-process over a socket pair, as its
unit would (the booted-systemd tests are in tests/system/test_grants.py)."""

from __future__ import annotations

import json
import os
import pwd
import socket
from pathlib import Path
from typing import Any

import pytest

from devtools.releases import make_generic_release
from pyrelctl.delegate import serve, wire
from pyrelctl.layout import Layout
from tests.cli.conftest import run
from tests.cli.test_signatures import keypair, sign

ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    """A --root with hello 1.0 installed (signed by `ops`, trusted for hello)."""
    root = tmp_path / "root"
    trusted = root / "etc/pyrelctl/hello"
    trusted.mkdir(parents=True)
    ops, intruder = keypair(tmp_path, "ops"), keypair(tmp_path, "intruder")
    public = Path(f"{ops}.pub").read_text().split()
    (trusted / "allowed_signers").write_text(f"ops@example {public[0]} {public[1]}\n")
    first = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    sign(ops, first)
    assert run(capsys, "--root", root, "install", first).code == 0
    return {"root": root, "ops": ops, "intruder": intruder, "tmp": tmp_path}


def test_grant_needs_a_signing_key_and_an_installed_app(
    host: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = host["root"]
    other = make_generic_release(tmp_path / "b", name="blog", version="1.0")
    assert run(capsys, "--root", root, "install", other).code == 0
    result = run(capsys, "--root", root, "grant", "blog", "--user", "ci")
    assert result.code == 2
    assert "no signing key" in result.err and "allowed_signers" in result.err
    assert run(capsys, "--root", root, "grant", "nosuch", "--user", "ci").code == 2
    assert run(capsys, "--root", root, "grant", "hello").code == 2  # neither --user nor --group
    assert run(capsys, "--root", root, "grant", "hello", "--user", "Bad Name").code == 2
    assert not list(root.glob("etc/pyrelctl/*/grants.toml"))
    assert not (root / "etc/systemd/system/pyrelctl-delegate.socket").exists()


def test_grant_revoke_and_grants(host: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = host["root"]
    assert run(capsys, "--root", root, "grant", "hello", "--user", "ci").code == 0
    assert run(capsys, "--root", root, "grant", "hello", "--group", "deployers").code == 0
    listed = json.loads(run(capsys, "--root", root, "grants", "--json").out)
    assert listed == [{"app": "hello", "users": ["ci"], "groups": ["deployers"]}]
    units = root / "etc/systemd/system"
    socket_text = (units / "pyrelctl-delegate.socket").read_text()
    assert "ListenStream=/run/pyrelctl/delegate.sock" in socket_text
    assert "Accept=yes" in socket_text
    service_text = (units / "pyrelctl-delegate@.service").read_text()
    assert "pyrelctl.delegate.serve" in service_text and "ExecStart=" in service_text
    assert run(capsys, "--root", root, "revoke", "hello", "--user", "ci").code == 0
    assert run(capsys, "--root", root, "revoke", "hello", "--user", "ci").code == 2
    assert (units / "pyrelctl-delegate.socket").exists()  # the group still has its grant
    assert run(capsys, "--root", root, "revoke", "hello", "--group", "deployers").code == 0
    assert not (units / "pyrelctl-delegate.socket").exists()
    assert "no grants" in run(capsys, "--root", root, "grants").out


# -- the helper, in-process ---------------------------------------------------------------


def _ask(
    root: Path, tmp: Path, argv: list[str], files: dict[str, Path] | None = None
) -> tuple[dict[str, Any], str, str]:
    """Send ``argv`` (with ``files`` opened as the caller) to serve(); reply, out, err."""
    out, err = tmp / "out.txt", tmp / "err.txt"
    fds = [
        os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ]
    names = []
    for name, path in (files or {}).items():
        fds.append(os.open(path, os.O_RDONLY))
        names.append(name)
    caller, helper = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    lines: list[str] = []
    try:
        wire.send_request(caller, wire.Request(argv, False, 0, names, fds))
        serve.serve(helper, Layout(root), log=lines.append)
        reply = wire.receive_reply(caller)
    finally:
        for fd in fds:
            os.close(fd)
        caller.close()
        helper.close()
    assert lines, "the helper logs every decision"
    return reply, out.read_text(), err.read_text()


def _release(tmp: Path, version: str, key: Path | None, name: str = "hello") -> Path:
    artifact = make_generic_release(tmp / f"r{name}{version}", name=name, version=version)
    if key is not None:
        sign(key, artifact)
    return artifact


def test_a_granted_user_deploys_a_signed_release_recorded_as_itself(
    host: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, tmp = host["root"], host["tmp"]
    assert run(capsys, "--root", root, "grant", "hello", "--user", ME).code == 0
    artifact = _release(tmp, "1.1", host["ops"])
    files = {"artifact": artifact, "signature": Path(f"{artifact}.sig")}
    reply, out, err = _ask(root, tmp, ["install", str(artifact)], files)
    assert reply == {"exit": 0}, err
    assert "hello 1.1 installed" in out
    assert os.readlink(root / "opt/hello/current") == "releases/1.1"
    last = json.loads((root / "var/lib/pyrelctl/hello/history.jsonl").read_text().splitlines()[-1])
    assert last["user"] == f"{ME} (by grant)"
    assert not list((root / "var/lib/pyrelctl/.uploads").iterdir())  # the copy is gone

    reply, out, err = _ask(root, tmp, ["rollback", "hello"])
    assert reply == {"exit": 0}, err
    assert os.readlink(root / "opt/hello/current") == "releases/1.0"
    reply, out, _ = _ask(root, tmp, ["history", "hello"])
    assert reply == {"exit": 0} and "(by grant)" in out


@pytest.mark.parametrize(
    "options",
    [
        ["--allow", "low-ports"],
        ["--listen", "8080"],
        ["--env", "A=1"],
        ["--strategy", "restart"],
        ["--app", "hello"],
        ["--allow-downgrade"],
        ["--no-start"],
        ["--keep", "1"],
        ["--root", "/srv/elsewhere"],
        ["--health-http", "http://127.0.0.1:1/"],
    ],
)
def test_host_decisions_are_refused_with_nothing_changed(
    host: dict[str, Path], capsys: pytest.CaptureFixture[str], options: list[str]
) -> None:
    root, tmp = host["root"], host["tmp"]
    assert run(capsys, "--root", root, "grant", "hello", "--user", ME).code == 0
    artifact = _release(tmp, "1.1", host["ops"])
    files = {"artifact": artifact, "signature": Path(f"{artifact}.sig")}
    reply, _, _ = _ask(root, tmp, ["install", str(artifact), *options], files)
    assert reply["exit"] == 2, reply
    assert not (root / "opt/hello/releases/1.1").exists()
    assert os.readlink(root / "opt/hello/current") == "releases/1.0"


@pytest.mark.parametrize("case", ["unsigned", "intruder", "other-app", "no-grant", "revoked"])
def test_refused_installs_change_nothing(
    host: dict[str, Path], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    root, tmp = host["root"], host["tmp"]
    assert (
        run(
            capsys, "--root", root, "grant", "hello", "--user", ME if case != "no-grant" else "ci"
        ).code
        == 0
    )
    key = {"unsigned": None, "intruder": host["intruder"]}.get(case, host["ops"])
    name = "blog" if case == "other-app" else "hello"
    artifact = _release(tmp, "1.1", key, name=name)
    files = {"artifact": artifact}
    if key is not None:
        files["signature"] = Path(f"{artifact}.sig")
    if case == "revoked":
        assert run(capsys, "--root", root, "revoke", "hello", "--user", ME).code == 0
    reply, _, _ = _ask(root, tmp, ["install", str(artifact)], files)
    assert reply["exit"] == 2, reply
    expected = {
        "unsigned": "does not exist",
        "intruder": "not made by a key trusted",
        "other-app": "release of blog, not of hello",
        "no-grant": "no grant",
        "revoked": "no grant",
    }[case]
    assert expected in reply["error"]
    assert os.readlink(root / "opt/hello/current") == "releases/1.0"
    assert not (root / "opt/blog").exists()
    assert not (root / "opt/hello/releases/1.1").exists()


def test_without_a_grant_reads_fall_back_and_changes_are_refused(
    host: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, tmp = host["root"], host["tmp"]
    assert run(capsys, "--root", root, "grant", "hello", "--user", "ci").code == 0
    reply, _, _ = _ask(root, tmp, ["status", "hello"])
    assert reply == {"fallback": True}
    reply, _, _ = _ask(root, tmp, ["rollback", "hello"])
    assert reply["exit"] == 2 and "no grant" in reply["error"]
    for argv in (["uninstall", "hello"], ["config", "set", "hello", "A=1"], ["prune", "hello"]):
        reply, _, _ = _ask(root, tmp, argv)
        assert reply["exit"] == 2 and "needs root" in reply["error"]
    assert os.readlink(root / "opt/hello/current") == "releases/1.0"


def test_root_only_commands_are_refused_without_root_on_a_host_with_grants(
    hello_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user without root meets "needs root" (exit 2), not a permission error, and
    nothing runs: the deployer is never built. The host is --root's, seen as online."""
    import pyrelctl.cli.common

    helper = tmp_path / "delegate.sock"
    helper.touch()
    monkeypatch.setattr(wire, "SOCKET_PATH", str(helper))
    monkeypatch.setattr(Layout, "offline", property(lambda self: False))

    def never(*args: object) -> None:
        raise AssertionError("a refused command ran")

    monkeypatch.setattr(pyrelctl.cli.common.Ctx, "deployer", never)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for argv in (
        ["prune", "hello", "--keep", "1"],
        ["uninstall", "hello"],
        ["config", "set", "hello", "A=1"],
        ["secret", "set", "hello", "token"],
        ["grant", "hello", "--user", "ci"],
    ):
        result = run(capsys, "--root", hello_root, *argv)
        assert result.code == 2, (argv, result.err)
        assert f"`pyrelctl {argv[0]}` needs root" in result.err
    assert run(capsys, "--root", hello_root, "config", "--help").code == 0
    assert os.readlink(hello_root / "opt/hello/current") == "releases/1.0"
    assert not (hello_root / "etc/pyrelctl/hello/config").exists()
