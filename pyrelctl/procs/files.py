"""The files that run a release's processes and timers on the host, kept in step with it.

A deploy makes the app's process and timer units those of the release that
will run, and ``APP.service.wants/`` hold one link per instance (the
release's count, or the host's ``pyrelctl scale``) and one per timer. A
:class:`Plan` says what that takes, computed before anything is written;
the caller stops what goes away (only it holds the systemd client), then
:func:`apply` writes. Offline (``--root``) the same files are written,
as ``systemctl --root`` would leave them.

What counts as this app's: a unit file whose first line says it was
generated for the app (hostclaims.generated_for), and a link in the app's
own ``.wants`` directory named ``APP-...`` that points into
``/etc/systemd/system/APP-...``. Anything else there (``systemctl
add-wants APP.service other.service`` by the operator) is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyrelctl.hostclaims import generated_for
from pyrelctl.hostfiles import symlink_atomic
from pyrelctl.layout import AppPaths
from pyrelctl.procs.units import UNIT_DIR, instance_counts, units, wants_dir, wants_links
from pyrelctl.unitfiles import forget_unit, write_unit
from pyrelctl.units import ServiceSpec, UnitText

#: The app's settings key (settings.json) of ``pyrelctl scale``: process -> count.
SCALE_SETTING = "scale"


def scaled(settings: Mapping[str, object]) -> dict[str, object]:
    """The counts ``pyrelctl scale`` remembered in the app's ``settings``
    (process -> count; values are checked where they are used,
    procs.units.instance_counts), or none."""
    value = settings.get(SCALE_SETTING)
    return dict(value) if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Plan:
    """What makes the host run ``spec``'s processes and timers."""

    units: Mapping[str, UnitText]
    #: Link name in APP.service.wants/ -> its target.
    links: Mapping[str, str]
    #: This app's unit files that the release no longer has.
    stale_files: tuple[Path, ...]
    #: This app's links that the release (or the count) no longer has.
    stale_links: tuple[Path, ...]

    @property
    def gone(self) -> tuple[str, ...]:
        """Units started with the app until now that must stop: instances of a
        process removed or scaled down, timers removed."""
        return tuple(link.name for link in self.stale_links)


def own_units(app: AppPaths) -> list[Path]:
    """This app's process and timer unit files on disk (not their drop-ins)."""
    return sorted(
        path
        for path in app.layout.unit_dir.glob(f"{app.name}-*")
        if path.suffix in (".service", ".timer") and generated_for(path) == app.name
    )


def own_links(app: AppPaths) -> list[Path]:
    """This app's links in ``APP.service.wants/`` (see the module's docstring)."""
    directory = wants_dir(app.layout.unit_dir, app.name)
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    prefix = f"{UNIT_DIR}/{app.name}-"
    return sorted(
        p
        for p in entries
        if p.name.startswith(f"{app.name}-")
        and p.is_symlink()
        and os.readlink(p).startswith(prefix)
    )


def plan(app: AppPaths, spec: ServiceSpec, counts: Mapping[str, object]) -> Plan:
    """What the host needs for ``spec``'s release, with the instance ``counts``
    the host asked for (:func:`scaled`)."""
    wanted = units(spec)
    links = wants_links(app.name, spec.release, instance_counts(spec.release, counts))
    return Plan(
        units=wanted,
        links=links,
        stale_files=tuple(p for p in own_units(app) if p.name not in wanted),
        stale_links=tuple(p for p in own_links(app) if p.name not in links),
    )


def apply(app: AppPaths, planned: Plan) -> bool:
    """Write the plan's units and links, remove the stale ones; True if anything changed."""
    unit_dir = app.layout.unit_dir
    changed = False
    for name, unit in sorted(planned.units.items()):
        changed |= write_unit(app, unit_dir / name, unit)
    directory = wants_dir(unit_dir, app.name)
    if planned.links:
        directory.mkdir(parents=True, exist_ok=True)
    for name, target in sorted(planned.links.items()):
        link = directory / name
        if link.is_symlink() and os.readlink(link) == target:
            continue
        symlink_atomic(target, link)
        changed = True
    for link in planned.stale_links:
        link.unlink(missing_ok=True)
        changed = True
    if planned.stale_links and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()  # the release has no process or timer left
    for path in planned.stale_files:
        path.unlink(missing_ok=True)
        forget_unit(app, path)
        changed = True
    return changed


def remove(app: AppPaths) -> list[Path]:
    """Remove every unit file and link of the app's processes and timers, and the
    timers' ``Persistent=`` stamps (uninstall); return the files removed."""
    removed: list[Path] = []
    for link in own_links(app):
        link.unlink(missing_ok=True)
    directory = wants_dir(app.layout.unit_dir, app.name)
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
    for path in own_units(app):
        path.unlink(missing_ok=True)
        forget_unit(app, path)
        removed.append(path)
        if path.suffix == ".timer":
            stamp = app.layout.root / "var/lib/systemd/timers" / f"stamp-{path.name}"
            stamp.unlink(missing_ok=True)
    return removed
