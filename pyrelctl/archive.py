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

import gzip
import io
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Self

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
#: _proc_gnulong), before we see the member it describes. A path is at most
#: PATH_MAX (4096) bytes and an extended attribute value at most 64 KiB
#: (XATTR_SIZE_MAX, xattr(7)): this leaves room for both.
MAX_HEADER = 128 * 1024
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
            f"archive member {raw.name!r} is a hard link to {raw.target!r}, "
            "which is not a file earlier in the release"
        )
    return linked


def validate(
    raw_members: Iterable[RawMember], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[Member]:
    """Check every member of an artifact; return them normalised, in order.

    Refuses (with :class:`BadInput`) anything that could write outside the
    release root or create something other than plain files, directories and
    links inside it.
    """
    members: list[Member] = []
    types: dict[str, MemberType] = {}  # explicit members and implied parent directories
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
                f"archive member {raw.name!r} is a {raw.type}; only files, "
                "directories and links are allowed"
            ) from None
        if raw.mode & (stat.S_ISUID | stat.S_ISGID):
            raise BadInput(f"archive member {raw.name!r} has a setuid or setgid bit")
        previous = types.get(path)
        if previous is not None and not (previous is kind is MemberType.DIR):
            raise BadInput(
                f"archive member {raw.name!r} appears more than once"
                + (
                    " (an earlier member needs it to be a directory)"
                    if previous is MemberType.DIR
                    else ""
                )
            )
        # No member may live below a symlink (writing through it could land
        # anywhere) or below a file. Parents not listed are implied directories.
        parent = posixpath.dirname(path)
        while parent:
            ptype = types.setdefault(parent, MemberType.DIR)
            if ptype is not MemberType.DIR:
                raise BadInput(f"archive member {raw.name!r} lies below a {ptype}, {parent!r}")
            parent = posixpath.dirname(parent)
        target = raw.target
        if kind is MemberType.SYMLINK:
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
    return members


def _outside(raw: RawMember) -> BadInput:
    return BadInput(
        f"archive member {raw.name!r} is a symlink pointing outside the release ({raw.target!r})",
        hint="links inside a release must be relative and stay inside it",
    )


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


