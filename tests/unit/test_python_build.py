"""`pyrelctl build` and installing python releases offline (under --root).

The example project (examples/pyshop) is built for real: pip may fetch its
dependencies from the index on this host. The install runs in a network
namespace of its own (`unshare -n`), so it could not reach any index.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools import pyreleases
from pyrelctl import checksums
from pyrelctl.buildconfig import BuildConfig, read_config, render_manifest
from pyrelctl.buildlock import read_lock
from pyrelctl.errors import BadInput
from pyrelctl.manifest import detect
from pyrelctl.openartifact import open_artifact
from pyrelctl.release import Kind, ServiceType
from pyrelctl.units import ServiceSpec, render_service
from pyrelctl.wheels import repack_wheel, write_runtime_wheel

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pyshop"
PYRELCTL = Path(sys.executable).parent / "pyrelctl"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pyrelctl(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYRELCTL, *(os.fspath(a) for a in args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def build_example(tmp: Path, *, epoch: str | None = None, touch: bool = False) -> Path:
    """Copy the example (fresh mtimes, another path) and build it; return the tarball."""
    project = tmp / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("dist", "__pycache__"))
    if touch:
        for path in project.rglob("*"):
            os.utime(path, (1_700_000_000, 1_700_000_000))
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = epoch
    proc = pyrelctl("--json", "build", project, "-o", tmp / "out", env=env)
    assert proc.returncode == 0, proc.stderr
    return Path(json.loads(proc.stdout)["artifact"])


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_example(tmp_path_factory.mktemp("build-a"))


# -- build ---------------------------------------------------------------------


def test_build_is_byte_identical(example: Path, tmp_path: Path) -> None:
    again = build_example(tmp_path, touch=True)
    assert again.name == example.name == "pyshop-1.0.0.tar.gz"
    assert sha256(again) == sha256(example)


def test_build_honours_source_date_epoch(example: Path, tmp_path: Path) -> None:
    dated = build_example(tmp_path, epoch="1700000000")
    assert sha256(dated) != sha256(example)
    raw = dated.read_bytes()
    # gzip: no FNAME flag, MTIME 0.
    assert raw[3] & 0x08 == 0
    assert raw[4:8] == b"\0\0\0\0"
    with tarfile.open(dated) as tar:
        members = tar.getmembers()
    assert {m.mtime for m in members} == {1_700_000_000}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert [m.name for m in members] == sorted(m.name for m in members)


def test_build_contents_and_manifest(example: Path) -> None:
    with tarfile.open(example) as tar:
        names = tar.getnames()
        manifest = tomllib.loads(tar.extractfile("release.toml").read().decode())  # type: ignore[union-attr]
        sums = checksums.parse(tar.extractfile("SHA256SUMS").read())  # type: ignore[union-attr]
    wheels = {n for n in names if n.startswith("wheelhouse/") and n.endswith(".whl")}
    assert any(n.startswith("wheelhouse/flask-3.1.3-") for n in wheels)
    assert any(n.startswith("wheelhouse/pyrelctl_runtime-0.1.0-") for n in wheels)
    assert any(n.startswith("wheelhouse/pyshop-1.0.0-") for n in wheels)
    assert set(sums) == {n for n in names if n.endswith((".whl", ".toml"))}
    assert manifest["release"] == {
        "name": "pyshop",
        "version": "1.0.0",
        "kind": "python",
        "description": manifest["release"]["description"],
    }
    assert manifest["python"]["start"] == ["pyshop"]
    assert manifest["python"]["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    # Pinned by the example's requirements.txt, and one wheel per package.
    assert "gunicorn==27.0.1" in manifest["python"]["packages"]
    assert len(manifest["python"]["packages"]) == len(wheels)
    assert manifest["service"] == {"type": "notify"}
    assert manifest["socket"] == {"listen": ["127.0.0.1:8000"], "name": "listen"}
    with open_artifact(example) as artifact:
        release = detect(artifact)
    assert (release.kind, release.service_type) == (Kind.PYTHON, ServiceType.NOTIFY)
    assert release.command("rpc") == ("bin/pyshop", "rpc")


# -- manifest and configuration --------------------------------------------------


def fake_release(root: Path, manifest: str) -> Path:
    """A release directory with the files a manifest names (empty wheels)."""
    for name in ("wheelhouse/demo-2.0-py3-none-any.whl", "tools/pip-24.0-py3-none-any.whl"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    (root / "release.toml").write_text(manifest)
    return root


def test_manifest_round_trips_through_detect(tmp_path: Path) -> None:
    config = read_config(
        {
            "tool": {
                "pyrelctl": {
                    "start": ["gunicorn", "demo:app", "--bind", "unix:/run/demo/web.sock"],
                    "type": "exec",
                    "health": {"http": "http://127.0.0.1:9000/ok"},
                    "environment": {"DEMO_MODE": 'quoted "value" \\ here'},
                }
            }
        }
    )
    text = render_manifest(
        name="demo",
        version="2.0",
        description="A demo",
        python="3.11",
        config=config,
        packages=["demo==2.0"],
        pip="tools/pip-24.0-py3-none-any.whl",
    )
    with open_artifact(fake_release(tmp_path, text)) as artifact:
        release = detect(artifact)
    assert release.kind is Kind.PYTHON
    assert release.service_type is ServiceType.EXEC
    assert release.health is not None and release.health.http == "http://127.0.0.1:9000/ok"
    assert release.environment == {"DEMO_MODE": 'quoted "value" \\ here'}
    assert tomllib.loads(text)["python"]["start"][3] == "unix:/run/demo/web.sock"


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ({}, "[tool.pyrelctl] is missing"),
        ({"pyrelctl": {"start": "x", "sart": 1}}, "unknown key 'sart'"),
        ({"pyrelctl": {"start": []}}, "start must be"),
        ({"pyrelctl": {"start": ["bin/x"]}}, "start must be"),
        ({"pyrelctl": {"start": "x", "type": "forking"}}, "type must be"),
        ({"pyrelctl": {"start": "x", "health": {"http": "a", "tcp": "b"}}}, "exactly one"),
        ({"pyrelctl": {"start": "x", "name": "Bad_Name"}}, "not a valid app name"),
    ],
)
def test_bad_tool_config_is_refused(tool: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_config({"tool": tool})


def test_manifest_packages_must_have_wheels(tmp_path: Path) -> None:
    text = render_manifest(
        name="demo",
        version="2.0",
        description="",
        python="3.11",
        config=BuildConfig(start=("demo",)),
        packages=["demo==2.0", "missing==1.0"],
        pip="tools/pip-24.0-py3-none-any.whl",
    )
    with (
        open_artifact(fake_release(tmp_path, text)) as artifact,
        pytest.raises(BadInput, match=r"missing==1\.0, which has no wheel"),
    ):
        detect(artifact)


def test_read_lock_requirements_and_pylock(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("Werkzeug==3.1.9 \\\n    --hash=sha256:abc\n")
    (tmp_path / "requirements.txt").write_text(
        "# pinned\n-r base.txt\nflask[async]==3.1.3 ; python_version >= '3.9'  # web\n"
        "--index-url https://example.invalid/simple\n"
    )
    lock = read_lock(tmp_path / "requirements.txt")
    assert lock.pins == {"werkzeug": "3.1.9", "flask": "3.1.3"}
    assert lock.complete
    assert "flask==3.1.3 ; python_version >= '3.9'" in lock.constraints  # no extras
    (tmp_path / "loose.txt").write_text("flask>=3\n")
    assert not read_lock(tmp_path / "loose.txt").complete
    (tmp_path / "pylock.toml").write_text(
        'lock-version = "1.0"\n[[packages]]\nname = "Flask"\nversion = "3.1.3"\n'
    )
    assert read_lock(tmp_path / "pylock.toml").pins == {"flask": "3.1.3"}


def test_runtime_wheel_and_repack_are_reproducible(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_runtime_wheel(tmp_path / "a", 1_700_000_000)
    b = write_runtime_wheel(tmp_path / "b", 1_700_000_000)
    assert a.read_bytes() == b.read_bytes()
    before = a.read_bytes()
    repack_wheel(a, 0)  # clamped to 1980: a zip cannot hold earlier times
    assert a.read_bytes() != before
    repack_wheel(b, 0)
    assert a.read_bytes() == b.read_bytes()


# -- checksums and offline install ----------------------------------------------


def rewrite(src: Path, dest: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """Copy a release tarball, passing each file through `change` (None drops it)."""
    out = io.BytesIO()
    with tarfile.open(src) as tin, tarfile.open(fileobj=out, mode="w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if data is not None:
                data = change(member.name, data)
                if data is None:
                    continue
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data) if data is not None else None)
    dest.write_bytes(gzip.compress(out.getvalue()))
    return dest


def flip_a_byte(name: str, data: bytes) -> bytes:
    if name.startswith("wheelhouse/flask-"):
        return data[:100] + bytes([data[100] ^ 1]) + data[101:]
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (flip_a_byte, "checksum mismatch for wheelhouse/flask-"),
        (lambda n, d: None if n == "SHA256SUMS" else d, "no SHA256SUMS"),
        (lambda n, d: None if n.startswith("wheelhouse/click-") else d, "has no wheel in"),
    ],
    ids=["tampered", "no-sums", "missing-file"],
)
def test_bad_checksums_are_refused_before_anything_is_written(
    example: Path, tmp_path: Path, change: Callable[[str, bytes], bytes | None], message: str
) -> None:
    bad = rewrite(example, tmp_path / "pyshop-1.0.0.tar.gz", change)
    root = tmp_path / "root"
    root.mkdir()
    proc = pyrelctl("--root", root, "install", bad)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert list(root.iterdir()) == []


def test_offline_install_makes_a_relocated_precompiled_venv(example: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    # A network namespace of its own, with not even loopback up: no index is reachable.
    proc = subprocess.run(
        ["unshare", "--net", PYRELCTL, "--root", root, "install", example],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    release = root / "opt/pyshop/releases/1.0.0"
    final = "/opt/pyshop/releases/1.0.0"
    assert os.readlink(root / "opt/pyshop/current") == "releases/1.0.0"
    # The venv names its final path, never the staging directory it was built in.
    assert (release / "venv/bin/pyshop").read_text().splitlines()[0] == f"#!{final}/venv/bin/python"
    for path in [release / "venv/pyvenv.cfg", *(release / "venv/bin").iterdir()]:
        if path.is_file() and not path.is_symlink():
            assert b".incomplete-" not in path.read_bytes(), path
    script = (release / "bin/pyshop").read_text()
    assert f"exec {final}/venv/bin/pyshop" in script
    assert "/run/pyshop/rpc.sock" in script
    assert os.stat(release / "bin/pyshop").st_mode & 0o777 == 0o755
    # Every module has an unchecked-hash pyc (PEP 552 flags == 0b01), and the
    # file name compiled into it is the final path.
    sources = list((release / "venv/lib").rglob("*.py"))
    assert len(sources) > 100
    for source in sources:
        tag = sys.implementation.cache_tag
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        assert pyc.read_bytes()[4] == 1, pyc
    flask_pyc = next((release / "venv/lib").rglob("flask/__pycache__/app.*.pyc")).read_bytes()
    assert f"{final}/venv/lib/".encode() in flask_pyc
    assert b".incomplete-" not in flask_pyc
    # Readable by the service's user, writable by nobody but root.
    modes = {p.stat().st_mode & 0o022 for p in release.rglob("*") if not p.is_symlink()}
    assert modes == {0}
    # The venv works (it finds itself from pyvenv.cfg, wherever it lies now).
    check = subprocess.run(
        [
            release / "venv/bin/python",
            "-c",
            "import flask, gunicorn, pyrelctl_runtime, pyshop.server",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_missing_interpreter_is_a_clear_error(example: Path, tmp_path: Path) -> None:
    def python_399(name: str, data: bytes) -> bytes:
        return (
            data.replace(b'python = "3.', b'python = "3.99"\n#') if name == "release.toml" else data
        )

    odd = rewrite(example, tmp_path / "odd.tar.gz", python_399)
    # Keep the checksums right: only the interpreter is wrong.
    with tarfile.open(odd) as tar:
        manifest = tar.extractfile("release.toml").read()  # type: ignore[union-attr]
    digest = hashlib.sha256(manifest).hexdigest()

    def fix_sums(name: str, data: bytes) -> bytes:
        if name != "SHA256SUMS":
            return data
        sums = checksums.parse(data)
        sums["release.toml"] = digest
        return checksums.render(sums)

    odd = rewrite(odd, tmp_path / "pyshop-1.0.0.tar.gz", fix_sums)
    root = tmp_path / "root"
    root.mkdir()
    proc = pyrelctl("--root", root, "install", odd)
    assert proc.returncode == 1, proc.stderr
    assert "needs python3.99, which is not installed" in proc.stderr
    assert "hint: install it" in proc.stderr
    assert list((root / "opt/pyshop/releases").iterdir()) == []


def test_python_unit_is_notify_with_notify_access_all(example: Path) -> None:
    with open_artifact(example) as artifact:
        release = detect(artifact)
    text = render_service(ServiceSpec(app="shop", release=release))
    assert "\nType=notify\n" in text
    # READY=1 comes from a gunicorn worker, not the main process.
    assert "\nNotifyAccess=all\n" in text
    assert '\nExecStart="/opt/shop/current/bin/pyshop" "start"\n' in text


# -- nothing of the release runs as root ------------------------------------------


@pytest.fixture
def markers() -> Iterator[Path]:
    """A directory any user can write, where a payload leaves the uid it ran as."""
    path = Path(tempfile.mkdtemp(prefix="pyrelctl-markers-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def test_a_release_that_ships_its_venv_is_refused_before_anything_runs(
    example: Path, tmp_path: Path, markers: Path
) -> None:
    bad = pyreleases.add_venv_python(example, tmp_path / "pyshop-1.0.0.tar.gz", [str(markers)])
    root = tmp_path / "root"
    root.mkdir()
    proc = pyrelctl("--root", root, "install", bad)
    assert proc.returncode == 2, proc.stderr
    assert "the python release contains venv/bin/python" in proc.stderr
    assert list(root.iterdir()) == []
    assert list(markers.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "link", "message"),
    [
        ("venv/pyvenv.cfg", None, "contains venv/pyvenv.cfg: venv/ is made at install"),
        ("bin/pyshop", None, "contains bin/pyshop: bin/pyshop is written by pyrelctl"),
        ("bin", "wheelhouse", "contains bin: bin/pyshop is written by pyrelctl"),
    ],
    ids=["venv", "launcher", "bin-link"],
)
def test_a_release_with_what_the_install_writes_is_refused(
    example: Path, tmp_path: Path, name: str, link: str | None, message: str
) -> None:
    bad = pyreleases.add_member(example, tmp_path / "pyshop-1.0.0.tar.gz", name, link=link)
    root = tmp_path / "root"
    root.mkdir()
    proc = pyrelctl("--root", root, "install", bad)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert list(root.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the offline build drops root's privileges")
def test_offline_build_as_root_runs_the_release_code_as_nobody(
    example: Path, tmp_path: Path, markers: Path
) -> None:
    """Offline as root, a wheel's .pth (compileall runs it) and the release's pip run as nobody."""
    pth = pyreleases.add_pth_wheel(example, tmp_path / "pth" / example.name, [str(markers)])
    root = tmp_path / "root"
    root.mkdir()
    proc = pyrelctl("--root", root, "install", pth)
    assert proc.returncode == 0, proc.stderr
    assert "setpriv, no network" in proc.stderr
    release = root / "opt/pyshop/releases/1.0.0"
    in_venv = release / "venv" / pyreleases.marker_name("pth")
    assert {p.name: p.read_text() for p in markers.iterdir()} == {
        pyreleases.marker_name("pth"): in_venv.read_text()
    }
    assert int(in_venv.read_text()) != 0
    # Taken over by root: owned by root, writable by nobody else.
    entries = [release, *release.rglob("*")]
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in entries} == {(0, 0)}
    assert {p.stat().st_mode & 0o022 for p in entries if not p.is_symlink()} == {0}

    pip = pyreleases.replace_pip(example, tmp_path / "pip" / example.name, [str(markers)])
    other = tmp_path / "other"
    other.mkdir()
    proc = pyrelctl("--root", other, "install", pip)
    assert proc.returncode == 1, proc.stderr
    assert "the install step ran as uid" in proc.stderr
    marker = markers / pyreleases.marker_name("pip")
    assert int(marker.read_text()) != 0
    assert list((other / "opt/pyshop/releases").iterdir()) == []


# -- install --dry-run (issue 26 item 7) ----------------------------------------

MODULE = (
    REPO
    / "packaging/ansible/ansible_collections/pyrelctl/deploy/plugins/modules/pyrelctl_release.py"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, an install would run the release's code")
def test_dry_run_renders_the_units_of_an_install_and_runs_no_code_of_the_release(
    example: Path, tmp_path: Path, markers: Path
) -> None:
    """install --dry-run checks a python release and renders its units, yet neither its
    pip nor its wheels' .pth files run (a real install runs both, as nobody)."""
    pth = pyreleases.add_pth_wheel(example, tmp_path / "pth" / example.name, [str(markers)])
    pip = pyreleases.replace_pip(pth, tmp_path / "pip" / example.name, [str(markers)])
    root = tmp_path / "root"
    root.mkdir()
    proc = pyrelctl("--root", root, "--json", "install", pip, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert list(markers.iterdir()) == []
    assert list(root.iterdir()) == []  # nothing written, not even a lock
    seen = json.loads(proc.stdout)
    assert seen["dry_run"] is True
    assert (seen["app"], seen["version"], seen["previous"]) == ("pyshop", "1.0.0", None)
    assert seen["changed"] is True
    units = ["/etc/systemd/system/pyshop.service", "/etc/systemd/system/pyshop.socket"]
    assert seen["unit_changes"] == units
    # The units are the ones a real install writes (which runs the .pth, as nobody).
    installed = tmp_path / "installed"
    installed.mkdir()
    proc = pyrelctl("--root", installed, "install", pth, "--no-start")
    assert proc.returncode == 0, proc.stderr
    assert seen["units"] == {path: (installed / path[1:]).read_text() for path in units}
    assert [p.name for p in markers.iterdir()] == [pyreleases.marker_name("pth")]
    # Against the installed tree: nothing would change.
    proc = pyrelctl("--root", installed, "--json", "install", pth, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert (again["previous"], again["changed"], again["unit_changes"]) == ("1.0.0", False, [])


def test_dry_run_refuses_what_an_install_refuses(example: Path, tmp_path: Path) -> None:
    bad = pyreleases.add_member(example, tmp_path / "pyshop-1.0.0.tar.gz", "venv/pyvenv.cfg")
    root = tmp_path / "root"
    root.mkdir()
    proc = pyrelctl("--root", root, "install", bad, "--dry-run")
    assert proc.returncode == 2, proc.stderr
    assert "contains venv/pyvenv.cfg" in proc.stderr
    assert list(root.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, an install would run the release's code")
def test_ansible_check_mode_runs_no_code_of_the_release(
    example: Path, tmp_path: Path, markers: Path
) -> None:
    """Issue 26 item 7: the pyrelctl_release module's check mode (and its probe with
    --diff or config) learns the release's app, version and unit without running its
    pip or its .pth files. The module runs as Ansible runs it on the host (its
    arguments in a file); pyrelctl under a --root of the test's own."""
    pth = pyreleases.add_pth_wheel(example, tmp_path / "pth" / example.name, [str(markers)])
    root = tmp_path / "root"
    root.mkdir()
    wrapper = tmp_path / "pyrelctl"
    wrapper.write_text(f'#!/bin/sh\nexec {PYRELCTL} --root {root} "$@"\n')
    wrapper.chmod(0o755)
    args = tmp_path / "args.json"
    module_tmp = tmp_path / "module-tmp"
    module_tmp.mkdir()
    args.write_text(
        json.dumps(
            {
                "ANSIBLE_MODULE_ARGS": {
                    "artifact": str(pth),
                    "executable": str(wrapper),
                    "_ansible_check_mode": True,
                    "_ansible_diff": True,
                    "_ansible_tmpdir": str(module_tmp),
                    "_ansible_remote_tmp": str(module_tmp),
                }
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, MODULE, args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "packaging/ansible")},
        timeout=600,
        check=False,
    )
    result = json.loads(proc.stdout)
    assert not result.get("failed"), result
    assert list(markers.iterdir()) == []
    assert (result["app"], result["version"], result["changed"]) == ("pyshop", "1.0.0", True)
    (version, unit) = result["diff"]
    assert (version["before"], version["after"]) == ("", "releases/1.0.0\n")
    assert "ExecStart=" in unit["after"]
    assert list(root.iterdir()) == []
