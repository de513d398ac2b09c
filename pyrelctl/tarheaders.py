"""A walk over a tar stream's 512-byte headers, before tarfile parses any of them.

CPython's tarfile reads an extended header (PAX ``x`` and ``g``, Solaris
``X``, GNU long name ``L`` and long link ``K``) whole, in one read of the size
the header declares, and a run of them by calling itself once per header.
Its internals are no place to enforce limits: pyrelctl once did so by
overriding ``TarInfo.frombuf``, and CPython's fix for gh-143933 (Debian 12's
python3.11 3.11.2-6+deb12u8, Python 3.13.5) made tarfile call ``_frombuf``
instead, so the limit silently stopped applying (issue 26, finding 1).

So every header is read here first, from the decompressed stream, with the
layout of POSIX.1-2008 ``pax`` ("ustar Interchange Format", "pax Extended
Header") and GNU tar's manual ("Basic Tar Format"): each header's checksum,
type and size; an extended header's size before its data is read; the
number of extended headers in a row and of members; PAX ``size`` records,
which move where the next header starts. Where tarfile versions read one
archive two ways (a ``\\0``-type header whose name ends in ``/`` is a
directory or a file depending on gh-143933; old and new sparse formats
reposition the data), the archive is refused rather than guessed at: no
release needs these. The walk returns where each member's data begins,
which :mod:`pyrelctl.tarartifact` then compares with what tarfile read.
"""

from __future__ import annotations

import re
from typing import IO

from pyrelctl import archive
from pyrelctl.errors import BadInput

BLOCK = 512
#: Extended headers allowed in a row before a member. Real archives have at
#: most four (a global header, as ``git archive`` writes, a PAX header, a GNU
#: long name and a long link); tarfile reads each run by recursion.
MAX_CHAIN = 16

_ZERO_BLOCK = bytes(BLOCK)
_PAX_TYPES = (b"x", b"g", b"X")  # X: Solaris's name for x
_GNU_LONG_TYPES = (b"L", b"K")
#: Regular files in tarfile's eyes (REGULAR_TYPES, less GNU sparse): their
#: data follows the header. "\0" is the pre-POSIX regular file.
_FILE_TYPES = (b"0", b"\0", b"7")
#: Hard link, symlink, character and block device, directory, FIFO: tarfile
#: skips no data after them, whatever their size field says.
_DATALESS_TYPES = (b"1", b"2", b"3", b"4", b"5", b"6")
_OCTAL = re.compile(rb"[0-7]+")
_DECIMAL = re.compile(rb"[0-9]{1,20}")
#: A PAX record is "LENGTH KEYWORD=VALUE\n", LENGTH counting the whole record
#: (pax(1), "pax Extended Header"); tarfile matches the same prefix.
_RECORD_LENGTH = re.compile(rb"([0-9]{1,20}) ")


class Damaged(Exception):
    """The archive is not a well-formed tar at byte ``offset`` (0: not a tar at all)."""

    def __init__(self, offset: int, what: str) -> None:
        super().__init__(f"{what} at byte {offset}")
        self.offset = offset


def _number(field: bytes) -> int | None:
    """A numeric header field: octal digits (NUL- or space-terminated), or
    GNU's base-256 form (first byte 0x80, or 0xff for a negative number) for
    values octal cannot hold. None if malformed; stricter than tarfile's nti()."""
    if field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0o377 else value
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    return int(digits, 8) if _OCTAL.fullmatch(digits) else None


def _checksum_ok(header: bytes) -> bool:
    """Whether the header's checksum field matches its bytes, the field itself
    counted as eight spaces; as unsigned bytes (POSIX) or as signed ones (some
    old tars), as tarfile accepts both (calc_chksums)."""
    stored = _number(header[148:156])
    unsigned = sum(header) - sum(header[148:156]) + 8 * ord(" ")
    if stored == unsigned:
        return True
    high = sum(1 for byte in header[:148] + header[156:] if byte >= 0x80)
    return stored == unsigned - 256 * high


