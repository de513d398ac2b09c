"""Install, rollback, prune and recovery under --root (offline: no systemd call).

The systemd half of these operations is tested in tests/system against a
real systemd; here we check the files: releases, `current`, index, history.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from pyrelctl.deploy.deployer import Deployer
from pyrelctl.deploy.options import InstallOptions
from pyrelctl.errors import BadInput, NotInstalled, SystemdError
from pyrelctl.layout import Layout, Mark
from pyrelctl.systemd import OfflineSystemd


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def deployer(root: Path) -> Deployer:
    root.mkdir()
    return Deployer(Layout(root), OfflineSystemd())


@pytest.fixture
def artifacts(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "artifacts"
    return {v: make_generic_release(out, name="hello", version=v) for v in ("1.0", "2.0", "3.0")}


def test_install_unpacks_switches_and_enables(
    deployer: Deployer, root: Path, artifacts: dict[str, Path]
) -> None:
    outcome = deployer.install(artifacts["1.0"], InstallOptions())
    assert (outcome.app, outcome.version, outcome.changed, outcome.started) == (
        "hello",
        "1.0",
        True,
        False,
    )
    assert os.readlink(root / "opt/hello/current") == "releases/1.0"
    assert (root / "opt/hello/releases/1.0/bin/hello").is_file()
    unit = (root / "etc/systemd/system/hello.service").read_text()
    assert 'ExecStart="/opt/hello/current/bin/hello" "start"' in unit
    wants = root / "etc/systemd/system/multi-user.target.wants/hello.service"
    assert os.readlink(wants) == "/etc/systemd/system/hello.service"
    assert (root / "etc/pyrelctl/hello").stat().st_mode & 0o777 == 0o700
    app = deployer.layout.app("hello")
    assert app.mark("1.0") is Mark.NEW
    assert [r["to"] for r in app.history()] == ["1.0"]


def test_release_files_are_not_writable_by_others(
    deployer: Deployer, root: Path, artifacts: dict[str, Path]
) -> None:
    deployer.install(artifacts["1.0"], InstallOptions())
    for path in (root / "opt/hello/releases/1.0").rglob("*"):
        assert path.lstat().st_mode & 0o022 == 0, path


def test_unit_written_only_when_changed(
    deployer: Deployer, root: Path, artifacts: dict[str, Path]
) -> None:
    deployer.install(artifacts["1.0"], InstallOptions())
    unit = root / "etc/systemd/system/hello.service"
    os.utime(unit, (1, 1))
    deployer.install(artifacts["2.0"], InstallOptions())
    assert unit.stat().st_mtime == 1  # same content: not rewritten


def test_reinstalling_the_current_version_changes_nothing(
    deployer: Deployer, artifacts: dict[str, Path]
) -> None:
    deployer.install(artifacts["1.0"], InstallOptions())
    again = deployer.install(artifacts["1.0"], InstallOptions())
    assert not again.changed
    assert len(deployer.layout.app("hello").history()) == 1


def test_rollback_goes_to_the_previous_release_and_skips_failed(
    deployer: Deployer, root: Path, artifacts: dict[str, Path]
) -> None:
    for v in ("1.0", "2.0", "3.0"):
        deployer.install(artifacts[v], InstallOptions())
    app = deployer.layout.app("hello")
    app.update_index("2.0", mark=Mark.FAILED)
    outcome = deployer.rollback("hello")
    assert (outcome.previous, outcome.version) == ("3.0", "1.0")
    assert app.current_version() == "1.0"
    with pytest.raises(BadInput, match="failed"):
        deployer.rollback("hello", to="2.0")
    with pytest.raises(BadInput, match="already the current"):
        deployer.rollback("hello", to="1.0")
    with pytest.raises(BadInput, match="no earlier good release"):
        deployer.rollback("hello")
    assert deployer.rollback("hello", to="3.0").version == "3.0"
    with pytest.raises(NotInstalled):
        deployer.rollback("hello", to="9.9")


def test_prune_keeps_current_and_last_good_and_drops_failed_first(
    deployer: Deployer, tmp_path: Path
) -> None:
    out = tmp_path / "more"
    versions = [f"{i}.0" for i in range(1, 8)]
    for v in versions:
        deployer.install(
            make_generic_release(out, name="hello", version=v), InstallOptions(keep=100)
        )
    app = deployer.layout.app("hello")
    app.update_index("1.0", mark=Mark.GOOD)  # the last good one is the oldest
    for v in ("6.0", "5.0"):
        app.update_index(v, mark=Mark.FAILED)
    pruned = deployer.prune("hello", keep=2)
    assert set(pruned) == {"2.0", "3.0", "5.0", "6.0"}
    assert app.versions() == ["1.0", "4.0", "7.0"]  # last good + the 2 newest non-failed
    assert app.current_version() == "7.0"


def test_recover_removes_incomplete_releases_and_fixes_a_dangling_current(
    deployer: Deployer, root: Path, artifacts: dict[str, Path]
) -> None:
    deployer.install(artifacts["1.0"], InstallOptions())
    app = deployer.layout.app("hello")
    staging = app.new_incomplete_dir("2.0")
    (staging / "bin").mkdir(parents=True)
    (root / "opt/hello/.current.dead.tmp").symlink_to("releases/x")
    done = deployer.recover(app)
    assert not staging.exists() and done
    assert not (root / "opt/hello/.current.dead.tmp").is_symlink()
    os.replace(root / "opt/hello/releases/1.0", root / "opt/hello/releases/.gone")
    deployer.install(artifacts["2.0"], InstallOptions())
    assert app.current_version() == "2.0"


def test_control_commands_refuse_offline(deployer: Deployer, artifacts: dict[str, Path]) -> None:
    deployer.install(artifacts["1.0"], InstallOptions())
    with pytest.raises(BadInput, match="--root"):
        deployer.control("hello", "restart")
    with pytest.raises(SystemdError):
        OfflineSystemd().state("hello.service")


def test_uninstall_removes_releases_and_unit_and_purge_removes_state(
    deployer: Deployer, root: Path, artifacts: dict[str, Path]
) -> None:
    deployer.install(artifacts["1.0"], InstallOptions())
    dropin = root / "etc/systemd/system/hello.service.d/override.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nNice=5\n")
    deployer.uninstall("hello")
    assert not (root / "opt/hello").exists()
    assert not (root / "etc/systemd/system/hello.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/hello.service").is_symlink()
    assert dropin.exists() and (root / "etc/pyrelctl/hello").is_dir()
    deployer.install(artifacts["1.0"], InstallOptions())
    deployer.uninstall("hello", purge=True)
    assert not dropin.exists()
    assert not (root / "etc/pyrelctl/hello").exists()
    assert not (root / "var/lib/pyrelctl/hello").exists()


def test_unchanged_units_are_not_rendered_again(
    deployer: Deployer, root: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade whose units are the same skips jinja2 (unitfiles.py), but a unit
    edited by hand, deleted, or with other inputs is rendered and written again."""
    from pyrelctl.units import UnitText

    deployer.install(artifacts["1.0"], InstallOptions())
    unit = root / "etc/systemd/system/hello.service"
    rendered = unit.read_text()
    renders: list[str] = []
    real_render = UnitText.render

    def counting_render(self: UnitText) -> str:
        renders.append(self.template)
        return real_render(self)

    monkeypatch.setattr(UnitText, "render", counting_render)
    deployer.install(artifacts["2.0"], InstallOptions())
    assert renders == []
    assert unit.read_text() == rendered

    unit.write_text(rendered.replace("Restart=on-failure", "Restart=no"))
    deployer.rollback("hello")
    assert renders == ["app.service.j2"] and unit.read_text() == rendered
    unit.unlink()
    deployer.install(artifacts["3.0"], InstallOptions())
    assert renders == ["app.service.j2"] * 2 and unit.read_text() == rendered
    deployer.install(artifacts["3.0"], InstallOptions(listen=("127.0.0.1:8000",)))
    assert renders == ["app.service.j2"] * 2 + ["app.socket.j2", "app.service.j2"]
    assert "Requires=hello.socket" in unit.read_text()
