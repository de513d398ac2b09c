"""pyrelctl runs as root: a symlink (or hard link) planted in its own state must not
redirect a write, or a read, to another file (security issue 15).

Each test plants a link in a --root layout on tmp_path, pointing at a file
outside it, runs the operation and checks that the outside file is unchanged
and that pyrelctl refused, with one error that names the path and says to
remove it. The one exception is :func:`write_atomic` for files pyrelctl does
not own as state (unit files, environment files): it renames a new file over
the link, which replaces the link and never writes through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from pyrelctl.deploy.deployer import Deployer
from pyrelctl.deploy.options import InstallOptions
from pyrelctl.errors import HostError
from pyrelctl.hostfiles import ensure_dir, write_atomic
from pyrelctl.layout import AppPaths, Layout, app_lock
from pyrelctl.systemd import OfflineSystemd
from tests.cli.conftest import run

PRECIOUS = b'{"root": "x:0:0:root:/root:/bin/bash"}\n'


@pytest.fixture
def app(tmp_path: Path) -> AppPaths:
    root = tmp_path / "root"
    root.mkdir()
    return Layout(root).app("shop")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the layout that root must never change (think /etc/shadow)."""
    path = tmp_path / "outside" / "shadow"
    path.parent.mkdir()
    path.write_bytes(PRECIOUS)
    path.chmod(0o640)
    return path


