"""`pyrelctl build` as root under a real systemd: the project's code runs as a
dynamic user in a sandbox (pyrelctl/buildsteps.py, SystemdSteps), not as root.

The project has the tiny in-tree backend of tests/unit/test_build_failures
(``backend-path``, ``requires = []``) and pip has no index: nothing needs
the network. The backend puts the uid it ran as, and whether it could write
/etc, into the wheel it builds, so the result is read from the tarball.
"""

from __future__ import annotations

import importlib.metadata
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

from devtools.machine import Machine, MachineCommand
from tests.unit.test_build_failures import BACKEND, stand_in_wheel, tiny_project

#: Appended to the backend: record who built the wheel, and try root's files.
SPY = """
_build_wheel = build_wheel

def build_wheel(directory, config_settings=None, metadata_directory=None):
    name = _build_wheel(directory, config_settings, metadata_directory)
    try:
        open("/etc/pyrelctl-build-was-here", "w").close()
        etc = "written"
    except OSError as e:
        etc = type(e).__name__
    with zipfile.ZipFile(os.path.join(directory, name), "a") as zf:
        zf.writestr("spy.txt", f"{os.getuid()} {etc}")
    return name
"""
LINKS = "/srv/pyrelctl-build-links"


def test_building_as_root_runs_the_backend_as_a_dynamic_user(
    machine: Machine, pyrelctl: MachineCommand, scratch: Path
) -> None:
    work = scratch / "build-sandbox"
    shutil.rmtree(work, ignore_errors=True)
    project = tiny_project(
        work / "spyapp",
        {"name": "spyapp", "version": "1.0"},
        '\n[tool.pyrelctl]\nstart = ["python"]\ntype = "exec"\n',
    )
    (project / "tinybackend.py").write_text(BACKEND + SPY)
    links = work / "links"
    links.mkdir()
    stand_in_wheel(links, "sdnotify", "0.3.2")
    stand_in_wheel(links, "pip", importlib.metadata.version("pip"))
    # PrivateTmp= hides the scratch directory (below /tmp) from the build
    # user; pip's find-links must be where it can read them.
    machine.run(["rm", "-rf", LINKS])
    machine.run(["cp", "-r", links, LINKS])
    # What a build killed an hour ago left: swept by the next build.
    stale = "/var/lib/private/pyrelctl-project-build.deadbeef"
    machine.run(["mkdir", "-p", f"{stale}/project"])
    machine.run(["ln", "-sfn", "private/pyrelctl-project-build.deadbeef", "/var/lib/"])
    machine.run(["touch", "-d", "1 hour ago", stale])
    try:
        env = {
            "PIP_CONFIG_FILE": "/dev/null",
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": LINKS,
            "PIP_NO_CACHE_DIR": "1",
        }
        proc = pyrelctl("-vv", "build", project, "-o", work / "out", env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "building as a dynamic user in a sandbox (systemd-run)" in proc.stderr
        with tarfile.open(work / "out" / "spyapp-1.0.tar.gz") as tar:
            member = tar.extractfile("wheelhouse/spyapp-1.0-py3-none-any.whl")
            assert member is not None
            with zipfile.ZipFile(io.BytesIO(member.read())) as zf:
                uid, etc = zf.read("spy.txt").decode().split()
        # systemd's dynamic users are 61184-65519 (systemd.exec(5), DynamicUser=).
        assert 61184 <= int(uid) <= 65519, uid
        assert etc in ("PermissionError", "OSError"), etc
        assert machine.run(["test", "-e", "/etc/pyrelctl-build-was-here"], check=False).returncode
        leftovers = machine.run(
            ["find", "/var/lib", "-maxdepth", "2", "-name", "pyrelctl-project-build*"]
        ).stdout.split()  # neither this build's state nor the stale one
        assert leftovers == []
        units = machine.systemctl("list-units", "--all", "--no-legend", "pyrelctl-build-*")
        assert units.stdout.strip() == ""
    finally:
        machine.run(["rm", "-rf", LINKS, "/etc/pyrelctl-build-was-here"], check=False)
