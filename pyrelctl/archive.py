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

This module is the base of the artifact family and imports none of its
implementations: :mod:`pyrelctl.tarartifact` (read once, verified before it
is parsed) and :mod:`pyrelctl.dirartifact` (read through descriptors, never
through a path that may have changed) build on it, and
:func:`pyrelctl.openartifact.open_artifact`, above them, chooses one.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

from pyrelctl.defaults import DEFAULT_MAX_BYTES
from pyrelctl.errors import BadInput

#: Most entries an artifact may list. A mix release has about 600, a large
#: Python release (a venv's worth of site-packages) some tens of thousands;
#: far more is a zip bomb of another kind (inodes, and memory while listing:
#: 1.4 MB of .tar.gz can hold 300,000 empty members). Counted while the
#: archive is read, so listing stops here (issue 15, finding 8).
MAX_MEMBERS = 200_000
#: Largest PAX or GNU long-name header. CPython's TarInfo reads such a header
#: whole, in one read of the size it declares (TarInfo._proc_pax and
#: _proc_gnulong), before we see the member it describes: pyrelctl.tarheaders
#: refuses a larger one before tarfile reads it. A path is at most PATH_MAX
#: (4096) bytes and an extended attribute value at most 64 KiB
#: (XATTR_SIZE_MAX, xattr(7)): this leaves room for both.
MAX_HEADER = 128 * 1024
#: Longest member path and symlink target (PATH_MAX less its NUL, and the
#: longest name of one path component (NAME_MAX), limits.h / path_resolution(7):
#: longer ones would fail at extraction, with a raw OSError, not be refused.
MAX_PATH = 4095
MAX_NAME = 255
#: Characters of an artifact's text (a member name, a link) quoted in a
#: message: a name may be up to MAX_HEADER bytes, an error is one short line.
SHOWN = 100
#: Largest manifest-like file read into memory before extraction.
MAX_SMALL_FILE = 1024 * 1024
#: A .tar.gz whose tar is at most this large is decompressed once, into
#: memory. tarfile reads a compressed stream from its start again at every
#: backward seek: listing, reading the manifests and extracting would
#: decompress a mix release about three times (bench/, issue 7). A larger
#: archive is read as a stream, as before, rather than held in memory.
SPOOL_LIMIT = 128 * 1024 * 1024
#: An artifact file up to this size is read into memory, a larger one into an
#: unnamed temporary file: in both cases it is read once, and the signature,
#: the listing and the extraction all see that one copy (issue 15, finding 6).
HELD_IN_MEMORY = 64 * 1024 * 1024

#: Checks an artifact's bytes (its signature) before any of them is parsed:
#: called with a seekable binary file at offset 0; raises BadInput to refuse.
Verifier = Callable[[IO[bytes]], None]

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")

#: Called with (members written, members in all) while a release is unpacked.
Progress = Callable[[int, int], None]


class MemberType(StrEnum):
    FILE = "file"
    DIR = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hard link"


@dataclass(frozen=True, slots=True)
class Member:
    """One validated entry of a release: a normalised relative POSIX path."""

    path: str
    type: MemberType
    mode: int
    size: int = 0
    target: str = ""  # symlink: the link text; hard link: the member it links to
    mtime: float = 0.0


@dataclass(frozen=True, slots=True)
class RawMember:
    """An entry as the artifact describes it, before any check."""

    name: str
    type: str  # a MemberType value, or a description of anything else ("FIFO", ...)
    mode: int
    size: int = 0
    target: str = ""
    mtime: float = 0.0
    ref: int = -1  # which entry of its artifact this is, for the artifact's own use


#: Checks that the regular files listed twice, as (first, later) pairs, have
#: the same content; raises BadInput for a pair that differs.
SameContent = Callable[[list[tuple[RawMember, RawMember]]], None]


def shown(text: str) -> str:
    """``text`` quoted for a one-line message (repr: no control characters),
    cut after SHOWN characters and followed by its length in bytes."""
    if len(text) <= SHOWN:
        return repr(text)
    return f"{text[:SHOWN]!r}…({_size(text)} bytes)"


def _too_long(text: str, limit: int) -> bool:
    """Whether ``text`` is more than ``limit`` bytes in the file system's
    encoding (UTF-8, undecodable bytes as surrogate escapes)."""
    # A character is at most 4 bytes: most names need no encoding.
    return len(text) * 4 > limit and _size(text) > limit


