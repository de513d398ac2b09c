"""Deploys by grant: the pure logic (grant files, the option allowlist, the wire)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrelctl.cli import _DELEGABLE
from pyrelctl.delegate import grants, policy, serve, wire
from pyrelctl.errors import BadInput, HostError

# -- grants files ----------------------------------------------------------------


def test_a_grants_file_round_trips() -> None:
    g = grants.Grants("shop").with_(user="ci").with_(group="deployers").with_(user="ci")
    assert g == grants.Grants("shop", ("ci",), ("deployers",))
    assert grants.parse("shop", g.text(), "f") == g
    assert g.allows("ci", ()) and g.allows("bob", ["deployers"]) and not g.allows("bob", ["x"])
    assert g.without(user="ci").without(group="deployers").empty


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('users = "ci"\n', "list of names"),
        ("users = [1]\n", "list of names"),
        ('users = ["Root"]\n', "not valid"),
        ('users = ["ci"]\nsudo = true\n', "unknown key"),
        ('users = ["ci"\n', "f:"),
        ('groups = ["a b"]\n', "not valid"),
        ('users = ["1000"]\n', "not valid"),
    ],
)
def test_a_grants_file_root_did_not_write_is_refused(text: str, why: str) -> None:
    with pytest.raises(HostError, match=why):
        grants.parse("shop", text, "f")


@given(st.text(max_size=40))
def test_only_plain_names_are_accepted(name: str) -> None:
    try:
        grants.check_name(name, "user")
    except BadInput:
        return
    # What passes is safe in the TOML text pyrelctl writes and as a passwd name.
    assert name[0] in "abcdefghijklmnopqrstuvwxyz_"
    assert not set(name) - set("abcdefghijklmnopqrstuvwxyz0123456789_-")
    assert grants.parse("a", grants.Grants("a", (name,)).text(), "f").users == (name,)


def test_grants_are_read_per_app(tmp_path: Path) -> None:
    from pyrelctl.layout import Layout

    layout = Layout(tmp_path)
    assert grants.write(layout.app("shop"), grants.Grants("shop", ("ci",)))
    grants.write(layout.app("blog"), grants.Grants("blog", (), ("web",)))
    (tmp_path / "etc/pyrelctl/NotAnApp").mkdir()
    (tmp_path / "etc/pyrelctl/NotAnApp/grants.toml").write_text('users = ["ci"]\n')
    host = grants.read_all(layout)
    assert host.for_user("ci", ["web"]) == ("blog", "shop")
    assert host.for_user("ci", []) == ("shop",)
    path = tmp_path / "etc/pyrelctl/shop/grants.toml"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert grants.write(layout.app("shop"), grants.Grants("shop"))
    assert not path.exists()


# -- the option allowlist ----------------------------------------------------------

HOST_DECISIONS = {
    "allow": ("low-ports",),
    "listen": ("8080",),
    "env": ("A=1",),
    "env_file": "/tmp/env",
    "strategy": "restart",
    "app_name": "other",
    "allow_downgrade": True,
    "no_start": True,
    "health_http": "http://127.0.0.1/",
    "watch_window": "0",
    "allow_reset": True,
    "listen_reset": True,
    "grace": 1.0,
}


@pytest.mark.parametrize("name", sorted(HOST_DECISIONS))
def test_every_host_decision_is_refused_on_install(name: str) -> None:
    with pytest.raises(BadInput, match="host's decision"):
        policy.check("install", {"artifact": "a.tar.gz", name: HOST_DECISIONS[name]}, {})


def test_an_option_added_later_is_refused_until_allowed() -> None:
    with pytest.raises(BadInput, match="--insecure is the host's decision"):
        policy.check("install", {"insecure": True}, {"insecure": "--insecure"})


@pytest.mark.parametrize(
    "command", ["config", "secret", "uninstall", "prune", "stop", "grant", "scale"]
)
def test_commands_that_are_not_delegable_are_refused(command: str) -> None:
    with pytest.raises(BadInput, match="needs root"):
        policy.check(command, {}, {})


def test_keep_and_size_only_towards_the_safe_side() -> None:
    policy.check("install", {"keep": 5, "max_size": 1024}, {})
    policy.check("install", {"keep": 9, "timeout": 5.0, "no_wait": True, "signature": "s"}, {})
    with pytest.raises(BadInput, match="at least 5"):
        policy.check("install", {"keep": 1}, {"keep": "--keep"})
    with pytest.raises(BadInput, match="lower the size limit"):
        policy.check("install", {"max_size": 9 * 1024**3}, {})


def test_rollback_and_reads() -> None:
    policy.check("rollback", {"app": "shop", "to_version": "1.0"}, {})
    policy.check("logs", {"app": "shop", "follow": True, "lines": 3, "process": "worker"}, {})
    for option in ("config_only", "grace"):
        with pytest.raises(BadInput):
            policy.check("rollback", {"app": "shop", option: True}, {})


def test_the_cli_forwards_exactly_the_delegable_commands() -> None:
    from pyrelctl.cli import _ROOT_ONLY

    assert policy.DELEGABLE == _DELEGABLE
    assert policy.ROOT_ONLY == _ROOT_ONLY


# -- the wire ------------------------------------------------------------------------


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def test_a_request_carries_its_descriptors(tmp_path: Path) -> None:
    a, b = _pair()
    f = tmp_path / "artifact"
    f.write_bytes(b"x" * 10)
    fd = os.open(f, os.O_RDONLY)
    wire.send_request(a, wire.Request(["install", "a.tar.gz"], True, 1, ["artifact"], [1, 2, fd]))
    got = wire.receive_request(b)
    assert got.argv == ["install", "a.tar.gz"] and got.as_json and got.files == ["artifact"]
    assert len(got.fds) == 3 and os.pread(got.fds[2], 100, 0) == b"x" * 10
    for d in [*got.fds, fd]:
        os.close(d)


@pytest.mark.parametrize(
    "body",
    [b"[]", b"{}", b'{"argv": []}', b'{"argv": ["x"], "files": ["/etc/shadow"]}', b"nope"],
)
def test_a_malformed_request_is_refused(body: bytes) -> None:
    a, b = _pair()
    a.sendall(len(body).to_bytes(4, "big") + body)
    with pytest.raises(BadInput):
        wire.receive_request(b)


def test_descriptors_must_match_the_files_named() -> None:
    a, b = _pair()
    wire.send_request(a, wire.Request(["install", "x"], files=["artifact"], fds=[1, 2]))
    with pytest.raises(BadInput, match="expected 3 descriptors"):
        wire.receive_request(b)


# -- the helper's copy of the artifact ------------------------------------------------


def test_a_descriptor_that_cannot_read_gives_nothing(tmp_path: Path) -> None:
    """O_PATH needs no read permission: the helper must not read through one."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"root only")
    fd = os.open(secret, os.O_PATH)
    try:
        with pytest.raises(BadInput, match="not opened for reading"):
            serve.copy_bounded(fd, tmp_path / "copy", 1024, "artifact")
    finally:
        os.close(fd)
    wfd = os.open(secret, os.O_WRONLY)
    try:
        with pytest.raises(BadInput, match="not opened for reading"):
            serve.copy_bounded(wfd, tmp_path / "copy2", 1024, "artifact")
    finally:
        os.close(wfd)


