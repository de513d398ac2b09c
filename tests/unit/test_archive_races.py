"""Artifacts that change while pyrelctl reads them (issue 15, findings 6 and 7).

What is verified is what is parsed and extracted, whatever happens at the
artifact's path meanwhile; a directory artifact copies only files that were
validated, as they were validated.
"""

from __future__ import annotations

import gzip
import os
import signal
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pyrelctl import archive, tarartifact
from pyrelctl.errors import BadInput
from pyrelctl.openartifact import open_artifact
from tests.unit.test_archive import EXPECTED_TREE, GOOD, T, make_tar, tree

OTHER = [T("bin/app", data=b"#!/bin/sh\necho unsigned\n", mode=0o755), T("evil", data=b"x")]


class Recorder:
    """A verifier that reads everything it is given, then lets ``after`` run."""

    def __init__(self, after: Callable[[], None] = lambda: None) -> None:
        self.seen: list[bytes] = []
        self.after = after

    def __call__(self, f: IO[bytes]) -> None:
        assert f.seekable() and f.tell() == 0
        self.seen.append(f.read())  # to its end, not rewound: open_artifact must cope
        self.after()


# The same artifact, held in memory or copied into a temporary file, and its
# tar decompressed into memory once or streamed.
READS = {
    "in-memory": {},
    "temporary-file": {"HELD_IN_MEMORY": 0},
    "streamed": {"SPOOL_LIMIT": 0},
    "temporary-file-streamed": {"HELD_IN_MEMORY": 0, "SPOOL_LIMIT": 0},
}


@pytest.fixture(params=list(READS))
def reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in READS[request.param].items():
        monkeypatch.setattr(archive, name, value)
    return str(request.param)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar"])
def test_what_is_verified_is_what_is_extracted(tmp_path: Path, reads: str, suffix: str) -> None:
    path = make_tar(tmp_path / f"good{suffix}", GOOD)
    signed = path.read_bytes()
    unsigned = make_tar(tmp_path / f"other{suffix}", OTHER)
    # The inotify race of the finding: the file is swapped right after the check.
    verifier = Recorder(lambda: os.replace(unsigned, path))
    with open_artifact(path, verify=verifier) as artifact:
        assert path.read_bytes() != signed  # the swap happened
        assert artifact.read("etc/conf") == b"k=v\n"
        artifact.extract(tmp_path / "dest")
    assert verifier.seen == [signed]  # once, all of it
    assert tree(tmp_path / "dest") == EXPECTED_TREE


def test_the_verifier_sees_the_bytes_before_anything_parses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: str
) -> None:
    path = make_tar(tmp_path / "good.tar.gz", GOOD)
    parsed: list[str] = []

    def no_parsing(name: str, real: Callable[..., object]) -> Callable[..., object]:
        def spy(*args: object, **kwargs: object) -> object:
            parsed.append(name)
            return real(*args, **kwargs)

        return spy

    monkeypatch.setattr(tarfile, "open", no_parsing("tarfile.open", tarfile.open))
    monkeypatch.setattr(gzip, "GzipFile", no_parsing("gzip", gzip.GzipFile))

    def refuse(f: IO[bytes]) -> None:
        assert parsed == []
        raise BadInput("bad signature (the verifier's own words)")

    with pytest.raises(BadInput, match="the verifier's own words"):
        open_artifact(path, verify=refuse)
    assert parsed == []
    open_artifact(path, verify=Recorder()).close()
    assert parsed  # the spies do see parsing


def test_a_refusing_verifier_speaks_before_a_broken_archive(tmp_path: Path) -> None:
    path = tmp_path / "notes.tar.gz"
    path.write_bytes(b"not a tarball at all\n" * 10)
    with pytest.raises(BadInput, match="not a readable tar"):
        open_artifact(path)  # what the archive alone would say
    with pytest.raises(BadInput, match="unsigned"):
        open_artifact(path, verify=lambda f: (_ for _ in ()).throw(BadInput("unsigned")))


def test_the_verifier_is_called_once_with_the_whole_file(tmp_path: Path, reads: str) -> None:
    path = make_tar(tmp_path / "good.tar.gz", GOOD)
    verifier = Recorder()
    with open_artifact(path, verify=verifier) as artifact:
        assert artifact.has("bin/app")
    assert verifier.seen == [path.read_bytes()]


def test_a_directory_cannot_be_verified(tmp_path: Path) -> None:
    root = tmp_path / "rel"
    (root / "bin").mkdir(parents=True)
    (root / "bin/app").write_bytes(b"#!/bin/sh\n")
    verifier = Recorder()
    with pytest.raises(BadInput, match="sign a tarball, not a directory"):
        open_artifact(root, verify=verifier)
    assert verifier.seen == []
    open_artifact(root).close()  # without a verifier, as before
    link = tmp_path / "link.tar.gz"
    link.symlink_to(root)  # whatever its name says
    with pytest.raises(BadInput, match="sign a tarball, not a directory"):
        open_artifact(link, verify=verifier)


