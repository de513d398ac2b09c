"""The ``[python]`` table of a python release's release.toml, and what it names.

What detection needs to know of a python release, before anything is
written: the table's keys, the pins and the pip wheel it names, that the
artifact has a wheel for every pin and ships neither ``venv/`` nor
``bin/NAME`` (both are made at install). Preparing the release at install
(building the venv in a sandbox) is :mod:`pyrelctl.pyrelease`'s, above this
module: :mod:`pyrelctl.manifest` reads manifests without importing the
sandbox, the unit renderer or the systemd side.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrelctl.archive import Artifact, MemberType
from pyrelctl.errors import BadInput

WHEELHOUSE = "wheelhouse"
VENV = "venv"
#: The keys of release.toml's ``[python]`` table.
KEYS = frozenset({"python", "start", "packages", "pip"})

#: A wheel file name (PEP 427): name-version(-build)?-python-abi-platform.whl
_WHEEL_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$"
)
_PIN_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9_.!+-]+)$")
_PYTHON_RE = re.compile(r"^3\.\d{1,3}$")


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``Flask_Login`` and ``flask.login`` are ``flask-login``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(filename: str) -> tuple[str, str] | None:
    """``(canonical name, version)`` of a wheel file name, or None if it is not one."""
    match = _WHEEL_RE.match(filename)
    if match is None:
        return None
    return canonical_name(match["name"]), match["version"]


@dataclass(frozen=True)
class PythonSpec:
    """release.toml's ``[python]``: how to build the venv and start the service."""

    python: str  # "3.11": the X.Y the wheels were resolved for
    start: tuple[str, ...]  # argv; argv[0] is a program of the venv's bin/
    packages: tuple[str, ...]  # "name==version" for every distribution to install
    pip: str  # release-relative path of the pip wheel used when uv is absent

    @property
    def interpreter(self) -> str:
        return f"python{self.python}"


def parse_spec(table: Any, artifact: Artifact | None = None) -> PythonSpec:
    """Check a ``[python]`` table (and, given the artifact, that its files are there)."""
    where = "release.toml: python"
    if not isinstance(table, dict) or not table:
        raise BadInput("release.toml: a python release needs a [python] table")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise BadInput(
            f"{where}.{unknown[0]} is not a known key",
            hint=f"[python] accepts: {', '.join(sorted(KEYS))}",
        )
    python = table.get("python")
    if not isinstance(python, str) or not _PYTHON_RE.match(python):
        raise BadInput(f'{where}.python must be a Python version such as "3.11"')
    start = table.get("start")
    if (
        not isinstance(start, list)
        or not start
        or not all(isinstance(a, str) for a in start)
        or not _is_program(start[0])
    ):
        raise BadInput(
            f"{where}.start must be an argv whose program is a script of the venv "
            '(e.g. ["gunicorn", "app:app"]) or "python"'
        )
    packages = table.get("packages")
    if (
        not isinstance(packages, list)
        or not packages
        or not all(isinstance(p, str) and _PIN_RE.match(p) for p in packages)
    ):
        raise BadInput(f'{where}.packages must list every package as "name==version"')
    pip = table.get("pip")
    if not isinstance(pip, str) or not pip.startswith("tools/") or not pip.endswith(".whl"):
        raise BadInput(f'{where}.pip must be the release\'s pip wheel ("tools/pip-*.whl")')
    spec = PythonSpec(python, tuple(start), tuple(packages), pip)
    if artifact is not None:
        _check_files(spec, artifact)
    return spec


def _is_program(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith((".", "-")) and "\0" not in name


def venv_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """A python release's command, its program resolved into the release's venv.

    A program without a slash (a hook's ``python`` or ``django-admin``, as
    ``python.start``) is a script of ``venv/bin/``, given release-relative
    so that it runs from the release the caller names (a pre_switch hook
    runs the *new* release); never a host program of that name on the
    service's PATH. ``python`` and ``python3`` are the venv's interpreter.
    A program with a slash (``bin/NAME``) is left as it is.
    """
    program = argv[0]
    if "/" in program:
        return tuple(argv)
    script = "python" if program in ("python", "python3") else program
    return (f"{VENV}/bin/{script}", *argv[1:])


def _check_files(spec: PythonSpec, artifact: Artifact) -> None:
    _refuse_install_paths(artifact)
    wheels = {}
    for member in artifact.list_dir(WHEELHOUSE):
        parsed = wheel_name_version(member.path.rpartition("/")[2])
        if member.type is MemberType.FILE and parsed is not None:
            wheels[parsed] = member.path
    for pin in spec.packages:
        match = _PIN_RE.match(pin)
        assert match is not None  # parse_spec checked
        if (canonical_name(match["name"]), match["version"]) not in wheels:
            raise BadInput(
                f"release.toml: python.packages names {pin}, which has no wheel in {WHEELHOUSE}/"
            )
    pip = artifact.member(spec.pip)
    if pip is None or pip.type is not MemberType.FILE:
        raise BadInput(f"release.toml: python.pip names {spec.pip}, which is not in the release")


def _release_name(artifact: Artifact) -> str | None:
    """release.toml's ``release.name`` (manifest.detect has checked it), if a string."""
    try:
        name = tomllib.loads(artifact.read("release.toml").decode()).get("release", {}).get("name")
    except (BadInput, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _refuse_install_paths(artifact: Artifact) -> None:
    """Refuse a release that ships what the install writes: ``venv/`` and ``bin/NAME``.

    A ``venv/bin/python`` of the artifact (a symlink to a script of its own,
    say) would be what the build runs, and ``python -m venv`` leaves an
    existing symlink in place (venv's ``symlink_or_copy``); a ``bin/NAME``
    would stand where the launcher is written.
    """
    name = _release_name(artifact)
    for member in artifact.members:
        top, _, rest = member.path.partition("/")
        if top == VENV:
            raise BadInput(
                f"the python release contains {member.path}: {VENV}/ is made at install, "
                "from the wheelhouse",
                hint="ship wheels, not a virtualenv (pyrelctl build makes such a release)",
            )
        if top == "bin" and (
            (not rest and member.type is not MemberType.DIR) or (name is not None and rest == name)
        ):
            raise BadInput(
                f"the python release contains {member.path}: bin/{name or 'NAME'} is "
                "written by pyrelctl at install",
                hint="remove it from the release (pyrelctl build makes none)",
            )


def read_spec(release_dir: Path) -> PythonSpec:
    """The ``[python]`` table of an unpacked release."""
    with (release_dir / "release.toml").open("rb") as f:
        doc = tomllib.load(f)
    return parse_spec(doc.get("python"))
