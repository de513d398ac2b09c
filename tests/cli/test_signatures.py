"""Signed releases with real ssh-keygen keys, offline under --root (issue 6)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from tests.cli.conftest import run


def keypair(directory: Path, name: str) -> Path:
    key = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key], check=True
    )
    return key


def sign(key: Path, artifact: Path, namespace: str = "pyrelctl-release") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-f", key, "-n", namespace, artifact],
        check=True,
        capture_output=True,
    )
    return Path(f"{artifact}.sig")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """(root that trusts `ops` for app hello, ops key, intruder key, artifact)."""
    root = tmp_path / "root"
    trusted = root / "etc/pyrelctl/hello"
    trusted.mkdir(parents=True)
    ops, intruder = keypair(tmp_path, "ops"), keypair(tmp_path, "intruder")
    public = Path(f"{ops}.pub").read_text().split()
    (trusted / "allowed_signers").write_text(
        f'ops@example namespaces="pyrelctl-release" {public[0]} {public[1]}\n'
    )
    artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    return root, ops, intruder, artifact


def test_a_release_signed_by_a_trusted_key_installs(
    setup: tuple[Path, Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ops, _, artifact = setup
    sign(ops, artifact)
    result = run(capsys, "--root", root, "install", artifact)
    assert result.code == 0, result.err
    assert "signed by ops@example" in result.err
    assert os.readlink(root / "opt/hello/current") == "releases/1.0"


@pytest.mark.parametrize("case", ["unsigned", "intruder", "wrong-namespace", "tampered"])
def test_a_release_without_a_good_signature_is_refused(
    setup: tuple[Path, Path, Path, Path], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    root, ops, intruder, artifact = setup
    if case == "intruder":
        sign(intruder, artifact)
    elif case == "wrong-namespace":
        sign(ops, artifact, namespace="git")
    elif case == "tampered":
        sign(ops, artifact)
        with artifact.open("ab") as f:
            f.write(b"\0" * 512)
    result = run(capsys, "--root", root, "install", artifact)
    assert result.code == 2, result.err
    expected = {
        "unsigned": "requires a signed release",
        "intruder": "not made by a key trusted",
        "wrong-namespace": "bad signature",
        "tampered": "bad signature",
    }[case]
    assert result.err_lines[0].startswith("error: ") and expected in result.err_lines[0]
    assert not (root / "opt").exists()  # nothing written


def test_signatures_are_optional_until_the_host_trusts_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    assert run(capsys, "--root", tmp_path / "r", "install", artifact).code == 0
    given = run(capsys, "--root", tmp_path / "s", "install", artifact, "--signature", artifact)
    assert given.code == 2 and "trusts no key" in given.err


def host_wide(root: Path, key: Path) -> None:
    """Trust ``key`` for every app of the host (/etc/pyrelctl/allowed_signers)."""
    public = Path(f"{key}.pub").read_text().split()
    (root / "etc/pyrelctl").mkdir(parents=True, exist_ok=True)
    (root / "etc/pyrelctl/allowed_signers").write_text(f"ops@example {public[0]} {public[1]}\n")


def test_a_signed_release_installs_only_under_its_own_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15, finding 9: a key trusted host-wide signed `hello`; that is no
    consent to run it as another app."""
    root = tmp_path / "root"
    ops = keypair(tmp_path, "ops")
    host_wide(root, ops)
    artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    sign(ops, artifact)
    result = run(capsys, "--root", root, "install", "--app", "othersvc", artifact)
    assert result.code == 2 and "signed as a release of hello" in result.err, result.err
    assert not (root / "opt/othersvc").exists()
    # A key listed for othersvc itself may.
    (root / "etc/pyrelctl/othersvc").mkdir()
    (root / "etc/pyrelctl/allowed_signers").rename(root / "etc/pyrelctl/othersvc/allowed_signers")
    ok = run(capsys, "--root", root, "install", "--app", "othersvc", artifact)
    assert ok.code == 0, ok.err


def test_a_signed_downgrade_needs_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An old release keeps its good signature after its flaws are known."""
    root = tmp_path / "root"
    ops = keypair(tmp_path, "ops")
    host_wide(root, ops)
    old, new = (
        make_generic_release(tmp_path / "a", name="hello", version=v) for v in ("1.9", "1.10")
    )
    sign(ops, old), sign(ops, new)
    assert run(capsys, "--root", root, "install", new).code == 0
    before = os.readlink(root / "opt/hello/current")
    result = run(capsys, "--root", root, "install", old)
    assert result.code == 2 and "older than the current 1.10" in result.err, result.err
    assert os.readlink(root / "opt/hello/current") == before
    assert not (root / "opt/hello/releases/1.9").exists()
    forced = run(capsys, "--root", root, "install", "--allow-downgrade", old)
    assert forced.code == 0, forced.err


def test_per_app_keys_are_found_before_the_artifact_is_read(
    setup: tuple[Path, Path, Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The app's allowed_signers is chosen from --app or the artifact's file name;
    a release of that app under another file name needs --app."""
    root, ops, _, artifact = setup
    renamed = artifact.with_name("latest.tar.gz")
    renamed.write_bytes(artifact.read_bytes())
    sign(ops, renamed)
    result = run(capsys, "--root", root, "install", renamed)
    assert result.code == 2 and "--app hello" in result.err, result.err
    ok = run(capsys, "--root", root, "install", "--app", "hello", renamed)
    assert ok.code == 0, ok.err


def test_the_verified_bytes_are_the_installed_bytes(
    setup: tuple[Path, Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding 6: a file swapped in right after ssh-keygen checked it is not installed."""
    root, ops, _, artifact = setup
    sign(ops, artifact)
    evil = make_generic_release(tmp_path / "evil", name="hello", version="6.6.6")
    from pyrelctl import signatures

    real = signatures._verify_stream

    def verify_then_swap(*args: object) -> str:
        principal = real(*args)  # type: ignore[arg-type]  # the real check, unchanged
        os.replace(evil, artifact)  # what an inotify watcher would do
        return principal

    monkeypatch.setattr(signatures, "_verify_stream", verify_then_swap)
    result = run(capsys, "--root", root, "install", artifact)
    assert result.code == 0, result.err
    assert os.readlink(root / "opt/hello/current") == "releases/1.0"
    assert not (root / "opt/hello/releases/6.6.6").exists()
