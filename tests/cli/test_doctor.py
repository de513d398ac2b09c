"""`pyrelctl doctor` offline (--root): deliberately broken hosts, each detected with a fix
that works, and what doctor must not complain about."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from tests.cli.conftest import Result, run
from tests.unit.test_release import mix_files, write_tree


@pytest.fixture
def root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A healthy host below tmp_path/root: generic app `hello` (1.0, 2.0), mix app `shop`."""
    root = tmp_path / "root"
    root.mkdir()
    for version in ("1.0", "2.0"):
        artifact = make_generic_release(tmp_path / "a", name="hello", version=version)
        assert run(capsys, "--root", root, "install", artifact).code == 0
    shop = write_tree(tmp_path / "shop-1.0.0", mix_files("shop", "1.0.0"))
    assert run(capsys, "--root", root, "install", shop).code == 0
    return root


def doctor(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> Result:
    return run(capsys, "--root", root, "doctor", *args)


def findings(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> dict[str, object]:
    result = run(capsys, "--root", root, "--json", "doctor", *args)
    document: dict[str, object] = json.loads(result.out)
    document["exit"] = result.code
    return document


def apply_fix(capsys: pytest.CaptureFixture[str], fix: str) -> None:
    """Run the printed fix the way an operator would paste it."""
    if fix.startswith("pyrelctl "):
        assert run(capsys, *shlex.split(fix)[1:]).code == 0, fix
    else:
        subprocess.run(["sh", "-c", fix], check=True)


def test_a_healthy_host_has_no_problems(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = doctor(capsys, root)
    assert result.code == 0, result.out
    assert result.out.splitlines()[-1] == "no problems found"
    document = findings(capsys, root)
    assert document["ok"] is True and document["exit"] == 0
    rows = document["findings"]
    assert isinstance(rows, list)
    assert {r["severity"] for r in rows} <= {"ok", "info", "skipped"}
    assert {"hello", "shop", "host"} == {r["subject"] for r in rows}
    # The checks that matter ran, on both apps.
    ran = {(r["subject"], r["check"]) for r in rows}
    for app in ("hello", "shop"):
        assert {(app, "current"), (app, "unit-file"), (app, "secrets")} <= ran


@dataclass(frozen=True)
class Broken:
    """One deliberately broken host state: how to break it, what doctor must say."""

    check: str
    subject: str
    breaks: Callable[[Path], None]
    fix_works: bool = True  # the printed fix, pasted, makes doctor pass again


def _chmod(rel: str, mode: int) -> Callable[[Path], None]:
    return lambda root: (root / rel).chmod(mode)


def _edit_unit(root: Path) -> None:
    unit = root / "etc/systemd/system/hello.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=no"))


def _write_secret(root: Path) -> None:
    (root / "etc/pyrelctl/hello/env").write_text("API_TOKEN=hunter2\n")  # umask: 0644


def _dangling_current(root: Path) -> None:
    shutil.rmtree(root / "opt/hello/releases/2.0")


def _stray_socket(root: Path) -> None:
    (root / "etc/systemd/system/hello.socket").write_text("[Socket]\nListenStream=80\n")


def _huge_release(root: Path) -> None:
    index = root / "var/lib/pyrelctl/hello/releases.json"
    data = json.loads(index.read_text())
    data["1.0"]["size"] = 2**60  # an exbibyte: no disk has twice that free
    index.write_text(json.dumps(data))


BROKEN = {
    "etc-pyrelctl-readable": Broken("etc-permissions", "host", _chmod("etc/pyrelctl", 0o755)),
    "secret-readable": Broken("secrets", "hello", _write_secret),
    "cookie-readable": Broken("secrets", "shop", _chmod("etc/pyrelctl/shop/cookie", 0o644)),
    "cookie-missing": Broken(
        "secrets", "shop", lambda root: (root / "etc/pyrelctl/shop/cookie").unlink()
    ),
    "build-cookie-readable": Broken(
        "cookie", "shop", _chmod("opt/shop/releases/1.0.0/releases/COOKIE", 0o644)
    ),
    "unit-edited": Broken("unit-file", "hello", _edit_unit),
    "unit-missing": Broken(
        "unit-file", "hello", lambda root: (root / "etc/systemd/system/hello.service").unlink()
    ),
    "current-dangling": Broken("current", "hello", _dangling_current),
    "release-writable": Broken(
        "release-permissions", "hello", _chmod("opt/hello/releases/2.0/bin/hello", 0o777)
    ),
    "releases-dir-writable": Broken(
        "release-permissions", "hello", _chmod("opt/hello/releases", 0o777)
    ),
    "disk-too-small": Broken("disk", "host", _huge_release, fix_works=False),
    "socket-stray": Broken("socket", "hello", _stray_socket),
}


@pytest.mark.parametrize("state", list(BROKEN))
def test_broken_state_is_detected_with_a_fix_that_works(
    state: str, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = BROKEN[state]
    broken.breaks(root)
    document = findings(capsys, root)
    assert document["exit"] == 1 and document["ok"] is False
    rows = document["findings"]
    assert isinstance(rows, list)
    problems = [r for r in rows if r["severity"] == "problem"]
    assert [(r["subject"], r["check"]) for r in problems] == [(broken.subject, broken.check)], (
        problems
    )
    (problem,) = problems
    assert problem["fix"], problem
    human = doctor(capsys, root)
    assert human.code == 1
    assert f"fix: {problem['fix']}" in human.out
    assert human.out.splitlines()[-1].startswith("1 problem")
    if broken.fix_works:
        fix = str(problem["fix"])
        # A unit edited by hand: keep the edit in a drop-in, then re-render.
        apply_fix(capsys, fix.partition("then: ")[2] or fix)
        after = doctor(capsys, root)
        assert after.code == 0, after.out


def test_a_checksum_mismatch_in_the_current_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = make_generic_release(tmp_path / "a", name="sums", version="1.0", tarball=False)
    files = sorted(p for p in release.rglob("*") if p.is_file())
    (release / "SHA256SUMS").write_text(
        "".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(release)}\n"
            for p in files
        )
    )
    root = tmp_path / "root"
    assert run(capsys, "--root", root, "install", release).code == 0
    assert doctor(capsys, root).code == 0
    (root / "opt/sums/releases/1.0/www/index.html").write_text("defaced\n")
    document = findings(capsys, root)
    rows = document["findings"]
    assert isinstance(rows, list)
    (problem,) = [r for r in rows if r["severity"] == "problem"]
    assert problem["check"] == "checksums"
    assert problem["details"] == ["www/index.html: changed"]


