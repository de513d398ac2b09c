"""The one subprocess helper of devtools, its errors, and polling against a deadline."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

StrPath = str | os.PathLike[str]

# How much of a failed command's output an error message quotes: enough to see
# the cause, not so much that a pytest report drowns in it.
_QUOTE_CHARS = 4000


class DevtoolsError(Exception):
    """Root of every error devtools raises on purpose."""


class CommandError(DevtoolsError):
    """A command exited with a non-zero status (or, see `CommandTimeout`, never exited)."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        *,
        where: str = "",
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.where = where
        super().__init__(self._message())

    def _outcome(self) -> str:
        return f"exited with status {self.returncode}"

    def _message(self) -> str:
        place = f" {self.where}" if self.where else ""
        return (
            f"command{place} {self._outcome()}: {shlex.join(self.argv)}\n"
            f"--- stdout ---\n{_tail(self.stdout)}\n"
            f"--- stderr ---\n{_tail(self.stderr)}"
        )


class CommandTimeout(CommandError):
    """A command did not finish before its timeout and was killed."""

    def __init__(
        self,
        argv: Sequence[str],
        timeout: float,
        stdout: str,
        stderr: str,
        *,
        where: str = "",
    ) -> None:
        self.timeout = timeout
        super().__init__(argv, None, stdout, stderr, where=where)

    def _outcome(self) -> str:
        return f"timed out after {self.timeout:g}s"


class WaitTimeout(DevtoolsError, TimeoutError):
    """A condition polled by `wait_until` did not hold before the deadline."""


def _tail(text: str) -> str:
    text = text.rstrip("\n")
    if len(text) <= _QUOTE_CHARS:
        return text
    return "[...]\n" + text[-_QUOTE_CHARS:]


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries whatever was read so far, as bytes even in text mode.
    if output is None:
        return ""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output


@dataclass(frozen=True)
class Deadline:
    """A point in time on the monotonic clock; every wait in devtools is bounded by one."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline `seconds` from now."""
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self.at


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Call `check` until it returns something other than None, and return that.

    Raises `WaitTimeout` naming `what` once `timeout` seconds have passed. The
    condition is always checked one last time at the deadline, so a slow
    `check` cannot make a success look like a timeout.
    """
    deadline = Deadline.after(timeout)
    while True:
        result = check()
        if result is not None:
            return result
        if deadline.expired():
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
        # Sleeping between checks is polling, bounded by the deadline above.
        time.sleep(min(interval, deadline.remaining()))


def run(
    argv: Sequence[StrPath],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: StrPath | None = None,
    where: str = "",
    shown: Sequence[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (never through a shell), capturing stdout and stderr as text.

    stdin is `input` or /dev/null, so nothing ever waits on the terminal.
    With `check`, a non-zero status raises `CommandError` carrying argv,
    status, stdout and stderr; `where` says where it ran and `shown` is the
    argv to quote instead of `argv` (a command without its nsenter prefix).
    A timeout kills the process and raises `CommandTimeout`, even without `check`.
    """
    args = [os.fspath(a) for a in argv]
    quoted = args if shown is None else list(shown)
    log.debug("+ %s%s", shlex.join(quoted), f" ({where})" if where else "")
    try:
        result = subprocess.run(
            args,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            cwd=None if cwd is None else Path(cwd),
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise CommandTimeout(
            quoted, e.timeout, _text(e.stdout), _text(e.stderr), where=where
        ) from e
    except FileNotFoundError as e:
        raise DevtoolsError(f"cannot run {shlex.join(quoted)}: {e}") from e
    if check and result.returncode != 0:
        raise CommandError(quoted, result.returncode, result.stdout, result.stderr, where=where)
    return result
