"""Release artifacts that are tar archives (``.tar.gz``, ``.tgz``, ``.tar``).

The checks are :mod:`pyrelctl.archive`'s; this module reads the archive.
The file is read once, into memory or an unnamed temporary file, and
everything after (the signature check, listing, reading manifests,
extraction) reads that copy: a file swapped at the path meanwhile changes
nothing (issue 15, finding 6). Limits apply before tarfile reads a header:
:mod:`pyrelctl.tarheaders` walks every header of the decompressed tar first
(issue 15, finding 8; issue 26, finding 1), and tarfile must then find each
member where the walk did.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, cast

from pyrelctl import archive, tarheaders
from pyrelctl.archive import (
    Artifact,
    Member,
    MemberType,
    RawMember,
    normalise_member_name,
    shown,
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
        files: ExitStack,
    ) -> None:
        super().__init__(source, members)
        self._tar = tar
        self._infos = infos
        self._files = files  # what tar reads: the one read of the artifact file

    def close(self) -> None:
        self._tar.close()  # leaves a fileobj it was given open
        self._files.close()

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


#: What tarfile's "r:*" reads besides a plain tar, by magic number: gzip (RFC
#: 1952), bzip2, xz. Opened here through the public modules, so that the
#: header walk and tarfile read one and the same stream.
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}


def _decompressing(kind: str, raw: IO[bytes]) -> io.BufferedIOBase:
    """A reader of the ``kind``-compressed ``raw``; closing it leaves ``raw`` open."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(raw)
    return lzma.LZMAFile(raw, format=lzma.FORMAT_XZ)


#: What a damaged compressed stream raises: gzip.BadGzipFile and bz2's
#: "Invalid data stream" are OSErrors, EOFError a stream that ends early.
_DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


def _corrupt(path: Path, e: BaseException) -> BadInput:
    return BadInput(f"{path}: corrupt or truncated archive ({_first_line(e)})")


def _tar_stream(raw: IO[bytes], path: Path) -> IO[bytes]:
    """The tar inside ``raw`` (at offset 0): seekable, at offset 0.

    A compressed tar of at most SPOOL_LIMIT bytes is decompressed once, into
    memory, to the end, so that the decompressor checks its trailer (gzip's
    CRC32 and length); a larger one is read through a decompressing reader
    over ``raw`` (a backward seek decompresses again from the start). A
    plain tar is ``raw`` itself.
    """
    head = raw.read(6)
    raw.seek(0)
    kind = next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)
    if kind is None:
        return raw
    spool = io.BytesIO()
    too_big = False
    try:
        with _decompressing(kind, raw) as stream:  # leaves raw open
            # read1: what one read of the compressed bytes gives, so that a
            # stream damaged later still yields its start (a tar, but corrupt).
            while not too_big and (chunk := stream.read1(1024 * 1024)):
                too_big = spool.tell() + len(chunk) > archive.SPOOL_LIMIT
                if not too_big:
                    spool.write(chunk)
    except _DECOMPRESSION_ERRORS as e:
        if spool.tell() == 0:
            raise BadInput(f"{path}: not a readable tar archive") from e
        raise _corrupt(path, e) from e
    if too_big:
        raw.seek(0)
        return cast(IO[bytes], _decompressing(kind, raw))  # typeshed: not an IO[bytes]
    spool.seek(0)
    return spool


def _walk(stream: IO[bytes], path: Path) -> list[int]:
    """:func:`pyrelctl.tarheaders.walk`, its damage said as the other errors are."""
    try:
        return tarheaders.walk(stream)
    except tarheaders.Damaged as e:
        if e.offset == 0:
            raise BadInput(f"{path}: not a readable tar archive") from e
        raise _corrupt(path, e) from e
    except _DECOMPRESSION_ERRORS as e:  # a larger archive decompresses as it is walked
        raise _corrupt(path, e) from e


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
    list and validate that copy (see :func:`pyrelctl.openartifact.open_artifact`)."""
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
    files = ExitStack()
    files.callback(source.close)
    try:
        stream = _tar_stream(source, path)
        if stream is not source and isinstance(stream, io.BytesIO):
            files.close()  # decompressed: the compressed bytes are not needed again
        files.callback(stream.close)  # closed first: a reader over source, or the spool
        # Every header is checked before tarfile reads one (see tarheaders).
        offsets = _walk(stream, path)
        stream.seek(0)
        # Closed by the Artifact it is handed to. "r:": the stream is the tar.
        tar = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115
    except BadInput:
        files.close()
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        files.close()
        raise BadInput(f"{path}: not a readable tar archive") from e
    infos: dict[str, tarfile.TarInfo] = {}
    try:
        members = validate(
            _listing(tar, infos, offsets), max_bytes=max_bytes, same_content=_same_content(tar)
        )
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        tar.close()
        files.close()
        raise _corrupt(path, e) from e
    except BaseException:
        tar.close()
        files.close()
        raise
    return _TarArtifact(path, tar, infos, members, files)


def _listing(
    tar: tarfile.TarFile, infos: dict[str, tarfile.TarInfo], offsets: list[int]
) -> Iterator[RawMember]:
    """The entries of ``tar`` as read; ``infos`` gets the regular files'
    headers (to extract). Each must be the member the header walk found."""
    count = 0
    while (info := tar.next()) is not None:
        if count >= len(offsets) or info.offset_data != offsets[count]:
            # The walk checked other headers than tarfile reads: a case
            # tarheaders does not know. Refused, whatever it holds.
            raise BadInput(
                f"archive member {shown(info.name)} is not where the tar headers "
                "say; the archive reads two ways"
            )
        count += 1
        name = normalise_member_name(info.name)
        if name is not None and info.isreg():
            infos.setdefault(name, info)
        yield RawMember(
            info.name,
            _tar_type(info),
            info.mode,
            info.size,
            info.linkname,
            float(info.mtime),
            ref=count - 1,  # its index in tar.getmembers()
        )
    _check_archive_end(tar)
    if count != len(offsets):
        raise BadInput("archive ends early in tarfile's reading; the archive reads two ways")


def _same_content(tar: tarfile.TarFile) -> archive.SameContent:
    """Compares the content of files listed twice (see archive.validate) by a
    digest of each copy, read in archive order: one pass at most, however
    many copies (a larger archive is decompressed again for it)."""

    def check(copies: list[tuple[RawMember, RawMember]]) -> None:
        infos = tar.getmembers()  # all of them, read: the listing is complete
        refs = sorted({m.ref for pair in copies for m in pair}, key=lambda i: infos[i].offset_data)
        digests = {ref: _digest(tar, infos[ref]) for ref in refs}
        for first, later in copies:
            if digests[first.ref] != digests[later.ref]:
                raise BadInput(
                    f"archive member {shown(later.name)} appears more than once, "
                    "with different content"
                )

    return check


def _digest(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(info)
    assert f is not None  # a regular file
    digest = hashlib.sha256()
    while chunk := f.read(1024 * 1024):
        digest.update(chunk)
    return digest.digest()
