"""Untrusted release artifacts: hostile archives are refused, good ones extract exactly."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import posixpath
import socket
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from pyrelctl import archive, tarheaders
from pyrelctl.archive import (
    Member,
    MemberType,
    RawMember,
    normalise_member_name,
    validate,
)
from pyrelctl.defaults import DEFAULT_MAX_BYTES
from pyrelctl.errors import BadInput, ExitCode
from pyrelctl.openartifact import open_artifact
from tests import tarcraft

# -- building artifacts ----------------------------------------------------------


@dataclass(frozen=True)
class T:
    """One member of a tar archive to build."""

    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, chr, blk, fifo
    data: bytes = b"data\n"
    mode: int | None = None
    target: str = ""
    mtime: int = 1_700_000_000
    pax_path: str | None = None  # a PAX "path" record overriding the header name


_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def tar_bytes(members: Sequence[T], *, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    """An uncompressed tar archive of ``members``, exactly as given (no name cleaning)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _TAR_TYPES[m.kind]
            info.mtime = m.mtime
            info.mode = m.mode if m.mode is not None else (0o755 if m.kind == "dir" else 0o644)
            info.linkname = m.target
            if m.kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3
            if m.pax_path is not None:
                info.pax_headers = {"path": m.pax_path}
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def make_tar(path: Path, members: Sequence[T], *, fmt: int = tarfile.GNU_FORMAT) -> Path:
    """Write ``members`` as a tar archive, gzipped when ``path`` says so."""
    raw = tar_bytes(members, fmt=fmt)
    if path.name.endswith((".gz", ".tgz")):
        raw = gzip.compress(raw, mtime=0)
    path.write_bytes(raw)
    return path


def snapshot(top: Path) -> dict[str, tuple[object, ...]]:
    """Every path below ``top`` (itself included): type, permission bits, content or link."""
    out: dict[str, tuple[object, ...]] = {}
    if not top.exists() and not top.is_symlink():
        return out
    paths = [top]
    for dirpath, dirnames, filenames in os.walk(top):
        paths += [Path(dirpath, n) for n in dirnames + filenames]
    for p in paths:
        st_ = p.lstat()
        rel = p.relative_to(top).as_posix()
        if stat.S_ISLNK(st_.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISREG(st_.st_mode):
            out[rel] = ("file", stat.S_IMODE(st_.st_mode), p.read_bytes(), st_.st_mtime_ns)
        else:
            out[rel] = (stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode), st_.st_mtime_ns)
    return out


def inside(path: str, top: Path) -> bool:
    real_top = os.path.realpath(top)
    return os.path.commonpath([os.path.realpath(path), real_top]) == real_top


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# -- hostile artifacts -----------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    id: str
    build: Callable[[Path], Path]
    word: str  # a distinctive word of the error message
    max_bytes: int = DEFAULT_MAX_BYTES


def tar_case(
    id: str,
    members: Sequence[T],
    word: str,
    *,
    suffix: str = ".tar.gz",
    max_bytes: int = DEFAULT_MAX_BYTES,
    fmt: int = tarfile.GNU_FORMAT,
) -> Hostile:
    ok = [T("bin/app", data=b"#!/bin/sh\n", mode=0o755)]  # something harmless first
    return Hostile(
        id,
        lambda tmp: make_tar(tmp / f"{id}{suffix}", [*ok, *members], fmt=fmt),
        word,
        max_bytes,
    )


def raw_case(id: str, name: str, content: Callable[[], bytes], word: str) -> Hostile:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(content())
        return path

    return Hostile(id, build, word)


def _gzip_of_tar(members: Sequence[T]) -> bytes:
    return gzip.compress(tar_bytes(members), mtime=0)