def plant_symlink(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def unchanged(outside: Path) -> None:
    assert outside.read_bytes() == PRECIOUS
    assert outside.stat().st_mode & 0o7777 == 0o640


def refused(info: pytest.ExceptionInfo[HostError], path: Path, what: str = "a symlink") -> None:
    error = info.value
    assert error.exit_code == 1
    assert str(path) in error.message and what in error.message, error.message
    assert error.hint is not None and f"remove it: rm {path}" in error.hint, error.hint


# -- the app's lock ------------------------------------------------------------------


def test_lock_file_symlink_is_refused(app: AppPaths, outside: Path) -> None:
    plant_symlink(app.lock_file, outside)
    with pytest.raises(HostError) as info, app_lock(app, "install"):
        pytest.fail("the lock was taken through a symlink")
    refused(info, app.lock_file)
    unchanged(outside)


def test_lock_file_hard_link_is_refused(app: AppPaths, outside: Path) -> None:
    # The lock is truncated and rewritten in place: a second name for another
    # file would be truncated too. (protected_hardlinks stops other users
    # linking root's files, not files of their own or root's own mistakes.)
    app.lock_file.parent.mkdir(parents=True)
    os.link(outside, app.lock_file)
    with pytest.raises(HostError) as info, app_lock(app, "install"):
        pytest.fail("the lock was taken through a hard link")
    refused(info, app.lock_file, "other hard links")
    unchanged(outside)


def test_locks_directory_symlink_is_refused(app: AppPaths, outside: Path) -> None:
    plant_symlink(app.lock_file.parent, outside.parent)
    with pytest.raises(HostError) as info, app_lock(app, "install"):
        pytest.fail("the lock was taken in a symlinked directory")
    refused(info, app.lock_file.parent)
    assert sorted(p.name for p in outside.parent.iterdir()) == ["shadow"]
    unchanged(outside)


def test_a_lock_file_is_still_made_and_reused(app: AppPaths) -> None:
    with app_lock(app, "install"):
        assert "(install)" in app.lock_file.read_text()
    with app_lock(app, "rollback"):
        assert "(rollback)" in app.lock_file.read_text()
    assert app.lock_file.stat().st_mode & 0o777 == 0o600


# -- history ---------------------------------------------------------------------------


def test_history_symlink_is_refused_on_append(app: AppPaths, outside: Path) -> None:
    plant_symlink(app.history_file, outside)
    with pytest.raises(HostError) as info:
        app.record("install", None, "1.0.0", "ok")
    refused(info, app.history_file)
    unchanged(outside)


def test_history_symlink_is_refused_on_read(app: AppPaths, outside: Path) -> None:
    outside.write_bytes(b'{"action": "planted"}\n')
    plant_symlink(app.history_file, outside)
    with pytest.raises(HostError) as info:
        app.history()
    refused(info, app.history_file)


def test_history_hard_link_is_refused(app: AppPaths, outside: Path) -> None:
    app.state.mkdir(parents=True)
    os.link(outside, app.history_file)
    with pytest.raises(HostError) as info:
        app.record("install", None, "1.0.0", "ok")
    refused(info, app.history_file, "other hard links")
    unchanged(outside)


def test_history_that_is_a_directory_is_refused(app: AppPaths) -> None:
    app.history_file.mkdir(parents=True)
    with pytest.raises(HostError) as info:
        app.record("install", None, "1.0.0", "ok")
    refused(info, app.history_file, "not a regular file")


def test_state_directory_symlink_is_refused(app: AppPaths, outside: Path) -> None:
    plant_symlink(app.state, outside.parent)
    with pytest.raises(HostError) as info:
        app.record("install", None, "1.0.0", "ok")
    refused(info, app.state)
    assert sorted(p.name for p in outside.parent.iterdir()) == ["shadow"]


def test_history_still_appends(app: AppPaths) -> None:
    app.record("install", None, "1.0.0", "ok")
    app.record("rollback", "1.0.0", None, "ok")
    assert [r["action"] for r in app.history()] == ["install", "rollback"]


# -- the release index and the settings ------------------------------------------------------


def test_index_symlink_is_refused(app: AppPaths, outside: Path) -> None:
    plant_symlink(app.index_file, outside)
    with pytest.raises(HostError) as info:
        app.read_index()
    refused(info, app.index_file)
    with pytest.raises(HostError):
        app.update_index("1.0.0", mark="good")
    unchanged(outside)
    assert app.index_file.is_symlink()  # left for the operator to look at


def test_settings_symlink_is_refused(app: AppPaths, outside: Path) -> None:
    plant_symlink(app.settings_file, outside)
    with pytest.raises(HostError) as info:
        app.read_settings()
    refused(info, app.settings_file)
    with pytest.raises(HostError) as info:
        app.write_settings({"grace": 1})
    refused(info, app.settings_file)
    unchanged(outside)


def test_settings_directory_symlink_is_refused(app: AppPaths, outside: Path) -> None:
    plant_symlink(app.etc, outside.parent)
    with pytest.raises(HostError) as info:
        app.write_settings({"grace": 1})
    refused(info, app.etc)
    assert sorted(p.name for p in outside.parent.iterdir()) == ["shadow"]


def test_settings_in_a_directory_others_may_write_are_refused(app: AppPaths) -> None:
    app.etc.mkdir(parents=True)
    app.etc.chmod(0o777)
    app.settings_file.write_text("{}")
    with pytest.raises(HostError) as info:
        app.read_settings()
    assert f"{app.etc} is writable by other users" in info.value.message


def test_index_and_settings_still_round_trip(app: AppPaths) -> None:
    app.update_index("1.0.0", mark="good")
    app.write_settings({"grace": 1})
    assert app.read_index() == {"1.0.0": {"mark": "good"}}
    assert app.read_settings() == {"grace": 1}
    assert app.settings_file.stat().st_mode & 0o777 == 0o600
    assert app.etc.stat().st_mode & 0o777 == 0o700


# -- write_atomic and ensure_dir ---------------------------------------------------------------


def test_write_atomic_replaces_a_symlink_and_never_writes_through_it(
    tmp_path: Path, outside: Path
) -> None:
    # Same content and mode as the link's target: the old comparison read
    # through the link, found nothing to do and left the link in place.
    outside.chmod(0o644)
    unit = tmp_path / "root/etc/systemd/system/shop.service"
    plant_symlink(unit, outside)
    assert write_atomic(unit, PRECIOUS) is True
    assert not unit.is_symlink() and unit.read_bytes() == PRECIOUS
    assert outside.read_bytes() == PRECIOUS and outside.stat().st_mode & 0o777 == 0o644
    # ... and a link to another content: replaced, target untouched.
    unit.unlink()
    plant_symlink(unit, outside)
    assert write_atomic(unit, b"[Unit]\n") is True
    assert unit.read_bytes() == b"[Unit]\n" and outside.read_bytes() == PRECIOUS


def test_ensure_dir_refuses_a_symlink(tmp_path: Path, outside: Path) -> None:
    target = tmp_path / "root/var/lib/pyrelctl/shop"
    plant_symlink(target, outside.parent)
    outside.parent.chmod(0o750)
    with pytest.raises(HostError) as info:
        ensure_dir(target, 0o700)
    refused(info, target)
    assert outside.parent.stat().st_mode & 0o777 == 0o750


def test_ensure_dir_refuses_a_directory_others_may_write(tmp_path: Path) -> None:
    target = tmp_path / "root/var/lib/pyrelctl"
    target.mkdir(parents=True)
    target.chmod(0o777)
    with pytest.raises(HostError, match="is writable by other users"):
        ensure_dir(target / "shop")
    with pytest.raises(HostError, match="is writable by other users"):
        ensure_dir(target)
    # Sticky (like /tmp): others cannot swap what we make, and a name they
    # made first is refused for its owner. --root /tmp/image works.
    target.chmod(0o1777)
    ensure_dir(target / "shop")
    assert (target / "shop").stat().st_mode & 0o777 == 0o755


def test_ensure_dir_makes_every_missing_parent_with_the_mode(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        ensure_dir(tmp_path / "a/b/c", 0o755)
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a/b", tmp_path / "a/b/c"):
        assert path.stat().st_mode & 0o777 == 0o755 and not path.is_symlink()
    ensure_dir(tmp_path / "a/b/c", 0o755)  # existing: fine


# -- through the command line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "argv"),
    [
        (lambda app: app.lock_file, ("rollback", "shop")),
        (lambda app: app.history_file, ("history", "shop")),
        (lambda app: app.index_file, ("releases", "shop")),
    ],
    ids=["lock", "history", "index"],
)
def test_commands_refuse_with_one_error(
    tmp_path: Path,
    outside: Path,
    capsys: pytest.CaptureFixture[str],
    where: Callable[[AppPaths], Path],
    argv: tuple[str, ...],
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    layout = Layout(root)
    artifact = make_generic_release(tmp_path / "src", name="shop", version="1", tarball=False)
    Deployer(layout, OfflineSystemd()).install(artifact, InstallOptions())
    path = where(layout.app("shop"))
    path.unlink()
    path.symlink_to(outside)
    result = run(capsys, "--root", root, *argv)
    assert result.code == 1, result
    assert result.err_lines[0] == f"error: {path} is a symlink; pyrelctl never makes one there"
    assert f"hint: remove it: rm {path}" in result.err
    unchanged(outside)
