"""A Debian root file system other than the host's, built with mmdebstrap and cached.

The Debian 13 (trixie) tier (tests/system/test_trixie.py) boots a real
trixie: systemd 257, Python 3.13, OTP 27 / Elixir 1.18, from Debian's own
archive. `ensure_root(TRIXIE)` returns a root directory that holds exactly
the packages of `TRIXIE`; it is built once with `mmdebstrap` (about 90 s
and 1.4 GB) and then reused from the cache until it is older than
`MAX_AGE` (security updates reach the archive; a month-old root no longer
is what `apt-get upgrade` gives a host) or until the package list, suite or
mirrors change (the cache key is a hash of them).

The cached root is never booted directly: `Machine.boot(lower=ROOT)` puts a
copy-on-write overlay over it (shared/SYSTEMD.md, recipe B), so it stays as
mmdebstrap left it. A root is built under a temporary name and renamed into
place only when complete, under a lock, so a run killed mid-build or two
runs at once never leave a half-built root that looks finished. A rebuild
removes the root it replaces: a run booted on that root at the same moment
would lose it, which is one more reason (after the shared host network of
docs/testing.md) not to run two system tiers at once on one machine.

No network means no root: `RootfsError` says what failed, and the tier's
fixtures turn that into a test failure, never a skip (CI must run it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devtools.proc import CommandError, DevtoolsError, StrPath, run

logger = logging.getLogger(__name__)

#: Where roots are kept between runs; PYRELCTL_TEST_CACHE overrides it.
CACHE_DIR = Path(os.environ.get("PYRELCTL_TEST_CACHE", "/var/cache/pyrelctl-tests"))

#: A root older than this is rebuilt: a week of Debian security updates.
MAX_AGE = 7 * 24 * 3600.0

# Written last, once the root is complete: its presence is what "built" means.
_STAMP = "built.json"


class RootfsError(DevtoolsError):
    """A root could not be built (no mmdebstrap, no network, a package missing)."""


@dataclass(frozen=True)
class RootSpec:
    """What a root holds: the suite, where it comes from, and the packages on top of apt."""

    name: str
    suite: str
    sources: tuple[str, ...]
    packages: tuple[str, ...]

    def key(self) -> str:
        """A short hash of everything that decides the root's content."""
        text = json.dumps(
            [self.suite, self.sources, sorted(self.packages)], separators=(",", ":")
        ).encode()
        return hashlib.sha256(text).hexdigest()[:12]

    def directory(self, cache: Path = CACHE_DIR) -> Path:
        """The cache directory of this spec; its `root/` is the file system."""
        return cache / f"{self.name}-{self.key()}"


_MIRROR = "http://deb.debian.org/debian"
_SECURITY = "http://deb.debian.org/debian-security"

#: Debian 13 as a host that runs pyrelctl and builds mix releases: what the
#: README asks a user to install, plus what the tier's checks run.
TRIXIE = RootSpec(
    name="trixie",
    suite="trixie",
    sources=(
        f"deb {_MIRROR} trixie main",
        f"deb {_MIRROR} trixie-updates main",
        # Security updates: Python's gh-143933 fix, for one, arrives this way.
        f"deb {_SECURITY} trixie-security main",
    ),
    packages=(
        # A booted system: systemd as PID 1 (`/sbin/init`), the system bus
        # pystemd talks to, and what the tests call (ps, ip, ssh-keygen).
        "systemd",
        "systemd-sysv",
        "dbus",
        "procps",
        "iproute2",
        "openssh-client",
        "ca-certificates",
        "curl",
        "git",
        # pyrelctl the README's ways: a venv with trixie's pip (pystemd
        # compiles against libsystemd), pipx, and the .deb's dependencies.
        "python3",
        "python3-venv",
        "python3-pip",
        "python3-dev",
        "pipx",
        "gcc",
        "pkg-config",
        "libsystemd-dev",
        "python3-pystemd",
        "python3-sdnotify",
        "python3-click",
        "python3-jinja2",
        # mix releases built on the host itself: Elixir 1.18 on OTP 27.
        "elixir",
        "erlang-dev",
        # What `make test` installs on a host beyond the minimal root, and the
        # offline tiers check for (tests/unit/test_packaging.py): `make deb`'s
        # dpkg-checkbuilddeps, and man (Priority important, not in --variant=apt).
        "dpkg-dev",
        "man-db",
    ),
)


def _age(stamp: Path) -> float:
    return time.time() - stamp.stat().st_mtime


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One build at a time per cache directory (another run may be building too)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove(path: Path, cache: Path) -> None:
    """Delete a root or a leftover build, only ever a direct child of the cache."""
    if path.parent != cache or path.is_symlink():
        raise RootfsError(f"refusing to delete {path}: not a directory of {cache}")
    # The root holds device nodes and root-owned files; we are root.
    shutil.rmtree(path, ignore_errors=True)


def _build(spec: RootSpec, target: Path) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise RootfsError("mmdebstrap not found; install it: apt-get install -y mmdebstrap")
    target.mkdir()
    argv: list[StrPath] = [
        mmdebstrap,
        "--quiet",
        # essential + apt, then only the listed packages: no "important"
        # priority set (cron, editors, man-db) that no test needs.
        "--variant=apt",
        f"--include={','.join(spec.packages)}",
        # mmdebstrap empties /etc/machine-id; each boot writes its own in the
        # overlay (Machine.boot), as systemd-firstboot would on a real host.
        spec.suite,
        target / "root",
        *spec.sources,
    ]
    started = time.monotonic()
    try:
        run(argv, timeout=1800)
    except CommandError as e:
        raise RootfsError(
            f"cannot build the {spec.name} root with mmdebstrap (is {_MIRROR} reachable?): {e}"
        ) from e
    (target / _STAMP).write_text(
        json.dumps(
            {
                "suite": spec.suite,
                "sources": spec.sources,
                "packages": spec.packages,
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=1,
        )
        + "\n"
    )


def ensure_root(spec: RootSpec, cache: Path = CACHE_DIR, max_age: float = MAX_AGE) -> Path:
    """The root file system of `spec`, built now if missing or stale (module doc)."""
    directory = spec.directory(cache)
    stamp = directory / _STAMP
    with _locked(cache):
        if stamp.is_file() and _age(stamp) < max_age:
            return directory / "root"
        building = cache / f".{directory.name}.building-{os.getpid()}"
        _remove(building, cache)
        logger.info("building the %s root in %s (mmdebstrap)", spec.name, building)
        try:
            _build(spec, building)
        except BaseException:
            _remove(building, cache)
            raise
        # Roots of this spec's older lists, stale roots and killed builds go:
        # each is 1.4 GB. The lock is held, so no other run is building here.
        for old in cache.glob(f"{spec.name}-*"):
            _remove(old, cache)
        for leftover in cache.glob(f".{spec.name}-*.building-*"):
            if leftover != building:
                _remove(leftover, cache)
        os.rename(building, directory)
        return directory / "root"
