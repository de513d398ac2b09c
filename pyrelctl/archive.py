"""Reading release artifacts (a directory or a tar archive) without trusting them.

Every member is checked before a single byte is written: paths must stay
inside the release root, links must point inside it and never be walked
through, and only regular files, directories, symlinks and hard links are
accepted. The checks are pure functions over :class:`Member` values so that
they can be tested exhaustively; :class:`Artifact` then extracts exactly the
members that passed.

Python's own ``tarfile`` extraction filters (3.11.4+) are not used: Debian
12 ships 3.11.2 without them, and we need stricter rules anyway (no setuid
bits, no duplicates, nothing written through a symlink member).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

from pyrelctl.errors import BadInput

#: Default ceiling on the unpacked size of one release (settable per call).
DEFAULT_MAX_BYTES = 8 * 1024**3
#: More members than this is a zip bomb of another kind (inodes).
MAX_MEMBERS = 1_000_000
#: Largest manifest-like file read into memory before extraction.
MAX_SMALL_FILE = 1024 * 1024

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class MemberType(StrEnum):
    FILE = "file"
    DIR = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hard link"


@dataclass(frozen=True)
class Member:
    """One validated entry of a release: a normalised relative POSIX path."""

    path: str
    type: MemberType
    mode: int
    size: int = 0
    target: str = ""  # symlink: the link text; hard link: the member it links to
    mtime: float = 0.0


@dataclass(frozen=True)
class RawMember:
    """An entry as the artifact describes it, before any check."""

    name: str
    type: str  # a MemberType value, or a description of anything else ("FIFO", ...)
    mode: int
    size: int = 0
    target: str = ""
    mtime: float = 0.0


def normalise_member_name(name: str) -> str | None:
    """The release-relative path of a member name, or ``None`` for the root itself.

    Raises :class:`BadInput` for absolute names and names with ``..`` parts.
    """
    if "\x00" in name:
        raise BadInput(f"archive member {name!r} has a NUL byte in its name")
    if name.startswith("/"):
        raise BadInput(f"archive member {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(f"archive member {name!r} escapes the release root ('..')")
    return "/".join(parts) if parts else None


def _link_stays_inside(member_path: str, target: str) -> bool:
    if not target or target.startswith("/") or "\x00" in target:
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member_path), target))
    return resolved != ".." and not resolved.startswith("../")


def validate(
    raw_members: Iterable[RawMember], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[Member]:
    """Check every member of an artifact; return them normalised, in order.

    Refuses (with :class:`BadInput`) anything that could write outside the
    release root or create something other than plain files, directories and
    links inside it.
    """
    members: list[Member] = []
    types: dict[str, MemberType] = {}
    total = 0
    for raw in raw_members:
        if len(members) >= MAX_MEMBERS:
            raise BadInput(f"archive has more than {MAX_MEMBERS} members")
        path = normalise_member_name(raw.name)
        if path is None:
            continue  # "./": the release root itself, which we create
        try:
            kind = MemberType(raw.type)
        except ValueError:
            raise BadInput(
                f"archive member {raw.name!r} is a {raw.type}; only files, "
                "directories and links are allowed"
            ) from None
        if raw.mode & (stat.S_ISUID | stat.S_ISGID):
            raise BadInput(f"archive member {raw.name!r} has a setuid or setgid bit")
        previous = types.get(path)
        if previous is not None and not (previous is kind is MemberType.DIR):
            raise BadInput(f"archive member {raw.name!r} appears more than once")
        # No member may live below a symlink (writing through it could land
        # anywhere) or below a file.
        parent = posixpath.dirname(path)
        while parent:
            ptype = types.get(parent)
            if ptype is not None and ptype is not MemberType.DIR:
                raise BadInput(f"archive member {raw.name!r} lies below a {ptype}, {parent!r}")
            parent = posixpath.dirname(parent)
        target = raw.target
        if kind is MemberType.SYMLINK and not _link_stays_inside(path, target):
            raise BadInput(
                f"archive member {raw.name!r} is a symlink pointing outside the release "
                f"({target!r})",
                hint="links inside a release must be relative and stay inside it",
            )
        if kind is MemberType.HARDLINK:
            linked = normalise_member_name(target) if target else None
            if linked is None or types.get(linked) is not MemberType.FILE:
                raise BadInput(
                    f"archive member {raw.name!r} is a hard link to {target!r}, "
                    "which is not a file earlier in the release"
                )
            target = linked
        if kind is MemberType.FILE:
            total += raw.size
            if total > max_bytes:
                raise BadInput(
                    f"archive expands to more than {max_bytes} bytes",
                    hint="raise the limit with --max-size if this is expected",
                )
        types[path] = kind
        # Releases are immutable: nobody but root may write into them.
        mode = 0o755 if kind is MemberType.DIR else (raw.mode & 0o755) | 0o600
        members.append(Member(path, kind, mode, raw.size, target, raw.mtime))
    if not members:
        raise BadInput("the artifact is empty")
    return members


class Artifact:
    """A release artifact whose members passed :func:`validate`.

    Open with :func:`open_artifact`; use as a context manager.
    """

    def __init__(self, source: Path, members: list[Member]) -> None:
        self.source = source
        self.members = members
        self._by_path = {m.path: m for m in members}

    def __enter__(self) -> Artifact:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the underlying file, if any."""

    def has(self, path: str) -> bool:
        """Whether the release has a member at ``path`` (no link following)."""
        return path in self._by_path

    def member(self, path: str) -> Member | None:
        return self._by_path.get(path)

    def list_dir(self, path: str) -> list[Member]:
        """The members directly inside directory ``path``."""
        prefix = f"{path}/"
        return [
            m
            for m in self.members
            if m.path.startswith(prefix) and "/" not in m.path[len(prefix) :]
        ]

    def read(self, path: str) -> bytes:
        """The content of a small regular file of the release (manifests)."""
        member = self._by_path.get(path)
        if member is None or member.type is not MemberType.FILE:
            raise BadInput(f"{path} is missing from the release, or not a regular file")
        if member.size > MAX_SMALL_FILE:
            raise BadInput(f"{path} is larger than {MAX_SMALL_FILE} bytes")
        with self._open(member) as f:
            return f.read(MAX_SMALL_FILE + 1)

    def _open(self, member: Member) -> IO[bytes]:
        raise NotImplementedError

    def _sources(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        for member in self.members:
            if member.type is MemberType.FILE:
                with self._open(member) as f:
                    yield member, f
            else:
                yield member, None

    def extract(self, dest: Path) -> None:
        """Write every member below the new, empty directory ``dest``."""
        dest.mkdir(mode=0o755)
        dirs: list[Member] = []
        for member, src in self._sources():
            target = dest / member.path
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if member.type is MemberType.DIR:
                target.mkdir(mode=0o755, exist_ok=True)
                dirs.append(member)
            elif member.type is MemberType.FILE:
                assert src is not None
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(target, flags, 0o600)
                with open(fd, "wb") as out:
                    shutil.copyfileobj(src, out, 1024 * 1024)
                    os.fchmod(out.fileno(), member.mode)
                os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
            elif member.type is MemberType.SYMLINK:
                os.symlink(member.target, target)
            else:
                os.link(dest / member.target, target, follow_symlinks=False)
        # Directory times last: creating their entries changed them.
        for member in reversed(dirs):
            os.utime(dest / member.path, (member.mtime, member.mtime), follow_symlinks=False)


class _TarArtifact(Artifact):
    def __init__(
        self,
        source: Path,
        tar: tarfile.TarFile,
        infos: dict[str, tarfile.TarInfo],
        members: list[Member],
    ) -> None:
        super().__init__(source, members)
        self._tar = tar
        self._infos = infos

    def close(self) -> None:
        self._tar.close()

    def _open(self, member: Member) -> IO[bytes]:
        f = self._tar.extractfile(self._infos[member.path])
        assert f is not None  # validate() admitted only regular files here
        return f

    def _sources(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        try:
            yield from super()._sources()
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise BadInput(f"{self.source}: corrupt or truncated archive ({e})") from e


class _DirArtifact(Artifact):
    def _open(self, member: Member) -> IO[bytes]:
        fd = os.open(self.source / member.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return open(fd, "rb")


def _tar_type(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return MemberType.FILE
    if info.isdir():
        return MemberType.DIR
    if info.issym():
        return MemberType.SYMLINK
    if info.islnk():
        return MemberType.HARDLINK
    if info.ischr() or info.isblk():
        return "device node"
    if info.isfifo():
        return "FIFO"
    return "special file"


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


def is_tarball(path: Path) -> bool:
    return path.name.endswith(TAR_SUFFIXES)


def open_artifact(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Artifact:
    """Open and validate a release directory or ``.tar.gz``/``.tgz``/``.tar`` archive."""
    if path.is_dir():
        return _DirArtifact(path, validate(_walk_dir(path), max_bytes=max_bytes))
    if not path.exists():
        raise BadInput(f"{path}: no such file or directory")
    if not is_tarball(path):
        raise BadInput(f"{path}: not a release (expected a directory, .tar.gz, .tgz or .tar)")
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115  # closed by the Artifact it is handed to
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise BadInput(f"{path}: not a readable tar archive ({e})") from e
    try:
        infos: dict[str, tarfile.TarInfo] = {}
        raws: list[RawMember] = []
        for info in tar:
            raws.append(
                RawMember(
                    info.name,
                    _tar_type(info),
                    info.mode,
                    info.size,
                    info.linkname,
                    float(info.mtime),
                )
            )
            name = normalise_member_name(info.name)
            if name is not None:
                infos[name] = info
        members = validate(raws, max_bytes=max_bytes)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        tar.close()
        raise BadInput(f"{path}: corrupt or truncated archive ({e})") from e
    except BaseException:
        tar.close()
        raise
    return _TarArtifact(path, tar, infos, members)