def test_the_copy_is_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2048)
    fd = os.open(big, os.O_RDONLY)
    try:
        with pytest.raises(BadInput, match="larger than 1024"):
            serve.copy_bounded(fd, tmp_path / "copy", 1024, "artifact")
        os.lseek(fd, 100, os.SEEK_SET)  # the caller's offset does not matter
        serve.copy_bounded(fd, tmp_path / "copy3", 4096, "artifact")
    finally:
        os.close(fd)
    assert (tmp_path / "copy3").read_bytes() == big.read_bytes()
    rfd, wfd = os.pipe()
    with pytest.raises(BadInput, match="regular file"):
        serve.copy_bounded(rfd, tmp_path / "copy4", 1024, "artifact")
    os.close(rfd)
    os.close(wfd)


def test_an_install_is_for_the_app_the_artifact_is_named_after() -> None:
    peer = serve.Peer(1000, 1, "ci")
    assert serve._app_of_artifact(("shop", "shop-api"), peer, "x/shop-api-1.0.tar.gz") == "shop-api"
    assert serve._app_of_artifact(("shop",), peer, "build.tar.gz") == "shop"
    with pytest.raises(BadInput, match="name the artifact"):
        serve._app_of_artifact(("shop", "blog"), peer, "build.tar.gz")
    with pytest.raises(BadInput, match="no grant"):
        serve._app_of_artifact((), peer, "shop-1.0.tar.gz")


def test_a_silent_connection_is_let_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A local user connecting and saying nothing must not hold a helper slot."""
    from pyrelctl.layout import Layout

    monkeypatch.setattr(serve, "REQUEST_TIMEOUT", 0.2)
    caller, helper = _pair()
    lines: list[str] = []
    assert serve.serve(helper, Layout(tmp_path), log=lines.append) == 2
    assert wire.receive_reply(caller) == {"exit": 2, "error": "no request in time"}
    assert "no request in time" in lines[0]