class _TarArtifact(Artifact):
    def __init__(
        self,
        source: Path,
        tar: tarfile.TarFile,
        infos: dict[str, tarfile.TarInfo],
        members: list[Member],
        copy: IO[bytes],
    ) -> None:
        super().__init__(source, members)
        self._tar = tar
        self._infos = infos
        self._copy = copy  # what tar reads: the one read of the artifact file

    def close(self) -> None:
        self._tar.close()  # leaves a fileobj it was given open
        self._copy.close()

    def _open(self, member: Member) -> IO[bytes]:
        f = self._tar.extractfile(self._infos[member.path])
        assert f is not None  # validate() admitted only regular files here
        return f

    def _sources(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        try:
            yield from super()._sources()
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise BadInput(f"{self.source}: corrupt or truncated archive ({e})") from e


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


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _check_archive_end(tar: tarfile.TarFile) -> None:
    """Refuse an archive that is damaged past the last member tarfile listed.

    tarfile ends its listing quietly at the first bad header after the first
    member, which would install a release with members missing; and it stops
    reading at the end-of-archive blocks, so a compressed stream's checksum
    (gzip's CRC32 and size trailer) is never checked. Here the block where the
    listing ended must be the zero end-of-archive block, and the rest of the
    stream is read, so that the decompressor verifies its trailer.
    """
    fileobj = tar.fileobj
    assert fileobj is not None
    fileobj.seek(tar.offset)
    block = fileobj.read(tarfile.BLOCKSIZE)
    if block and block.strip(b"\0"):
        raise tarfile.ReadError(f"damaged member header at byte {tar.offset}")
    while fileobj.read(1024 * 1024):
        pass


def is_tarball(path: Path) -> bool:
    return path.name.endswith(TAR_SUFFIXES)


def _decompressed(raw: IO[bytes], path: Path) -> io.BytesIO | None:
    """The tar inside ``raw``, if it is gzip and the tar within SPOOL_LIMIT.

    None also when gzip cannot even begin (a damaged header): tarfile then
    says why. Read to the end, so gzip checks its CRC32 and length trailer;
    a stream damaged past its start raises BadInput.
    """
    if raw.read(2) != b"\x1f\x8b":  # gzip's magic number (RFC 1952)
        return None
    raw.seek(0)
    tar = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:  # leaves raw open
            while chunk := stream.read(1024 * 1024):
                if tar.tell() + len(chunk) > SPOOL_LIMIT:
                    return None
                tar.write(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        if tar.tell() == 0:
            return None
        raise BadInput(f"{path}: corrupt or truncated archive ({_first_line(e)})") from e
    tar.seek(0)
    return tar


def _largest_file(max_bytes: int) -> int:
    """The largest artifact file a release of ``max_bytes`` could come in.

    Generous (every member with a long-name header and padding, 16 blocks;
    gzip's stored blocks on incompressible data add well under 1%): only a
    file that cannot be such a release is refused, before it is copied.
    """
    return (max_bytes + MAX_MEMBERS * 16 * tarfile.BLOCKSIZE) * 101 // 100 + 1024 * 1024


class _Copy:
    """The one read of an artifact file: in memory, or an unnamed temporary file."""

    def __init__(self, fd: int, path: Path, limit: int) -> None:
        too_big = BadInput(
            f"{path}: larger than any release within the size limit can be",
            hint="raise the limit with install --max-size if this is expected",
        )
        self._data: bytes | None = None
        self._file: IO[bytes] | None = None
        size = os.fstat(fd).st_size
        if size > limit:  # before copying it; a file still growing is caught below
            raise too_big
        # closefd=False: the caller owns fd.
        with open(fd, "rb", closefd=False) as src:
            # read(n) allocates n bytes before reading: n is the file's size
            # (one more byte tells that it grew meanwhile), never more.
            in_memory = size <= HELD_IN_MEMORY
            head = src.read(size + 1) if in_memory else b""
            if in_memory and len(head) <= size:
                self._data = head
                return
            # TemporaryFile is an O_TMPFILE file on Linux (CPython's tempfile):
            # it has no name and mode 0600; nobody else can open or replace it.
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
            try:
                self._file.write(head)
                copied = len(head)
                del head
                while chunk := src.read(1024 * 1024):
                    copied += len(chunk)
                    if copied > limit:
                        raise too_big
                    self._file.write(chunk)
                self._file.flush()
            except BaseException:
                self._file.close()
                raise

    def open(self) -> IO[bytes]:
        """A new file object over the whole copy, at offset 0; read-only."""
        if self._data is not None:
            return io.BytesIO(self._data)  # shares the bytes object: no copy
        assert self._file is not None
        self._file.seek(0)
        # A second descriptor of the same open file (it keeps the file alive
        # after close()); the offset is shared, and 0 when this returns.
        return open(os.dup(self._file.fileno()), "rb")

    def close(self) -> None:
        self._data = None
        if self._file is not None:
            self._file.close()


_SIGN_TARBALL = "sign a tarball, not a directory"


def _open_once(path: Path, *, directory_ok: bool) -> int:
    """The one descriptor ``path`` is read through: a directory, or a regular
    file with a release's name. Follows symlinks: an operator may name a link
    to the artifact; what counts is the type of what was opened (fstat)."""
    try:
        # Only so that a FIFO or device is never opened at all (open(2) of a
        # device can act on it); the fstat below is the check that counts.
        st = os.stat(path)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file or directory") from None
    except OSError as e:
        raise BadInput(f"{path}: cannot read it ({e.strerror})") from e
    if not stat.S_ISDIR(st.st_mode) and not is_tarball(path):
        raise BadInput(f"{path}: not a release (expected a directory, .tar.gz, .tgz or .tar)")
    try:
        # O_NONBLOCK: a FIFO swapped in after the stat must not block open(2)
        # waiting for a writer (fifo(7)); a regular file ignores the flag.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise BadInput(f"{path}: cannot read it ({e.strerror})") from e
    mode = os.fstat(fd).st_mode
    problem = None
    if stat.S_ISDIR(mode) and not directory_ok:
        # Nothing is read of a directory that cannot pass anyway.
        problem = f"{path} is a directory and a signature covers one file: {_SIGN_TARBALL}"
    elif not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
        problem = f"{path}: not a regular file"
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
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        # Imported here: the directory module imports this one.
        from pyrelctl.dirartifact import open_dir

        return open_dir(path, fd, max_bytes=max_bytes)  # owns fd from here
    try:
        copy = _Copy(fd, path, _largest_file(max_bytes))
    finally:
        os.close(fd)
    try:
        if verify is not None:
            with copy.open() as view:
                verify(view)
        source = copy.open()  # keeps the temporary file (if any) alive
    finally:
        copy.close()
    try:
        return _open_tar(path, source, max_bytes)
    except BaseException:
        source.close()
        raise


def _open_tar(path: Path, source: IO[bytes], max_bytes: int) -> Artifact:
    """List and validate the tar in ``source``; the artifact owns ``source``."""
    try:
        spooled = _decompressed(source, path)
        source.seek(0)
        if spooled is not None:
            source.close()  # the compressed bytes are not needed again
            source = spooled
        # Closed by the Artifact it is handed to. "r:*" tries every
        # compression tarfile knows, on the stream we give it.
        tar = tarfile.open(  # noqa: SIM115
            fileobj=source, mode="r:*" if spooled is None else "r:", tarinfo=_ListedTarInfo
        )
    except (tarfile.TarError, EOFError, zlib.error, OSError, RecursionError) as e:
        # tarfile's message lists every compression it tried, one per line.
        raise BadInput(f"{path}: not a readable tar archive") from e
    infos: dict[str, tarfile.TarInfo] = {}
    try:
        members = validate(_listing(tar, infos), max_bytes=max_bytes)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        tar.close()
        raise BadInput(f"{path}: corrupt or truncated archive ({_first_line(e)})") from e
    except RecursionError as e:
        # CPython's TarInfo reads each PAX or GNU long-name header by calling
        # itself for the header that follows: a long chain of them ends here.
        tar.close()
        raise BadInput(f"{path}: corrupt archive (too many extended headers in a row)") from e
    except BaseException:
        tar.close()
        raise
    return _TarArtifact(path, tar, infos, members, source)


def _listing(tar: tarfile.TarFile, infos: dict[str, tarfile.TarInfo]) -> Iterator[RawMember]:
    """The entries of ``tar`` as read, refusing the one past MAX_MEMBERS before
    reading further; ``infos`` gets the regular files' headers (to extract)."""
    count = 0
    while (info := tar.next()) is not None:
        count += 1
        if count > MAX_MEMBERS:
            raise BadInput(f"archive has more than {MAX_MEMBERS} members")
        name = normalise_member_name(info.name)
        if name is not None and info.isreg():
            infos[name] = info
        yield RawMember(
            info.name, _tar_type(info), info.mode, info.size, info.linkname, float(info.mtime)
        )
    _check_archive_end(tar)


_EXTENDED_HEADERS = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class _ListedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses an extended header larger than MAX_HEADER before
    tarfile reads it (whole, into memory: see MAX_HEADER)."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _EXTENDED_HEADERS and info.size > MAX_HEADER:
            raise BadInput(
                f"archive has an extended header of {info.size} bytes (more than {MAX_HEADER})"
            )
        return info