def test_the_artifact_may_be_a_symlink_to_a_file(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "good.tar.gz", GOOD)
    link = tmp_path / "latest.tar.gz"
    link.symlink_to(path.name)
    verifier = Recorder()
    with open_artifact(link, verify=verifier) as artifact:
        artifact.extract(tmp_path / "dest")
    assert verifier.seen == [path.read_bytes()]
    assert tree(tmp_path / "dest") == EXPECTED_TREE


def test_a_fifo_with_a_tarball_name_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.tar.gz"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="not a regular file"):
        open_artifact(fifo, verify=Recorder())


def test_an_artifact_file_too_large_for_any_release_is_not_copied(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "good.tar", GOOD)
    with open(path, "ab") as f:  # a tar ends at its zero blocks; the rest is junk
        f.truncate(tarartifact._largest_file(1000) + 1)
    verifier = Recorder()
    with pytest.raises(BadInput, match="larger than any release"):
        open_artifact(path, max_bytes=1000, verify=verifier)
    assert verifier.seen == []


# -- directory artifacts changed between validation and copy (finding 7) ----------

SECRET = b"root's secret!\n"
CONF = b"k=v, no secret\n"  # as long as SECRET: a size check alone cannot tell them apart
assert len(SECRET) == len(CONF)


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    root = tmp_path / "rel"
    (root / "bin").mkdir(parents=True)
    (root / "bin/app").write_bytes(b"#!/bin/sh\n")
    (root / "lib").mkdir()
    (root / "lib/conf").write_bytes(CONF)
    (root / "lib/conf").chmod(0o644)
    (root / "lib/more").write_bytes(b"more\n")
    return root


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    """A root-only directory holding a 0600 file named like the release's own."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "conf").write_bytes(SECRET)
    (secrets / "conf").chmod(0o600)
    (secrets / "more").write_bytes(b"more\n")
    return secrets


class Deadline:
    """SIGALRM after ``seconds``: a blocking open(2) is interrupted, not waited out."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        def expired(signum: int, frame: object) -> None:
            raise TimeoutError("blocked")

        self.previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)


def extract_after(root: Path, dest: Path, change: Callable[[], None]) -> bool:
    """Validate ``root``, ``change`` it, extract: True if extracted, False if refused."""
    with Deadline(5), open_artifact(root) as artifact:
        assert artifact.member("lib/conf") is not None
        change()
        try:
            artifact.extract(dest)
        except BadInput as e:
            assert "changed" in e.message, e.message
            return False
    return True


def all_bytes(top: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file())


def _replace_dir_with_link(root: Path, secrets: Path) -> None:
    os.rename(root / "lib", root / "lib.old")
    os.symlink(secrets, root / "lib")


def _replace_file_with_link(root: Path, secrets: Path) -> None:
    os.unlink(root / "lib/conf")
    os.symlink(secrets / "conf", root / "lib/conf")


def _replace_file_with_hard_link(root: Path, secrets: Path) -> None:
    os.unlink(root / "lib/conf")
    os.link(secrets / "conf", root / "lib/conf")


def _replace_parent_with_link(root: Path, secrets: Path) -> None:
    # bin/../lib: a link at the top standing for a directory two levels down
    nested = root.parent / "outer"
    (nested / "lib").mkdir(parents=True)
    os.rename(secrets / "conf", nested / "lib/conf")
    os.rename(root / "lib", root / "lib.old")
    os.symlink(nested / "lib", root / "lib")


def _replace_file_with_fifo(root: Path, secrets: Path) -> None:
    os.unlink(root / "lib/conf")
    os.mkfifo(root / "lib/conf")


def _grow_file(root: Path, secrets: Path) -> None:
    with open(root / "lib/conf", "ab") as f:
        f.write(SECRET)


def _make_setuid(root: Path, secrets: Path) -> None:
    (root / "lib/conf").chmod(0o4755)


def _replace_dir_with_other_dir(root: Path, secrets: Path) -> None:
    os.rename(root / "lib", root / "lib.old")
    os.rename(secrets, root / "lib")


CHANGES = [
    _replace_dir_with_link,
    _replace_file_with_link,
    _replace_file_with_hard_link,
    _replace_parent_with_link,
    _replace_file_with_fifo,
    _grow_file,
    _make_setuid,
    _replace_dir_with_other_dir,
]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__.strip("_") for c in CHANGES])
def test_a_directory_changed_after_validation_never_leaks(
    tmp_path: Path,
    release_dir: Path,
    secret_dir: Path,
    change: Callable[[Path, Path], None],
) -> None:
    dest = tmp_path / "dest"
    extracted = extract_after(release_dir, dest, lambda: change(release_dir, secret_dir))
    assert not extracted  # each of these is a file other than the one validated
    if dest.exists():
        assert SECRET not in all_bytes(dest)


