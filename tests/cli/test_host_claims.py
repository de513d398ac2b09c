"""A release never takes what belongs to the host (issue 15, findings 3-5).

An app name becomes a user, unit names and directories (pyrelctl/hostclaims.py);
a release's sockets are bound by PID 1 as root; the sandbox widens only where the
host allowed it (pyrelctl/allowances.py). Each refusal is exit 2 with the
--root tree byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.cli.conftest import run
from tests.cli.test_bad_input import (
    assert_one_error_line,
    manifest,
    release_members,
    snapshot,
    tarball,
)


def release(tmp: Path, name: str = "app", version: str = "1.0.0", extra: str = "") -> Path:
    path = tmp / f"{name}-{version}.tar.gz"
    return tarball(path, release_members(manifest(name=name, version=version, extra=extra)))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "postgres:x:108:114::/var/lib/postgresql:/bin/bash\n"
    )
    (root / "etc/group").write_text("root:x:0:\nadm:x:4:\n")
    return root


def refused(
    capsys: pytest.CaptureFixture[str], root: Path, args: list[str | Path], word: str
) -> None:
    before = snapshot(root)
    result = run(capsys, "--root", root, "install", *args)
    assert_one_error_line(result, word)
    assert snapshot(root) == before


@pytest.mark.parametrize(("name", "word"), [("daemon", "existing user"), ("adm", "existing group")])
def test_existing_account_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path, name: str, word: str
) -> None:
    # DynamicUser= with User=daemon would run the service as the static user.
    refused(capsys, root, [release(tmp_path, name)], word)


def test_app_option_gets_the_same_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    refused(capsys, root, ["--app", "postgres", release(tmp_path)], "existing user")
    refused(capsys, root, ["--app", "dbus", release(tmp_path)], "reserved")


@pytest.mark.parametrize(
    "unit",
    [
        "usr/lib/systemd/system/web.service",
        "lib/systemd/system/web.socket",
        "etc/systemd/system/web.service",  # the operator's own, not generated
        "run/systemd/generator/web.service",
        "usr/lib/systemd/system/web.timer",  # would start web.service on its schedule
    ],
)
def test_existing_unit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path, unit: str
) -> None:
    path = root / unit
    path.parent.mkdir(parents=True)
    path.write_text("[Service]\nExecStart=/usr/sbin/web\n")
    refused(capsys, root, [release(tmp_path, "web")], "unit")


def test_masked_unit_link_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    link = root / "etc/systemd/system/web.service"
    link.parent.mkdir(parents=True)
    link.symlink_to("/dev/null")
    refused(capsys, root, [release(tmp_path, "web")], "unit")


@pytest.mark.parametrize(
    "directory", ["var/lib/web", "var/lib/private/web", "run/web", "var/log/web", "opt/web"]
)
def test_existing_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path, directory: str
) -> None:
    # StateDirectory= etc. would take it over (chown), RuntimeDirectory= remove it.
    (root / directory).mkdir(parents=True)
    (root / directory / "data").write_text("someone else's\n")
    refused(capsys, root, [release(tmp_path, "web")], "would take over")


def test_an_app_pyrelctl_manages_upgrades(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    """Its own unit and directories are no obstacle once pyrelctl manages it."""
    assert run(capsys, "--root", root, "install", release(tmp_path, "web")).code == 0
    (root / "var/lib/private/web").mkdir(parents=True)  # as its service would have made it
    assert run(capsys, "--root", root, "install", release(tmp_path, "web", "2.0.0")).code == 0
    # Uninstalled without --purge, it is still pyrelctl's: a new install is fine.
    assert run(capsys, "--root", root, "uninstall", "web").code == 0
    assert run(capsys, "--root", root, "install", release(tmp_path, "web", "3.0.0")).code == 0


def test_host_may_choose_any_socket_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    """Outside /run/APP.* only with --listen; never where another file is."""
    refused(
        capsys,
        root,
        [release(tmp_path, extra='[socket]\nlisten = ["/srv/app/http.sock"]\n')],
        "outside /run/app.",
    )
    (root / "srv/app").mkdir(parents=True)
    (root / "srv/app/data").write_text("x")
    refused(capsys, root, ["--listen", "/srv/app/data", release(tmp_path)], "not a socket")
    ok = run(capsys, "--root", root, "install", "--listen", "/srv/app/http.sock", release(tmp_path))
    assert ok.code == 0, ok.err
    unit = (root / "etc/systemd/system/app.socket").read_text()
    assert "ListenStream=/srv/app/http.sock" in unit


def test_existing_socket_at_the_path_is_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    (root / "run").mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "run/app.sock"))
        extra = '[socket]\nlisten = ["/run/app.sock"]\n'
        result = run(capsys, "--root", root, "install", release(tmp_path, extra=extra))
    assert result.code == 0, result.err


def test_release_low_port_needs_the_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    extra = '[socket]\nlisten = ["127.0.0.1:80"]\n'
    refused(capsys, root, [release(tmp_path, extra=extra)], "low-ports")
    # The host's own --listen is its choice: no allowance needed.
    assert run(capsys, "--root", root, "install", "--listen", "80", release(tmp_path)).code == 0


WIDE = (
    "[service]\nbind_privileged_ports = true\nmemory_deny_write_execute = false\n"
    'writable_paths = ["/srv/app/uploads", "/var/cache/app"]\n'
)


def test_widenings_need_each_allowance_and_are_remembered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    artifact = release(tmp_path, extra=WIDE)
    refused(capsys, root, [artifact], "low-ports")
    # One allowance short (the second path) is still a refusal, naming it.
    refused(
        capsys,
        root,
        ["--allow", "low-ports", "--allow", "wx-memory", "--allow", "write:/srv/app", artifact],
        "write:/var/cache/app",
    )
    result = run(
        capsys,
        "--root",
        root,
        "install",
        *("--allow", "low-ports", "--allow", "wx-memory"),
        *("--allow", "write:/srv/app", "--allow", "write:/var/cache/app/"),
        artifact,
    )
    assert result.code == 0, result.err
    assert "sandbox widened for app" in result.err
    settings = json.loads((root / "etc/pyrelctl/app/settings.json").read_text())
    assert settings["allow"] == ["low-ports", "write:/srv/app", "write:/var/cache/app", "wx-memory"]
    unit = (root / "etc/systemd/system/app.service").read_text()
    assert "ReadWritePaths=/srv/app/uploads" in unit
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in unit
    # Remembered: the next release asking the same installs without options.
    again = run(capsys, "--root", root, "install", release(tmp_path, version="2.0.0", extra=WIDE))
    assert again.code == 0, again.err
    status = json.loads(run(capsys, "--root", root, "--json", "status", "app").out)
    assert status["widened"] == [
        "low-ports",
        "wx-memory",
        "write:/srv/app/uploads",
        "write:/var/cache/app",
    ]
    # Withdrawn by hand: doctor says the running release would not install again.
    settings_file = root / "etc/pyrelctl/app/settings.json"
    kept = settings_file.read_text()
    settings_file.write_text(json.dumps({k: v for k, v in settings.items() if k != "allow"}))
    doctor = json.loads(run(capsys, "--root", root, "--json", "doctor", "app").out)
    sandbox = [f for f in doctor["findings"] if f["check"] == "sandbox"]
    assert sandbox and sandbox[0]["severity"] == "problem", sandbox
    assert "--allow low-ports" in sandbox[0]["fix"]
    settings_file.write_text(kept)
    # Withdrawn: the next one is refused, and so is a rollback to a wide release.
    narrow = release(tmp_path, version="3.0.0")
    assert run(capsys, "--root", root, "install", "--allow-reset", narrow).code == 0
    before = snapshot(root)
    back = run(capsys, "--root", root, "rollback", "app")
    assert_one_error_line(back, "low-ports")
    assert snapshot(root) == before


@pytest.mark.parametrize("value", ["everything", "write:relative", "write:/", "write:/a b"])
def test_bad_allow_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path, value: str
) -> None:
    refused(capsys, root, ["--allow", value, release(tmp_path)], "")
