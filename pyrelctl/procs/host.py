"""What a release's processes and timers claim on the host, and the files they have there.

Pure reads below ``--root``: the deploy calls :func:`foreign_units` before it
writes a unit of a process or timer (exit 2, nothing written), ``pyrelctl
unit`` shows :func:`unit_files`, ``pyrelctl logs`` reads :func:`log_units`.
:func:`releases_in_use` reads the running host's ``/proc`` (prune keeps
what a job still runs).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pyrelctl.errors import BadInput
from pyrelctl.hostclaims import UNIT_PATH, generated_for
from pyrelctl.layout import AppPaths
from pyrelctl.names import APP_NAME_RE
from pyrelctl.procs.units import job_name, timer_name, wants_dir
from pyrelctl.release import Release

#: Every unit an app named STEM (``APP-NAME``) would have: they must not exist
#: unless this app generated them (procs/units.py says why they could).
_STEM_UNITS = (
    "{stem}.service",
    "{stem}.socket",
    "{stem}.timer",
    "{stem}.path",
    "{stem}@.service",
    "{stem}@overlap.service",
)


def foreign_units(app: AppPaths, release: Release) -> list[Path]:
    """Paths that hold a name the release's processes and timers need, and are
    not this app's: another app's units, the host's (in any unit directory,
    where they would shadow or be shadowed), or an app of pyrelctl's named
    ``APP-NAME``."""
    layout = app.layout
    found: list[Path] = []
    for name in sorted({p.name for p in release.processes} | {t.name for t in release.timers}):
        stem = f"{app.name}-{name}"
        # An app of that name (none can be: longer than 31 or with "_").
        if APP_NAME_RE.fullmatch(stem):
            other = layout.app(stem)
            if other.releases.is_dir() or other.index_file.exists():
                found.append(other.releases.parent)
        for directory in UNIT_PATH:
            for pattern in _STEM_UNITS:
                path = layout.root / directory / pattern.format(stem=stem)
                if not os.path.lexists(path):
                    continue
                # This app's own, from an earlier release: the deploy rewrites it.
                if directory == "etc/systemd/system" and generated_for(path) == app.name:
                    continue
                found.append(path)
    return found


def check_units_free(app: AppPaths, release: Release) -> None:
    """Refuse a release whose process or timer units another app or the host holds."""
    foreign = foreign_units(app, release)
    if foreign:
        raise BadInput(
            f"{release.name} {release.version}: a process or timer of {app.name} would "
            f"replace or shadow {foreign[0]}",
            hint="rename the process or timer in release.toml, or install the app under "
            "another name (--app)",
        )


def unit_files(app: AppPaths) -> list[Path]:
    """This app's process and timer unit files on disk, with their drop-ins,
    and the links that start them with the app (for ``pyrelctl unit``)."""
    unit_dir = app.layout.unit_dir
    found: list[Path] = []
    for path in sorted(unit_dir.glob(f"{app.name}-*")):
        if path.suffix in (".service", ".timer") and generated_for(path) == app.name:
            found.append(path)
            found += sorted(unit_dir.glob(f"{path.name}.d/*.conf"))
    return found


def wanted_units(app: AppPaths) -> list[str]:
    """The units ``APP.service.wants/`` starts with the app (processes' instances,
    timers), sorted: what ``pyrelctl unit`` and ``status`` list."""
    directory = wants_dir(app.layout.unit_dir, app.name)
    try:
        return sorted(p.name for p in directory.iterdir() if p.is_symlink())
    except FileNotFoundError:
        return []


def log_units(app: AppPaths, release: Release | None, process: str | None) -> list[str]:
    """The units (and unit patterns) ``pyrelctl logs`` reads for ``release`` (the
    current one): the web process's, and each process's and timer's, by name.

    Never ``APP-*``, which would take in another app named ``APP-x``: a
    process is ``APP-NAME@*.service`` (its instances), a timer its job and
    itself. ``process`` picks one of them (``web``: the web process, with the
    next release an overlap deploy starts beside it); a name the release
    lacks is refused (exit 2).
    """
    web = [app.service_name, app.overlap_name]
    if process == "web":
        return web
    named: dict[str, list[str]] = {}
    for p in release.processes if release else ():
        named[p.name] = [f"{app.name}-{p.name}@*.service"]
    for t in release.timers if release else ():
        named[t.name] = [job_name(app.name, t.name), timer_name(app.name, t.name)]
    if process is None:
        return web + [unit for units in named.values() for unit in units]
    if process not in named:
        which = f"{app.name} {release.version}" if release else app.name
        raise BadInput(
            f"{which} has no process or timer {process!r} (it has: {', '.join(['web', *named])})",
            hint=f"see them with: pyrelctl unit {app.name}",
        )
    return named[process]


def _unit_of(cgroup: str) -> str:
    """The service a process belongs to, from ``/proc/PID/cgroup`` (the unified
    hierarchy's line ``0::/system.slice/UNIT``, or ``.../UNIT/SUB`` in a
    delegated subtree), or ""."""
    for line in cgroup.splitlines():
        if line.startswith("0::"):
            services = [p for p in line[3:].split("/") if p.endswith(".service")]
            return services[-1] if services else ""
    return ""


def releases_in_use(app: AppPaths, proc: Path = Path("/proc")) -> dict[str, str]:
    """The app's releases that its units' processes run now: version -> what runs
    it (``shop-report.service (pid 123)``).

    A job that started before later deploys keeps the release it started
    from (its working directory, layout.process_version), and so does an
    instance that was not restarted yet. Every process of the app's units
    counts, not only a unit's main one (a job's shell may have started the
    real work as a child); its unit comes from its cgroup, which only PID 1
    assigns: the web service, ``APP@overlap``, ``APP-NAME@N`` and the jobs
    ``APP-NAME``, also of a timer the current release no longer declares.
    """
    own = re.compile(rf"{re.escape(app.name)}(@overlap|-[a-z][a-z0-9_-]*(@[0-9]+)?)?\.service")
    found: dict[str, str] = {}
    try:
        pids = [int(entry.name) for entry in os.scandir(proc) if entry.name.isdigit()]
    except OSError:
        return found
    for pid in sorted(pids):
        try:
            unit = _unit_of((proc / str(pid) / "cgroup").read_text())
        except OSError:
            continue  # gone meanwhile
        if not own.fullmatch(unit):
            continue
        version, _ = app.process_version(pid, proc)
        if version is not None and version not in found:
            found[version] = f"{unit} (pid {pid})"
    return found
