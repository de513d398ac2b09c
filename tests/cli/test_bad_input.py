"""Bad input through the command line: exit 2, one error line, and not one byte changed.

DESIGN.md: exit code 2 means "bad input ... nothing was changed", and errors are one
``error: ...`` line on stderr (then a ``hint:``). These tests go through
``pyrelctl.cli.main`` (the console-script entry point that turns errors into that line
and the exit code) with ``--root``, i.e. offline: no systemd is ever called.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import tarcraft
from tests.cli.conftest import Result, run

# -- snapshots of the root tree --------------------------------------------------------

Entry = tuple[object, ...]


def snapshot(top: Path) -> dict[str, Entry] | None:
    """Every path below ``top``: type, mode, mtime, and content or link target."""
    if not top.exists() and not top.is_symlink():
        return None
    out: dict[str, Entry] = {}
    paths = [top]
    for dirpath, dirnames, filenames in os.walk(top):
        paths += [Path(dirpath, n) for n in dirnames + filenames]
    for p in paths:
        st = p.lstat()
        rel = p.relative_to(top).as_posix()
        kind = stat.S_IFMT(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            detail: object = os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            detail = p.read_bytes()
        else:
            detail = None
        out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, detail)
    return out


# -- artifacts ---------------------------------------------------------------------

SCRIPT = b"#!/bin/sh\nexec sleep infinity\n"


def manifest(name: str = "app", version: str = "1.0.0", extra: str = "") -> str:
    return (
        f'[release]\nname = "{name}"\nversion = "{version}"\n\n'
        '[commands]\nstart = ["bin/app", "start"]\n' + extra
    )


@dataclass(frozen=True)
class M:
    """A tar member: kind is file, dir, symlink, hardlink, chr or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b"x\n"
    mode: int = 0o644
    target: str = ""


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def release_members(toml: str | None = None) -> list[M]:
    return [
        M("bin", "dir", mode=0o755),
        M("bin/app", data=SCRIPT, mode=0o755),
        M("release.toml", data=(toml or manifest()).encode()),
    ]


