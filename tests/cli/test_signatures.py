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
