"""The booted container as the benchmarks see it: pyrelctl, artifacts, timing.

Outside, :func:`boot` starts the container (devtools.machine) with the
checkout, its virtualenv and a scratch directory bound in. Inside, a
:class:`Host` runs this checkout's pyrelctl (``PYTHONPATH`` puts the
checkout first, whatever the virtualenv was installed from), builds the test
releases into the scratch directory, and times commands.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess

from devtools.machine import Machine
from devtools.proc import StrPath, run
from devtools.releases import make_generic_release

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
PYTHON = VENV / "bin" / "python"
PYRELCTL = VENV / "bin" / "pyrelctl"

_STARTED = time.monotonic()


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the result)."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def binds(scratch: Path) -> list[Path]:
    """What the container needs bound: the checkout, its venv, the scratch dir.

    The venv may live outside the checkout (a git worktree's ``.venv`` is
    often a symlink to the main checkout's); bind where it really is.
    """
    venv = VENV.resolve()
    return [REPO, *([] if venv.is_relative_to(REPO) else [venv]), scratch]


@contextlib.contextmanager
def boot(name: str, scratch: Path) -> Iterator[Machine]:
    """A booted container with :func:`binds` bound; stopped when the block ends."""
    with Machine.boot(name, binds(scratch), scratch / "nspawn.log") as machine:
        yield machine


def child_env() -> dict[str, str]:
    """The environment of commands run inside: this checkout's pyrelctl comes first."""
    return {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}


@dataclass(frozen=True)
class Timed:
    """A command and when it started and ended (time.monotonic)."""

    started: float
    ended: float
    result: CompletedProcess[str]

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Host:
    """Inside the container: pyrelctl's command line, test releases, timing."""

    scratch: Path
    _artifacts: dict[tuple[str, str], Path] = field(default_factory=dict)

    def pyrelctl_argv(self, *args: StrPath) -> list[str]:
        return [str(PYRELCTL), *(os.fspath(a) for a in args)]

    def run(
        self,
        argv: Sequence[StrPath],
        *,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: StrPath | None = None,
    ) -> CompletedProcess[str]:
        """Run a command (output captured); with ``check``, fail on a non-zero status.
        ``env`` is added to :func:`child_env`."""
        return run(argv, check=check, env={**child_env(), **(env or {})}, cwd=cwd, timeout=300)

    def pyrelctl(self, *args: StrPath, check: bool = True) -> CompletedProcess[str]:
        return self.run(self.pyrelctl_argv(*args), check=check)

    def has_strategy_option(self) -> bool:
        """Whether this pyrelctl's install takes --strategy (issue 19's overlap)."""
        return "--strategy" in self.pyrelctl("install", "--help").stdout

    def timed(
        self,
        argv: Sequence[StrPath],
        *,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: StrPath | None = None,
    ) -> Timed:
        """Run ``argv`` and note when it started and ended (the process's wall time)."""
        started = time.monotonic()
        result = self.run(argv, check=check, env=env, cwd=cwd)
        return Timed(started, time.monotonic(), result)

    def release(
        self,
        name: str,
        version: str,
        *,
        behaviour: str = "serve",
        port: int = 0,
        extra_toml: str = "",
    ) -> Path:
        """The tarball of a generic test release (devtools.releases), built once."""
        key = (name, version)
        if key not in self._artifacts:
            dest = self.scratch / "artifacts" / name
            dest.mkdir(parents=True, exist_ok=True)
            self._artifacts[key] = make_generic_release(
                dest,
                name=name,
                version=version,
                behaviour=behaviour,
                port=port,
                extra_toml=extra_toml,
            )
        return self._artifacts[key]

    def pyrelctl_batches(self, batches: Sequence[Sequence[Sequence[str]]], workers: int) -> None:
        """Run many pyrelctl command lines, to set a host up rather than to time them.

        Each batch runs in order in one worker process; batches run in
        parallel. Each command goes through pyrelctl's console-script entry
        point (``pyrelctl.cli:main``) in a forked worker, which saves the
        interpreter start and imports of a new process per command: building
        50 apps x 20 releases that way takes a minute instead of four.
        """
        # Imported once here, inherited by each fork.
        import pyrelctl.cli.deploys  # noqa: F401

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for failure in pool.imap_unordered(_run_batch, [list(map(list, b)) for b in batches]):
                if failure:
                    raise RuntimeError(failure)


def _run_batch(batch: list[list[str]]) -> str:
    """In a worker: run each pyrelctl command line in-process; say what failed, if any."""
    from pyrelctl.cli import main

    for argv in batch:
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(argv)
        except SystemExit as e:
            if e.code not in (0, None):
                return f"pyrelctl {' '.join(argv)} exited with {e.code}: {err.getvalue().strip()}"
    return ""
