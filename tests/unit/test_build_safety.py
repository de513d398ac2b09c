"""`pyrelctl build` run by root: the project's code runs unprivileged, root
writes the tarball through no planted link, and reads no file outside the
project for its requirements (issue 26, item 4).

Offline, with the tiny in-tree PEP 517 backend of test_build_failures
(``backend-path``, ``requires = []``): no index is needed.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_build_failures import (
    BACKEND,
    PYRELCTL,
    SPY_UID,
    offline_env,
    stand_in_wheel,
    tiny_project,
)

TOOL = '\n[tool.pyrelctl]\nstart = ["python"]\ntype = "exec"\n'


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A directory every user can read (root's build runs pip as another user)."""
    path = Path(tempfile.mkdtemp(prefix="pyrelctl-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def build(
    project: Path, out: Path, links: Path, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYRELCTL, "build", project, "-o", out],
        capture_output=True,
        text=True,
        env=offline_env(links),
        timeout=300,
        check=False,
        umask=umask,
    )


def links_dir(shared: Path) -> Path:
    links = shared / "links"
    links.mkdir()
    stand_in_wheel(links, "sdnotify", "0.3.2")
    stand_in_wheel(links, "pip", importlib.metadata.version("pip"))  # tools/pip-*.whl
    return links


@pytest.mark.skipif(os.geteuid() != 0, reason="what building as root runs as")
def test_the_projects_backend_does_not_run_as_root(shared: Path) -> None:
    """An in-tree backend that records its uid in the wheel it builds: never 0.

    Read from the tarball, so the test holds on either path root's build
    takes (setpriv without systemd, a dynamic user where systemd is PID 1).
    """
    project = tiny_project(shared / "app", {"name": "app", "version": "1.0"}, TOOL)
    (project / "tinybackend.py").write_text(BACKEND + SPY_UID)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    proc = build(project, shared / "out", links_dir(shared))
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(shared / "out" / "app-1.0.tar.gz") as tar:
        member = tar.extractfile("wheelhouse/app-1.0-py3-none-any.whl")
        assert member is not None, "the backend never built the wheel"
        with zipfile.ZipFile(io.BytesIO(member.read())) as zf:
            uid = int(zf.read("spy.txt"))
    assert uid != 0
    # Root's output: its tarball, nothing the build user could still change.
    artifact = shared / "out" / "app-1.0.tar.gz"
    assert artifact.lstat().st_uid == 0
    assert [p.name for p in (shared / "out").iterdir()] == [artifact.name]
    # The build worked on a copy: the project is as it was (no build/, egg-info).
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="what root hands to the build user")
def test_root_with_umask_077_still_builds(shared: Path) -> None:
    """The files root hands the build user are readable to it whatever root's umask."""
    project = tiny_project(shared / "app", {"name": "app", "version": "1.0"}, TOOL)
    proc = build(project, shared / "out", links_dir(shared), umask=0o077)
    assert proc.returncode == 0, proc.stderr
    assert (shared / "out" / "app-1.0.tar.gz").is_file()


def test_a_link_planted_in_dist_is_not_written_through(shared: Path) -> None:
    project = tiny_project(shared / "app", {"name": "app", "version": "1.0"}, TOOL)
    victim, other = shared / "victim", shared / "other"
    victim.write_text("precious\n")
    other.write_text("also precious\n")
    dist = project / "dist"
    dist.mkdir()
    (dist / ".app-1.0.tar.gz.tmp").symlink_to(victim)
    (dist / "app-1.0.tar.gz").symlink_to(other)
    proc = build(project, dist, links_dir(shared))
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious\n"
    assert other.read_text() == "also precious\n"
    assert (dist / ".app-1.0.tar.gz.tmp").is_symlink()
    artifact = dist / "app-1.0.tar.gz"
    assert not artifact.is_symlink() and artifact.stat().st_size > 0
    assert sorted(p.name for p in dist.iterdir()) == [".app-1.0.tar.gz.tmp", "app-1.0.tar.gz"]


PASSWD = Path("/etc/passwd")


@pytest.mark.parametrize(
    ("files", "tool"),
    [
        ({"requirements.txt": "-r ../../../../../../../../etc/passwd\n"}, ""),
        ({"requirements.txt": "flask==3.0\n-r /etc/passwd\n"}, ""),
        ({"requirements.txt": "--requirement=../../../../../../../../etc/passwd\n"}, ""),
        ({"requirements.txt": "-r../../../../../../../../etc/passwd\n"}, ""),
        ({"requirements.txt": "-c ../../../../../../../../etc/passwd\n"}, ""),
        ({"requirements.txt": "-r more.txt\n", "more.txt": "--constraint /etc/passwd\n"}, ""),
        ({"requirements.txt": "-r link.txt\n", "link.txt": PASSWD}, ""),
        ({"requirements.txt": PASSWD}, ""),
        ({}, 'requirements = "../../../../../../../../etc/passwd"\n'),
    ],
    ids=[
        "r-dotdot",
        "r-absolute",
        "long-equals",
        "r-attached",
        "c-dotdot",
        "nested-constraint",
        "r-symlink",
        "lock-symlink",
        "tool-requirements",
    ],
)
def test_requirements_outside_the_project_are_refused_unread(
    shared: Path, files: dict[str, str | Path], tool: str
) -> None:
    project = tiny_project(shared / "app", {"name": "app", "version": "1.0"}, TOOL + tool)
    for name, content in files.items():
        if isinstance(content, Path):
            (project / name).symlink_to(content)
        else:
            (project / name).write_text(content)
    proc = build(project, shared / "out", links_dir(shared))
    assert proc.returncode == 2, proc.stderr
    assert "outside the project directory" in proc.stderr, proc.stderr
    output = proc.stdout + proc.stderr
    for line in PASSWD.read_text().splitlines():
        assert line.strip() not in output, line
    # Nothing was built.
    assert not (shared / "out").exists() or not any((shared / "out").iterdir())


def test_requirements_inside_the_project_still_include(shared: Path) -> None:
    """-r and -c of files in the project (a subdirectory, ..) are read as before."""
    project = tiny_project(shared / "app", {"name": "app", "version": "1.0"}, TOOL)
    (project / "reqs").mkdir()
    (project / "requirements.txt").write_text("-r reqs/base.txt\n")
    (project / "reqs" / "base.txt").write_text("-c ../pins.txt\n")
    (project / "pins.txt").write_text("sdnotify==0.3.2\n")
    from pyrelctl.buildlock import read_lock

    lock = read_lock(project / "requirements.txt", project.resolve())
    assert lock.constraints == ("sdnotify==0.3.2",)
    assert lock.complete
