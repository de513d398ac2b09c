"""``pyrelctl build``: a Python project -> a python release tarball.

The tarball ``<name>-<version>.tar.gz`` holds:

* ``wheelhouse/``: the project and every dependency as wheels, resolved by
  pip for the build interpreter and pinned by the project's lock where it
  has one (``pylock.toml``, ``requirements.lock`` or ``requirements.txt``),
  plus ``pyrelctl_runtime`` (written here from its sources, so the app
  needs no index that carries it);
* ``tools/pip-*.whl``: the pip that installs the wheelhouse on a host
  without uv (pyrelease.py runs it straight from the wheel);
* ``release.toml``: kind "python", from ``[project]`` and
  ``[tool.pyrelctl]`` (see :mod:`pyrelctl.buildconfig`);
* ``SHA256SUMS``: every other file's checksum, verified at install.

The same input gives the same bytes: members sorted, owned by 0:0 with no
names, modes normalised, every mtime ``SOURCE_DATE_EPOCH`` (default
1980-01-01, the earliest a wheel's zip can hold), gzip without a file name
or time stamp. ``SOURCE_DATE_EPOCH`` is passed on to the project's build
backend, and the project's wheel is repacked with the same times, so
backends that ignore it still build identical releases. Wheels of the
dependencies are the index's own files (their hashes stay those of the
index); dependencies available only as sdists are built by pip, always
through PEP 517 in an isolated build environment (see :func:`_pip_wheel`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import secrets
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrelctl import checksums
from pyrelctl.buildconfig import read_config, render_manifest
from pyrelctl.buildlock import find_lock, inside
from pyrelctl.buildsteps import Steps, interpreter, open_steps
from pyrelctl.errors import BadInput, CommandFailed, HostError
from pyrelctl.manifest import MANIFEST, detect
from pyrelctl.names import APP_NAME_RE, check_version
from pyrelctl.openartifact import open_artifact
from pyrelctl.procs.manifest import commands as procs_commands
from pyrelctl.pyspec import WHEELHOUSE, canonical_name, wheel_name_version
from pyrelctl.wheels import (
    ZIP_EPOCH,
    pip_build_failure,
    repack_wheel,
    wheel_metadata,
    wheel_scripts,
    write_runtime_wheel,
)

RUNTIME_DIST = "pyrelctl-runtime"
TOOLS = "tools"

Say = Callable[[str], None]
log = logging.getLogger(__name__)


def _quiet(_: str) -> None:
    pass


# -- the tarball ---------------------------------------------------------------


def write_tarball(root: Path, dest: Path, epoch: int) -> None:
    """Tar ``root``'s tree into ``dest`` (gzip), byte-reproducibly."""
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    raw = io.BytesIO()
    # No file name and mtime 0 in the gzip header; its OS byte is always 255.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in paths:
            path = root / rel
            info = tarfile.TarInfo(rel)
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = path.stat().st_size
                info.mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)
    write_in_dir(dest.parent, dest.name, raw.getvalue())