def _truncated_gzip() -> bytes:
    # Incompressible content: the cut lands inside a member's data.
    data = gzip.compress(tar_bytes([T(f"f{i}", data=os.urandom(20_000)) for i in range(3)]))
    return data[: len(data) // 2]


def _truncated_tar() -> bytes:
    data = tar_bytes([T("f1", data=b"x" * 5000), T("f2", data=b"y" * 50_000)])
    return data[:20_000]


def _corrupt_gzip_header() -> bytes:
    data = bytearray(_gzip_of_tar([T("f", data=b"hello " * 1000)]))
    data[3] = 0xFF  # FLG with reserved bits set
    data[10:20] = b"\xff" * 10
    return bytes(data)


def _corrupt_deflate() -> bytes:
    # Compressible content: damage breaks the deflate stream itself, not just the data.
    data = bytearray(_gzip_of_tar([T(f"f{i}", data=bytes(range(256)) * 400) for i in range(3)]))
    for i in range(20, len(data) - 20, 7):
        data[i] ^= 0x5A
    return bytes(data)


def _pax_chain() -> bytes:
    # CPython's TarInfo reads an extended header by calling itself for the
    # next header: thousands of them in a row exceed the recursion limit.
    record = b"13 comment=x\n"
    pax = tarfile.TarInfo("pax")
    pax.type, pax.size = tarfile.XHDTYPE, len(record)
    chain = (pax.tobuf(format=tarfile.USTAR_FORMAT) + record.ljust(512, b"\0")) * 5000
    start = tar_bytes([T("bin/app"), T("f")])
    first_member = 2 * tarfile.BLOCKSIZE  # bin/app: its header and data block
    return gzip.compress(start[:first_member] + chain + start[first_member:], mtime=0)


def _huge_long_name() -> bytes:
    # A GNU long-name header declaring 2 MiB: tarfile would read it whole.
    return gzip.compress(tar_bytes([T("bin/app"), T("a" * (2 << 20))]), mtime=0)


def _crafted(*parts: bytes) -> Callable[[], bytes]:
    """A .tar.gz of bin/app, then ``parts`` (tarcraft blocks), then the end."""
    return lambda: gzip.compress(
        tarcraft.member(b"bin/app", b"#!/bin/sh\n") + b"".join(parts) + tarcraft.END, mtime=0
    )


def _huge(kind: bytes) -> Callable[[], bytes]:
    return _crafted(tarcraft.huge_extended(kind, 2 << 20))


_PAX = tarcraft.record


def _empty_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w"):
        pass
    return buf.getvalue()


def _dir_case(id: str, populate: Callable[[Path], None], word: str, **kw: int) -> Hostile:
    def build(tmp: Path) -> Path:
        root = tmp / id
        root.mkdir()
        populate(root)
        return root

    return Hostile(id, build, word, **kw)


def _file(root: Path, rel: str, data: bytes = b"x", mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _with_symlink(target: str, name: str = "link") -> Callable[[Path], None]:
    def populate(root: Path) -> None:
        _file(root, "bin/app")
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / name)

    return populate


def _with_fifo(root: Path) -> None:
    _file(root, "bin/app")
    os.mkfifo(root / "pipe")


def _with_socket(root: Path) -> None:
    _file(root, "bin/app")
    # AF_UNIX paths are limited to ~108 bytes: bind from inside the directory.
    old = os.getcwd()
    os.chdir(root)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind("sock")
    finally:
        os.chdir(old)


def _with_setuid(root: Path) -> None:
    _file(root, "bin/app", mode=0o755)
    (root / "bin/app").chmod(0o4755)


def _with_setgid_dir(root: Path) -> None:
    _file(root, "bin/app", mode=0o755)
    (root / "bin").chmod(0o2755)


def _big_files(root: Path) -> None:
    _file(root, "a", b"x" * 600)
    _file(root, "b/c", b"y" * 600)


HOSTILE: list[Hostile] = [
    # paths
    tar_case("dotdot", [T("../evil")], "escapes"),
    tar_case("dotdot-deep", [T("a/../../evil")], "escapes"),
    tar_case("dotdot-inner", [T("a/../b")], "escapes"),
    tar_case("dotdot-dir", [T("../", kind="dir")], "escapes"),
    tar_case("dotdot-pax", [T("innocent", pax_path="../evil")], "escapes", fmt=tarfile.PAX_FORMAT),
    tar_case("dotdot-longname", [T("a/" * 60 + "../" * 62 + "evil")], "escapes"),
    tar_case("absolute", [T("/etc/cron.d/evil")], "absolute"),
    tar_case("absolute-double-slash", [T("//etc/evil")], "absolute"),
    tar_case("absolute-dir", [T("/tmp/evil", kind="dir")], "absolute"),
    # symlinks
    tar_case("symlink-absolute", [T("lib", kind="symlink", target="/etc")], "outside"),
    tar_case("symlink-parent", [T("up", kind="symlink", target="..")], "outside"),
    tar_case(
        "symlink-relative-escape", [T("a/b/c", kind="symlink", target="../../../x")], "outside"
    ),
    tar_case(
        "symlink-zigzag", [T("a/l", kind="symlink", target="../a/../../etc/passwd")], "outside"
    ),
    tar_case("symlink-empty-target", [T("l", kind="symlink", target="")], "outside"),
    tar_case(
        "below-symlink",
        [T("real", kind="dir"), T("lib", kind="symlink", target="real"), T("lib/evil")],
        "below",
    ),
    tar_case(
        "below-symlink-deep",
        [T("lib", kind="symlink", target="bin"), T("lib/x/y/evil")],
        "symlink",
    ),
    tar_case(
        "below-symlink-dotslash",
        [T("lib", kind="symlink", target="bin"), T("./lib/./evil")],
        "below",
    ),
    tar_case("below-file", [T("conf"), T("conf/evil")], "below a file"),
    # hard links
    tar_case("hardlink-absolute", [T("pw", kind="hardlink", target="/etc/passwd")], "hard link"),
    tar_case("hardlink-dotdot", [T("pw", kind="hardlink", target="../../etc/passwd")], "hard link"),
    tar_case("hardlink-later", [T("early", kind="hardlink", target="late"), T("late")], "earlier"),
    tar_case("hardlink-missing", [T("h", kind="hardlink", target="nowhere")], "earlier"),
    tar_case("hardlink-self", [T("h", kind="hardlink", target="h")], "earlier"),
    tar_case(
        "hardlink-to-dir", [T("d", kind="dir"), T("h", kind="hardlink", target="d")], "earlier"
    ),
    tar_case(
        "hardlink-to-symlink",
        [T("s", kind="symlink", target="bin/app"), T("h", kind="hardlink", target="s")],
        "earlier",
    ),
    tar_case("hardlink-empty", [T("h", kind="hardlink", target="")], "hard link"),
    # special files and bits
    tar_case("char-device", [T("dev/null", kind="chr")], "device node"),
    tar_case("block-device", [T("dev/sda", kind="blk")], "device node"),
    tar_case("fifo", [T("pipe", kind="fifo")], "FIFO"),
    tar_case("setuid", [T("bin/su", mode=0o4755)], "setuid"),
    tar_case("setgid", [T("bin/sg", mode=0o2755)], "setgid"),
    tar_case("setgid-dir", [T("shared", kind="dir", mode=0o2775)], "setgid"),
    # duplicates
    tar_case("duplicate-file", [T("conf"), T("conf", data=b"other")], "more than once"),
    tar_case("duplicate-dotslash", [T("conf"), T("./conf", data=b"other")], "more than once"),
    tar_case("duplicate-same-size", [T("conf"), T("conf", data=b"DATA\n")], "different content"),
    tar_case("duplicate-mode", [T("conf"), T("conf", mode=0o755)], "with modes 644 and 755"),
    tar_case(
        "duplicate-as-symlink",
        [T("conf"), T("conf", kind="symlink", target="bin/app")],
        "as a file and as a symlink",
    ),
    tar_case(
        "duplicate-symlink-target",
        [T("s", kind="symlink", target="bin/app"), T("s", kind="symlink", target="bin")],
        "different targets",
    ),
    tar_case(
        "duplicate-hardlink-target",
        [T("c"), T("h", kind="hardlink", target="c"), T("h", kind="hardlink", target="bin/app")],
        "different targets",
    ),
    tar_case("duplicate-of-first", [T("bin//app")], "more than once"),
    tar_case("file-then-dir", [T("conf"), T("conf", kind="dir")], "more than once"),
    tar_case(
        "dir-then-symlink", [T("d", kind="dir"), T("d", kind="symlink", target="bin")], "once"
    ),
    tar_case("symlink-then-file", [T("s", kind="symlink", target="bin"), T("s")], "more than once"),
    # size
    tar_case("too-big", [T("big", data=b"x" * 2000)], "more than 1000 bytes", max_bytes=1000),
    tar_case(
        "too-big-in-sum",
        [T(f"f{i}", data=b"x" * 300) for i in range(4)],
        "more than 1000 bytes",
        max_bytes=1000,
    ),
    # broken or non-archives
    raw_case("truncated-gzip", "cut.tar.gz", _truncated_gzip, "truncated"),
    raw_case("truncated-tar", "cut.tar", _truncated_tar, "truncated"),
    raw_case("corrupt-gzip-header", "bad.tar.gz", _corrupt_gzip_header, "tar archive"),
    raw_case("corrupt-deflate-start", "bad.tgz", _corrupt_deflate, "tar archive"),
    raw_case("pax-chain", "chain.tar.gz", _pax_chain, "extended headers"),
    raw_case("huge-long-name", "long.tar.gz", _huge_long_name, "extended header"),
    # The same, crafted block by block: every kind of extended header.
    *(
        raw_case(f"huge-{name}", f"huge-{name}.tar.gz", _huge(kind), "extended header")
        for name, kind in [
            ("gnu-long-name", b"L"),
            ("gnu-long-link", b"K"),
            ("pax-header", b"x"),
            ("pax-global-header", b"g"),
            ("solaris-header", b"X"),
        ]
    ),
    raw_case(
        "long-name-under-the-header-limit",
        "name.tar.gz",
        _crafted(tarcraft.extended(b"L", b"a" * 100_000 + b"\0"), tarcraft.member(b"x", b"x")),
        "name too long",
    ),
    raw_case(
        "long-component",
        "component.tar.gz",
        _crafted(tarcraft.extended(b"L", b"d/" + b"a" * 256 + b"\0"), tarcraft.member(b"x")),
        "name too long",
    ),
    raw_case(
        "long-symlink",
        "symlink.tar.gz",
        _crafted(tarcraft.extended(b"K", b"a" * 5000 + b"\0"), tarcraft.header(b"s", b"2")),
        "symlink longer than 4095",
    ),
    raw_case(
        "gnu-sparse",
        "sparse.tar.gz",
        _crafted(tarcraft.member(b"s", b"x" * 10, b"S")),
        "sparse",
    ),
    raw_case(
        "pax-sparse",
        "paxsparse.tar.gz",
        _crafted(
            tarcraft.extended(
                b"x", _PAX(b"GNU.sparse.major", b"1") + _PAX(b"GNU.sparse.minor", b"0")
            ),
            tarcraft.member(b"s", b"x" * 10),
        ),
        "sparse",
    ),
    raw_case(
        "pax-global-size",
        "globalsize.tar.gz",
        _crafted(tarcraft.extended(b"g", _PAX(b"size", b"0")), tarcraft.member(b"f", b"x")),
        "global PAX header that sets a size",
    ),
    raw_case(
        "pax-size-malformed",
        "paxsize.tar.gz",
        _crafted(tarcraft.extended(b"x", _PAX(b"size", b" 1")), tarcraft.member(b"f", b"x")),
        "malformed PAX size",
    ),
    raw_case(
        "pax-record-malformed",
        "paxrecord.tar.gz",
        _crafted(tarcraft.extended(b"x", b"99 path=f\n"), tarcraft.member(b"f", b"x")),
        "malformed PAX record",
    ),
    raw_case(
        "directory-with-data",
        "dirdata.tar.gz",
        _crafted(tarcraft.member(b"d/", b"x" * 600, b"5"), tarcraft.member(b"f")),
        "declares 600 bytes",
    ),
    raw_case(
        "v7-directory-or-file",
        "v7.tar.gz",
        _crafted(tarcraft.extended(b"L", b"d/\0"), tarcraft.member(b"d/", b"x" * 600, b"\0")),
        "ambiguous",
    ),
    raw_case(
        "unknown-type",
        "unknown.tar.gz",
        _crafted(tarcraft.member(b"vol", b"x", b"V")),
        "has type b'V'",
    ),
    raw_case(
        "extended-header-at-the-end",
        "dangling.tar.gz",
        _crafted(tarcraft.extended(b"L", b"name\0")),
        "corrupt",
    ),
    raw_case(
        "bad-checksum",
        "checksum.tar.gz",
        _crafted(tarcraft.header(b"f")[:148] + b"0000000\0" + tarcraft.header(b"f")[156:]),
        "corrupt",
    ),
    raw_case("empty-tar", "empty.tar", _empty_tar, "empty"),
    raw_case("empty-tar-gz", "empty.tar.gz", lambda: gzip.compress(_empty_tar()), "empty"),
    raw_case("only-root", "root.tar.gz", lambda: _gzip_of_tar([T("./", kind="dir")]), "empty"),
    raw_case("zero-bytes", "zero.tar.gz", lambda: b"", "not a readable tar archive"),
    raw_case(
        "text-as-tgz", "notes.tgz", lambda: b"hello, I am not a tarball\n" * 50, "tar archive"
    ),
    raw_case("random-as-tar", "rand.tar", lambda: os.urandom(4096), "tar archive"),
    raw_case("zip-suffix", "release.zip", lambda: b"PK\x03\x04" + b"\0" * 100, "not a release"),
    raw_case("no-suffix", "release", lambda: _gzip_of_tar([T("bin/app")]), "not a release"),
    raw_case("tar-xz-suffix", "release.tar.xz", lambda: tar_bytes([T("bin/app")]), "not a release"),
    Hostile("missing", lambda tmp: tmp / "nope.tar.gz", "no such file"),
    # directory artifacts
    _dir_case("dir-symlink-absolute", _with_symlink("/etc"), "outside"),
    _dir_case("dir-symlink-escape", _with_symlink("../../x", "a/link"), "outside"),
    _dir_case("dir-fifo", _with_fifo, "FIFO"),
    _dir_case("dir-socket", _with_socket, "socket"),
    _dir_case("dir-setuid", _with_setuid, "setuid"),
    _dir_case("dir-setgid-dir", _with_setgid_dir, "setgid"),
    _dir_case("dir-empty", lambda root: None, "empty"),
    _dir_case("dir-too-big", _big_files, "more than 1000 bytes", max_bytes=1000),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c.id for c in HOSTILE])
