"""Generations of an app's environment: immutable files, one ``current`` link.

Like releases, every configuration change makes a new, numbered, immutable
file, and one symlink says which the app runs:

    /etc/pyrelctl/APP/config/            0700, root
        000001.env 000002.env ...        0600, written once (envfile.render)
        current.env -> 000002.env        what the unit's EnvironmentFile= reads

``current.env`` moves with one rename (temp link + rename), so PID 1 reads
either the old or the new file, never a half-written one; a crash at any
instant leaves a complete generation current. What each generation changed
(names only, never values), who made it and how it went is kept with
pyrelctl's state, in ``/var/lib/pyrelctl/APP/config.json``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pyrelctl.appconfig import envfile
from pyrelctl.errors import HostError
from pyrelctl.hostfiles import ensure_dir, read_json, symlink_atomic, write_atomic, write_json
from pyrelctl.layout import AppPaths, who

CURRENT = "current.env"
_GENERATION_RE = re.compile(r"([0-9]{6})\.env")


class GenMark(StrEnum):
    STAGED = "staged"  # current, but not yet run by the service
    GOOD = "good"  # the service came up with it
    FAILED = "failed"  # the service did not come up with it; it was undone


@dataclass(frozen=True)
class Generation:
    number: int
    created_at: float
    user: str
    change: dict[str, list[str]]
    mark: GenMark

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.number,
            "created_at": self.created_at,
            "user": self.user,
            "change": self.change,
            "mark": self.mark.value,
        }


def running_generation(app: AppPaths) -> int | None:
    """The app's current generation from its link alone, for reads (status, metrics):
    None when there is none, and where /etc/pyrelctl/APP is not readable."""
    try:
        target = os.readlink(app.etc / "config" / CURRENT)
    except OSError:
        return None
    match = _GENERATION_RE.fullmatch(target)
    return int(match[1]) if match else None


def label(number: int | None) -> str | None:
    """A generation as ``pyrelctl history`` names it (``config:3``)."""
    return None if number is None else f"config:{number}"


def unit_path(app: str) -> str:
    """The ``EnvironmentFile=`` path of the app's configuration, on the running system."""
    return f"/etc/pyrelctl/{app}/config/{CURRENT}"


class Generations:
    """The configuration generations of one app."""

    def __init__(self, app: AppPaths) -> None:
        self.app = app
        self.dir = app.etc / "config"
        self.meta_file = app.state / "config.json"

    def _file(self, number: int) -> Path:
        return self.dir / f"{number:06d}.env"

    def numbers(self) -> list[int]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(int(m[1]) for n in names if (m := _GENERATION_RE.fullmatch(n)))

    def current(self) -> int | None:
        try:
            target = os.readlink(self.dir / CURRENT)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise HostError(f"{self.dir / CURRENT} is not a symlink ({e.strerror})") from e
        match = _GENERATION_RE.fullmatch(target)
        if match is None or not self._file(int(match[1])).is_file():
            raise HostError(
                f"{self.dir / CURRENT} points to {target!r}, not a generation",
                hint=f"point it to one: pyrelctl rollback {self.app.name} --config",
            )
        return int(match[1])

    def read(self, number: int | None) -> dict[str, str]:
        """The variables of generation ``number`` ({} for None: no configuration)."""
        if number is None:
            return {}
        path = self._file(number)
        return envfile.parse(path.read_text(), source=str(path), stored=True)

    def values(self) -> dict[str, str]:
        return self.read(self.current())

    def _meta(self) -> dict[str, Any]:
        return read_json(self.meta_file, hint=f"move it away; pyrelctl keeps {self.meta_file}")

    def info(self, number: int) -> Generation:
        data = self._meta().get(str(number), {})
        return Generation(
            number=number,
            created_at=float(data.get("created_at", 0.0)),
            user=str(data.get("user", "")),
            change=dict(data.get("change", {})),
            mark=GenMark(data.get("mark", GenMark.STAGED)),
        )

    def all(self) -> list[Generation]:
        return [self.info(n) for n in self.numbers()]

    def set_mark(self, number: int, mark: GenMark) -> None:
        meta = self._meta()
        meta.setdefault(str(number), {})["mark"] = mark.value
        ensure_dir(self.app.state)
        write_json(self.meta_file, meta)

    def create(self, variables: dict[str, str]) -> int:
        """Write a new generation holding ``variables``; return its number (not current yet)."""
        previous = self.values()
        variables = envfile.check(variables, unchanged=previous)
        number = max(self.numbers(), default=0) + 1
        ensure_dir(self.app.etc.parent, 0o700)
        ensure_dir(self.app.etc, 0o700)
        ensure_dir(self.dir, 0o700)
        header = f"Generation {number} of {self.app.name}'s configuration, written by pyrelctl."
        write_atomic(self._file(number), envfile.render(variables, header), mode=0o600)
        meta = self._meta()
        meta[str(number)] = {
            "created_at": time.time(),
            "user": who(),
            "change": envfile.diff(previous, variables),
            "mark": GenMark.STAGED.value,
        }
        ensure_dir(self.app.state)
        write_json(self.meta_file, meta)
        return number

    def switch(self, number: int | None) -> None:
        """Make ``number`` current (None: no configuration at all)."""
        link = self.dir / CURRENT
        if number is None:
            if link.is_symlink():
                link.unlink()
            return
        symlink_atomic(self._file(number).name, link)

    def prune(self, keep: int) -> list[int]:
        """Remove all but the newest ``keep`` generations, never the current or the
        newest good one."""
        numbers = self.numbers()
        current = self.current()
        good = [n for n in numbers if self.info(n).mark is GenMark.GOOD]
        spared = {current, good[-1] if good else None, *numbers[-keep:]}
        doomed = [n for n in numbers if n not in spared]
        meta = self._meta()
        for number in doomed:
            self._file(number).unlink()
            meta.pop(str(number), None)
        if doomed:
            write_json(self.meta_file, meta)
        return doomed

    def previous(self, before: int) -> int | None:
        """The newest generation older than ``before`` that did not fail."""
        older = [
            n for n in self.numbers() if n < before and self.info(n).mark is not GenMark.FAILED
        ]
        return older[-1] if older else None


def mark_current_good(app: AppPaths) -> None:
    """The release came up with the current generation (if any): mark it good."""
    gens = Generations(app)
    number = gens.current() if gens.dir.is_dir() else None
    if number is not None and gens.info(number).mark is not GenMark.GOOD:
        gens.set_mark(number, GenMark.GOOD)


def stage_with_deploy(
    app: AppPaths, env: Mapping[str, str], say: Callable[[str], None]
) -> Callable[[], None] | None:
    """``install --env``: ``env`` set on top of the app's configuration as its current
    generation for this deploy; return what undoes it (once: later calls do
    nothing), or None if nothing changed."""
    gens = Generations(app)
    previous = gens.current()
    old = gens.read(previous)
    new = {**old, **env}
    if new == old:
        return None
    number = gens.create(new)
    gens.switch(number)
    summary = envfile.describe(envfile.diff(old, new))
    app.record("config", label(previous), label(number), f"with the deploy: {summary}")
    say(f"configuration generation {number} ({summary})")
    undone = False

    def undo() -> None:
        nonlocal undone
        if undone:
            return
        say(f"configuration generation {previous} restored")
        gens.set_mark(number, GenMark.FAILED)
        gens.switch(previous)
        undone = True

    return undo
