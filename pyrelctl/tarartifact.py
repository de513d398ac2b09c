"""Release artifacts that are tar archives (``.tar.gz``, ``.tgz``, ``.tar``).

The checks are :mod:`pyrelctl.archive`'s; this module reads the archive.
The file is read once, into memory or an unnamed temporary file, and
everything after (the signature check, listing, reading manifests,
extraction) reads that copy: a file swapped at the path meanwhile changes
nothing (issue 15, finding 6). Limits apply while the archive is read, not
after: the member count as headers are read, the size of an extended header
before tarfile reads it (finding 8).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Self

from pyrelctl import archive
from pyrelctl.archive import (
    Artifact,
    Member,
    MemberType,
    RawMember,
    normalise_member_name,
    validate,
)
from pyrelctl.errors import BadInput


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
                if tar.tell() + len(chunk) > archive.SPOOL_LIMIT:
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
    return (max_bytes + archive.MAX_MEMBERS * 16 * tarfile.BLOCKSIZE) * 101 // 100 + 1024 * 1024


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
            in_memory = size <= archive.HELD_IN_MEMORY
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


def open_tarball(
    path: Path, fd: int, *, max_bytes: int, verify: archive.Verifier | None
) -> Artifact:
    """Read the tarball opened as ``fd`` once (and close ``fd``); verify, then
    list and validate that copy (see :func:`pyrelctl.archive.open_artifact`)."""
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
        if count > archive.MAX_MEMBERS:
            raise BadInput(f"archive has more than {archive.MAX_MEMBERS} members")
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
    tarfile reads it (whole, into memory: see archive.MAX_HEADER)."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _EXTENDED_HEADERS and info.size > archive.MAX_HEADER:
            raise BadInput(
                f"archive has an extended header of {info.size} bytes "
                f"(more than {archive.MAX_HEADER})"
            )
        return info
