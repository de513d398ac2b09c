"""Doctor's checks of one app: current, files, units, socket, secrets, state."""

from __future__ import annotations

import difflib
import hashlib
import os
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pyrelctl import allowances, checksums, mixcookie
from pyrelctl.deploy.settings import release_of
from pyrelctl.doctor.checks import Checks, file_mode
from pyrelctl.doctor.findings import MAX_LISTED, Finding, Severity
from pyrelctl.errors import PyrelctlError
from pyrelctl.layout import AppPaths, Mark
from pyrelctl.procs import files as procs_files
from pyrelctl.procs import units as procs_units
from pyrelctl.release import Kind
from pyrelctl.sockets import in_runtime_directory, out_of_runtime_directory
from pyrelctl.socketunit import SETTING as SOCKET_SETTING
from pyrelctl.socketunit import effective_socket
from pyrelctl.units import render_socket

if TYPE_CHECKING:
    from pyrelctl.appconfig.generations import Generations


class AppChecks(Checks):
    """One app: ``current``, release files, unit and socket files, drop-ins, secrets, state."""

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
        if app.next_link.is_symlink():
            yield Finding(
                "leftovers",
                app.name,
                Severity.WARNING,
                f"{app.next_link} is there: an overlap deploy is running or was interrupted "
                f"(the next install, rollback or prune stops {app.overlap_name} and removes "
                f"it, leaving {app.service_name} serving)",
                fix=self._cli("prune", app.name),
            )
        for path in (app.base, app.releases):
            yield from self._root_owned_dir(path, app.name, "release-permissions")
        if current is not None:
            yield from self._release_files(app, current)
            yield from self._unit_file(app, current)
            yield from self._procs(app, current)
            yield from self._socket(app, current)
            yield from self._sandbox(app, current)
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
                    f"{cookie} (the build's Erlang cookie) is mode {file_mode(st)}; "
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

    def _unit_file(self, app: AppPaths, version: str) -> Iterator[Finding]:
        fix = self._reinstall(app, version)
        try:
            release = release_of(app, version)
            wanted = self._setup.render(app, release)
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

    def _procs(self, app: AppPaths, version: str) -> Iterator[Finding]:
        """The units and links of the release's processes and timers (procs/files.py):
        none that the release does not declare, no link without its unit, and
        (on a running host) no job whose last run failed."""
        release = self._release(app, version)
        if release is None:
            return
        fix = self._reinstall(app, version)
        declared = set(procs_units.unit_names(app.name, release))
        stale = [p for p in procs_files.own_units(app) if p.name not in declared]
        if stale:
            yield Finding(
                "process-units",
                app.name,
                Severity.WARNING,
                f"{len(stale)} unit files of {app.name} are not units of its release "
                f"{version}: left by an earlier release (the next install removes them)",
                fix=fix,
                details=tuple(str(p) for p in stale[:MAX_LISTED]),
            )
        root = app.layout.root
        dangling = [
            link
            for link in procs_files.own_links(app)
            if not (root / os.readlink(link).lstrip("/")).is_file()
        ]
        if dangling:
            yield Finding(
                "process-units",
                app.name,
                Severity.PROBLEM,
                f"{len(dangling)} links in {dangling[0].parent} point to a unit file that is "
                f"not there: systemd cannot start them with {app.service_name}",
                fix=fix,
                details=tuple(str(p) for p in dangling[:MAX_LISTED]),
            )
        if not (stale or dangling) and (release.processes or release.timers):
            yield Finding(
                "process-units",
                app.name,
                Severity.OK,
                f"the units of {app.name}'s processes and timers are those of {version}",
            )
        if self._systemd is None:
            return
        for timer in release.timers:
            job = procs_units.job_name(app.name, timer.name)
            try:
                state = self._systemd.state(job)
            except PyrelctlError:
                continue  # the unit's own state is reported above
            if state.active_state == "failed":
                yield Finding(
                    "jobs",
                    app.name,
                    Severity.WARNING,
                    f"the last run of {job} failed ({state.result}; main process "
                    f"{state.exit_description()})",
                    fix=f"journalctl -u {job} -n 50 && systemctl reset-failed {job}",
                )

    def _socket(self, app: AppPaths, version: str) -> Iterator[Finding]:
        """The socket unit is what the app's settings ask for, and it listens."""
        release = self._release(app, version)
        if release is None:
            return  # _unit_file said why
        wanted = effective_socket(app.read_settings(), release)
        path = app.socket_file
        fix = self._reinstall(app, version)
        if wanted is not None and any(in_runtime_directory(a, app.name) for a in wanted.listen):
            moved = [out_of_runtime_directory(a, app.name) for a in wanted.listen]
            yield Finding(
                "socket",
                app.name,
                Severity.PROBLEM,
                f"{app.socket_name} listens inside /run/{app.name}, which systemd empties "
                "whenever the service stops: after a restart, clients cannot connect",
                fix=" ".join([fix, *(f"--listen {shlex.quote(a)}" for a in moved)]),
            )
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

    def _sandbox(self, app: AppPaths, version: str) -> Iterator[Finding]:
        """What the current release widens of the default sandbox, and whether the
        host still allows it (an app installed before allowances existed, or
        whose allowances were withdrawn, would not install again)."""
        release = self._release(app, version)
        if release is None:
            return
        settings = app.read_settings()
        host_socket = bool(settings.get(SOCKET_SETTING))
        asked = allowances.requested(release, host_socket=host_socket)
        if not asked:
            yield Finding(
                "sandbox", app.name, Severity.OK, f"{version} runs in the default sandbox"
            )
            return
        try:
            allowances.check(app.name, release, settings, host_socket=host_socket)
        except PyrelctlError as e:
            yield Finding("sandbox", app.name, Severity.PROBLEM, e.message, fix=e.hint)
            return
        yield Finding(
            "sandbox",
            app.name,
            Severity.INFO,
            f"{version} widens its sandbox, as the host allows: "
            + ", ".join(w.describe() for w in asked),
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
            cookie = etc / mixcookie.COOKIE_FILE
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
            bad.append(f"{etc} (mode {file_mode(st)}, uid {st.st_uid})")
        for dirpath, dirnames, filenames in os.walk(etc):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath, name)
                sub = path.lstat()
                if stat.S_ISLNK(sub.st_mode) and sub.st_uid == 0:
                    continue  # a link's own mode means nothing (symlink(7)); config/current.env
                if sub.st_uid != 0 or stat.S_IMODE(sub.st_mode) & 0o077:
                    bad.append(f"{path} (mode {file_mode(sub)}, uid {sub.st_uid})")
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
        yield from self._config(app)

    def _config(self, app: AppPaths) -> Iterator[Finding]:
        """The configuration generation the unit reads (``pyrelctl config``) is there."""
        from pyrelctl.appconfig.generations import CURRENT, Generations

        gens = Generations(app)
        if not gens.dir.is_dir():
            return
        try:
            current = gens.current()
        except PyrelctlError as e:
            yield Finding("config", app.name, Severity.PROBLEM, e.message, fix=e.hint)
            return
        if current is None:
            yield from self._no_config(app, gens)
            return
        try:
            unit = app.service_file.read_text()
        except FileNotFoundError:
            unit = ""
        if (
            current is not None
            and unit
            and f"/etc/pyrelctl/{app.name}/config/{CURRENT}" not in unit
        ):
            yield Finding(
                "config",
                app.name,
                Severity.PROBLEM,
                f"{app.service_file} does not read {gens.dir / CURRENT}: generation {current} "
                "is not applied",
                fix=self._reinstall(app, app.current_version() or "VERSION"),
            )
            return
        if current is not None:
            mark = gens.info(current).mark
            yield Finding(
                "config",
                app.name,
                Severity.WARNING if mark.value == "failed" else Severity.OK,
                f"configuration generation {current} ({mark})",
            )

    def _no_config(self, app: AppPaths, gens: Generations) -> Iterator[Finding]:
        """No generation is current: fine when none was ever applied, or when every
        one was refused (a first `config set` whose value kept the service from
        starting is undone to no configuration at all, appconfig/apply.py);
        never propose going back to a refused generation."""
        from pyrelctl.appconfig.generations import CURRENT, GenMark

        numbers = gens.numbers()
        if not numbers:
            return
        refused = [n for n in numbers if gens.info(n).mark is GenMark.FAILED]
        usable = [n for n in numbers if n not in refused]
        if not usable:
            listed = ", ".join(str(n) for n in refused)
            which = f"generations {listed} were" if len(refused) > 1 else f"generation {listed} was"
            yield Finding(
                "config",
                app.name,
                Severity.OK,
                f"no configuration is applied ({which} refused and undone)",
            )
            return
        yield Finding(
            "config",
            app.name,
            Severity.PROBLEM,
            f"{gens.dir / CURRENT} is missing: the service runs without its configuration",
            fix=self._cli("config", "rollback", app.name, "--to", str(usable[-1])),
        )

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