def test_hostile_artifact_is_refused(tmp_path: Path, case: Hostile) -> None:
    work = tmp_path / "work"
    work.mkdir()
    artifact = case.build(work)
    before = snapshot(tmp_path)
    with pytest.raises(BadInput) as info:
        open_artifact(artifact, max_bytes=case.max_bytes).close()
    error = info.value
    assert error.exit_code is ExitCode.BAD_INPUT
    assert int(error.exit_code) == 2
    assert case.word in error.message, error.message
    assert snapshot(tmp_path) == before  # reading an artifact writes nothing


#: tarfile's "r:*" error lists every method it tried, one per line.
@pytest.mark.parametrize("case", HOSTILE, ids=lambda c: c.id)
def test_hostile_artifact_message_is_one_line(tmp_path: Path, case: Hostile) -> None:
    with pytest.raises(BadInput) as info:
        open_artifact(case.build(tmp_path), max_bytes=case.max_bytes).close()
    assert "\n" not in info.value.message, info.value.message
    assert "\n" not in (info.value.hint or "")


def test_at_least_25_hostile_cases() -> None:
    assert len(HOSTILE) >= 25
    assert len({c.id for c in HOSTILE}) == len(HOSTILE)


def test_device_node_in_a_directory_artifact_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "rel"
    _file(root, "bin/app")
    try:
        os.mknod(root / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    with pytest.raises(BadInput, match="device node"):
        open_artifact(root)


def test_too_many_members_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_MEMBERS", 3)
    path = make_tar(tmp_path / "many.tar", [T(f"f{i}") for i in range(4)])
    with pytest.raises(BadInput, match="more than 3 members"):
        open_artifact(path)
    # exactly the limit is fine
    ok = make_tar(tmp_path / "three.tar", [T(f"f{i}") for i in range(3)])
    with open_artifact(ok) as artifact:
        assert len(artifact.members) == 3


def repeated(name: str, kind: bytes, count: int) -> bytes:
    """``count`` headers of one data-less member: a tar of many members, fast."""
    info = tarfile.TarInfo(name)
    info.type, info.mtime = kind, 1_700_000_000
    return info.tobuf(format=tarfile.GNU_FORMAT) * count


def test_member_limit_fits_releases_not_bombs() -> None:
    # A mix release has ~600 members, a big Python release tens of thousands.
    assert 50_000 <= archive.MAX_MEMBERS <= 200_000


#: A header whose checksum does not match: reading it, or anything past it,
#: refuses the archive as corrupt, which tells how far the reading went.
DAMAGED = tarcraft.header(b"f")[:148] + b"0000000\0" + tarcraft.header(b"f")[156:]


def test_one_member_past_the_limit_is_refused_as_it_is_read(tmp_path: Path) -> None:
    # The finding: 1.4 MB of .tar.gz, 300,000 members, listed in full before
    # being counted. A directory may repeat, so only the count refuses these.
    # A damaged header right after member limit + 1: reading one header more
    # would refuse the archive as corrupt instead.
    limit = archive.MAX_MEMBERS
    data = repeated("d/", tarfile.DIRTYPE, limit + 1) + DAMAGED
    data += repeated("d/", tarfile.DIRTYPE, 50_000) + bytes(1024)
    path = tmp_path / "many.tar.gz"
    path.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    with pytest.raises(BadInput, match=f"more than {limit} members"):
        open_artifact(path)
    # and the damaged header is really seen one member earlier
    path.write_bytes(gzip.compress(data[tarfile.BLOCKSIZE :], compresslevel=1, mtime=0))
    with pytest.raises(BadInput, match="corrupt"):
        open_artifact(path)


@pytest.mark.parametrize("name", ["f", "./"], ids=["files", "root-entries"])
def test_listing_stops_at_the_member_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(archive, "MAX_MEMBERS", 1000)
    monkeypatch.setattr(archive, "SPOOL_LIMIT", 0)  # streamed, as a large archive is
    kind = tarfile.REGTYPE if name == "f" else tarfile.DIRTYPE
    members = [tarfile.TarInfo(f"{name}{i}" if name == "f" else name) for i in range(30_000)]
    for m in members:
        m.type = kind
    headers = [m.tobuf(format=tarfile.GNU_FORMAT) for m in members]
    data = b"".join(headers[:1001]) + DAMAGED + b"".join(headers[1001:]) + bytes(1024)
    path = tmp_path / "many.tar.gz"
    path.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    with pytest.raises(BadInput, match="more than 1000 members"):
        open_artifact(path)


HUGE_KINDS = [b"L", b"K", b"x", b"g", b"X"]


@pytest.mark.parametrize("in_memory", [True, False], ids=["spooled", "streamed"])
@pytest.mark.parametrize("kind", HUGE_KINDS, ids=[k.decode() for k in HUGE_KINDS])
def test_a_huge_extended_header_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: bytes, in_memory: bool
) -> None:
    # tracemalloc sees every allocation Python makes: a header read whole,
    # by tarfile or by us, would show as a peak of its size.
    import tracemalloc

    if not in_memory:  # streamed: nothing held but the header
        monkeypatch.setattr(archive, "SPOOL_LIMIT", 0)
    size = 32 << 20
    tar = tarcraft.member(b"bin/app", b"x") + tarcraft.huge_extended(kind, size) + tarcraft.END
    path = tmp_path / "huge.tar.gz"
    path.write_bytes(gzip.compress(tar, mtime=0))
    del tar
    tracemalloc.start()
    try:
        with pytest.raises(BadInput, match="extended header of") as info:
            open_artifact(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(info.value.message) < 200, info.value.message
    # Spooled, the decompressed tar itself is held (one copy), never a second.
    assert peak < (size * 3 // 2 if in_memory else size // 8), peak


class _ReadSizes(io.BytesIO):
    """A tar stream that records the size of every read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.sizes.append(-1 if size is None else size)
        return super().read(size)


def test_the_header_walk_reads_at_most_a_header_at_once() -> None:
    data = tarcraft.member(b"big", b"x" * (1 << 20)) + tarcraft.huge_extended(b"x", 1 << 20)
    stream = _ReadSizes(data + tarcraft.END)
    with pytest.raises(BadInput, match="extended header"):
        tarheaders.walk(stream)
    assert stream.sizes and all(0 < n <= archive.MAX_HEADER for n in stream.sizes), stream.sizes


def test_extended_headers_in_a_row_are_bounded() -> None:
    name = tarcraft.extended(b"L", b"n\0")
    ok = name * tarheaders.MAX_CHAIN + tarcraft.member(b"n", b"x") + tarcraft.END
    assert tarheaders.walk(io.BytesIO(ok)) == [tarheaders.MAX_CHAIN * 1024 + 512]
    with pytest.raises(BadInput, match="extended headers in a row"):
        tarheaders.walk(io.BytesIO(name + ok))


def test_a_pax_size_moves_the_next_header_as_tarfile_does(tmp_path: Path) -> None:
    # The header says 0 bytes, the PAX record 600: the data and the next
    # header are where the record says, for tarfile and for the walk.
    pax = tarcraft.extended(b"x", tarcraft.record(b"size", b"600"))
    tar = (
        tarcraft.member(b"bin/app", b"#!/bin/sh\n")
        + pax
        + tarcraft.header(b"big", size=0)
        + tarcraft.padded(b"y" * 600)
        + tarcraft.member(b"after", b"z")
        + tarcraft.END
    )
    path = tmp_path / "paxsize.tar"
    path.write_bytes(tar)
    with open_artifact(path) as artifact:
        assert [(m.path, m.size) for m in artifact.members] == [
            ("bin/app", 10),
            ("big", 600),
            ("after", 1),
        ]
        assert artifact.read("big") == b"y" * 600
        assert artifact.read("after") == b"z"


def test_the_outermost_pax_size_counts_as_in_tarfile(tmp_path: Path) -> None:
    outer = tarcraft.extended(b"x", tarcraft.record(b"size", b"3"))
    inner = tarcraft.extended(b"x", tarcraft.record(b"size", b"700"))
    tar = (
        tarcraft.member(b"bin/app", b"#!/bin/sh\n")
        + outer
        + inner
        + tarcraft.header(b"f", size=0)
        + tarcraft.padded(b"abc")
        + tarcraft.member(b"after", b"z")
        + tarcraft.END
    )
    path = tmp_path / "two.tar"
    path.write_bytes(tar)
    with open_artifact(path) as artifact:
        assert artifact.read("f") == b"abc"
        assert artifact.read("after") == b"z"


@pytest.mark.parametrize(
    "compress",
    [bz2.compress, lzma.compress],
    ids=["bzip2", "xz"],
)
@pytest.mark.parametrize("in_memory", [True, False], ids=["spooled", "streamed"])
def test_other_compressions_tarfile_reads_are_walked_too(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    compress: Callable[[bytes], bytes],
    in_memory: bool,
) -> None:
    # tarfile's "r:*" reads bzip2 and xz whatever the file is named: the walk
    # must see the same decompressed stream.
    if not in_memory:
        monkeypatch.setattr(archive, "SPOOL_LIMIT", 0)
    good = tmp_path / "good.tar.gz"
    good.write_bytes(compress(tar_bytes(GOOD)))
    with open_artifact(good) as artifact:
        artifact.extract(tmp_path / "dest")
    assert tree(tmp_path / "dest") == EXPECTED_TREE
    huge = tmp_path / "huge.tar.gz"
    huge.write_bytes(compress(tarcraft.huge_extended(b"L", 1 << 20) + tarcraft.END))
    with pytest.raises(BadInput, match="extended header of"):
        open_artifact(huge)


def test_size_limit_is_inclusive(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "exact.tar", [T("a", data=b"x" * 600), T("b", data=b"y" * 400)])
    with open_artifact(path, max_bytes=1000) as artifact:
        assert sum(m.size for m in artifact.members) == 1000
    with pytest.raises(BadInput, match="more than 999 bytes"):
        open_artifact(path, max_bytes=999)


# -- validate() on raw member lists ---------------------------------------------------


def raw(
    name: str, type: str = "file", mode: int = 0o644, *, size: int = 0, target: str = ""
) -> RawMember:
    return RawMember(name, type, mode, size, target)


@pytest.mark.parametrize(
    ("members", "word"),
    [
        ([raw("a\x00b")], "NUL"),
        ([raw("sock", "socket")], "socket"),
        ([raw("x", "special file")], "special file"),
        ([raw("s", "symlink", target="a\x00b")], "outside"),
        ([raw("a/s", "symlink", target="../..")], "outside"),
        ([raw("s", "symlink", target="/")], "outside"),
        ([raw("f", mode=0o6755)], "setuid"),
        ([], "empty"),
        ([raw("./", "directory"), raw(".", "directory")], "empty"),
    ],
)
def test_validate_refuses(members: list[RawMember], word: str) -> None:
    with pytest.raises(BadInput) as info:
        validate(members)
    assert word in info.value.message


def test_validate_normalises_paths_and_modes() -> None:
    members = validate(
        [
            raw("./", "directory", 0o777),
            raw("./bin/", "directory", 0o700),
            raw("bin//app", "file", 0o777, size=3),
            raw("./bin/./data", "file", 0o400, size=2),
            raw("bin/tool", "file", 0o1775, size=1),
            raw("bin/l", "symlink", 0o777, target="app"),
            raw("bin/h", "hard link", 0o644, target="./bin/app"),
            raw("bin", "directory", 0o755),  # a repeated directory is harmless
        ]
    )
    assert members == [
        Member("bin", MemberType.DIR, 0o755),
        Member("bin/app", MemberType.FILE, 0o755, 3),
        Member("bin/data", MemberType.FILE, 0o600, 2),
        Member("bin/tool", MemberType.FILE, 0o755, 1),
        Member("bin/l", MemberType.SYMLINK, 0o755, target="app"),
        Member("bin/h", MemberType.HARDLINK, 0o644, target="bin/app"),
        Member("bin", MemberType.DIR, 0o755),
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a", "a"),
        ("./a", "a"),
        ("a/", "a"),
        ("a//b", "a/b"),
        ("./a/./b/.", "a/b"),
        (".", None),
        ("./", None),
        ("", None),
        ("...", "..."),  # a file called "..." is a plain name
        ("a/..b", "a/..b"),
    ],
)
def test_normalise_member_name(name: str, expected: str | None) -> None:
    assert normalise_member_name(name) == expected


@pytest.mark.parametrize("name", ["..", "../a", "a/..", "a/../b", "/a", "/", "a\x00"])
def test_normalise_member_name_refuses(name: str) -> None:
    with pytest.raises(BadInput):
        normalise_member_name(name)


# -- good archives ---------------------------------------------------------------

GOOD = [
    T("./", kind="dir", mode=0o775),
    T("./bin/", kind="dir", mode=0o777),
    T("./bin/app", data=b"#!/bin/sh\necho app\n", mode=0o775),
    T("bin/helper", data=b"#!/bin/sh\n", mode=0o750),
    T("lib", kind="dir", mode=0o700),
    T("lib/app", kind="dir", mode=0o755),
    T("lib/app/data.txt", data=b"shared data\n", mode=0o666),
    T("lib/app/secret", data=b"s3cret\n", mode=0o600),
    T("lib/app/readonly", data=b"ro\n", mode=0o444),
    T("lib/app/sticky", data=b"st\n", mode=0o1777),
    T("lib/app/link", kind="symlink", target="data.txt"),
    T("bin/data", kind="symlink", target="../lib/app/data.txt"),
    T("bin/self", kind="symlink", target="."),
    T("lib/app/hard", kind="hardlink", target="./lib/app/data.txt"),
    T("implicit/parents/here/file", data=b"deep\n", mode=0o644),
    T("empty-dir", kind="dir", mode=0o1777),
    T("./etc/conf", data=b"k=v\n"),
]

EXPECTED_TREE: dict[str, tuple[str, int | str, bytes | None]] = {
    "bin": ("dir", 0o755, None),
    "bin/app": ("file", 0o755, b"#!/bin/sh\necho app\n"),
    "bin/helper": ("file", 0o750, b"#!/bin/sh\n"),
    "bin/data": ("link", "../lib/app/data.txt", None),
    "bin/self": ("link", ".", None),
    "lib": ("dir", 0o755, None),
    "lib/app": ("dir", 0o755, None),
    "lib/app/data.txt": ("file", 0o644, b"shared data\n"),
    "lib/app/secret": ("file", 0o600, b"s3cret\n"),
    "lib/app/readonly": ("file", 0o644, b"ro\n"),
    "lib/app/sticky": ("file", 0o755, b"st\n"),
    "lib/app/link": ("link", "data.txt", None),
    "lib/app/hard": ("file", 0o644, b"shared data\n"),
    "implicit": ("dir", 0o755, None),
    "implicit/parents": ("dir", 0o755, None),
    "implicit/parents/here": ("dir", 0o755, None),
    "implicit/parents/here/file": ("file", 0o644, b"deep\n"),
    "empty-dir": ("dir", 0o755, None),
    "etc": ("dir", 0o755, None),
    "etc/conf": ("file", 0o644, b"k=v\n"),
}


def tree(dest: Path) -> dict[str, tuple[str, int | str, bytes | None]]:
    out: dict[str, tuple[str, int | str, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(dest).as_posix()
            st_ = p.lstat()
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(p), None)
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode), None)
            else:
                assert stat.S_ISREG(st_.st_mode), rel
                out[rel] = ("file", stat.S_IMODE(st_.st_mode), p.read_bytes())
    return out


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar"])
def test_good_archive_extracts_exactly(tmp_path: Path, suffix: str) -> None:
    path = make_tar(tmp_path / f"good{suffix}", GOOD)
    dest = tmp_path / "dest"
    with open_artifact(path) as artifact:
        artifact.extract(dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert tree(dest) == EXPECTED_TREE
    # the hard link is a real hard link to the earlier file
    assert (dest / "lib/app/hard").stat().st_ino == (dest / "lib/app/data.txt").stat().st_ino
    assert (dest / "lib/app/data.txt").stat().st_nlink == 2
    # symlinks resolve where they should, inside dest
    assert (dest / "bin/data").read_bytes() == b"shared data\n"
    assert (dest / "bin/self").resolve() == (dest / "bin").resolve()
    # file and directory times come from the archive
    assert (dest / "bin/app").stat().st_mtime == 1_700_000_000
    assert (dest / "lib/app").stat().st_mtime == 1_700_000_000
    # nothing else was written next to dest
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dest", path.name])


def test_artifact_queries(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "good.tar.gz", GOOD)
    with open_artifact(path) as artifact:
        assert artifact.has("bin/app")
        assert artifact.has("lib/app/link")
        assert not artifact.has("./bin/app")  # paths are normalised, not looked up loosely
        assert not artifact.has("implicit/parents")  # implicit directories are not members
        assert artifact.member("lib/app/hard") == Member(
            "lib/app/hard", MemberType.HARDLINK, 0o644, 0, "lib/app/data.txt", 1_700_000_000
        )
        assert sorted(m.path for m in artifact.list_dir("bin")) == [
            "bin/app",
            "bin/data",
            "bin/helper",
            "bin/self",
        ]
        assert artifact.read("etc/conf") == b"k=v\n"
        with pytest.raises(BadInput, match="not a regular file"):
            artifact.read("lib/app/link")
        with pytest.raises(BadInput, match="missing"):
            artifact.read("nope")
        with pytest.raises(BadInput, match="not a regular file"):
            artifact.read("lib")


def test_read_refuses_large_files(tmp_path: Path) -> None:
    big = b"x" * (archive.MAX_SMALL_FILE + 1)
    path = make_tar(tmp_path / "big.tar", [T("release.toml", data=big)])
    with open_artifact(path) as artifact, pytest.raises(BadInput, match="larger than"):
        artifact.read("release.toml")


def test_directory_artifact_extracts_exactly(tmp_path: Path) -> None:
    # Extract the good tarball once, then use the result as a directory artifact.
    first = tmp_path / "first"
    with open_artifact(make_tar(tmp_path / "good.tar", GOOD)) as artifact:
        artifact.extract(first)
    (first / "lib/app/extra").write_bytes(b"extra\n")
    (first / "lib/app/extra").chmod(0o664)
    second = tmp_path / "second"
    with open_artifact(first) as artifact:
        artifact.extract(second)
    expected = dict(EXPECTED_TREE)
    expected["lib/app/extra"] = ("file", 0o644, b"extra\n")
    assert tree(second) == expected
    # hard links inside a directory artifact are copied as separate files
    assert (second / "lib/app/hard").stat().st_ino != (second / "lib/app/data.txt").stat().st_ino


def test_extract_refuses_an_existing_destination(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "good.tar.gz", GOOD)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    before = snapshot(dest)
    with open_artifact(path) as artifact, pytest.raises(FileExistsError):
        artifact.extract(dest)
    assert snapshot(dest) == before


def test_extract_refuses_an_existing_symlink_as_destination(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "dest"
    dest.symlink_to(elsewhere)
    artifact = open_artifact(make_tar(tmp_path / "good.tar", GOOD))
    with artifact, pytest.raises(FileExistsError):
        artifact.extract(dest)
    assert list(elsewhere.iterdir()) == []


def test_file_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "good.tar", GOOD)
    with umask(0o077), open_artifact(path) as artifact:
        artifact.extract(tmp_path / "dest")
    files = {k: v for k, v in tree(tmp_path / "dest").items() if v[0] == "file"}
    assert files == {k: v for k, v in EXPECTED_TREE.items() if v[0] == "file"}


def test_directory_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "good.tar", GOOD)
    with umask(0o077), open_artifact(path) as artifact:
        artifact.extract(tmp_path / "dest")
    assert tree(tmp_path / "dest") == EXPECTED_TREE
    assert stat.S_IMODE((tmp_path / "dest").stat().st_mode) == 0o755


def test_truncated_data_inside_a_member_is_refused_at_extraction_at_the_latest(
    tmp_path: Path,
) -> None:
    # However the cut falls, the artifact never extracts silently short.
    data = gzip.compress(tar_bytes([T("a", data=os.urandom(30_000)), T("b", data=b"z" * 10)]))
    for cut in (len(data) // 3, len(data) // 2, len(data) - 200):
        path = tmp_path / f"cut{cut}.tar.gz"
        path.write_bytes(data[:cut])
        with pytest.raises(BadInput, match="truncated"), open_artifact(path) as artifact:
            artifact.extract(tmp_path / f"dest{cut}")


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_corrupt_header_in_the_middle_is_refused(tmp_path: Path, suffix: str) -> None:
    data = bytearray(tar_bytes([T("f1", data=b"a" * 10), T("f2", data=b"b" * 10), T("f3")]))
    data[1024 + 5] ^= 0x01  # one bit of f2's name: its header checksum no longer matches
    raw_data = gzip.compress(bytes(data)) if suffix == ".tar.gz" else bytes(data)
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(raw_data)
    with pytest.raises(BadInput, match="corrupt"):
        open_artifact(path).close()


def _gzip_with_bad_crc() -> tuple[bytes, bytes]:
    content = os.urandom(60_000)  # stored deflate blocks: a flipped byte stays undetected
    data = bytearray(gzip.compress(tar_bytes([T("payload", data=content)]), mtime=0))
    data[len(data) // 2] ^= 0xFF
    return bytes(data), content


def _gzip_without_trailer() -> tuple[bytes, bytes]:
    content = os.urandom(60_000)
    data = gzip.compress(tar_bytes([T("payload", data=content)]), mtime=0)
    return data[:-8], content  # CRC32 and ISIZE cut off


@pytest.mark.parametrize("damage", [_gzip_with_bad_crc, _gzip_without_trailer])
def test_gzip_integrity_is_checked(
    tmp_path: Path, damage: Callable[[], tuple[bytes, bytes]]
) -> None:
    data, _content = damage()
    with pytest.raises(gzip.BadGzipFile if damage is _gzip_with_bad_crc else EOFError):
        gzip.decompress(data)  # the damage is real: gzip itself refuses it
    path = tmp_path / "damaged.tar.gz"
    path.write_bytes(data)
    with pytest.raises(BadInput, match="corrupt or truncated"), open_artifact(path) as artifact:
        artifact.extract(tmp_path / "dest")


@pytest.mark.parametrize("in_memory", [True, False])
def test_gzip_reads_the_same_whether_decompressed_in_memory_or_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    # Within SPOOL_LIMIT a .tar.gz is decompressed once, into memory; beyond
    # it, tarfile reads the compressed stream. Same members, bytes and checks.
    if not in_memory:
        monkeypatch.setattr(archive, "SPOOL_LIMIT", 0)
    path = make_tar(tmp_path / "good.tar.gz", GOOD)
    with open_artifact(path) as artifact:
        assert artifact.read("etc/conf") == b"k=v\n"
        artifact.extract(tmp_path / "dest")
    assert tree(tmp_path / "dest") == EXPECTED_TREE
    for damage in (_gzip_with_bad_crc, _gzip_without_trailer):
        damaged = tmp_path / f"{damage.__name__}.tar.gz"
        damaged.write_bytes(damage()[0])
        with pytest.raises(BadInput, match="corrupt or truncated"), open_artifact(damaged) as a:
            a.extract(tmp_path / f"dest-{damage.__name__}")
        assert not (tmp_path / f"dest-{damage.__name__}").exists()


def test_symlink_through_a_symlink_member_is_refused(tmp_path: Path) -> None:
    members = [
        T("d", kind="dir"),
        T("d/up", kind="symlink", target=".."),
        T("e", kind="symlink", target="d/up/.."),
    ]
    path = make_tar(tmp_path / "chain.tar.gz", members)
    dest = tmp_path / "dest"
    try:
        with open_artifact(path) as artifact:
            artifact.extract(dest)
    except BadInput:
        return
    escaped = [p for p in ("d/up", "e") if not inside(str(dest / p), dest)]
    assert escaped == []


@pytest.mark.parametrize(
    "late",
    [T("a", kind="symlink", target="bin"), T("a"), T("a", kind="hardlink", target="bin/app")],
    ids=["symlink", "file", "hardlink"],
)
def test_member_replacing_an_implicit_directory_is_refused(tmp_path: Path, late: T) -> None:
    path = make_tar(tmp_path / "implicit.tar.gz", [T("bin/app"), T("a/f"), late])
    with pytest.raises(BadInput):
        open_artifact(path).close()


def test_implicit_directory_made_explicit_later_is_fine(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "late.tar", [T("a/b/f", data=b"f"), T("a", kind="dir", mode=0o700)])
    with open_artifact(path) as artifact:
        artifact.extract(tmp_path / "dest")
    assert tree(tmp_path / "dest") == {
        "a": ("dir", 0o755, None),
        "a/b": ("dir", 0o755, None),
        "a/b/f": ("file", 0o644, b"f"),
    }


# -- property: whatever the members, nothing lands outside dest --------------------------

# Most members are plausible (so that many lists pass validation and get extracted,
# exercising links between members); about one in ten is drawn from everything.
_SEGMENTS = st.sampled_from(["a", "b", "c", ".", ".."])
_CLEAN_SEGMENTS = st.sampled_from(["a", "b", "c", "d", "e"] * 3 + ["."])
_TRAILS = st.sampled_from(["", "", "/"])
_NAMES = st.builds(
    lambda lead, segs, trail: lead + "/".join(segs) + trail,
    st.sampled_from(["", "./", "/", "//"]),
    st.lists(_SEGMENTS, min_size=1, max_size=3),
    _TRAILS,
)
_CLEAN_NAMES = st.builds(
    lambda lead, segs, trail: lead + "/".join(segs) + trail,
    st.sampled_from(["", "", "", "./"]),
    st.lists(_CLEAN_SEGMENTS, min_size=1, max_size=3),
    _TRAILS,
)
_RELATIVE_TARGETS = st.lists(
    st.sampled_from(["a", "b", "c", "a", "b", "c", ".", ".."]), min_size=1, max_size=4
).map("/".join)
_TARGETS = st.one_of(_RELATIVE_TARGETS, _NAMES, st.sampled_from(["", "/", "/etc", "/tmp/x"]))
_KINDS = st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo", "chr", "blk"])
_CLEAN_KINDS = st.sampled_from(["file"] * 3 + ["dir"] * 2 + ["symlink"] * 3 + ["hardlink"] * 2)
_MODES = st.sampled_from([0o644, 0o755, 0o777, 0o4755, 0o2750, 0o6777, 0o1777])
_CLEAN_MODES = st.sampled_from([0o644, 0o755, 0o600, 0o777, 0o664, 0o700, 0o1755])


@st.composite
def _member_lists(draw: st.DrawFn) -> list[T]:
    """Members whose link targets are often other members (chains, hard links)."""
    members: list[T] = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        hostile = draw(st.integers(0, 9)) == 0
        kind = draw(_KINDS if hostile else _CLEAN_KINDS)
        target = ""
        if kind in ("symlink", "hardlink"):
            earlier = [m.name for m in members if kind == "symlink" or m.kind == "file"]
            if earlier and not hostile and draw(st.integers(0, 3)):
                target = draw(st.sampled_from(earlier))
                if kind == "symlink" and not draw(st.integers(0, 2)):
                    target = draw(st.sampled_from(["../", "./", "a/../", "../../"])) + target
            else:
                target = draw(_TARGETS if hostile else _RELATIVE_TARGETS)
        name = draw(_NAMES if hostile else _CLEAN_NAMES)
        mode = draw(_MODES if hostile else _CLEAN_MODES)
        members.append(T(name, kind, b"x", mode, target))
    return members


_MEMBER_LISTS = _member_lists()

_LEXICAL_ESCAPE = [
    T("d", kind="dir"),
    T("d/up", kind="symlink", target=".."),
    T("e", kind="symlink", target="d/up/.."),
]
_IMPLICIT_DIR = [T("a/b"), T("a", kind="symlink", target="b")]


def _replaces_implicit_dir(members: Sequence[Member]) -> bool:
    """A member at a path an earlier member made a directory implicitly (known bug)."""
    for j, late in enumerate(members):
        if late.type is MemberType.DIR:
            continue
        if any(m.path.startswith(late.path + "/") for m in members[:j]):
            return True
    return False


def _walks_through_symlink(members: Sequence[Member]) -> bool:
    """A symlink whose target passes through another symlink member (known bug)."""
    links = {m.path for m in members if m.type is MemberType.SYMLINK}
    for m in members:
        if m.type is not MemberType.SYMLINK:
            continue
        parts = posixpath.join(posixpath.dirname(m.path), m.target).split("/")
        current: list[str] = []
        for i, part in enumerate(parts):
            if part in ("", "."):
                continue
            if part == "..":
                if current:
                    current.pop()
                continue
            current.append(part)
            if "/".join(current) in links and i < len(parts) - 1:
                return True
    return False


def check_members_stay_inside(members: Sequence[T], *, tolerate_known_bugs: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        path = make_tar(top / "a.tar", members)
        before = snapshot(top)
        try:
            artifact = open_artifact(path)
        except BadInput as e:
            event(f"refused: {e.message.split(' ')[-1]}")
            assert snapshot(top) == before
            return
        event("extracted")
        dest = top / "dest"
        with artifact:
            known = tolerate_known_bugs and _replaces_implicit_dir(artifact.members)
            try:
                artifact.extract(dest)
            except FileExistsError:
                if not known:
                    raise
        after = snapshot(top)
        # nothing outside dest was created or changed (top itself changed: it holds dest)
        outside = {k: v for k, v in after.items() if k not in (".", "dest")}
        outside = {k: v for k, v in outside.items() if not k.startswith("dest/")}
        assert outside == {k: v for k, v in before.items() if k != "."}
        # every symlink under dest resolves inside dest
        tolerate_links = tolerate_known_bugs and _walks_through_symlink(artifact.members)
        for rel, entry in after.items():
            if entry[0] == "link" and not tolerate_links:
                assert inside(str(top / rel), dest), (rel, entry)
        if known:
            return
        # and what was validated is exactly what is there
        for m in artifact.members:
            st_ = (dest / m.path).lstat()
            expected = {
                MemberType.FILE: stat.S_ISREG,
                MemberType.HARDLINK: stat.S_ISREG,
                MemberType.DIR: stat.S_ISDIR,
                MemberType.SYMLINK: stat.S_ISLNK,
            }[m.type]
            assert expected(st_.st_mode), m
            if m.type is not MemberType.SYMLINK:
                assert not st_.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MEMBER_LISTS)
@example([T("a/../../x")])
@example([T("l", kind="symlink", target="."), T("l/x")])
@example([T("l", kind="symlink", target="a"), T("a", kind="dir"), T("l/x")])
@example([T("f"), T("h", kind="hardlink", target="f"), T("s", kind="symlink", target="h")])
@example(_LEXICAL_ESCAPE)
@example(_IMPLICIT_DIR)
def test_random_members_never_escape(members: list[T]) -> None:
    check_members_stay_inside(members, tolerate_known_bugs=True)


@settings(phases=[Phase.explicit], deadline=None)
@given(_MEMBER_LISTS)
@example(_LEXICAL_ESCAPE)
@example(_IMPLICIT_DIR)
def test_random_members_never_escape_strict(members: list[T]) -> None:
    check_members_stay_inside(members, tolerate_known_bugs=False)


# -- the same member listed again (issue 27, finding 2) ------------------------------

SERVER = b"#!/bin/sh\nexec bin/app start\n"
#: What mix's tar step writes for a file in rel/overlays/bin/: bin/ as a
#: directory, again as an overlay directory, and the file once more.
LISTED_AGAIN = [
    T("bin", kind="dir"),
    T("bin/app", data=b"#!/bin/sh\n", mode=0o755),
    T("bin/server", data=SERVER, mode=0o755),
    T("bin", kind="dir"),
    T("bin/server", data=SERVER, mode=0o755),
    T("bin/server", data=SERVER, mode=0o755, mtime=1_700_000_001),
    T("lib/s", kind="symlink", target="../bin/server"),
    T("lib/s", kind="symlink", target="../bin/server"),
    T("h", kind="hardlink", target="bin/server"),
    T("h", kind="hardlink", target="bin/server"),
]


@pytest.mark.parametrize("in_memory", [True, False], ids=["spooled", "streamed"])
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_the_same_member_listed_again_is_extracted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, in_memory: bool
) -> None:
    if not in_memory:
        monkeypatch.setattr(archive, "SPOOL_LIMIT", 0)
    path = make_tar(tmp_path / f"again{suffix}", LISTED_AGAIN)
    with open_artifact(path) as artifact:
        paths = [m.path for m in artifact.members]
        assert paths == ["bin", "bin/app", "bin/server", "bin", "lib/s", "h"]
        artifact.extract(tmp_path / "dest")
    assert tree(tmp_path / "dest")["bin/server"] == ("file", 0o755, SERVER)
    assert os.readlink(tmp_path / "dest/lib/s") == "../bin/server"
    assert os.path.samefile(tmp_path / "dest/h", tmp_path / "dest/bin/server")


@pytest.mark.parametrize("in_memory", [True, False], ids=["spooled", "streamed"])
def test_a_copy_with_other_content_is_refused_wherever_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    # Same name, type, mode and size: only the content tells them apart.
    if not in_memory:
        monkeypatch.setattr(archive, "SPOOL_LIMIT", 0)
    other = SERVER.replace(b"app", b"evl")
    for position in (3, 5, len(LISTED_AGAIN)):
        members = [*LISTED_AGAIN]
        members.insert(position, T("bin/server", data=other, mode=0o755))
        path = make_tar(tmp_path / f"other{position}.tar.gz", members)
        with pytest.raises(BadInput) as info:
            open_artifact(path)
        assert info.value.message == (
            "archive member 'bin/server' appears more than once, with different content"
        )


def test_a_directory_artifact_has_no_copies_to_compare() -> None:
    # validate() without same_content (directories cannot list a name twice)
    with pytest.raises(BadInput, match="appears more than once"):
        validate([RawMember("a", "file", 0o644, 1), RawMember("a", "file", 0o644, 1)])


def test_names_in_messages_are_cut_short() -> None:
    name = "d/" * 60_000 + "../x"
    with pytest.raises(BadInput) as info:
        validate([RawMember(name, "file", 0o644)])
    assert len(info.value.message) < 250, len(info.value.message)
    assert "(120004 bytes)" in info.value.message
    # a name no file system holds (a lone surrogate) is measured, not a crash
    with pytest.raises(BadInput, match="name too long"):
        validate([RawMember("\ud800" * 2000, "file", 0o644)])


# -- crafted headers: the walk and tarfile read every archive the same way -------------

_CRAFT_NAMES = [b"f", b"d/", b"a/b", b"./f", b"bin/app"]
_CRAFT_KINDS = [b"0", b"\0", b"5", b"2", b"1", b"7", b"3", b"V", b"S"]
_INNER = tarcraft.header(b"inner")


@st.composite
def _crafted_tars(draw: st.DrawFn) -> bytes:
    parts = [tarcraft.member(b"bin/app", b"#!/bin/sh\n")]
    for _ in range(draw(st.integers(0, 5))):
        pax_size: int | None = None
        for ext in draw(st.lists(st.sampled_from("LKxsgp"), max_size=3)):
            if ext in "LK":
                parts.append(tarcraft.extended(ext.encode(), draw(st.sampled_from(_CRAFT_NAMES))))
            elif ext == "s":
                pax_size = draw(st.integers(0, 1100))
                parts.append(tarcraft.extended(b"x", tarcraft.record(b"size", b"%d" % pax_size)))
            elif ext == "p":
                path = draw(st.sampled_from(_CRAFT_NAMES))
                parts.append(tarcraft.extended(b"x", tarcraft.record(b"path", path)))
            else:
                parts.append(tarcraft.extended(ext.encode(), tarcraft.record(b"comment", b"c")))
        kind = draw(st.sampled_from(_CRAFT_KINDS))
        size = draw(st.sampled_from([0, 1, 512, 1024, draw(st.integers(0, 1100))]))
        data = draw(st.sampled_from([size, pax_size or 0, 0, 512, 1024]))
        name = draw(st.sampled_from(_CRAFT_NAMES))
        parts.append(tarcraft.header(name, kind, size, linkname=b"bin/app"))
        # Data that reads as headers too: read at the wrong place, it still
        # parses, so a walk that went astray is seen, not just refused.
        parts.append(tarcraft.padded((_INNER * 3)[:data]))
    if draw(st.booleans()):
        parts.append(tarcraft.END)
    return b"".join(parts)


@given(_crafted_tars())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_crafted_headers_are_read_one_way(data: bytes) -> None:
    # Whatever the headers say, the archive is refused as BadInput or read,
    # and tarfile finds every member where the header walk found it (never
    # "reads two ways", which would mean the walk checked other headers).
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "crafted.tar")
        path.write_bytes(data)
        try:
            open_artifact(path).close()
            event("read")
        except BadInput as e:
            assert "two ways" not in e.message, e.message
            event("refused")
