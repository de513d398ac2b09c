"""Doctor's checks of the host: its distribution, systemd, its version, shared directories, disk."""

from __future__ import annotations

import shlex
import stat
from collections.abc import Iterator, Sequence

from pyrelctl.doctor.checks import Checks, file_mode
from pyrelctl.doctor.findings import Finding, Severity
from pyrelctl.errors import PyrelctlError
from pyrelctl.layout import AppPaths

#: What pyrelctl relies on, by the systemd version that brought it (systemd's NEWS).
SYSTEMD_FEATURES: tuple[tuple[int, str], ...] = (
    (235, "DynamicUser=, StateDirectory=, RuntimeDirectory=, LogsDirectory="),
    (236, "systemd-run --wait --pipe --collect (rpc, eval, remote, hooks)"),
    (240, "Type=exec"),
    (247, "LoadCredential= (secrets)"),
)
MIN_SYSTEMD = max(version for version, _ in SYSTEMD_FEATURES)
#: Programs pyrelctl runs on the host.
PROGRAMS = ("systemd-run", "journalctl")
#: Free space wanted even for the first, or a tiny, release.
MIN_FREE = 100 * 1024**2
#: The next release is assumed as big as the biggest installed one, twice over:
#: it is unpacked beside the others, and a python release builds a venv from
#: its wheelhouse.
NEXT_RELEASE_FACTOR = 2
#: Hosts the test suite boots and runs everything on (docs/testing.md): os-release
#: (ID, VERSION_ID). Anything else may well work; doctor says it was not tested.
TESTED_HOSTS: tuple[tuple[str, str], ...] = (("debian", "12"), ("debian", "13"))
_TESTED_TEXT = "tested: Debian 12, Debian 13"


def parse_systemd_version(text: str) -> int | None:
    """The major version of a systemd version string ("252.39-1~deb12u2" -> 252)."""
    digits = ""
    for char in text.strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else None


