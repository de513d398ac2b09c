"""Release artifacts that are directories (an unpacked release, or an installed one).

The checks themselves are :mod:`pyrelctl.archive`'s: this module lists a
directory as :class:`~pyrelctl.archive.RawMember` values for
:func:`~pyrelctl.archive.validate` and copies the files that passed.

A directory may change between that listing and the copy, which comes
later (after detection, checksums, the app's lock): a subdirectory swapped
for a symlink to a root-only directory, a file for a FIFO, a file grown
(issue 15, finding 7). So it is never read through a path. The release
directory stays open as one descriptor; every component below it is opened
relative to its parent's descriptor with O_NOFOLLOW (openat(2)), and must be
the very inode that was listed (device and inode from fstat(2)); a file
must also have kept its type, mode and size, and is read for exactly that
size. Anything else is refused: what lands in a release is the content of a
file that was validated, inside the directory that was validated.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pyrelctl import archive
from pyrelctl.archive import Artifact, Member, MemberType, RawMember, validate
from pyrelctl.errors import BadInput

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: A directory below the release root: never a symlink (O_NOFOLLOW fails
#: with ELOOP, O_DIRECTORY with ENOTDIR), see open(2).
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A file: O_NONBLOCK and O_NOCTTY so that a FIFO or a terminal swapped in
#: after the lstat neither blocks open(2) (fifo(7)) nor becomes ours; it is
#: refused on fstat. Reads of a regular file ignore O_NONBLOCK.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

#: What was listed of an entry: device, inode, st_mode (type and bits), size.
_Seen = tuple[int, int, int, int]


def _seen(st: os.stat_result) -> _Seen:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size)


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


class _Tree:
    """A release directory read through descriptors, as it was listed."""

    def __init__(self, source: Path, root_fd: int) -> None:
        self.source = source
        self._root = root_fd
        self._seen: dict[str, _Seen] = {}
        self._cached: tuple[str, int] | None = None  # the last directory opened

    def close(self) -> None:
        self._uncache()
        os.close(self._root)

    def _uncache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def changed(self, rel: str) -> BadInput:
        return BadInput(
            f"{self.source / rel} changed while the release was read "
            "(replaced, moved, grown or shrunk, or its mode changed)",
            hint="install it again once nothing is writing to the release directory",
        )

    def _same(self, rel: str, st: os.stat_result) -> bool:
        seen = self._seen.get(rel)
        if seen is None:
            return False
        if stat.S_ISDIR(seen[2]):  # its mode does not matter: releases get 0755
            return seen[:2] == (st.st_dev, st.st_ino) and stat.S_ISDIR(st.st_mode)
        return seen == _seen(st)

    def directory(self, rel: str) -> int:
        """A descriptor of listed directory ``rel`` ("" is the root), valid
        until the next call; opened component by component from the root."""
        if not rel:
            return self._root
        if self._cached is not None and self._cached[0] == rel:
            return self._cached[1]
        self._uncache()
        parts = rel.split("/")
        fd = self._root
        try:
            for depth in range(1, len(parts) + 1):
                path = "/".join(parts[:depth])
                try:
                    child = os.open(parts[depth - 1], _DIR_FLAGS, dir_fd=fd)
                except OSError as e:  # ELOOP, ENOTDIR: no longer a directory; ENOENT
                    raise self.changed(path) from e
                if fd != self._root:
                    os.close(fd)
                fd = child
                if not self._same(path, os.fstat(fd)):
                    raise self.changed(path)
        except BaseException:
            if fd != self._root:
                os.close(fd)
            raise
        self._cached = (rel, fd)
        return fd

    def walk(self) -> Iterator[RawMember]:
        """Every entry below the root, a directory's entries sorted, then its
        subdirectories' (depth first); at most MAX_MEMBERS of them."""
        pending = [""]
        count = 0
        while pending:
            rel = pending.pop()
            fd = self.directory(rel)
            names: list[str] = []
            try:
                with os.scandir(fd) as entries:  # scandir(fd) reads a dup of fd
                    for entry in entries:
                        count += 1
                        if count > archive.MAX_MEMBERS:
                            raise BadInput(f"archive has more than {archive.MAX_MEMBERS} members")
                        names.append(entry.name)
            except OSError as e:
                raise BadInput(f"cannot read {self.source / rel}: {e.strerror}") from e
            listed: list[RawMember] = []
            subdirs: list[str] = []
            for name in sorted(names):
                path = f"{rel}/{name}" if rel else name
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    link = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else ""
                except OSError as e:
                    raise BadInput(f"cannot read {self.source / path}: {e.strerror}") from e
                if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                    self._seen[path] = _seen(st)
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(path)
                mode = stat.S_IMODE(st.st_mode)
                listed.append(RawMember(path, _stat_type(st), mode, st.st_size, link, st.st_mtime))
            yield from listed
            pending.extend(reversed(subdirs))

    def open_file(self, member: Member) -> IO[bytes]:
        """The content of file ``member``, exactly as listed."""
        parent, name = posixpath.split(member.path)
        fd = self.directory(parent)
        try:
            # lstat first, so that a FIFO or device put in its place is not
            # even opened; the fstat after the open is the check that counts.
            if not self._same(member.path, os.stat(name, dir_fd=fd, follow_symlinks=False)):
                raise self.changed(member.path)
            file_fd = os.open(name, _FILE_FLAGS, dir_fd=fd)
        except OSError as e:
            raise self.changed(member.path) from e
        try:
            if not self._same(member.path, os.fstat(file_fd)):
                raise self.changed(member.path)
            raw = _Exactly(file_fd, member.size, lambda: self.changed(member.path))
        except BaseException:
            os.close(file_fd)
            raise
        return io.BufferedReader(raw)


class _Exactly(io.RawIOBase):
    """A file's first ``size`` bytes, refusing (``changed()``) a file that
    turns out shorter or longer: written to while it was being copied."""

    def __init__(self, fd: int, size: int, changed: Callable[[], BadInput]) -> None:
        super().__init__()
        self._fd = fd
        self._left = size
        self._changed = changed

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._left == 0:
            if len(view) and os.read(self._fd, 1):
                raise self._changed()  # longer than listed
            return 0
        n = os.readv(self._fd, [view[: self._left]])
        if n == 0 and len(view):
            raise self._changed()  # shorter than listed
        self._left -= n
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class _DirArtifact(Artifact):
    def __init__(self, source: Path, tree: _Tree, members: list[Member]) -> None:
        super().__init__(source, members)
        self._tree = tree

    def close(self) -> None:
        self._tree.close()

    def _open(self, member: Member) -> IO[bytes]:
        return self._tree.open_file(member)


def open_dir(path: Path, fd: int, *, max_bytes: int) -> Artifact:
    """Open and validate the release directory ``path``, opened as ``fd``
    (which the artifact owns from here, and closes)."""
    tree = _Tree(path, fd)
    try:
        return _DirArtifact(path, tree, validate(tree.walk(), max_bytes=max_bytes))
    except BaseException:
        tree.close()
        raise