def tar_bytes(members: Sequence[M]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _TYPES[m.kind]
            info.mode = m.mode
            info.mtime = 1_700_000_000
            info.linkname = m.target
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def tarball(path: Path, members: Sequence[M]) -> Path:
    path.write_bytes(gzip.compress(tar_bytes(members), mtime=0))
    return path


def good_release(tmp: Path, version: str = "1.0.0") -> Path:
    return tarball(tmp / f"app-{version}.tar.gz", release_members(manifest(version=version)))


@dataclass(frozen=True)
class Bad:
    id: str
    build: Callable[[Path], Path]
    word: str


def with_members(id: str, extra: Sequence[M], word: str) -> Bad:
    return Bad(id, lambda tmp: tarball(tmp / f"{id}.tar.gz", [*release_members(), *extra]), word)


def with_manifest(id: str, toml: str, word: str) -> Bad:
    return Bad(id, lambda tmp: tarball(tmp / f"{id}.tar.gz", release_members(toml)), word)


def raw_file(id: str, name: str, content: Callable[[], bytes], word: str) -> Bad:
    def build(tmp: Path) -> Path:
        (tmp / name).write_bytes(content())
        return tmp / name

    return Bad(id, build, word)


def _truncated() -> bytes:
    data = gzip.compress(tar_bytes([*release_members(), M("blob", data=os.urandom(40_000))]))
    return data[: len(data) // 2]


def _pax_chain() -> bytes:
    # CPython's TarInfo reads each extended header by calling itself for the
    # next header: thousands in a row raised RecursionError, a traceback.
    record = b"13 comment=x\n"
    pax = tarfile.TarInfo("pax")
    pax.type, pax.size = tarfile.XHDTYPE, len(record)
    chain = (pax.tobuf(format=tarfile.USTAR_FORMAT) + record.ljust(512, b"\0")) * 5000
    release = tar_bytes(release_members())
    cut = 3 * tarfile.BLOCKSIZE  # after bin/ and bin/app (header and data)
    return gzip.compress(release[:cut] + chain + release[cut:], mtime=0)


def _huge_long_name() -> bytes:
    # A GNU long-name header of 4 MiB, which tarfile would read whole into memory.
    return gzip.compress(tar_bytes([*release_members(), M("a" * (4 << 20))]), mtime=0)


def _release_then(*parts: bytes) -> Callable[[], bytes]:
    """A good release's .tar.gz with ``parts`` (tests.tarcraft blocks) after it."""
    release = tar_bytes(release_members())
    while release.endswith(bytes(tarcraft.BLOCK)):  # the end marker and record padding
        release = release[: -tarcraft.BLOCK]
    return lambda: gzip.compress(release + b"".join(parts) + tarcraft.END, mtime=0)


def _release_dir_with_fifo(tmp: Path) -> Path:
    root = tmp / "fifo-release"
    (root / "bin").mkdir(parents=True)
    (root / "bin/app").write_bytes(SCRIPT)
    (root / "bin/app").chmod(0o755)
    (root / "release.toml").write_text(manifest())
    os.mkfifo(root / "control")
    return root


def _mix_with_bad_start_erl(tmp: Path) -> Path:
    return tarball(
        tmp / "mix.tar.gz",
        [
            M("releases/start_erl.data", data=b"14.2 ../../../etc\n"),
            M("bin/shop", data=SCRIPT, mode=0o755),
        ],
    )


BAD: list[Bad] = [
    with_members("dotdot", [M("../../etc/cron.d/evil")], "escapes"),
    with_members("absolute", [M("/etc/cron.d/evil")], "absolute"),
    with_members("symlink-out", [M("lib", "symlink", target="/etc")], "outside"),
    with_members("symlink-escape", [M("a/b", "symlink", target="../../..")], "outside"),
    with_members(
        "below-symlink", [M("lib", "symlink", target="bin"), M("lib/evil")], "below a symlink"
    ),
    with_members("hardlink-out", [M("pw", "hardlink", target="/etc/passwd")], "hard link"),
    with_members("hardlink-missing", [M("pw", "hardlink", target="etc/passwd")], "earlier"),
    with_members("device", [M("dev/null", "chr")], "device node"),
    with_members("fifo", [M("pipe", "fifo")], "FIFO"),
    with_members("setuid", [M("bin/su", mode=0o4755)], "setuid"),
    with_members("duplicate", [M("./bin/app", data=b"other")], "more than once"),
    raw_file("truncated", "cut.tar.gz", _truncated, "truncated"),
    raw_file("pax-chain", "chain.tar.gz", _pax_chain, "extended headers"),
    raw_file("huge-long-name", "long.tar.gz", _huge_long_name, "extended header"),
    # Issue 26, finding 1: 32 MiB headers of each kind, crafted block by block.
    *(
        raw_file(f"huge-{name}", f"{name}.tar.gz", _release_then(huge), "extended header")
        for name, huge in [
            ("gnu-long-name", tarcraft.huge_extended(b"L", 32 << 20)),
            ("gnu-long-link", tarcraft.huge_extended(b"K", 32 << 20)),
            ("pax-header", tarcraft.huge_extended(b"x", 32 << 20)),
            ("pax-global-header", tarcraft.huge_extended(b"g", 32 << 20)),
        ]
    ),
    raw_file(
        "long-name",
        "name.tar.gz",
        _release_then(tarcraft.extended(b"L", b"a" * 100_000 + b"\0"), tarcraft.member(b"x")),
        "name too long",
    ),
    raw_file("empty", "empty.tar.gz", lambda: gzip.compress(tar_bytes([M("./", "dir")])), "empty"),
    raw_file("zip", "app.zip", lambda: b"PK\x03\x04" + bytes(64), "not a release"),
    raw_file("not-a-release", "x.tar.gz", lambda: gzip.compress(tar_bytes([M("a")])), "not a"),
    Bad("missing", lambda tmp: tmp / "nope.tar.gz", "no such file"),
    Bad("fifo-in-dir", _release_dir_with_fifo, "FIFO"),
    Bad("mix-bad-version", _mix_with_bad_start_erl, "invalid release version"),
    with_manifest("toml-syntax", "[release\n", "not valid TOML"),
    with_manifest("unknown-key", manifest(extra="restart = ['bin/app']\n"), "unknown key"),
    with_manifest("program-outside", manifest().replace("bin/app", "/bin/sh"), "outside"),
    with_manifest("program-missing", manifest().replace("bin/app", "bin/gone"), "not in the"),
    with_manifest(
        "kind-python",
        manifest().replace("[commands]", 'kind = "python"\n[commands]'),
        "remove [commands]",
    ),
    with_manifest("bad-health", manifest(extra="[health]\ntcp = 'x'\n"), "HOST:PORT"),
    with_manifest("bad-env", manifest(extra="[environment]\n'A-B' = '1'\n"), "not valid"),
    with_manifest("bad-version", manifest(version="../../x"), "invalid release version"),
    with_manifest("bad-name", manifest(name="../Evil App"), "invalid app name"),
    with_manifest("unicode-name", manifest(name="\u0455hop"), "invalid app name"),
    # Issue 15: systemd reads these as flags of a command's first word, even
    # quoted; "+" and "!" would run it as root, outside the sandbox.
    *(
        with_manifest(
            f"exec-prefix-{i}",
            manifest().replace('start = ["bin/app"', f'start = ["{prefix}sh", "-c", "id"'),
            "reads as a flag",
        )
        for i, prefix in enumerate(["+", "!", "!!", "@", "-", ":", "|", "+/bin/"])
    ),
    with_manifest("exec-prefix-rpc", manifest(extra='rpc = ["+sh"]\n'), "reads as a flag"),
    with_manifest(
        "exec-prefix-hook",
        manifest(extra='[hooks]\npre_switch = ["!sh", "-c", "id"]\n'),
        "reads as a flag",
    ),
    with_manifest(
        "exec-prefix-health",
        manifest(extra='[health]\ncommand = ["+sh", "-c", "true"]\n'),
        "reads as a flag",
    ),
    with_manifest("start-newline", manifest().replace('"start"]', '"a\\nb"]'), "control"),
    with_manifest("env-newline", manifest(extra='[environment]\nA = "1\\nB=2"\n'), "control"),
    with_manifest(
        "description-continues",
        manifest().replace('version = "1.0.0"', 'version = "1.0.0"\ndescription = "x \\\\"'),
        "backslash",
    ),
    # Names that would take a user, a unit or a directory of the host's.
    *(
        with_manifest(f"name-{name}", manifest(name=name), "reserved")
        for name in ("root", "dbus", "systemd", "systemd-journald", "pyrelctl", "private")
    ),
    # Socket paths PID 1 would bind as root, unlinking what is there.
    *(
        with_manifest(
            f"listen-{i}", manifest(extra=f'[socket]\nlisten = ["{path}"]\n'), "outside /run/app."
        )
        for i, path in enumerate(
            ["/etc/shadow", "/run/dbus/system_bus_socket", "/run/apps/x.sock", "/run/app.d/x"]
        )
    ),
    with_manifest("listen-low-port", manifest(extra='[socket]\nlisten = ["22"]\n'), "low-ports"),
    # Widenings of the sandbox that the host did not allow.
    with_manifest(
        "widen-low-ports",
        manifest(extra="[service]\nbind_privileged_ports = true\n"),
        "low-ports",
    ),
    with_manifest(
        "widen-wx",
        manifest(extra="[service]\nmemory_deny_write_execute = false\n"),
        "wx-memory",
    ),
    with_manifest(
        "widen-write",
        manifest(extra='[service]\nwritable_paths = ["/etc"]\n'),
        "write:/etc",
    ),
]


@pytest.fixture(params=["absent", "empty", "installed"])
def root(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    """The --root tree: missing, an empty directory, or with app 1.0.0 installed."""
    root = tmp_path / "root"
    if request.param == "empty":
        root.mkdir()
    elif request.param == "installed":
        artifacts = tmp_path / "good"
        artifacts.mkdir()
        assert run(capsys, "--root", root, "install", good_release(artifacts)).code == 0
    return root


def assert_one_error_line(result: Result, word: str) -> None:
    assert result.code == 2, result
    assert result.out == ""  # stdout is for results only
    errors = [line for line in result.err_lines if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    assert word in errors[0], errors[0]
    # whatever the artifact holds (a 32 MiB name...), a line a terminal shows
    assert all(len(line) < 400 for line in result.err_lines), [len(x) for x in result.err_lines]
    # the error line, then at most hints: no traceback, no progress chatter
    assert all(line.startswith(("error: ", "hint: ")) for line in result.err_lines), result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_hostile_artifact_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path, bad: Bad
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    artifact = bad.build(work)
    before = snapshot(root)
    result = run(capsys, "--root", root, "install", artifact)
    assert_one_error_line(result, bad.word)
    assert snapshot(root) == before


@pytest.mark.parametrize("bad", BAD[:6], ids=[b.id for b in BAD[:6]])
def test_hostile_artifact_with_app_option_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path, bad: Bad
) -> None:
    artifact = bad.build(tmp_path)
    before = snapshot(root)
    result = run(capsys, "--root", root, "--json", "install", "--app", "app", artifact)
    assert_one_error_line(result, bad.word)
    assert snapshot(root) == before


# tarfile's "r:*" error text lists every method it tried, one per line.
MULTILINE = [
    raw_file("text-as-tgz", "notes.tar.gz", lambda: b"not a tarball\n" * 40, "tar archive"),
    raw_file("zero-bytes", "zero.tgz", lambda: b"", "tar archive"),
]


@pytest.mark.parametrize("bad", MULTILINE, ids=[b.id for b in MULTILINE])
def test_unreadable_archive_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: Bad
) -> None:
    root = tmp_path / "root"
    result = run(capsys, "--root", root, "install", bad.build(tmp_path))
    assert snapshot(root) is None  # this part holds
    assert_one_error_line(result, bad.word)


# -- app names -----------------------------------------------------------------------

BAD_APPS = [
    "Shop",
    "../app",
    "app/..",
    ".",
    "..",
    "a" * 32,
    "app\n",
    "my_app",
    "\u0455hop",  # Cyrillic s
    "app\uff11",  # fullwidth 1
    "1app",
    "-app",
    "app name",
]


@pytest.mark.parametrize("app", BAD_APPS)
def test_invalid_app_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path, app: str
) -> None:
    artifact = good_release(tmp_path)
    before = snapshot(root)
    result = run(capsys, "--root", root, "install", f"--app={app}", artifact)
    assert_one_error_line(result, "invalid app name")
    assert repr(app) in result.err
    assert snapshot(root) == before


@pytest.mark.parametrize("command", ["releases", "history", "status", "rollback", "prune"])
@pytest.mark.parametrize("app", ["../app", "Shop", "app\n"])
def test_invalid_app_argument_of_other_commands(
    capsys: pytest.CaptureFixture[str], root: Path, command: str, app: str
) -> None:
    before = snapshot(root)
    result = run(capsys, "--root", root, command, app)
    assert_one_error_line(result, "invalid app name")
    assert snapshot(root) == before


def test_empty_app_option_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    result = run(capsys, "--root", root, "install", "--app=", good_release(tmp_path))
    assert_one_error_line(result, "invalid app name")
    assert snapshot(root) is None


def test_usage_error_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    before = snapshot(root)
    result = run(capsys, "--root", root, "install", "--no-such-option", good_release(tmp_path))
    assert result.code == 2
    assert result.out == ""
    assert "no-such-option" in result.err
    assert snapshot(root) == before


def test_usage_error_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "--root", tmp_path / "root", "install", "--no-such-option", "x.tar.gz")
    assert_one_error_line(result, "no-such-option")


