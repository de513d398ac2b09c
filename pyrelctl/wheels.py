"""Wheels for ``pyrelctl build``: written and repacked byte-reproducibly, and read.

A wheel is a zip (PEP 427); the same input must give the same bytes, so
every entry gets the same time (``SOURCE_DATE_EPOCH``, at least 1980, the
earliest a zip can hold), a normalised mode and one compression level.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import re
import stat
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pyrelctl.errors import BadInput, HostError

#: The earliest time a zip entry can carry; the default SOURCE_DATE_EPOCH.
ZIP_EPOCH = 315532800


def _zip_time(epoch: int) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(max(epoch, ZIP_EPOCH))
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def _zip_write(zf: zipfile.ZipFile, name: str, data: bytes, epoch: int, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(name, date_time=_zip_time(epoch))
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, whatever the build host
    zf.writestr(info, data, compresslevel=9)


def repack_wheel(path: Path, epoch: int) -> None:
    """Rewrite a wheel with fixed times and compression (same members, same order)."""
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist() if not info.is_dir()]
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as dst:
        for info, data in entries:
            mode = (info.external_attr >> 16) & 0o777
            _zip_write(dst, info.filename, data, epoch, 0o755 if mode & 0o100 else 0o644)
    tmp.replace(path)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def runtime_source() -> Path:
    """The runtime's project directory: ``runtime/`` of a checkout, or the copy
    the pyrelctl wheel carries (``pyrelctl/_runtime``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_runtime", here.parent / "runtime"):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    raise HostError("pyrelctl_runtime's sources are missing from this pyrelctl installation")


def write_runtime_wheel(dest: Path, epoch: int) -> Path:
    """Build the ``pyrelctl-runtime`` wheel from its sources, byte-reproducibly.

    The package is pure Python, so a wheel is a zip of its files and three
    metadata files; writing it here needs no build backend and no index.
    """
    base = runtime_source()
    project = tomllib.loads((base / "pyproject.toml").read_text())["project"]
    version = project["version"]
    package = base / "src" / "pyrelctl_runtime"
    files: dict[str, bytes] = {}
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed"):
            files[path.relative_to(package.parent).as_posix()] = path.read_bytes()
    info = f"pyrelctl_runtime-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {version}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '>=3')}",
        *(f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])),
    ]
    files[f"{info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: pyrelctl build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    wheel = dest / f"pyrelctl_runtime-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            _zip_write(zf, name, data, epoch)
    return wheel


def wheel_metadata(wheel: Path) -> dict[str, str]:
    """The first value of each field of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(
            (n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")),
            None,
        )
        if name is None:
            raise BadInput(f"{wheel.name} has no .dist-info/METADATA")
        text = zf.read(name).decode("utf-8", "replace")
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(": ")
        if sep and key not in fields:
            fields[key] = value.strip()
    return fields


def wheel_scripts(wheel: Path) -> set[str]:
    """The programs a wheel installs into ``bin/``: console/gui scripts and data scripts."""
    found: set[str] = set()
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            if (
                len(parts) == 2
                and parts[1] == "entry_points.txt"
                and parts[0].endswith(".dist-info")
            ):
                parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
                parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep case
                parser.read_string(zf.read(name).decode("utf-8", "replace"))
                for section in ("console_scripts", "gui_scripts"):
                    if parser.has_section(section):
                        found.update(parser.options(section))
            elif len(parts) == 3 and parts[0].endswith(".data") and parts[1] == "scripts":
                found.add(parts[2])
    return found


# -- pip's report of a build that failed --------------------------------------

#: How many of the backend's last output lines a build failure quotes.
FAILURE_LINES = 5

# pip (23.0 to 26.x) reports a failed build backend call on stderr as
#   (x) Building wheel for NAME (pyproject.toml) did not run successfully.
#   | exit code: 1
#   `-> [N lines of output]
#       ...the backend's own output...
#       [end of output]
# and, for a wheel, "ERROR: Failed building wheel for NAME"; which package a
# metadata or build-requirements step belonged to is only in stdout's last
# "Collecting NAME" / "Processing PATH" line before it. (The marks, a
# U+00D7 and box-drawing characters, are matched loosely.)
_STEP_RE = re.compile(r"^\s*(?:\u00d7\s*)?(?P<step>\S.*?) did not run successfully", re.M)
_FAILED_WHEEL_RE = re.compile(r"Failed (?:building wheel|to build) (?:for )?(?P<name>[\w.-]+)")
_BUILDING_RE = re.compile(r"Building wheel for (?P<name>[\w.-]+) \(")
_COLLECTING_RE = re.compile(
    r"^\s*(?:Collecting|Processing) (?:\S*/)?(?P<what>[A-Za-z0-9][\w.+-]*)", re.M
)
_SDIST_RE = re.compile(r"(?P<name>[A-Za-z0-9][\w.]*?)-(?P<version>\d[\w.+!-]*?)\.(?:tar\.gz|zip)$")
_OUTPUT_START_RE = re.compile(r"\[\d+ lines? of output\]")
#: A line of a backend's output that says why it failed: a compiler's
#: "fatal error: X.h: No such file or directory", setuptools' "error: command
#: 'gcc' failed", rustc's "error[E0425]".
_ERROR_LINE_RE = re.compile(r"\b(?:fatal|error)\b", re.IGNORECASE)


@dataclass(frozen=True)
class BuildFailure:
    """What pip says about a package it could not build: which, at what step, why."""

    package: str  # a distribution name, or "version" of an sdist file name
    step: str  # e.g. "Building wheel for sdnotify (pyproject.toml)"
    last_lines: tuple[str, ...]  # the end of the backend's own output


def _backend_output(stderr: str) -> list[str]:
    """The lines of the first "[N lines of output]" block of pip's stderr."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if _OUTPUT_START_RE.search(line):
            block = []
            for inner in lines[i + 1 :]:
                if inner.strip() == "[end of output]":
                    break
                block.append(inner.strip())
            return [b for b in block if b]
    return []


def pip_build_failure(stdout: str, stderr: str) -> BuildFailure | None:
    """Parse pip's output for a build backend that failed; None if it says nothing of one."""
    step_match = _STEP_RE.search(stderr)
    wheel_match = _FAILED_WHEEL_RE.search(stderr) or _FAILED_WHEEL_RE.search(stdout)
    if step_match is None and wheel_match is None:
        return None
    step = step_match["step"].strip() if step_match else "building its wheel"
    package = ""
    building = _BUILDING_RE.search(step) or wheel_match
    if building is not None:
        package = building["name"]
    else:
        # A metadata or build-requirements step: the package pip was on last.
        collected = _COLLECTING_RE.findall(stdout)
        if collected:
            package = collected[-1]
    sdist = _SDIST_RE.match(package)
    if sdist is not None:
        package = f"{sdist['name']} {sdist['version']}"
    return BuildFailure(
        package=package or "a package",
        step=step,
        last_lines=_last_lines(_backend_output(stderr)),
    )


def _last_lines(output: list[str]) -> tuple[str, ...]:
    """The backend's last lines, and its last error line if they hold none.

    pip passes on the backend's stdout and stderr through one pipe, so a
    Python backend whose stdout is block-buffered (no PYTHONUNBUFFERED) puts
    the compiler's error line, written to stderr, before all its own progress
    lines; the last lines alone would then not say why it failed.
    """
    last = output[-FAILURE_LINES:]
    if any(_ERROR_LINE_RE.search(line) for line in last):
        return tuple(last)
    earlier = [line for line in output[:-FAILURE_LINES] if _ERROR_LINE_RE.search(line)]
    return tuple(earlier[-1:] + last)
