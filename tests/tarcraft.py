"""Tar archives built block by block (POSIX ustar headers), as an attacker would.

Nothing here uses tarfile, so that the archives are the same whatever the
Python running the tests (3.11 or 3.13, with or without gh-143933).
"""

from __future__ import annotations

BLOCK = 512
END = bytes(2 * BLOCK)  # the end-of-archive marker


def header(
    name: bytes,
    kind: bytes = b"0",
    size: int = 0,
    *,
    mode: int = 0o644,
    linkname: bytes = b"",
    size_field: bytes | None = None,
) -> bytes:
    """One 512-byte ustar header with a valid checksum."""
    fields = [
        name.ljust(100, b"\0"),
        b"%07o\0" % mode,
        b"0000000\0",  # uid
        b"0000000\0",  # gid
        size_field if size_field is not None else b"%011o\0" % size,
        b"%011o\0" % 1_700_000_000,
        b" " * 8,  # the checksum, counted as spaces
        kind,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        b"root".ljust(32, b"\0"),
        b"root".ljust(32, b"\0"),
        b"0000000\0" * 2,  # device numbers
        bytes(155 + 12),  # prefix, padding
    ]
    block = b"".join(fields)
    assert len(block) == BLOCK, len(block)
    return block[:148] + b"%06o\0 " % sum(block) + block[156:]


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member(name: bytes, data: bytes = b"", kind: bytes = b"0", **kw: object) -> bytes:
    """A member's header and its data, padded to whole blocks."""
    return header(name, kind, len(data), **kw) + padded(data)  # type: ignore[arg-type]


def record(keyword: bytes, value: bytes) -> bytes:
    """One PAX record, "LENGTH KEYWORD=VALUE\\n", LENGTH counting itself."""
    body = b" %s=%s\n" % (keyword, value)
    digits = len(str(len(body)))
    while len(str(len(body) + digits)) != digits:
        digits += 1
    return b"%d%s" % (len(body) + digits, body)


def extended(kind: bytes, data: bytes) -> bytes:
    """An extended header (PAX x/g, Solaris X, GNU L/K) carrying ``data``."""
    name = b"././@LongLink" if kind in (b"L", b"K") else b"PaxHeader"
    return member(name, data, kind)


def huge_extended(kind: bytes, size: int) -> bytes:
    """An extended header of about ``size`` bytes that tarfile would read and
    accept: a long name or link, or one PAX comment record; then its member."""
    long = kind in (b"L", b"K")
    payload = b"a" * size + b"\0" if long else record(b"comment", b"a" * size)
    if kind == b"K":
        return extended(kind, payload) + header(b"link", b"2", linkname=b"bin/app")
    return extended(kind, payload) + member(b"victim", b"x\n")
