"""`pyrelctl build` when pip cannot build a wheel: the error names the package and why.

Offline: the project, its broken dependency (an sdist whose backend fails
in build_wheel) and a stand-in sdnotify wheel are on disk, built by a
small in-tree PEP 517 backend, and pip runs with no index, no config
file and no cache. How pip 23.0.1 (Debian 12's venv) and 26.x word such a
failure was seen on this host; the canned outputs below are theirs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrelctl.wheels import BuildFailure, pip_build_failure

PYRELCTL = Path(sys.executable).parent / "pyrelctl"

#: A PEP 517 backend in a dozen lines, configured by tiny.json beside it.
BACKEND = textwrap.dedent(
    """
    import base64, hashlib, json, os, sys, zipfile

    CONF = json.load(open(os.path.join(os.path.dirname(__file__), "tiny.json")))
    NAME, VERSION = CONF["name"], CONF["version"]
    INFO = f"{NAME}-{VERSION}.dist-info"

    def _metadata():
        requires = "".join(f"Requires-Dist: {r}\\n" for r in CONF.get("requires", []))
        return f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n{requires}"

    def prepare_metadata_for_build_wheel(directory, config_settings=None):
        os.makedirs(os.path.join(directory, INFO))
        with open(os.path.join(directory, INFO, "METADATA"), "w") as f:
            f.write(_metadata())
        return INFO

    def build_wheel(directory, config_settings=None, metadata_directory=None):
        if CONF.get("fail"):
            for i in range(20):
                print(f"compiling part {i} of frobnicator")
            print("fatal: frobnicator.h: No such file or directory", file=sys.stderr)
            raise SystemExit(1)
        files = {
            f"{NAME}.py": b"",
            f"{INFO}/METADATA": _metadata().encode(),
            f"{INFO}/WHEEL": b"Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
        }
        record = ""
        for name, data in files.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record += f"{name},sha256={digest.decode()},{len(data)}\\n"
        files[f"{INFO}/RECORD"] = (record + f"{INFO}/RECORD,,\\n").encode()
        wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(os.path.join(directory, wheel), "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return wheel
    """
)


#: Appended to BACKEND: the wheel it builds records the uid it ran as (spy.txt),
#: so a test reads who built it from the tarball, whatever user that was.
SPY_UID = """
_build_wheel = build_wheel

def build_wheel(directory, config_settings=None, metadata_directory=None):
    name = _build_wheel(directory, config_settings, metadata_directory)
    with zipfile.ZipFile(os.path.join(directory, name), "a") as zf:
        zf.writestr("spy.txt", str(os.getuid()))
    return name
"""


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory every user can read: as root the build runs pip as another
    user (pyrelctl/buildsteps.py), which must read the links and interpreters
    given to it; pytest's own tmp_path is below a directory only root opens."""
    path = Path(tempfile.mkdtemp(prefix="pyrelctl-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def tiny_project(path: Path, conf: dict[str, object], tool: str = "") -> Path:
    path.mkdir(parents=True)
    (path / "tiny.json").write_text(json.dumps(conf))
    (path / "tinybackend.py").write_text(BACKEND)
    (path / "pyproject.toml").write_text(
        "[build-system]\nrequires = []\n"
        'build-backend = "tinybackend"\nbackend-path = ["."]\n\n'
        f'[project]\nname = "{conf["name"]}"\nversion = "{conf["version"]}"\n' + tool
    )
    (path / "PKG-INFO").write_text(
        f"Metadata-Version: 2.1\nName: {conf['name']}\nVersion: {conf['version']}\n"
    )
    return path


def sdist(project: Path, dest: Path) -> Path:
    out = dest / f"{project.name}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(project, arcname=project.name)
    return out


def stand_in_wheel(dest: Path, name: str, version: str) -> Path:
    """A wheel with metadata only (the runtime's sdnotify, so that no index is needed)."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
        f"{len(d)}\n"
        for n, d in files.items()
    )
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    wheel = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
    return wheel


def offline_env(links: Path) -> dict[str, str]:
    # Nor the caller's PYTHONUNBUFFERED: it decides in what order pip sees the
    # backend's stdout and stderr lines (wheels._last_lines), which pyrelctl must
    # get right whatever the user's environment.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONUNBUFFERED"
    }
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # the host's pip.conf (extra indexes) is not the user's
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=os.fspath(links),
        PIP_NO_CACHE_DIR="1",
    )
    return env


def test_a_dependency_that_fails_to_build_is_named_with_its_last_output(
    tmp_path: Path,
) -> None:
    links = tmp_path / "links"
    links.mkdir()
    sdist(
        tiny_project(
            tmp_path / "src" / "broken-1.0", {"name": "broken", "version": "1.0", "fail": True}
        ),
        links,
    )
    stand_in_wheel(links, "sdnotify", "0.3.2")
    project = tiny_project(
        tmp_path / "app",
        {"name": "app", "version": "1.0", "requires": ["broken==1.0"]},
        '\n[tool.pyrelctl]\nstart = ["python", "-m", "app"]\ntype = "exec"\n',
    )
    proc = subprocess.run(
        [PYRELCTL, "build", project, "-o", tmp_path / "out"],
        capture_output=True,
        text=True,
        env=offline_env(links),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], proc.stderr
    error, hint = lines
    assert "cannot build a wheel of broken" in error
    assert "Building wheel for broken" in error
    # The end of the backend's own output, its last line included; not all of it.
    assert "fatal: frobnicator.h: No such file or directory" in error
    assert "compiling part 19 of frobnicator" in error
    assert "compiling part 2 of" not in error
    assert "gcc" in hint and "-vv" in hint
    # Nothing half-built is left in the output directory.
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_the_project_itself_failing_to_build_is_named(tmp_path: Path) -> None:
    project = tiny_project(
        tmp_path / "app",
        {"name": "app", "version": "1.0", "fail": True},
        '\n[tool.pyrelctl]\nstart = ["python"]\n',
    )
    links = tmp_path / "links"
    links.mkdir()
    proc = subprocess.run(
        [PYRELCTL, "build", project, "-o", tmp_path / "out"],
        capture_output=True,
        text=True,
        env=offline_env(links),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: cannot build a wheel of app: "), proc.stderr
    assert "frobnicator.h" in proc.stderr


# pip 23.0.1 (Debian 12's venv) building sdnotify 0.3.2 without --use-pep517
# and without the wheel package: the failure of issue 16.
PIP_23_LEGACY_STDOUT = """\
Collecting sdnotify
  Downloading sdnotify-0.3.2.tar.gz (2.5 kB)
  Preparing metadata (setup.py): started
  Preparing metadata (setup.py): finished with status 'done'
Building wheels for collected packages: sdnotify
  Building wheel for sdnotify (setup.py): started
  Building wheel for sdnotify (setup.py): finished with status 'error'
  Running setup.py clean for sdnotify
Failed to build sdnotify
"""
PIP_23_LEGACY_STDERR = """\
  error: subprocess-exited-with-error

  \u00d7 python setup.py bdist_wheel did not run successfully.
  \u2502 exit code: 1
  \u2570\u2500> [6 lines of output]
      usage: setup.py [global_opts] cmd1 [cmd1_opts] [cmd2 [cmd2_opts] ...]
         or: setup.py --help [cmd1 cmd2 ...]
         or: setup.py --help-commands
         or: setup.py cmd --help

      error: invalid command 'bdist_wheel'
      [end of output]

  note: This error originates from a subprocess, and is likely not a problem with pip.
  ERROR: Failed building wheel for sdnotify
ERROR: Failed to build one or more wheels
"""

# A build requirement that cannot be fetched (here: no index): no wheel step at all.
PIP_BUILD_DEPS_STDOUT = """\
Looking in links: /tmp/links
Processing ./links/oldpkg-2.1.tar.gz
  Installing build dependencies: started
  Installing build dependencies: finished with status 'error'
"""
PIP_BUILD_DEPS_STDERR = """\
  error: subprocess-exited-with-error

  \u00d7 pip subprocess to install build dependencies did not run successfully.
  \u2502 exit code: 1
  \u2570\u2500> [3 lines of output]
      Looking in links: /tmp/links
      ERROR: Could not find a version that satisfies the requirement setuptools>=40.8.0
      ERROR: No matching distribution found for setuptools>=40.8.0
      [end of output]

  note: This error originates from a subprocess, and is likely not a problem with pip.
error: subprocess-exited-with-error
"""


@pytest.mark.parametrize(
    ("stdout", "stderr", "expected"),
    [
        (
            PIP_23_LEGACY_STDOUT,
            PIP_23_LEGACY_STDERR,
            BuildFailure(
                package="sdnotify",
                step="python setup.py bdist_wheel",
                last_lines=(
                    "usage: setup.py [global_opts] cmd1 [cmd1_opts] [cmd2 [cmd2_opts] ...]",
                    "or: setup.py --help [cmd1 cmd2 ...]",
                    "or: setup.py --help-commands",
                    "or: setup.py cmd --help",
                    "error: invalid command 'bdist_wheel'",
                ),
            ),
        ),
        (
            PIP_BUILD_DEPS_STDOUT,
            PIP_BUILD_DEPS_STDERR,
            BuildFailure(
                package="oldpkg 2.1",
                step="pip subprocess to install build dependencies",
                last_lines=(
                    "Looking in links: /tmp/links",
                    "ERROR: Could not find a version that satisfies the requirement "
                    "setuptools>=40.8.0",
                    "ERROR: No matching distribution found for setuptools>=40.8.0",
                ),
            ),
        ),
    ],
)
def test_pip_build_failure_parses_what_pip_prints(
    stdout: str, stderr: str, expected: BuildFailure
) -> None:
    assert pip_build_failure(stdout, stderr) == expected


def test_other_pip_failures_are_not_build_failures() -> None:
    stderr = (
        "ERROR: Could not find a version that satisfies the requirement flask>=99\n"
        "ERROR: No matching distribution found for flask>=99\n"
    )
    assert pip_build_failure("Collecting flask>=99\n", stderr) is None
    assert pip_build_failure("", "") is None


def test_only_the_last_lines_of_the_backend_output_are_kept() -> None:
    body = "".join(f"      line {i}\n" for i in range(40))
    stderr = (
        "  \u00d7 Building wheel for x (pyproject.toml) did not run successfully.\n"
        f"  \u2570\u2500> [40 lines of output]\n{body}      [end of output]\n"
        "  ERROR: Failed building wheel for x\n"
    )
    failure = pip_build_failure("", stderr)
    assert failure == BuildFailure(
        "x", "Building wheel for x (pyproject.toml)", tuple(f"line {i}" for i in range(35, 40))
    )


def test_an_error_line_before_the_last_lines_is_kept() -> None:
    """A backend whose stdout was block-buffered: its stderr line came first (pip
    23.0.1, 25.1 and 26.3 alike: they pass both through one pipe)."""
    body = "      fatal error: frobnicator.h: No such file or directory\n" + "".join(
        f"      compiling part {i}\n" for i in range(20)
    )
    stderr = (
        "  \u00d7 Building wheel for x (pyproject.toml) did not run successfully.\n"
        f"  \u2570\u2500> [21 lines of output]\n{body}      [end of output]\n"
        "  ERROR: Failed building wheel for x\n"
    )
    failure = pip_build_failure("", stderr)
    assert failure is not None
    assert failure.last_lines == (
        "fatal error: frobnicator.h: No such file or directory",
        *(f"compiling part {i}" for i in range(15, 20)),
    )


def test_an_interpreter_without_pip_is_named_with_the_package_to_install(
    tmp_path: Path,
) -> None:
    """The .deb runs on /usr/bin/python3, whose pip is the separate python3-pip."""
    venv = tmp_path / "nopip"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True)
    project = tiny_project(
        tmp_path / "app",
        {"name": "app", "version": "1.0"},
        '\n[tool.pyrelctl]\nstart = ["python"]\n',
    )
    proc = subprocess.run(
        [PYRELCTL, "build", project, "-o", tmp_path / "out", "--python", venv / "bin" / "python"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {venv}/bin/python has no pip, which pyrelctl build needs",
        "hint: install it (Debian: apt-get install python3-pip), "
        "or build with --python PYTHON of a virtualenv that has pip",
    ]
