"""devtools.rootfs: the cached Debian 13 root is built once, reused, and rebuilt when stale
or when its package list changes; a failed build leaves nothing that looks built."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from devtools.rootfs import RootfsError, RootSpec, ensure_root

SPEC = RootSpec(
    name="trixie", suite="trixie", sources=("deb http://x/debian trixie main",), packages=("a",)
)

#: Stands in for mmdebstrap: records each call, makes the target (its 5th argument).
FAKE = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
[ -n "$FAIL" ] && { echo "E: cannot reach the mirror" >&2; exit 1; }
mkdir -p "$5/usr/lib/systemd" && touch "$5/usr/lib/systemd/systemd"
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mmdebstrap"
    script.write_text(FAKE)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir / "calls"


def calls(record: Path) -> int:
    return len(record.read_text().splitlines()) if record.exists() else 0


def test_built_once_then_reused(tmp_path: Path, fake: Path) -> None:
    cache = tmp_path / "cache"
    root = ensure_root(SPEC, cache)
    assert (root / "usr/lib/systemd/systemd").is_file()
    assert root == cache / f"trixie-{SPEC.key()}" / "root"
    assert "--include=a" in fake.read_text() and "trixie-updates" not in fake.read_text()
    assert ensure_root(SPEC, cache) == root
    assert calls(fake) == 1


def test_a_stale_root_is_rebuilt(tmp_path: Path, fake: Path) -> None:
    cache = tmp_path / "cache"
    root = ensure_root(SPEC, cache)
    stamp = root.parent / "built.json"
    old = time.time() - 8 * 24 * 3600
    os.utime(stamp, (old, old))
    assert ensure_root(SPEC, cache) == root
    assert calls(fake) == 2
    assert stamp.stat().st_mtime > old


def test_a_changed_package_list_builds_anew_and_drops_the_old_root(
    tmp_path: Path, fake: Path
) -> None:
    cache = tmp_path / "cache"
    first = ensure_root(SPEC, cache)
    other = RootSpec(SPEC.name, SPEC.suite, SPEC.sources, ("a", "b"))
    assert other.key() != SPEC.key()
    second = ensure_root(other, cache)
    assert second != first and second.is_dir()
    assert not first.parent.exists()
    assert calls(fake) == 2


def test_a_failed_build_leaves_nothing_and_says_why(
    tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(RootfsError, match="cannot reach the mirror"):
        ensure_root(SPEC, cache)
    assert sorted(p.name for p in cache.iterdir()) == [".lock"]