def parse_os_release(text: str) -> dict[str, str]:
    """The KEY=value pairs of an os-release(5) file, values unquoted as a shell would."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#") or not key.isidentifier():
            continue
        try:
            # os-release(5): "Variable assignment values must be enclosed in double or
            # single quotes if they include spaces, semicolons or other special
            # characters", with shell-style escapes.
            words = shlex.split(value)
        except ValueError:
            words = [value]
        fields[key] = " ".join(words)
    return fields


class HostChecks(Checks):
    """The host: privileges, systemd over D-Bus and its version, directories, disk."""

    def _host(self, apps: Sequence[AppPaths]) -> Iterator[Finding]:
        if self._euid() != 0:
            yield Finding(
                "privileges",
                "host",
                Severity.WARNING,
                "not running as root: root-only files cannot all be checked",
                fix="sudo " + self._cli("doctor"),
            )
        if self.layout.offline:
            yield Finding(
                "systemd",
                "host",
                Severity.SKIPPED,
                f"--root {self.layout.root}: the running systemd is not checked",
            )
        else:
            yield from self._systemd_checks()
        yield self._distribution()
        yield from self._directories()
        yield self._disk(apps)

    def _distribution(self) -> Finding:
        """Whether this host is one the suite runs on: information, never a problem."""
        root = self.layout.root
        # os-release(5): /etc/os-release, or /usr/lib/os-release if that is absent.
        for path in (root / "etc/os-release", root / "usr/lib/os-release"):
            try:
                fields = parse_os_release(path.read_text(errors="replace"))
                break
            except OSError:
                continue
        else:
            return Finding(
                "distribution",
                "host",
                Severity.INFO,
                f"no {root / 'etc/os-release'}: cannot tell which host this is ({_TESTED_TEXT})",
            )
        key = (fields.get("ID", "linux"), fields.get("VERSION_ID", ""))
        name = fields.get("PRETTY_NAME") or " ".join(
            part for part in (fields.get("NAME", "Linux"), fields.get("VERSION_ID")) if part
        )
        if key in TESTED_HOSTS:
            return Finding("distribution", "host", Severity.OK, f"{name}, a tested host")
        return Finding(
            "distribution",
            "host",
            Severity.INFO,
            f"{name} is not a host pyrelctl was tested on ({_TESTED_TEXT}): "
            "it may well work; `pyrelctl doctor` checks what pyrelctl needs",
        )

    def _systemd_checks(self) -> Iterator[Finding]:
        if not (self.layout.root / "run/systemd/system").is_dir():
            yield Finding(
                "systemd",
                "host",
                Severity.PROBLEM,
                "systemd is not running as init here (no /run/systemd/system): "
                "pyrelctl cannot start services",
                fix=shlex.join(["pyrelctl", "--root", "DIR", "install", "ARTIFACT"])
                + "   # to prepare a tree offline instead",
            )
            return
        try:
            self._systemd = self._connect()
            version_text = self._systemd.version()
        except PyrelctlError as e:
            yield Finding(
                "dbus",
                "host",
                Severity.PROBLEM,
                f"cannot talk to systemd over D-Bus: {e.message}",
                fix="systemctl start dbus.socket dbus.service   # package: dbus",
            )
            return
        yield Finding("dbus", "host", Severity.OK, "systemd answers on the system bus")
        major = parse_systemd_version(version_text)
        missing = [f"{what} ({v})" for v, what in SYSTEMD_FEATURES if major is None or major < v]
        if missing:
            yield Finding(
                "systemd-version",
                "host",
                Severity.PROBLEM,
                f"systemd {version_text} lacks what pyrelctl relies on: {'; '.join(missing)}",
                fix=f"upgrade systemd to {MIN_SYSTEMD} or later (Debian 12 ships 252)",
            )
        else:
            yield Finding(
                "systemd-version",
                "host",
                Severity.OK,
                f"systemd {version_text} (pyrelctl needs {MIN_SYSTEMD} or later)",
            )
        absent = [program for program in PROGRAMS if self._which(program) is None]
        if absent:
            yield Finding(
                "programs",
                "host",
                Severity.PROBLEM,
                f"not found on PATH: {', '.join(absent)} (rpc, eval, remote, hooks and logs use "
                "them)",
                fix="apt-get install systemd",
            )

    def _directories(self) -> Iterator[Finding]:
        root = self.layout.root
        shared = [root / "opt", root / "etc/systemd/system", root / "var/lib/pyrelctl"]
        for path in shared:
            yield from self._root_owned_dir(path, "host", "directories")
        etc = root / "etc/pyrelctl"
        try:
            st = etc.stat()
        except FileNotFoundError:
            return
        if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o077:
            yield Finding(
                "etc-permissions",
                "host",
                Severity.PROBLEM,
                f"{etc} is mode {file_mode(st)}, owner uid {st.st_uid}: it holds every app's "
                "settings and secrets and must be 0700, owned by root",
                fix=f"chown root:root {self._path(etc)} && chmod 0700 {self._path(etc)}",
            )
        else:
            yield Finding("etc-permissions", "host", Severity.OK, f"{etc} is root-only (0700)")

    def _disk(self, apps: Sequence[AppPaths]) -> Finding:
        where = self.layout.root / "opt"
        while not where.exists():
            where = where.parent
        biggest, owner = 0, None
        for app in apps:
            for version, facts in app.read_index().items():
                size = facts.get("size") if not version.startswith("_") else None
                if isinstance(size, int) and size > biggest:
                    biggest, owner = size, app
        need = max(biggest * NEXT_RELEASE_FACTOR, MIN_FREE)
        free = self._disk_free(where)
        text = f"{_size(free)} free for {where}"
        if free >= need:
            return Finding(
                "disk", "host", Severity.OK, f"{text}; the next release needs ~{_size(need)}"
            )
        fix = (
            self._cli("prune", owner.name, "--keep", "2")
            if owner is not None and len(owner.versions()) > 2
            else f"free space on the file system of {where}"
        )
        return Finding(
            "disk",
            "host",
            Severity.PROBLEM,
            f"{text}, but the next release needs about {_size(need)} "
            f"(twice the biggest installed release)",
            fix=fix,
        )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError
