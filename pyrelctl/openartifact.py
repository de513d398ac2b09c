"""Opening a release artifact: the one place that chooses how to read it.

:mod:`pyrelctl.archive` holds the checks and the :class:`~pyrelctl.archive.Artifact`
base; :mod:`pyrelctl.tarartifact` and :mod:`pyrelctl.dirartifact` read the two
kinds. :func:`open_artifact` opens the path once, looks at what it opened and
hands the descriptor to the module of its kind, so that the base never
imports its implementations.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pyrelctl.archive import Artifact, Verifier, is_tarball
from pyrelctl.defaults import DEFAULT_MAX_BYTES
from pyrelctl.errors import BadInput

_SIGN_TARBALL = "sign a tarball, not a directory"


def _refusal(path: Path, mode: int, *, directory_ok: bool) -> str | None:
    if stat.S_ISDIR(mode):
        # Nothing is read of a directory that cannot pass anyway.
        return (
            None
            if directory_ok
            else f"{path} is a directory and a signature covers one file: {_SIGN_TARBALL}"
        )
    if not is_tarball(path):
        return f"{path}: not a release (expected a directory, .tar.gz, .tgz or .tar)"
    return None if stat.S_ISREG(mode) else f"{path}: not a regular file"


def _open_once(path: Path, *, directory_ok: bool) -> int:
    """The one descriptor ``path`` is read through: a directory, or a regular
    file with a release's name. Follows symlinks: an operator may name a link
    to the artifact; what counts is the type of what was opened (fstat)."""
    try:
        # Only so that a FIFO or device is never opened at all (open(2) of a
        # device can act on it); the fstat below is the check that counts.
        problem = _refusal(path, os.stat(path).st_mode, directory_ok=directory_ok)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file or directory") from None
    except OSError as e:
        raise BadInput(f"{path}: cannot read it ({e.strerror})") from e
    if problem is not None:
        raise BadInput(problem)
    try:
        # O_NONBLOCK: a FIFO swapped in after the stat must not block open(2)
        # waiting for a writer (fifo(7)); a regular file ignores the flag.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise BadInput(f"{path}: cannot read it ({e.strerror})") from e
    problem = _refusal(path, os.fstat(fd).st_mode, directory_ok=directory_ok)
    if problem is not None:
        os.close(fd)
        raise BadInput(problem)
    return fd


def open_artifact(
    path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, verify: Verifier | None = None
) -> Artifact:
    """Open and validate a release directory or ``.tar.gz``/``.tgz``/``.tar`` archive.

    A tarball is read once: ``verify`` (a signature check), when given, is
    called exactly once with a seekable file object at offset 0 over exactly
    the bytes that are then parsed, validated and extracted, before any of
    them is parsed; it raises BadInput to refuse. A file swapped at ``path``
    meanwhile changes nothing. A directory cannot be verified: with
    ``verify`` it is refused.
    """
    fd = _open_once(path, directory_ok=verify is None)
    # Imported here: a directory needs no tarfile or gzip.
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        from pyrelctl.dirartifact import open_dir

        return open_dir(path, fd, max_bytes=max_bytes)  # owns fd from here
    from pyrelctl.tarartifact import open_tarball

    return open_tarball(path, fd, max_bytes=max_bytes, verify=verify)  # closes fd