def write_in_dir(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` atomically, following no link inside ``directory``.

    ``directory`` itself is followed, as pip's and pypa/build's output
    directories are; in it a temp file of a random name is created with
    O_EXCL|O_NOFOLLOW (a link planted there is never written through) and
    renamed over ``name`` relative to the directory's descriptor (a link at
    ``name`` is replaced, not followed).
    """
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)


# -- the build -----------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    artifact: Path
    name: str
    version: str
    sha256: str
    packages: tuple[str, ...]
    lock: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": str(self.artifact),
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "packages": list(self.packages),
            "lock": self.lock,
            "seconds": self.seconds,
        }


def source_date_epoch(value: str | None = None) -> int:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) as an int, else ZIP_EPOCH."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "") if value is None else value
    if not text:
        return ZIP_EPOCH
    if not text.isascii() or not text.isdigit():
        raise BadInput(f"SOURCE_DATE_EPOCH must be a number of seconds, not {text!r}")
    return int(text)


class _Step:
    """Says what a slow step does, then how long it took."""

    def __init__(self, say: Say, what: str) -> None:
        self.say, self.what = say, what

    def __enter__(self) -> None:
        self.started = time.monotonic()
        self.say(f"{self.what} ...")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.say(f"{self.what}: done ({time.monotonic() - self.started:.1f} s)")


def _python_version(steps: Steps, python: str, env: Mapping[str, str]) -> str:
    code = "import sys; print('%d.%d' % sys.version_info[:2])"
    proc = steps.run("python", [python, "-c", code], env=env, check=False)
    if proc.returncode != 0:
        raise HostError(
            f"{python} did not run as {steps.who}: {proc.stderr.strip()[-300:]}",
            hint="as root the build runs unprivileged: use an interpreter outside /root "
            "and /home (e.g. --python /usr/bin/python3, or a venv in /opt)",
        )
    return proc.stdout.strip()


def _pip_version(steps: Steps, python: str, env: Mapping[str, str]) -> str:
    proc = steps.run("pip-version", [python, "-m", "pip", "--version"], env=env, check=False)
    out = proc.stdout.split()
    if proc.returncode != 0 and "No module named pip" in proc.stderr:
        raise HostError(
            f"{python} has no pip, which pyrelctl build needs",
            hint="install it (Debian: apt-get install python3-pip), "
            "or build with --python PYTHON of a virtualenv that has pip",
        )
    if proc.returncode != 0 or len(out) < 2:
        raise HostError(f"cannot tell the version of {python}'s pip")
    return out[1]


def _pip_wheel(
    steps: Steps,
    step: str,
    python: str,
    args: list[str | os.PathLike[str]],
    env: Mapping[str, str],
) -> None:
    """``python -m pip wheel --use-pep517 ARGS``; a build that fails names its package.

    ``--use-pep517``: without it, pip before 23.1 builds an sdist that has no
    pyproject.toml (sdnotify 0.3.2, which the runtime needs, is one) with
    ``setup.py bdist_wheel`` in its own environment, which fails with
    "invalid command 'bdist_wheel'" unless the ``wheel`` package happens to be
    installed there (Debian's ``python3 -m venv`` has none). With it, every
    pip builds such an sdist in an isolated environment that gets setuptools
    (and, for pip < 24, wheel) from the index, as newer pips do anyway
    (pip 23.1 changelog; pypa/pip#8559). A warm ``~/.cache/pip/wheels`` hides
    the difference, which is why the install-path tests run on empty caches.
    """
    argv = [python, "-m", "pip", "wheel", "--use-pep517", *args]
    proc = steps.run(step, argv, env=env, check=False)
    if proc.returncode == 0:
        return
    failure = pip_build_failure(proc.stdout, proc.stderr)
    if failure is None:
        raise CommandFailed([os.fspath(a) for a in argv], proc.returncode, proc.stderr)
    log.debug("pip's output:\n%s\n%s", proc.stdout, proc.stderr)
    said = " | ".join(failure.last_lines) or "(it printed nothing)"
    raise HostError(
        f"cannot build a wheel of {failure.package}: {failure.step} failed; "
        f"its last output: {said}",
        hint="an sdist may need build tools and headers (e.g. apt-get install gcc "
        "python3-dev pkg-config, or the library's -dev package); pyrelctl -vv build "
        "shows pip's whole output",
    )


def build(
    project: Path,
    output: Path | None = None,
    *,
    python: str = sys.executable,
    epoch: int | None = None,
    say: Say = _quiet,
) -> BuildResult:
    """Build the python release of the project in ``project``; see the module doc.

    pip runs through :func:`buildsteps.open_steps`: as root, as an
    unprivileged user on a copy of the project; root itself reads only the
    project's pyproject.toml and lock, and the wheels the steps left.
    """
    started = time.monotonic()
    project = project.resolve()
    pyproject_file = project / "pyproject.toml"
    if not pyproject_file.is_file():
        raise BadInput(
            f"{project}: no pyproject.toml", hint="pyrelctl build needs a Python project"
        )
    try:
        pyproject = tomllib.loads(inside(project, pyproject_file).read_text())
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{pyproject_file}: not valid TOML ({e})") from e
    config = read_config(pyproject)
    lock = find_lock(project, config.requirements)
    epoch = source_date_epoch() if epoch is None else epoch
    output = (output or project / "dist").resolve()
    output.mkdir(parents=True, exist_ok=True)
    python = interpreter(python)
    pip_env = {
        "SOURCE_DATE_EPOCH": str(max(epoch, ZIP_EPOCH)),
        # pip gives the build backend one pipe for stdout and stderr: unbuffered,
        # a Python backend's lines reach it in the order they were written, and
        # a compiler's error line stays among the last ones (wheels.pip_build_failure).
        "PYTHONUNBUFFERED": "1",
    }

    # Root's own files (the repacked wheel, the release tree) live in a
    # private temporary directory, never where the build user could write.
    with (
        tempfile.TemporaryDirectory(prefix="pyrelctl-build-") as tmp_name,
        open_steps(project) as steps,
    ):
        say(f"building as {steps.who}")
        py_version = _python_version(steps, python, pip_env)
        pip_version = _pip_version(steps, python, pip_env)  # first: a missing pip is said as such
        tmp = Path(tmp_name)
        local, release = tmp / "local", tmp / "release"
        wheelhouse, tools = release / WHEELHOUSE, release / TOOLS
        for d in (local, wheelhouse, tools, tmp / "project"):
            d.mkdir(parents=True)
        runtime_wheel = write_runtime_wheel(local, epoch)

        out = steps.output()
        with _Step(say, f"building the wheel of {project.name}"):
            args: list[str | os.PathLike[str]] = [
                "--no-deps", "--wheel-dir", steps.path(out), steps.project,
            ]  # fmt: skip
            _pip_wheel(steps, "wheel", python, args, pip_env)
        built = [p for p in steps.take(out, tmp / "project") if p.name.endswith(".whl")]
        if len(built) != 1:
            raise HostError(f"pip wheel made {len(built)} wheels of {project}, not one")
        project_wheel = Path(shutil.move(built[0], local / built[0].name))
        repack_wheel(project_wheel, epoch)
        meta = wheel_metadata(project_wheel)
        dist, version = canonical_name(meta["Name"]), meta["Version"]
        name = config.name or dist
        if not APP_NAME_RE.fullmatch(name):
            raise BadInput(
                f"the project name {meta['Name']!r} is not a valid release name",
                hint='set one in pyproject.toml: [tool.pyrelctl] name = "my-app"',
            )
        check_version(version)

        if lock is not None:
            (local / "constraints.txt").write_text("\n".join(lock.constraints) + "\n")
        shared = steps.share(sorted(local.iterdir()))
        out = steps.output()
        args = [
            "--wheel-dir", steps.path(out), "--find-links", shared,
            shared / project_wheel.name, f"{RUNTIME_DIST}=={runtime_wheel.name.split('-')[1]}",
        ]  # fmt: skip
        if lock is not None:
            args += ["--constraint", shared / "constraints.txt"]
        what = "resolving and fetching dependencies" + (
            f" pinned by {lock.path.name}" if lock else ""
        )
        with _Step(say, what):
            _pip_wheel(steps, "dependencies", python, args, pip_env)
        steps.take(out, wheelhouse)

        packages: list[str] = []
        scripts: set[str] = set()
        runtime_deps = {RUNTIME_DIST, "sdnotify"}
        for wheel in sorted(wheelhouse.iterdir()):
            parsed = wheel_name_version(wheel.name)
            if parsed is None:
                raise HostError(f"pip left {wheel.name} in the wheelhouse, which is not a wheel")
            pkg, pkg_version = parsed
            packages.append(f"{pkg}=={pkg_version}")
            scripts |= wheel_scripts(wheel)
            if (
                lock is not None
                and lock.complete
                and pkg not in (dist, *runtime_deps)
                and lock.pins.get(pkg) != pkg_version
            ):
                raise BadInput(
                    f"{pkg} {pkg_version} was resolved but {lock.path.name} does not pin it",
                    hint=f"regenerate {lock.path.name} so that it pins every dependency",
                )
        programs = [("start", config.start[0])]
        programs += [
            (f"hooks.{key}", argv[0]) for key, argv in sorted(config.settings.hooks.items())
        ]
        programs += [
            (what, argv[0])
            for what, argv in procs_commands(config.settings.processes, config.settings.timers)
        ]
        for what, program in programs:
            if program == f"bin/{name}" or program in ("python", "python3") or program in scripts:
                continue  # bin/NAME, written at install, or the venv's python
            raise BadInput(
                f"[tool.pyrelctl] {what} runs {program!r}, which no package installs",
                hint="scripts of the release: " + ", ".join(sorted(scripts) or ["none"]),
            )

        out = steps.output()
        with _Step(say, "fetching pip for hosts without uv"):
            steps.run(
                "pip-download",
                [
                    python, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                    "--dest", steps.path(out), f"pip=={pip_version}",
                ],
                env=pip_env,
            )  # fmt: skip
        steps.take(out, tools)
        pip_wheels = sorted(tools.glob("pip-*.whl"))
        if len(pip_wheels) != 1 or len(list(tools.iterdir())) != 1:
            raise HostError(f"expected one pip wheel, found {sorted(os.listdir(tools))}")

        manifest = render_manifest(
            name=name,
            version=version,
            description=meta.get("Summary", ""),
            python=py_version,
            config=config,
            packages=packages,
            pip=f"{TOOLS}/{pip_wheels[0].name}",
        )
        (release / MANIFEST).write_text(manifest)
        sums = {
            p.relative_to(release).as_posix(): checksums.sha256_file(p)
            for p in release.rglob("*")
            if p.is_file()
        }
        (release / checksums.SUMS_FILE).write_bytes(checksums.render(sums))
        # What install will check: the manifest parses, the files are there.
        with open_artifact(release) as artifact:
            detect(artifact)
        artifact_path = output / f"{name}-{version}.tar.gz"
        with _Step(say, f"writing {artifact_path.name}"):
            write_tarball(release, artifact_path, epoch)

    return BuildResult(
        artifact=artifact_path,
        name=name,
        version=version,
        sha256=checksums.sha256_file(artifact_path),
        packages=tuple(packages),
        lock=str(lock.path) if lock else None,
        seconds=round(time.monotonic() - started, 1),
    )
