"""A mix app's cookie file: made once, root-only, taken over from an older
pyrelctl's release.env (offline installs; the process side is
tests/system/test_cookie.py)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from pyrelctl import mixcookie
from tests.cli.conftest import run
from tests.unit.test_release import mix_files, write_tree

LEGACY = "0123456789abcdef" * 4


def install(capsys: pytest.CaptureFixture[str], root: Path, tmp_path: Path, version: str) -> None:
    shop = write_tree(tmp_path / f"shop-{version}", mix_files("shop", version))
    result = run(capsys, "--root", root, "install", shop)
    assert result.code == 0, result.err


def test_install_makes_one_root_only_cookie_and_keeps_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    install(capsys, root, tmp_path, "1.0.0")
    path = root / "etc/pyrelctl/shop/cookie"
    cookie = path.read_text()
    # Bare (what $HOME/.erlang.cookie holds), 256 random bits, root's alone.
    assert re.fullmatch(r"[0-9a-f]{64}", cookie)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (root / "etc/pyrelctl/shop/release.env").exists()
    install(capsys, root, tmp_path, "1.1.0")
    assert path.read_text() == cookie  # rpc keeps reaching the running node
    unit = (root / "etc/systemd/system/shop.service").read_text()
    assert cookie not in unit and "release.env" not in unit
    assert "LoadCredential=pyrelctl+erlang-cookie:/etc/pyrelctl/shop/cookie" in unit


def test_an_older_release_env_is_taken_over_then_removed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    install(capsys, root, tmp_path, "1.0.0")
    etc = root / "etc/pyrelctl/shop"
    # The host as an older pyrelctl left it: the cookie in release.env only.
    (etc / "cookie").unlink()
    (etc / "release.env").write_text(f"RELEASE_COOKIE={LEGACY}\n")
    install(capsys, root, tmp_path, "1.1.0")
    # The same cookie (the running node and a cluster's other nodes have it).
    assert (etc / "cookie").read_text() == LEGACY
    # The new unit no longer reads release.env, so it is gone.
    assert not (etc / "release.env").exists()


@pytest.mark.parametrize(
    "data", [b"", b"RELEASE_COOKIE=\n", b"RELEASE_COOKIE=' spaced '\n", b"OTHER=x\n", b"\xff"]
)
def test_an_unusable_release_env_gives_a_new_cookie(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "release.env").write_bytes(data)
    assert mixcookie.ensure(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{64}", (tmp_path / "cookie").read_text())
    assert not mixcookie.ensure(tmp_path)  # once


def test_release_env_stays_until_the_cookie_has_its_file(tmp_path: Path) -> None:
    (tmp_path / "release.env").write_text(f"RELEASE_COOKIE={LEGACY}\n")
    mixcookie.forget_legacy(tmp_path)
    assert (tmp_path / "release.env").exists()
    mixcookie.ensure(tmp_path)
    mixcookie.forget_legacy(tmp_path)
    assert not (tmp_path / "release.env").exists()