def _rounded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _pax_records(data: bytes, offset: int) -> dict[bytes, bytes]:
    """The records of a PAX header's data (block-rounded, as tarfile reads it:
    records end at the first NUL or the end); the last of a keyword counts.
    Anything tarfile would not read the same way is refused."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        match = _RECORD_LENGTH.match(data, pos)
        end = pos + int(match.group(1)) if match else 0
        if match is None or end - pos < 5 or end > len(data) or data[end - 1] != ord("\n"):
            raise Damaged(offset, "malformed PAX record")
        keyword, equals, value = data[match.end() : end - 1].partition(b"=")
        if not keyword or not equals:
            raise Damaged(offset, "malformed PAX record")
        records[keyword] = value
        pos = end
    return records


def _refuse_sparse(keywords: dict[bytes, bytes]) -> None:
    if any(keyword.startswith(b"GNU.sparse.") for keyword in keywords):
        # Sparse formats 0.0 to 1.0 put a map before the data, or in records
        # tarfile reads in ways that changed between versions; no release
        # holds sparse files.
        raise BadInput("archive has a sparse file (GNU.sparse PAX records)")


def _skip(stream: IO[bytes], offset: int, size: int) -> None:
    """Move past ``size`` bytes of member data starting at ``offset``; refuse
    an archive that ends inside them (a seek alone would not tell)."""
    if size:
        stream.seek(offset + size - 1)
        if len(stream.read(1)) != 1:
            raise Damaged(offset, "archive ends inside a member's data")
    stream.seek(offset + _rounded(size))


def walk(stream: IO[bytes]) -> list[int]:
    """Check every header of the tar ``stream`` (at offset 0) up to its end.

    Returns where each member's data begins (tarfile's
    ``TarInfo.offset_data``), in archive order. Raises :class:`BadInput`
    for an archive past the limits (extended header size, extended headers
    in a row, member count) or with what no release holds (sparse files,
    unknown member types, ambiguous headers), and :class:`Damaged` for one
    that is not well-formed. Reads no more than MAX_HEADER bytes at once.
    """
    offsets: list[int] = []
    offset = 0
    chain = 0  # extended headers read since the last member
    pax_size: int | None = None  # from the first PAX header of the run that has one
    long_name_is_dir = False
    while True:
        header = stream.read(BLOCK)
        if not header or header == _ZERO_BLOCK:
            # The end of the archive (tarfile, too, stops at the first zero
            # block, and at a clean end of data without one).
            if chain:
                raise Damaged(offset, "archive ends after an extended header")
            return offsets
        if len(header) < BLOCK:
            raise Damaged(offset, "truncated header")
        if not _checksum_ok(header):
            raise Damaged(offset, "damaged member header")
        kind = header[156:157]
        size = _number(header[124:136])
        if size is None or size < 0:
            raise Damaged(offset, "damaged member header")
        offset += BLOCK
        if kind in _PAX_TYPES or kind in _GNU_LONG_TYPES:
            chain += 1
            if chain > MAX_CHAIN:
                raise BadInput(f"archive has more than {MAX_CHAIN} extended headers in a row")
            if size > archive.MAX_HEADER:
                raise BadInput(
                    f"archive has an extended header of {size} bytes "
                    f"(more than {archive.MAX_HEADER})"
                )
            data = stream.read(_rounded(size))
            if len(data) < _rounded(size):
                raise Damaged(offset, "archive ends inside an extended header")
            if kind == b"L":
                long_name_is_dir |= data[:size].split(b"\0", 1)[0].endswith(b"/")
            elif kind in _PAX_TYPES:
                records = _pax_records(data, offset - BLOCK)
                _refuse_sparse(records)
                if b"size" in records:
                    if kind == b"g":
                        # tarfile gives every later member that size but
                        # skips data by each header's own: no tool writes it.
                        raise BadInput("archive has a global PAX header that sets a size")
                    value = records[b"size"]
                    if not _DECIMAL.fullmatch(value):
                        raise Damaged(offset - BLOCK, "malformed PAX size")
                    if pax_size is None:  # tarfile applies the outermost header last
                        pax_size = int(value)
            offset += len(data)
            continue
        count = len(offsets) + 1
        if count > archive.MAX_MEMBERS:
            raise BadInput(f"archive has more than {archive.MAX_MEMBERS} members")
        if kind == b"S":
            raise BadInput("archive has a sparse file (GNU sparse member)")
        data_size = size if pax_size is None else pax_size
        if kind in _FILE_TYPES:
            name_is_dir = header[:100].split(b"\0", 1)[0].endswith(b"/")
            if kind == b"\0" and (name_is_dir or long_name_is_dir) and (size or data_size):
                # A V7 directory, or a file whose name ends in "/": tarfile
                # reads it one way or the other depending on its version.
                raise BadInput(f"archive member at byte {offset - BLOCK} is ambiguous (type \\0)")
        elif kind in _DATALESS_TYPES:
            if size or data_size:
                # tarfile skips no data here; a size that counts elsewhere
                # (GNU tar, some tarfile versions for a "directory" that a
                # long name turns into a file) would read the rest differently.
                raise BadInput(
                    f"archive member at byte {offset - BLOCK} of type {kind.decode()!r} "
                    f"declares {data_size or size} bytes of data"
                )
            data_size = 0
        else:
            raise BadInput(
                f"archive member at byte {offset - BLOCK} has type {kind!r}: only files, "
                "directories and links are allowed"
            )
        offsets.append(offset)
        _skip(stream, offset, data_size)
        offset += _rounded(data_size)
        chain, pax_size, long_name_is_dir = 0, None, False
