"""The one way pyrelctl runs a subprocess."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from pyrelctl.errors import CommandFailed, HostError

log = logging.getLogger(__name__)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    input: str | None = None,
    stdin: Path | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (never through a shell), capturing text output.

    stdin is /dev/null unless ``input`` (text) or ``stdin`` (a file, by path
    or as an open file with a descriptor, read from its current offset) is given.
    With ``check``, a non-zero status raises :class:`CommandFailed` carrying
    argv, status and stderr.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s", shlex.join(args))
    with contextlib.ExitStack() as stack:
        source: Any = subprocess.DEVNULL if input is None else None
        if isinstance(stdin, Path):
            source = stack.enter_context(stdin.open("rb"))
        elif stdin is not None:
            source = stdin
        return _run(args, check=check, input=input, stdin=source, env=env, cwd=cwd, timeout=timeout)


def _run(
    args: list[str],
    *,
    check: bool,
    input: str | None,
    stdin: Any,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    timeout: float | None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdin=stdin,
            capture_output=True,
            text=True,
            # A hook or health command of a release may write any bytes (a
            # raw 0x9b); pyrelctl reports them, never dies of them.
            errors="replace",
            env=None if env is None else dict(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise HostError(f"{args[0]} not found", hint="is it installed and on PATH?") from e
    except subprocess.TimeoutExpired as e:
        raise HostError(f"{args[0]} did not finish within {timeout} s") from e
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, proc.stderr)
    return proc


#: Signals passed on to an attached child (see run_attached).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_attached(
    argv: Sequence[str | os.PathLike[str]], *, interrupted: Callable[[int], None]
) -> int:
    """Run ``argv`` on pyrelctl's own stdin, stdout, stderr and terminal; return its status.

    For commands a user talks to (``rpc``, ``eval``, ``remote``): nothing is
    captured, and the child stays in pyrelctl's process group, so it may
    own the terminal. Not an exec, for one reason: SIGINT, SIGTERM and
    SIGHUP also need cleaning up after. Each is passed on to the child; once
    the child has exited, ``interrupted(signum)`` is called (to stop what
    the child started and leaves behind) and 128 + signum is returned, as
    a shell reports it. A child killed by a signal also gives 128 + signum.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s", shlex.join(args))
    received: list[int] = []
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for proc in child:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    # Installed before the child exists, so that no signal finds Python's
    # default (KeyboardInterrupt) handler in between; exec resets them in the
    # child.
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        try:
            proc = subprocess.Popen(args)
        except FileNotFoundError as e:
            raise HostError(f"{args[0]} not found", hint="is it installed and on PATH?") from e
        child.append(proc)
        if received:
            forward(received[0], None)
        status = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        interrupted(received[0])
        return 128 + received[0]
    return status if status >= 0 else 128 - status
