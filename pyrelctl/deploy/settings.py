"""What a deploy runs with: the installed release, the app's settings, its readiness.

Read once per command by the orchestrator and handed to the steps: the
description of an installed version (:func:`release_of`), the app's
remembered settings updated with what this command sets
(:func:`settings_for`, written back by :func:`remember` only once the
deploy worked), and when the release counts as up (:func:`readiness_for`).
"""

from __future__ import annotations

from typing import Any

from pyrelctl import allowances
from pyrelctl.defaults import DEFAULT_GRACE
from pyrelctl.deploy import strategy
from pyrelctl.deploy.options import InstallOptions
from pyrelctl.deploy.readiness import Readiness
from pyrelctl.errors import NotInstalled
from pyrelctl.layout import AppPaths
from pyrelctl.manifest import detect
from pyrelctl.openartifact import open_artifact
from pyrelctl.release import (
    HealthCheck,
    Release,
    health_from_json,
    health_to_json,
    release_from_json,
)
from pyrelctl.socketunit import SETTING as SOCKET_SETTING


def release_of(app: AppPaths, version: str) -> Release:
    """The detected release of an installed version (from the index, else from disk)."""
    data = app.read_index().get(version, {}).get("release")
    if data:
        try:
            return release_from_json(data)
        except (KeyError, ValueError, TypeError):
            pass  # an index from another pyrelctl version: detect again
    path = app.release(version)
    if not path.is_dir():
        raise NotInstalled(
            f"release {version} of {app.name} is not installed",
            hint=f"see the installed releases with: pyrelctl releases {app.name}",
        )
    with open_artifact(path) as artifact:
        return detect(artifact)


def settings_for(app: AppPaths, opts: InstallOptions) -> dict[str, Any]:
    """The app's remembered settings, updated with what this command sets.

    They are written (by :func:`remember`) only once the deploy worked: a
    failed deploy changes nothing, and restoring the previous release
    uses the settings it ran with.
    """
    updated = app.read_settings()
    if opts.grace is not None:
        updated["grace"] = opts.grace
    if opts.health is not None:
        updated["health"] = health_to_json(opts.health)
    if opts.reset_health:
        updated.pop("health", None)
    if opts.listen:
        updated[SOCKET_SETTING] = {"listen": list(opts.listen)}
    if opts.reset_listen:
        updated.pop(SOCKET_SETTING, None)
    if opts.watch is not None:
        updated["watch"] = opts.watch
    if opts.watch_restarts is not None:
        updated["watch_restarts"] = opts.watch_restarts
    if opts.strategy is not None:
        updated[strategy.SETTING] = opts.strategy
    if opts.reset_allow:
        updated.pop(allowances.SETTING, None)
    if opts.allow:
        updated[allowances.SETTING] = sorted({*allowances.granted(updated), *opts.allow})
    return updated


def remember(app: AppPaths, settings: dict[str, Any]) -> None:
    """Write the settings a deploy ran with, if they changed."""
    if settings != app.read_settings():
        app.write_settings(settings)


def readiness_for(settings: dict[str, Any], release: Release, timeout: float) -> Readiness:
    """When ``release`` counts as up, by the app's ``settings`` (grace, health)."""
    return Readiness(
        timeout=timeout,
        grace=float(settings.get("grace", DEFAULT_GRACE)),
        health=health_for(settings, release),
    )


def health_for(settings: dict[str, Any], release: Release) -> HealthCheck | None:
    """The host's health check for the app if one was set, else the release's own."""
    data = settings.get("health")
    return health_from_json(data) if data else release.health
