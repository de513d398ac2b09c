"""The lock of a project ``pyrelctl build`` builds: version pins read from it.

``pylock.toml`` (PEP 751), or a pip requirements file with what it includes
(``-r``/``-c``). Root may run the build, so every file read here must be
inside the project (:func:`inside`): a lock can name no file of the host,
nor quote one in an error.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pyrelctl.errors import BadInput
from pyrelctl.pyspec import canonical_name

#: Lock files looked for, in this order, when [tool.pyrelctl] names none.
LOCK_FILES = ("pylock.toml", "requirements.lock", "requirements.txt")

_REQ_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(?P<spec>[^;]*?)\s*(;(?P<marker>.*))?$"
)


@dataclass(frozen=True)
class Lock:
    """Version constraints from the project's lock or requirements file."""

    path: Path
    constraints: tuple[str, ...]  # lines for pip's -c (no extras, no hashes)
    pins: Mapping[str, str]  # canonical name -> pinned version
    complete: bool  # every entry pinned with ==: nothing else may be resolved


def inside(project: Path, path: Path) -> Path:
    """``path`` resolved (links followed), if that is in ``project`` (resolved).

    A build reads only the project's own files: ``../../etc/passwd``, an
    absolute path or a link out of the project are refused before anything
    is read, so no line of such a file can reach an error message.
    """
    resolved = path.resolve()
    if not resolved.is_relative_to(project):
        raise BadInput(
            f"{path} is outside the project directory {project}",
            hint="pyrelctl build reads only the project's own files (a link out is refused too)",
        )
    return resolved


#: pip's options that include another file (pip's docs, "Requirements File
#: Format"): ``-r FILE``, ``-rFILE``, ``--requirement FILE``, ``--requirement=FILE``.
_INCLUDE_RE = re.compile(
    r"^(?:-(?P<short>[rc])\s*|--(?P<long>requirement|constraint)(?:\s*=\s*|\s+))(?P<file>\S.*)$"
)


def _requirement_lines(path: Path, seen: set[Path], project: Path) -> Iterable[str]:
    path = inside(project, path)
    if path in seen:
        return
    seen.add(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from e
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if not line:
            continue
        include = _INCLUDE_RE.match(line)
        if include is not None:
            # A constraints file (-c) constrains as the lock does: its
            # entries are the lock's too.
            yield from _requirement_lines(path.parent / include["file"].strip(), seen, project)
        elif not line.startswith("-"):
            # Options of a requirement (--hash=...) follow it, after a space.
            yield re.split(r"\s+--", line, maxsplit=1)[0].strip()


def read_lock(path: Path, project: Path | None = None) -> Lock:
    """Pins from a ``pylock.toml`` (PEP 751) or a pip requirements file.

    ``project`` (resolved; default: the lock's directory) bounds the files
    read: the lock and what it includes with ``-r``/``-c`` (:func:`inside`).
    """
    project = project or path.parent.resolve()
    inside(project, path)
    entries: list[tuple[str, str, str]] = []  # name, specifier, marker
    if path.name.endswith(".toml"):
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise BadInput(f"{path}: not a readable pylock.toml ({e})") from e
        for package in doc.get("packages", []):
            name, version = package.get("name"), package.get("version")
            if not isinstance(name, str) or not isinstance(version, str):
                raise BadInput(f"{path}: every [[packages]] entry needs a name and a version")
            entries.append((name, f"=={version}", str(package.get("marker", ""))))
    else:
        for line in _requirement_lines(path, set(), project):
            match = _REQ_RE.match(line)
            if match is None or "://" in line or line.startswith((".", "/")):
                raise BadInput(
                    f"{path}: cannot use the requirement {line!r}",
                    hint="list packages by name and version (name==1.2.3)",
                )
            entries.append((match["name"], match["spec"].replace(" ", ""), match["marker"] or ""))
    pins: dict[str, str] = {}
    constraints = []
    for name, spec, marker in entries:
        if spec.startswith("==") and "," not in spec and "*" not in spec:
            pins[canonical_name(name)] = spec[2:]
        constraints.append(f"{name}{spec}" + (f" ; {marker.strip()}" if marker.strip() else ""))
    complete = bool(entries) and len(pins) == len(entries)
    return Lock(path, tuple(constraints), pins, complete)


def find_lock(project: Path, requirements: str | None) -> Lock | None:
    """The lock ``requirements`` names (``[tool.pyrelctl]``), else the first of LOCK_FILES."""
    if requirements is not None:
        path = project / requirements
        inside(project, path)
        if not path.is_file():
            raise BadInput(f"[tool.pyrelctl] requirements: {path} does not exist")
        return read_lock(path, project)
    for name in LOCK_FILES:
        if (project / name).is_file():
            return read_lock(project / name, project)
    return None
