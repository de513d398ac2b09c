"""Release checksums: a ``SHA256SUMS`` file at the release root.

The format is sha256sum(1)'s (``<hex>  <path>`` per line, sorted by path),
so ``sha256sum -c SHA256SUMS`` checks an unpacked release by hand. It lists
every regular file of the release but itself; symlinks and directories carry
no content of their own. It guards against corruption and partial copies,
not against an attacker who can rewrite the artifact (that is a signature's
job: DESIGN.md, install step 1).

Verification works on any release kind: :func:`verify_artifact` runs on
the validated :class:`~pyrelctl.archive.Artifact` before anything is
written, and :func:`verify_tree` on the unpacked directory, so that what is
installed is exactly what was checked even if the artifact changed between
the two reads. ``pyrelctl build`` writes the file for python releases, and
install requires it there; other kinds are checked when they ship one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pyrelctl.archive import Artifact, MemberType, normalise_member_name
from pyrelctl.errors import BadInput

SUMS_FILE = "SHA256SUMS"
_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def render(sums: Mapping[str, str]) -> bytes:
    """The text of a SHA256SUMS file for ``path -> hex digest``."""
    return "".join(f"{sums[path]}  {path}\n" for path in sorted(sums)).encode()


def parse(text: bytes) -> dict[str, str]:
    """``path -> hex digest`` from a SHA256SUMS file; refuses anything malformed."""
    sums: dict[str, str] = {}
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise BadInput(f"{SUMS_FILE} is not UTF-8 text") from e
    for number, line in enumerate(lines, 1):
        digest, sep, name = line.partition("  ")
        if not sep:
            # sha256sum's binary mode marker: "<hex> *<path>".
            digest, sep, name = line.partition(" *")
        digest = digest.lower()
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise BadInput(f"{SUMS_FILE} line {number} is not '<sha256>  <path>': {line[:80]!r}")
        path = normalise_member_name(name)
        if path is None or path in sums:
            raise BadInput(f"{SUMS_FILE} line {number}: bad or repeated path {name!r}")
        sums[path] = digest
    return sums


def _compare(expected: Mapping[str, str], actual: Iterable[tuple[str, str]], where: str) -> None:
    seen: set[str] = set()
    for path, digest in actual:
        seen.add(path)
        want = expected.get(path)
        if want is None:
            raise BadInput(
                f"{where}: {path} is not listed in {SUMS_FILE}",
                hint="the release was changed after it was built; rebuild it",
            )
        if want != digest:
            raise BadInput(
                f"{where}: checksum mismatch for {path} (sha256 {digest[:16]}..., "
                f"{SUMS_FILE} says {want[:16]}...)",
                hint="the artifact is corrupt or was tampered with; fetch or build it again",
            )
    missing = sorted(set(expected) - seen)
    if missing:
        raise BadInput(f"{where}: {missing[0]} is listed in {SUMS_FILE} but missing")


def verify_artifact(artifact: Artifact, *, required: bool) -> dict[str, str] | None:
    """Check every regular file of ``artifact`` against its SHA256SUMS.

    Returns the sums (None when the artifact has none and ``required`` is
    false). Raises :class:`BadInput` for a missing, malformed or unmet file.
    Reads every file once; nothing is written.
    """
    if not artifact.has(SUMS_FILE):
        if required:
            raise BadInput(
                f"{artifact.source}: no {SUMS_FILE} in the release",
                hint="build python releases with `pyrelctl build`",
            )
        return None
    expected = parse(artifact.read(SUMS_FILE))

    def digests() -> Iterable[tuple[str, str]]:
        seen: dict[str, str] = {}
        for member, stream in artifact.iter_files():
            if member.type is MemberType.HARDLINK:
                # Unpacked, a hard link is a file with its target's content.
                yield member.path, seen[member.target]
                continue
            assert stream is not None
            digest = hashlib.sha256()
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
            seen[member.path] = digest.hexdigest()
            if member.path != SUMS_FILE:
                yield member.path, seen[member.path]

    _compare(expected, digests(), str(artifact.source))
    return expected


def verify_tree(root: Path, expected: Mapping[str, str]) -> None:
    """Check the regular files below ``root`` (an unpacked release) against ``expected``."""

    def digests() -> Iterable[tuple[str, str]]:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                rel = path.relative_to(root).as_posix()
                if rel == SUMS_FILE or path.is_symlink():
                    continue
                yield rel, sha256_file(path)

    _compare(expected, digests(), str(root))