def test_keep_must_be_positive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    before = snapshot(root)
    result = run(capsys, "--root", root, "install", "--keep", "0", good_release(tmp_path))
    assert result.code == 2
    assert "--keep" in result.err
    assert snapshot(root) == before


def test_max_size_option_that_the_hint_names_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    big = tarball(tmp_path / "big.tar.gz", [*release_members(), M("blob", data=b"x" * 5000)])
    result = run(capsys, "--root", root, "install", "--max-size", "1000", big)
    assert_one_error_line(result, "more than 1000 bytes")


# -- validated, then failing: the tree must still be untouched -----------------------------


def test_artifact_failing_during_extraction_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    artifact = tarball(
        tmp_path / "implicit.tar.gz",
        [*release_members(), M("lib/x"), M("lib", "symlink", target="bin")],
    )
    before = snapshot(root)
    result = run(capsys, "--root", root, "install", artifact)
    assert (result.code, snapshot(root)) == (2, before), result


# -- a good release, offline ------------------------------------------------------------


def test_good_release_installs_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    result = run(capsys, "--root", root, "install", good_release(tmp_path))
    assert result.code == 0, result
    assert result.out == "app 1.0.0 installed (not started)\n"
    assert not any(line.startswith("error:") for line in result.err_lines)

    current = root / "opt/app/current"
    assert current.is_symlink()
    assert os.readlink(current) == "releases/1.0.0"
    release = root / "opt/app/releases/1.0.0"
    assert (release / "bin/app").read_bytes() == SCRIPT
    assert stat.S_IMODE((release / "bin/app").stat().st_mode) == 0o755
    assert (release / "release.toml").read_text() == manifest()
    assert stat.S_IMODE(release.stat().st_mode) == 0o755
    # no incomplete or temporary leftovers
    assert sorted(p.name for p in (root / "opt/app/releases").iterdir()) == ["1.0.0"]
    assert sorted(p.name for p in (root / "opt/app").iterdir()) == ["current", "releases"]

    unit = root / "etc/systemd/system/app.service"
    text = unit.read_text()
    first = text.splitlines()[0]
    assert first.startswith("#") and "generated" in first.lower()
    assert "ExecStart=" in text
    assert "/opt/app/current" in text
    assert "[Install]" in text
    # like `systemctl --root enable`: the [Install] symlink, not a call to systemd
    wants = root / "etc/systemd/system/multi-user.target.wants/app.service"
    assert os.readlink(wants) == "/etc/systemd/system/app.service"

    history = (root / "var/lib/pyrelctl/app/history.jsonl").read_text().splitlines()
    assert len(history) == 1
    assert json.loads(history[0])["to"] == "1.0.0"