def test_a_directory_renamed_away_is_still_read_from_what_was_validated(
    tmp_path: Path, release_dir: Path, secret_dir: Path
) -> None:
    # The release directory itself is held open: a link put in its place is not followed.
    def swap() -> None:
        os.rename(release_dir, tmp_path / "rel.old")
        os.symlink(secret_dir, release_dir)

    dest = tmp_path / "dest"
    assert extract_after(release_dir, dest, swap)
    assert (dest / "lib/conf").read_bytes() == CONF
    assert SECRET not in all_bytes(dest)


def test_a_file_growing_while_it_is_copied_is_refused(release_dir: Path) -> None:
    with open_artifact(release_dir) as artifact:
        for member, stream in artifact.iter_files():
            assert stream is not None
            if member.path == "lib/conf":
                with open(release_dir / "lib/conf", "ab") as f:
                    f.write(SECRET)
                with pytest.raises(BadInput, match="changed"):
                    stream.read()
                break
        else:
            pytest.fail("lib/conf not listed")


def test_a_file_shrinking_while_it_is_copied_is_refused(release_dir: Path) -> None:
    with open_artifact(release_dir) as artifact:
        for member, stream in artifact.iter_files():
            assert stream is not None
            if member.path == "lib/conf":
                os.truncate(release_dir / "lib/conf", 3)
                with pytest.raises(BadInput, match="changed"):
                    stream.read()
                break


def test_an_unchanged_directory_extracts_as_before(tmp_path: Path, release_dir: Path) -> None:
    dest = tmp_path / "dest"
    assert extract_after(release_dir, dest, lambda: None)
    assert (dest / "lib/conf").read_bytes() == CONF
    assert (dest / "bin/app").read_bytes() == b"#!/bin/sh\n"
    with open_artifact(release_dir) as artifact:
        assert artifact.read("lib/conf") == CONF


# -- property: whatever the tree and whatever changes in it, nothing from outside ---

_NAMES = st.sampled_from(["a", "b", "c"])
_TREES = st.lists(
    st.tuples(
        st.lists(_NAMES, min_size=1, max_size=3).map("/".join),
        st.sampled_from(["file", "file", "dir", "symlink"]),
        st.sampled_from([b"", b"x", b"k=v\n" * 50]),
    ),
    min_size=1,
    max_size=8,
)
_MUTATIONS = st.sampled_from(
    ["none", "dir-to-link", "file-to-link", "file-to-hardlink", "file-to-fifo", "grow", "chmod"]
)


def _build(root: Path, tree_spec: list[tuple[str, str, bytes]]) -> None:
    for rel, kind, data in tree_spec:
        path = root / rel
        if any(p.is_symlink() or p.is_file() for p in [*path.parents, path]):
            continue  # already taken, or below a file or link
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            continue
        if kind == "file":
            path.write_bytes(data)
        elif kind == "dir":
            path.mkdir()
        else:
            os.symlink("../" * rel.count("/") + "a", path)


def _mutate(root: Path, secrets: Path, how: str, pick: int) -> None:
    entries = sorted(root.rglob("*"))
    dirs = [p for p in entries if p.is_dir() and not p.is_symlink()]
    files = [p for p in entries if p.is_file() and not p.is_symlink()]
    if how == "dir-to-link" and dirs:
        victim = dirs[pick % len(dirs)]
        os.rename(victim, victim.with_name(victim.name + ".old"))
        os.symlink(secrets, victim)
    elif how in ("file-to-link", "file-to-hardlink", "file-to-fifo") and files:
        victim = files[pick % len(files)]
        victim.unlink()
        if how == "file-to-link":
            os.symlink(secrets / "conf", victim)
        elif how == "file-to-hardlink":
            os.link(secrets / "conf", victim)
        else:
            os.mkfifo(victim)
    elif how == "grow" and files:
        with open(files[pick % len(files)], "ab") as f:
            f.write(SECRET)
    elif how == "chmod" and files:
        files[pick % len(files)].chmod(0o4700)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TREES, _MUTATIONS, st.integers(0, 20))
def test_random_directory_changes_never_leak_outside_content(
    tree_spec: list[tuple[str, str, bytes]], how: str, pick: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        root, secrets, dest = top / "rel", top / "secrets", top / "dest"
        root.mkdir()
        secrets.mkdir(mode=0o700)
        (secrets / "conf").write_bytes(SECRET)
        (secrets / "conf").chmod(0o600)
        _build(root, tree_spec)
        before = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink()}  # fmt: skip
        try:
            artifact = open_artifact(root)
        except BadInput:
            return  # an empty tree, a link that leaves it
        with Deadline(5), artifact:
            _mutate(root, secrets, how, pick)
            try:
                artifact.extract(dest)
            except BadInput as e:
                assert how != "none", e.message
                assert "changed" in e.message
                event(f"{how}: refused")
                return
        event(f"{how}: extracted")
        # Extracted: every file is one that was validated, with its content then.
        got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*")
               if p.is_file() and not p.is_symlink()}  # fmt: skip
        assert got == before
        assert how == "none" or not before or SECRET not in b"".join(got.values())
