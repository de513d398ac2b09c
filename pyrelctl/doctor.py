"""``pyrelctl doctor``: what is wrong with this host or app, and the command that fixes it.

Each check yields :class:`Finding` values: ``ok``, ``info`` (worth knowing,
such as drop-ins), ``warning`` (not broken yet), ``problem`` (pyrelctl or
the service will fail, or a secret is exposed) or ``skipped`` (could not be
checked here). A problem carries a ``fix``: one shell command line, with
``--root`` where the check ran under one, that an operator can paste.

Checks that need the running systemd (its version, D-Bus, the unit's state)
run only on the host itself; under ``--root`` the file checks run alone.
Nothing here changes the host.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import shlex
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pyrelctl import checksums
from pyrelctl.deploy import Deployer
from pyrelctl.errors import PyrelctlError
from pyrelctl.layout import AppPaths, Layout, Mark
from pyrelctl.release import Kind, Release
from pyrelctl.socketunit import effective_socket
from pyrelctl.systemd import OfflineSystemd, Systemd
from pyrelctl.units import render_socket

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
#: Offending paths named per finding; the rest are counted.
MAX_LISTED = 5


class Severity(StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    PROBLEM = "problem"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Finding:
    """The result of one check on the host or on one app."""

    check: str  # a stable identifier, e.g. "etc-permissions"
    subject: str  # "host" or the app's name
    severity: Severity
    message: str
    fix: str | None = None  # a shell command line
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["details"] = list(self.details)
        return data


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.PROBLEM]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "problems": len(self.problems),
            "warnings": len(self.warnings),
            "findings": [f.to_json() for f in self.findings],
        }


def parse_systemd_version(text: str) -> int | None:
    """The major version of a systemd version string ("252.39-1~deb12u2" -> 252)."""
    digits = ""
    for char in text.strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else None


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


class Doctor:
    """Runs the checks. ``connect`` returns the systemd client (online only)."""

    def __init__(
        self,
        layout: Layout,
        connect: Callable[[], Systemd],
        *,
        disk_free: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
        euid: Callable[[], int] = os.geteuid,
        which: Callable[[str], str | None] = shutil.which,
    ) -> None:
        self.layout = layout
        self._connect = connect
        self._disk_free = disk_free
        self._euid = euid
        self._which = which
        self._systemd: Systemd | None = None
        # Rendering never calls systemd: an offline client makes sure of it.
        self._deployer = Deployer(layout, OfflineSystemd())

    # -- helpers -------------------------------------------------------------

    def _cli(self, *args: str) -> str:
        """A pyrelctl command line, with --root when the checks run under one."""
        root = ["--root", str(self.layout.root)] if self.layout.offline else []
        return shlex.join(["pyrelctl", *root, *args])

    def _path(self, path: Path) -> str:
        return shlex.quote(str(path))

    def _reinstall(self, app: AppPaths, version: str) -> str:
        """Installing the current version again re-renders the unit and settings."""
        return self._cli("install", str(app.release(version)), "--app", app.name)

    # -- entry point ---------------------------------------------------------

    def run(self, apps: Sequence[str] | None = None) -> Report:
        """Check the host, then ``apps`` (default: every installed app)."""
        names = list(apps) if apps is not None else self.layout.apps()
        paths = [self.layout.app(name).require() for name in names]
        findings: list[Finding] = []
        findings.extend(self._host(paths))
        for app in paths:
            findings.extend(self._app(app))
        return Report(tuple(findings))

    # -- the host ------------------------------------------------------------

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
        yield from self._directories()
        yield self._disk(apps)

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
                f"{etc} is mode {_mode(st)}, owner uid {st.st_uid}: it holds every app's "
                "settings and secrets and must be 0700, owned by root",
                fix=f"chown root:root {self._path(etc)} && chmod 0700 {self._path(etc)}",
            )
        else:
            yield Finding("etc-permissions", "host", Severity.OK, f"{etc} is root-only (0700)")

    def _root_owned_dir(self, path: Path, subject: str, check: str) -> Iterator[Finding]:
        """A directory only root may change: owned by root, not group/other-writable."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            yield Finding(
                check,
                subject,
                Severity.PROBLEM,
                f"{path} is mode {_mode(st)}, owner uid {st.st_uid}: users other than root "
                "could change what runs as a service",
                fix=f"chown root:root {self._path(path)} && chmod go-w {self._path(path)}",
            )

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

    # -- one app -------------------------------------------------------------

    def _app(self, app: AppPaths) -> Iterator[Finding]:
        current: str | None = None
        good = [v for v in app.versions() if app.mark(v) is not Mark.FAILED]
        fix = self._reinstall(app, good[-1]) if good else self._cli("install", "ARTIFACT")
        try:
            current = app.current_version()
        except PyrelctlError as e:
            yield Finding("current", app.name, Severity.PROBLEM, e.message, fix=e.hint or fix)
        else:
            if current is None or not app.release(current).is_dir():
                what = (
                    "there is no current release"
                    if current is None
                    else f"it points to {current}, which is not installed"
                )
                yield Finding(
                    "current",
                    app.name,
                    Severity.PROBLEM,
                    f"{app.current}: {what}; the service cannot start",
                    fix=fix,
                )
                current = None
        if current is not None:
            yield Finding(
                "current", app.name, Severity.OK, f"current release {current} ({app.mark(current)})"
            )
        for leftover in app.incomplete_dirs():
            yield Finding(
                "leftovers",
                app.name,
                Severity.WARNING,
                f"{leftover} was left by an interrupted operation (the next install, "
                "rollback or prune removes it)",
                fix=f"rm -rf -- {self._path(leftover)}",
            )
        for path in (app.base, app.releases):
            yield from self._root_owned_dir(path, app.name, "release-permissions")
        if current is not None:
            yield from self._release_files(app, current)
            yield from self._unit_file(app, current)
            yield from self._socket(app, current)
        yield from self._dropins(app)
        yield from self._settings(app, current)
        if self._systemd is not None:
            yield from self._unit_state(app)

    def _release_files(self, app: AppPaths, version: str) -> Iterator[Finding]:
        directory = app.release(version)
        bad: list[str] = []
        for dirpath, dirnames, filenames in os.walk(directory):
            for name in [*dirnames, *filenames]:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    continue
                if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    bad.append(path)
        if bad:
            quoted = self._path(directory)
            yield Finding(
                "release-permissions",
                app.name,
                Severity.PROBLEM,
                f"{len(bad)} files of release {version} are not owned by root or are "
                "writable by others: a release must be immutable to the service",
                fix=f"chown -R root:root {quoted} && chmod -R go-w {quoted}",
                details=tuple(bad[:MAX_LISTED]),
            )
        release = self._release(app, version)
        cookie = directory / "releases/COOKIE"
        if release is not None and release.kind is Kind.MIX and cookie.is_file():
            st = cookie.stat()
            if stat.S_IMODE(st.st_mode) & 0o077:
                yield Finding(
                    "cookie",
                    app.name,
                    Severity.PROBLEM,
                    f"{cookie} (the build's Erlang cookie) is mode {_mode(st)}; "
                    "other users can read it",
                    fix=f"chmod 0600 {self._path(cookie)}",
                )
        yield from self._checksums(app, version, directory)

    def _checksums(self, app: AppPaths, version: str, directory: Path) -> Iterator[Finding]:
        """Files the release listed in SHA256SUMS must still have their content.

        Only the listed files: installing a python release adds its venv and
        bytecode, which the build could not list.
        """
        sums_file = directory / checksums.SUMS_FILE
        if not sums_file.is_file():
            return
        try:
            expected = checksums.parse(sums_file.read_bytes())
        except PyrelctlError as e:
            yield Finding("checksums", app.name, Severity.PROBLEM, e.message)
            return
        changed = []
        for rel, digest in sorted(expected.items()):
            path = directory / rel
            try:
                actual = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                actual = None
            if actual != digest:
                changed.append(f"{rel}: {'missing' if actual is None else 'changed'}")
        if changed:
            artifact = app.read_index().get(version, {}).get("artifact") or "ARTIFACT"
            yield Finding(
                "checksums",
                app.name,
                Severity.PROBLEM,
                f"{len(changed)} files of release {version} differ from its {checksums.SUMS_FILE}",
                fix=f"{self._cli('rollback', app.name)} && {self._cli('install', artifact)}",
                details=tuple(changed[:MAX_LISTED]),
            )
        else:
            yield Finding(
                "checksums",
                app.name,
                Severity.OK,
                f"release {version} matches its {checksums.SUMS_FILE} ({len(expected)} files)",
            )

    def _release(self, app: AppPaths, version: str) -> Release | None:
        try:
            return self._deployer.release_of(app, version)
        except PyrelctlError:
            return None

    def _unit_file(self, app: AppPaths, version: str) -> Iterator[Finding]:
        fix = self._reinstall(app, version)
        try:
            release = self._deployer.release_of(app, version)
            wanted = self._deployer.render(app, release)
        except PyrelctlError as e:
            yield Finding(
                "unit-file",
                app.name,
                Severity.PROBLEM,
                f"cannot render {app.service_name} for {version}: {e.message}",
            )
            return
        try:
            actual = app.service_file.read_text()
        except FileNotFoundError:
            yield Finding(
                "unit-file",
                app.name,
                Severity.PROBLEM,
                f"{app.service_file} is missing: systemd does not know the service",
                fix=fix,
            )
            return
        if actual == wanted:
            yield Finding(
                "unit-file",
                app.name,
                Severity.OK,
                f"{app.service_file} is what pyrelctl renders for {version}",
            )
            return
        diff = tuple(
            line.rstrip("\n")
            for line in difflib.unified_diff(
                wanted.splitlines(True),
                actual.splitlines(True),
                "rendered",
                str(app.service_file),
                n=0,
            )
        )
        only_comments = _settings_lines(actual) == _settings_lines(wanted)
        yield Finding(
            "unit-file",
            app.name,
            Severity.WARNING if only_comments else Severity.PROBLEM,
            (
                f"{app.service_file} differs from what this pyrelctl renders for {version} "
                "in comments only"
                if only_comments
                else f"{app.service_file} differs from what pyrelctl renders for {version}: "
                "edited by hand (the next install overwrites it) or left by another version"
            ),
            fix=f"systemctl edit {app.name}   # keep your changes in a drop-in; then: {fix}",
            details=diff[:40],
        )

    def _socket(self, app: AppPaths, version: str) -> Iterator[Finding]:
        """The socket unit is what the app's settings ask for, and it listens."""
        release = self._release(app, version)
        if release is None:
            return  # _unit_file said why
        wanted = effective_socket(app.read_settings(), release)
        path = app.socket_file
        fix = self._reinstall(app, version)
        text = path.read_text() if path.is_file() else None
        if wanted is None:
            if text is not None:
                yield Finding(
                    "socket",
                    app.name,
                    Severity.PROBLEM,
                    f"{path} exists, but {app.name} {version} uses no socket activation",
                    fix=fix,
                )
            return
        if text != render_socket(app.name, wanted):
            state = "is missing" if text is None else "differs from what pyrelctl renders"
            yield Finding("socket", app.name, Severity.PROBLEM, f"{path} {state}", fix=fix)
            return
        if self._systemd is None:
            return
        unit = self._systemd.state(app.socket_name)
        if unit.active_state != "active":
            yield Finding(
                "socket",
                app.name,
                Severity.PROBLEM if unit.active_state == "failed" else Severity.WARNING,
                f"{app.socket_name} is {unit.active_state}: nothing holds the listener, so "
                "connections are refused",
                fix=f"systemctl reset-failed {app.socket_name}; " + self._cli("start", app.name),
            )
        else:
            yield Finding(
                "socket",
                app.name,
                Severity.OK,
                f"{app.socket_name} listens on {', '.join(unit.listen)}",
            )

    def _dropins(self, app: AppPaths) -> Iterator[Finding]:
        if not app.dropin_dir.is_dir():
            return
        entries = sorted(app.dropin_dir.iterdir())
        confs = [str(p) for p in entries if p.name.endswith(".conf")]
        if confs:
            yield Finding(
                "drop-ins",
                app.name,
                Severity.INFO,
                f"{len(confs)} drop-in(s) amend {app.service_name} (pyrelctl never touches them)",
                details=tuple(confs),
            )
        ignored = [str(p) for p in entries if not p.name.endswith(".conf")]
        if ignored:
            yield Finding(
                "drop-ins",
                app.name,
                Severity.WARNING,
                f"systemd ignores {len(ignored)} file(s) in {app.dropin_dir}: "
                "drop-ins must end in .conf",
                details=tuple(ignored),
            )

    def _settings(self, app: AppPaths, current: str | None) -> Iterator[Finding]:
        """/etc/pyrelctl/APP and every file in it: root's alone (0700 / 0600)."""
        etc = app.etc
        try:
            st = etc.stat()
        except FileNotFoundError:
            st = None
        except PermissionError:
            yield Finding("secrets", app.name, Severity.SKIPPED, f"{etc}: permission denied")
            return
        release = self._release(app, current) if current else None
        if release is not None and release.kind is Kind.MIX:
            cookie = etc / "release.env"
            if not cookie.is_file():
                yield Finding(
                    "secrets",
                    app.name,
                    Severity.PROBLEM,
                    f"{cookie} (the app's Erlang cookie) is missing: the service cannot start",
                    fix=self._reinstall(app, current) if current else None,
                )
        if st is None:
            return
        bad: list[str] = []
        if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o077:
            bad.append(f"{etc} (mode {_mode(st)}, uid {st.st_uid})")
        for dirpath, dirnames, filenames in os.walk(etc):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath, name)
                sub = path.lstat()
                if sub.st_uid != 0 or stat.S_IMODE(sub.st_mode) & 0o077:
                    bad.append(f"{path} (mode {_mode(sub)}, uid {sub.st_uid})")
        if bad:
            quoted = self._path(etc)
            yield Finding(
                "secrets",
                app.name,
                Severity.PROBLEM,
                f"{len(bad)} of {app.name}'s settings and secrets are readable by users "
                "other than root",
                fix=f"chown -R root:root {quoted} && chmod -R go= {quoted}",
                details=tuple(bad[:MAX_LISTED]),
            )
        else:
            yield Finding("secrets", app.name, Severity.OK, f"{etc} is root-only")

    def _unit_state(self, app: AppPaths) -> Iterator[Finding]:
        assert self._systemd is not None
        unit = app.service_name
        try:
            state = self._systemd.state(unit)
        except PyrelctlError as e:
            yield Finding("unit-state", app.name, Severity.PROBLEM, e.message)
            return
        if state.load_state != "loaded":
            fixes = {
                "masked": f"systemctl unmask {unit}",
                "not-found": "systemctl daemon-reload",
            }
            yield Finding(
                "unit-state",
                app.name,
                Severity.PROBLEM,
                f"{unit} is {state.load_state}",
                fix=fixes.get(state.load_state, f"systemd-analyze verify {unit}"),
            )
            return
        if state.need_daemon_reload:
            yield Finding(
                "unit-state",
                app.name,
                Severity.PROBLEM,
                f"{unit} changed on disk; systemd still uses the version it loaded before",
                fix="systemctl daemon-reload",
            )
        if state.active_state == "failed":
            yield Finding(
                "unit-state",
                app.name,
                Severity.PROBLEM,
                f"{unit} failed ({state.result}; main process {state.exit_description()})",
                fix=self._cli("logs", app.name, "-n", "50")
                + " && "
                + self._cli("restart", app.name),
            )
        elif not state.running:
            yield Finding(
                "unit-state",
                app.name,
                Severity.WARNING,
                f"{unit} is {state.active_state} ({state.sub_state})",
                fix=self._cli("start", app.name),
            )
        else:
            yield Finding(
                "unit-state",
                app.name,
                Severity.OK,
                f"{unit} is active ({state.sub_state}), pid {state.main_pid}",
            )