def test_good_release_installed_twice_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    artifact = good_release(tmp_path)
    assert run(capsys, "--root", root, "install", artifact).code == 0
    before = snapshot(root)
    assert before is not None
    result = run(capsys, "--root", root, "install", artifact)
    assert result.code == 0, result
    assert result.out == "app 1.0.0 is already current; nothing changed\n"
    after = snapshot(root)
    assert after is not None
    lock = "var/lib/pyrelctl/.locks/app.lock"
    # Only the lock file (holder pid and time) may be rewritten; its directory too.
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= {lock, "var/lib/pyrelctl/.locks"}


def test_good_release_installed_twice_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    artifact = good_release(tmp_path)
    first = run(capsys, "--root", root, "--json", "install", artifact)
    second = run(capsys, "--root", root, "--json", "install", artifact)
    assert (first.code, second.code) == (0, 0)
    one, two = json.loads(first.out), json.loads(second.out)
    assert (one["app"], one["version"], one["changed"], one["started"]) == (
        "app",
        "1.0.0",
        True,
        False,
    )
    assert (two["version"], two["previous"], two["changed"]) == ("1.0.0", "1.0.0", False)


def test_hostile_upgrade_keeps_the_installed_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert run(capsys, "--root", root, "install", good_release(tmp_path)).code == 0
    hostile = tarball(
        tmp_path / "app-2.0.0.tar.gz",
        [*release_members(manifest(version="2.0.0")), M("../../../../etc/evil")],
    )
    before = snapshot(root)
    result = run(capsys, "--root", root, "install", hostile)
    assert_one_error_line(result, "escapes")
    assert snapshot(root) == before
    assert os.readlink(root / "opt/app/current") == "releases/1.0.0"
    assert not (tmp_path / "etc/evil").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "localhost:80"], "is not an IP address"),
        (["--listen", "80", "--listen", "80"], "given twice"),
        (["--listen", "80", "--listen-reset"], "not both"),
        (["--listen", "/run/x y.sock"], "unix socket path"),
    ],
)
def test_bad_listen_options_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path, args: list[str], message: str
) -> None:
    before = snapshot(root)
    result = run(capsys, "--root", root, "install", *args, good_release(tmp_path))
    assert_one_error_line(result, message)
    assert snapshot(root) == before


def test_bad_socket_table_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    from devtools.releases import make_generic_release

    artifact = make_generic_release(
        tmp_path / "bad-socket",
        name="web",
        version="1",
        extra_toml='[socket]\nlisten = ["127.0.0.1:99999"]\n',
    )
    before = snapshot(root)
    result = run(capsys, "--root", root, "install", artifact)
    assert_one_error_line(result, "release.toml: listen address '127.0.0.1:99999'")
    assert snapshot(root) == before