def _size(text: str) -> int:
    try:
        return len(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # a lone surrogate (not an escaped byte): 3 bytes
        return len(text.encode("utf-8", "surrogatepass"))


def normalise_member_name(name: str) -> str | None:
    """The release-relative path of a member name, or ``None`` for the root itself.

    Raises :class:`BadInput` for absolute names and names with ``..`` parts.
    """
    if "\x00" in name:
        raise BadInput(f"archive member {shown(name)} has a NUL byte in its name")
    if name.startswith("/"):
        raise BadInput(f"archive member {shown(name)} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(f"archive member {shown(name)} escapes the release root ('..')")
    path = "/".join(parts)
    if _too_long(path, MAX_PATH) or any(_too_long(p, MAX_NAME) for p in parts):
        raise BadInput(
            f"archive member {shown(name)} has a name too long for a file system "
            f"(more than {MAX_PATH} bytes, or {MAX_NAME} in one component)"
        )
    return path or None


#: Symlinks followed while resolving one link target, as in the kernel (MAXSYMLINKS).
MAX_LINK_DEPTH = 40


def resolve_link(
    directory: str, target: str, links: Mapping[str, str], depth: int = 0
) -> str | None:
    """Where ``target``, read in release directory ``directory``, physically leads.

    Follows the release's own symlinks (``links``: member path -> link text)
    component by component, as the kernel would, so that ``e -> d/up/..``
    with ``d/up -> ..`` is seen to leave the release although it looks
    harmless lexically. Returns the release-relative path ("" is the root),
    or ``None`` if the walk leaves the release, is absolute, or loops.
    """
    if depth > MAX_LINK_DEPTH or not target or target.startswith("/") or "\x00" in target:
        return None
    current = [p for p in directory.split("/") if p]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                return None
            current.pop()
            continue
        link = links.get("/".join([*current, part]))
        if link is None:
            current.append(part)
            continue
        landed = resolve_link("/".join(current), link, links, depth + 1)
        if landed is None:
            return None
        current = [p for p in landed.split("/") if p]
    return "/".join(current)


def _hardlink_target(raw: RawMember, types: Mapping[str, MemberType]) -> str:
    try:
        linked = normalise_member_name(raw.target) if raw.target else None
    except BadInput:
        linked = None
    if linked is None or types.get(linked) is not MemberType.FILE:
        raise BadInput(
            f"archive member {shown(raw.name)} is a hard link to {shown(raw.target)}, "
            "which is not a file earlier in the release"
        )
    return linked


def validate(
    raw_members: Iterable[RawMember],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    same_content: SameContent | None = None,
) -> list[Member]:
    """Check every member of an artifact; return them normalised, in order.

    Refuses (with :class:`BadInput`) anything that could write outside the
    release root or create something other than plain files, directories and
    links inside it. A member listed again is the same member (kept once)
    or refused: same type, mode, size and link target, and for a regular
    file the same content, which ``same_content`` checks (without it, a
    regular file listed twice is refused).
    """
    members: list[Member] = []
    types: dict[str, MemberType] = {}  # explicit members and implied parent directories
    firsts: dict[str, RawMember] = {}  # each path's member, but directories
    copies: list[tuple[RawMember, RawMember]] = []  # regular files listed again
    links: dict[str, str] = {}
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
                f"archive member {shown(raw.name)} is a {raw.type}; only files, "
                "directories and links are allowed"
            ) from None
        if raw.mode & (stat.S_ISUID | stat.S_ISGID):
            raise BadInput(f"archive member {shown(raw.name)} has a setuid or setgid bit")
        previous = types.get(path)
        if previous is not None and not (previous is kind is MemberType.DIR):
            # Mix's tar step lists files of rel/overlays/bin/ up to three
            # times (issue 27, finding 2): the same file again is extracted
            # once; a different one is refused.
            first = _same_again(raw, kind, previous, firsts.get(path))
            if kind is MemberType.FILE:
                copies.append((first, raw))
            continue
        if kind is not MemberType.DIR:
            firsts[path] = raw
        # No member may live below a symlink (writing through it could land
        # anywhere) or below a file. Parents not listed are implied directories.
        parent = posixpath.dirname(path)
        while parent:
            ptype = types.setdefault(parent, MemberType.DIR)
            if ptype is not MemberType.DIR:
                raise BadInput(
                    f"archive member {shown(raw.name)} lies below a {ptype}, {shown(parent)}"
                )
            parent = posixpath.dirname(parent)
        target = raw.target
        if kind is MemberType.SYMLINK:
            if _too_long(target, MAX_PATH):
                raise BadInput(
                    f"archive member {shown(raw.name)} is a symlink longer than {MAX_PATH} bytes"
                )
            if resolve_link(posixpath.dirname(path), target, {}) is None:
                raise _outside(raw)
            links[path] = target
        elif kind is MemberType.HARDLINK:
            target = _hardlink_target(raw, types)
        elif kind is MemberType.FILE:
            total += raw.size
            if total > max_bytes:
                raise BadInput(
                    f"archive expands to more than {max_bytes} bytes",
                    hint="raise the limit with install --max-size if this is expected",
                )
        types[path] = kind
        # Releases are immutable: nobody but root may write into them.
        mode = 0o755 if kind is MemberType.DIR else (raw.mode & 0o755) | 0o600
        members.append(Member(path, kind, mode, raw.size, target, raw.mtime))
    if not members:
        raise BadInput("the artifact is empty")
    # Only now are all links known: a link may lead through one listed later.
    for member in members:
        if (
            member.type is MemberType.SYMLINK
            and resolve_link(posixpath.dirname(member.path), member.target, links) is None
        ):
            raise _outside(RawMember(member.path, member.type, 0, target=member.target))
    if copies:
        if same_content is None:
            raise BadInput(f"archive member {shown(copies[0][1].name)} appears more than once")
        same_content(copies)
    return members


def _same_again(
    raw: RawMember, kind: MemberType, previous: MemberType, first: RawMember | None
) -> RawMember:
    """The earlier member at ``raw``'s path, if ``raw`` is the same member
    again: same type, mode, size and link target (a file's content is
    compared later, by the artifact). Otherwise refuses ``raw``."""
    name = shown(raw.name)
    if first is None or previous is MemberType.DIR:
        raise BadInput(
            f"archive member {name} appears more than once "
            "(an earlier member needs it to be a directory)"
        )
    if previous is not kind:
        raise BadInput(
            f"archive member {name} appears more than once, as a {previous} and as a {kind}"
        )
    if raw.mode != first.mode:
        raise BadInput(
            f"archive member {name} appears more than once, with modes "
            f"{first.mode:o} and {raw.mode:o}"
        )
    if raw.size != first.size:
        raise BadInput(f"archive member {name} appears more than once, with different content")
    if raw.target != first.target:
        raise BadInput(f"archive member {name} appears more than once, with different targets")
    return first


def _outside(raw: RawMember) -> BadInput:
    return BadInput(
        f"archive member {shown(raw.name)} is a symlink pointing outside the release "
        f"({shown(raw.target)})",
        hint="links inside a release must be relative and stay inside it",
    )


class Artifact:
    """A release artifact whose members passed :func:`validate`.

    Open with :func:`pyrelctl.openartifact.open_artifact`; use as a context manager.
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

    def iter_files(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        """Regular files with a stream of their content, and hard links (stream
        None: their content is their target's), in archive order, in one pass."""
        for member, src in self._sources():
            if member.type in (MemberType.FILE, MemberType.HARDLINK):
                yield member, src

    def _sources(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        for member in self.members:
            if member.type is MemberType.FILE:
                with self._open(member) as f:
                    yield member, f
            else:
                yield member, None

    def extract(self, dest: Path, progress: Progress | None = None) -> None:
        """Write every member below the new, empty directory ``dest``.

        ``progress(done, total)`` is called as members are written (about a
        hundred times per release, whatever its size).
        """
        dest.mkdir(mode=0o700)
        dirs: list[Member] = []
        total = len(self.members)
        step = max(1, total // 100)
        for done, (member, src) in enumerate(self._sources(), 1):
            if progress is not None and (done % step == 0 or done == total):
                progress(done, total)
            target = dest / member.path
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if member.type is MemberType.DIR:
                target.mkdir(mode=0o700, exist_ok=True)
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
        # Directory modes are set explicitly, never left to the umask (0077
        # would hide the release from the service user); times last, since
        # creating their entries changed them.
        for dirpath, _dirnames, _files in os.walk(dest):
            os.chmod(dirpath, 0o755)
        for member in reversed(dirs):
            os.utime(dest / member.path, (member.mtime, member.mtime), follow_symlinks=False)


def is_tarball(path: Path) -> bool:
    return path.name.endswith(TAR_SUFFIXES)