def _settings_lines(text: str) -> list[str]:
    """A unit file's meaningful lines: no comments, no blank lines."""
    return [
        line.strip() for line in text.splitlines() if line.strip() and line.lstrip()[0] not in "#;"
    ]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


_COLOURS = {
    Severity.OK: "\033[32m",
    Severity.INFO: "\033[36m",
    Severity.WARNING: "\033[33m",
    Severity.PROBLEM: "\033[1;31m",
    Severity.SKIPPED: "\033[2m",
}


def report_lines(report: Report, *, quiet: bool = False, colour: bool = False) -> list[str]:
    """The human report: findings grouped by subject, each problem with its fix.

    ``quiet`` leaves out what is fine (ok, info, skipped); ``colour`` adds ANSI
    colours (the CLI decides: a terminal, and no NO_COLOR).
    """
    lines: list[str] = []
    subject = None
    for finding in report.findings:
        if quiet and finding.severity not in (Severity.PROBLEM, Severity.WARNING):
            continue
        if finding.subject != subject:
            subject = finding.subject
            lines.append(subject)
        label = "PROBLEM" if finding.severity is Severity.PROBLEM else finding.severity.value
        padded = f"{label:<8}"
        if colour:
            padded = f"{_COLOURS[finding.severity]}{padded}\033[0m"
        lines.append(f"  {padded} {finding.check}: {finding.message}")
        lines.extend(f"           | {detail}" for detail in finding.details)
        if finding.fix and finding.severity in (Severity.PROBLEM, Severity.WARNING):
            lines.append(f"           fix: {finding.fix}")
    problems, warnings = len(report.problems), len(report.warnings)
    if problems or warnings:
        lines.append(
            f"{problems} problem{'s' * (problems != 1)}, {warnings} warning{'s' * (warnings != 1)}"
        )
    else:
        lines.append("no problems found")
    return lines
