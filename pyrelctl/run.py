"""The one way pyrelctl runs a subprocess."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyrelctl.errors import CommandFailed, HostError

log = logging.getLogger(__name__)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (never through a shell), capturing text output.

    stdin is /dev/null unless ``input`` is given. With ``check``, a non-zero
    status raises :class:`CommandFailed` carrying argv, status and stderr.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s", shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
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