def test_warnings_and_information_do_not_fail(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leftover = root / "opt/hello/releases/.incomplete-3.0.abcd"
    leftover.mkdir()
    dropins = root / "etc/systemd/system/hello.service.d"
    dropins.mkdir()
    (dropins / "override.conf").write_text("[Service]\nEnvironment=A=1\n")
    (dropins / "override.conf.orig").write_text("")
    unit = root / "etc/systemd/system/shop.service"
    unit.write_text("# a comment of the operator\n" + unit.read_text())

    result = doctor(capsys, root)
    assert result.code == 0, result.out
    document = findings(capsys, root)
    rows = document["findings"]
    assert isinstance(rows, list)
    by_check = {(r["subject"], r["check"], r["severity"]): r for r in rows}
    assert by_check[("hello", "leftovers", "warning")]["fix"] == f"rm -rf -- {leftover}"
    assert by_check[("hello", "drop-ins", "info")]["details"] == [str(dropins / "override.conf")]
    assert by_check[("hello", "drop-ins", "warning")]["details"] == [
        str(dropins / "override.conf.orig")
    ]
    assert ("shop", "unit-file", "warning") in by_check  # comments only
    assert document["warnings"] == 3 and document["problems"] == 0


def test_quiet_shows_only_what_needs_attention(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (root / "etc/pyrelctl").chmod(0o755)
    out = run(capsys, "--root", root, "-q", "doctor").out
    assert "PROBLEM" in out and " ok " not in out
    assert "hello" not in out.splitlines()  # no app had anything to say


def test_colour_only_on_a_terminal_and_never_with_no_color(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "\033[" not in doctor(capsys, root).out  # captured: not a terminal
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\033[32m" in doctor(capsys, root).out
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\033[" not in doctor(capsys, root).out


def test_an_app_that_is_not_installed(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = doctor(capsys, root, "nope")
    assert result.code == 2
    assert result.err_lines[0] == "error: app 'nope' is not installed"


def test_only_the_app_asked_for(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / "etc/systemd/system/shop.service").unlink()
    assert doctor(capsys, root, "hello").code == 0
    assert doctor(capsys, root, "shop").code == 1


#: os-release(5) files, and what doctor says of each host (the tested ones: Debian 12, 13).
OS_RELEASES = [
    ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n', "ok", None),
    ("PRETTY_NAME='Debian GNU/Linux 13 (trixie)'\nID=debian\nVERSION_ID=13\n", "ok", None),
    (
        'PRETTY_NAME="Debian GNU/Linux forky/sid"\nID=debian\n',
        "info",
        "Debian GNU/Linux forky/sid is not a host pyrelctl was tested on",
    ),
    (
        'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n',
        "info",
        "Ubuntu 24.04.1 LTS is not a host pyrelctl was tested on",
    ),
    (
        '# a comment\nNAME="Fedora Linux"\nID=fedora\nVERSION_ID=41\n',
        "info",
        "Fedora Linux 41 is not a host pyrelctl was tested on",
    ),
    (None, "info", "cannot tell which host this is"),
]


@pytest.mark.parametrize(("text", "severity", "says"), OS_RELEASES)
def test_a_host_outside_what_was_tested_is_named_never_a_problem(
    root: Path,
    capsys: pytest.CaptureFixture[str],
    text: str | None,
    severity: str,
    says: str | None,
) -> None:
    os_release = root / "etc/os-release"
    os_release.parent.mkdir(parents=True, exist_ok=True)
    os_release.unlink(missing_ok=True)
    if text is not None:
        os_release.write_text(text)
    document = findings(capsys, root)
    assert document["exit"] == 0 and document["problems"] == 0
    rows = document["findings"]
    assert isinstance(rows, list)
    [row] = [r for r in rows if r["check"] == "distribution"]
    assert row["subject"] == "host"
    assert row["severity"] == severity, row
    if says is None:
        assert "a tested host" in row["message"], row["message"]
    else:
        assert says in row["message"], row["message"]
        assert "tested: Debian 12, Debian 13" in row["message"], row["message"]


def test_os_release_is_read_from_usr_lib_when_etc_has_none(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """os-release(5): /etc/os-release first, else /usr/lib/os-release."""
    (root / "etc/os-release").unlink(missing_ok=True)
    usr_lib = root / "usr/lib/os-release"
    usr_lib.parent.mkdir(parents=True, exist_ok=True)
    usr_lib.write_text('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nVERSION_ID="13"\n')
    rows = findings(capsys, root)["findings"]
    assert isinstance(rows, list)
    [row] = [r for r in rows if r["check"] == "distribution"]
    assert row["severity"] == "ok" and "Debian GNU/Linux 13 (trixie)" in row["message"], row
