"""Release artifacts that are directories (an unpacked release, or an installed one).

The checks themselves are :mod:`pyrelctl.archive`'s: this module lists a
directory as :class:`~pyrelctl.archive.RawMember` values for
:func:`~pyrelctl.archive.validate` and copies the files that passed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pyrelctl.archive import Artifact, Member, MemberType, RawMember, validate
from pyrelctl.errors import BadInput


class _DirArtifact(Artifact):
    def _open(self, member: Member) -> IO[bytes]:
        fd = os.open(self.source / member.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return open(fd, "rb")


def _stat_type(st: os.stat_result) -> str:
    if stat.S_ISREG(st.st_mode):
        return MemberType.FILE  # hard links in a directory are copied as files
    if stat.S_ISDIR(st.st_mode):
        return MemberType.DIR
    if stat.S_ISLNK(st.st_mode):
        return MemberType.SYMLINK
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "device node"
    if stat.S_ISFIFO(st.st_mode):
        return "FIFO"
    return "socket" if stat.S_ISSOCK(st.st_mode) else "special file"


def _walk_dir(root: Path) -> Iterator[RawMember]:
    def onerror(e: OSError) -> None:
        raise BadInput(f"cannot read {e.filename}: {e.strerror}") from e

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath, name)
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            yield RawMember(
                rel, _stat_type(st), stat.S_IMODE(st.st_mode), st.st_size, target, st.st_mtime
            )


def open_dir(path: Path, fd: int, *, max_bytes: int) -> Artifact:
    """Open and validate the release directory ``path``, opened as ``fd``."""
    os.close(fd)
    return _DirArtifact(path, validate(_walk_dir(path), max_bytes=max_bytes))
