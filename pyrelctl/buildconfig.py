"""``[tool.pyrelctl]`` of a Python project in, the python release's release.toml out.

:func:`read_config` checks the project's ``[tool.pyrelctl]`` table (the
tables it shares with release.toml through manifest.parse_settings, with the
same messages); :func:`render_manifest` writes the release.toml that
``pyrelctl build`` (:mod:`pyrelctl.build`) puts into the tarball and
``pyrelctl install`` reads back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyrelctl.errors import BadInput
from pyrelctl.manifest import SETTINGS_TABLES, Settings, parse_settings
from pyrelctl.names import APP_NAME_RE
from pyrelctl.procs.manifest import toml_lines as procs_toml_lines
from pyrelctl.release import DEFAULT_STOP_TIMEOUT, HealthCheck, HealthKind, ServiceType
from pyrelctl.sockets import Socket

#: What [tool.pyrelctl] accepts: the build's own keys, and what release.toml
#: accepts that makes sense for a python release (manifest.SETTINGS_TABLES and
#: the description; ``type`` is short for ``service.type``), parsed by the
#: same code (manifest.parse_settings).
BUILD_KEYS = frozenset({"name", "start", "requirements", "type", "description"})
CONFIG_KEYS = BUILD_KEYS | frozenset(SETTINGS_TABLES)
WHERE = "pyproject.toml: [tool.pyrelctl]"


# -- configuration -------------------------------------------------------------


@dataclass(frozen=True)
class BuildConfig:
    """``[tool.pyrelctl]`` of the project, checked."""

    start: tuple[str, ...]
    name: str | None = None
    requirements: str | None = None
    #: What goes into the release.toml's shared tables; a python release is
    #: ``Type=notify`` unless it says otherwise (it calls pyrelctl_runtime).
    settings: Settings = field(default_factory=lambda: Settings(service_type=ServiceType.NOTIFY))

    @property
    def service_type(self) -> ServiceType:
        return self.settings.service_type

    @property
    def socket(self) -> Socket | None:
        return self.settings.socket

    @property
    def environment(self) -> Mapping[str, str]:
        return self.settings.environment

    @property
    def health(self) -> HealthCheck | None:
        return self.settings.health


def read_config(pyproject: Mapping[str, Any]) -> BuildConfig:
    """Check ``[tool.pyrelctl]``.

    ``start`` is an entry point name (a console script of the project or a
    dependency) or an argv whose program is one (or ``python``): ``"shop"``,
    ``["gunicorn", "shop.web:app"]``, ``["python", "-m", "shop"]``.
    ``name`` overrides the release name; ``requirements`` names the lock.
    ``service``, ``health``, ``hooks``, ``environment``, ``socket`` and
    ``description`` are release.toml's, checked by the same parser with the
    same messages (manifest.parse_settings); ``type`` is ``service.type``
    (``"notify"`` by default: the app calls pyrelctl_runtime). A hook's
    program, like start's, is a script of the release's venv or ``python``.
    """
    tool = pyproject.get("tool", {}).get("pyrelctl")
    where = WHERE
    if not isinstance(tool, dict):
        raise BadInput(
            f"{where} is missing",
            hint='add at least: [tool.pyrelctl] start = "<console script of the project>"',
        )
    unknown = sorted(set(tool) - CONFIG_KEYS)
    if unknown:
        raise BadInput(
            f"{where}: unknown key {unknown[0]!r}",
            hint=f"it accepts: {', '.join(sorted(CONFIG_KEYS))}",
        )
    start = tool.get("start")
    argv = [start] if isinstance(start, str) else start
    if (
        not isinstance(argv, list)
        or not argv
        or not all(isinstance(a, str) and a for a in argv)
        or "/" in argv[0]
    ):
        raise BadInput(
            f"{where}: start must be an entry point name or an argv such as "
            '["gunicorn", "app:app"] (its program a script the packages install)'
        )
    name = tool.get("name")
    if name is not None and (not isinstance(name, str) or not APP_NAME_RE.fullmatch(name)):
        raise BadInput(f"{where}: name {name!r} is not a valid app name")
    requirements = tool.get("requirements")
    if requirements is not None and not isinstance(requirements, str):
        raise BadInput(f"{where}: requirements must be a file name")
    tables = {key: tool[key] for key in SETTINGS_TABLES if key in tool}
    if "type" in tool:
        service = tables.get("service", {})
        if isinstance(service, dict) and "type" in service:
            raise BadInput(f"{where}: type and service.type both given; keep one")
        if not isinstance(tool["type"], str):
            raise BadInput(f'{where}: type must be "notify" or "exec", not {tool["type"]!r}')
        tables["service"] = (
            {**service, "type": tool["type"]} if isinstance(service, dict) else service
        )
    settings = parse_settings(
        tables,
        tool.get("description", ""),
        where=where,
        description_key="description",
        default_type=ServiceType.NOTIFY,
    )
    for key, hook in settings.hooks.items():
        if "/" in hook[0] and not (hook[0].startswith("bin/") and hook[0].count("/") == 1):
            raise BadInput(
                f"{where}: hooks.{key} runs {hook[0]!r}; a python release's hook runs a "
                'script of its venv or "python" (as start does)',
                hint='e.g. hooks = { pre_switch = ["python", "-m", "django", "migrate"] }',
            )
    return BuildConfig(
        start=tuple(argv),
        name=name,
        requirements=requirements,
        settings=settings,
    )


def _toml(value: object) -> str:
    """A TOML value for strings, lists of strings and inline tables of strings."""
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML here")


def render_manifest(
    *,
    name: str,
    version: str,
    description: str,
    python: str,
    config: BuildConfig,
    packages: Iterable[str],
    pip: str,
) -> str:
    """The text of a python release's release.toml."""
    lines = [
        "# Written by `pyrelctl build`; `pyrelctl install` reads it.",
        "[release]",
        f"name = {_toml(name)}",
        f"version = {_toml(version)}",
        'kind = "python"',
    ]
    description = config.settings.description or description
    if description:
        lines.append(f"description = {_toml(description)}")
    settings = config.settings
    lines += [
        "",
        "[python]",
        f"python = {_toml(python)}",
        f"start = {_toml(list(config.start))}",
        "packages = [",
        *(f"  {_toml(p)}," for p in sorted(packages)),
        "]",
        f"pip = {_toml(pip)}",
        "",
        "[service]",
        f"type = {_toml(settings.service_type.value)}",
    ]
    if settings.stop_timeout != DEFAULT_STOP_TIMEOUT:
        lines.append(f"stop_timeout = {settings.stop_timeout}")
    if settings.watch:
        lines.append(f"watch = {settings.watch:g}")
    if settings.strategy:
        lines.append(f"strategy = {_toml(settings.strategy)}")
    sandbox = settings.sandbox
    if not sandbox.memory_deny_write_execute:
        lines.append("memory_deny_write_execute = false")
    if sandbox.bind_privileged_ports:
        lines.append("bind_privileged_ports = true")
    if sandbox.writable_paths:
        lines.append(f"writable_paths = {_toml(list(sandbox.writable_paths))}")
    health = settings.health
    if health is not None:
        value: str | list[str] = (
            list(health.command) if health.kind is HealthKind.COMMAND else health.http or health.tcp
        )
        lines += ["", "[health]", f"{health.kind.value} = {_toml(value)}"]
    if settings.hooks:
        lines += ["", "[hooks]"]
        lines += [f"{key} = {_toml(list(argv))}" for key, argv in sorted(settings.hooks.items())]
    if settings.environment:
        lines += ["", "[environment]"]
        lines += [f"{key} = {_toml(value)}" for key, value in sorted(settings.environment.items())]
    if settings.socket:
        lines += ["", "[socket]", f"listen = {_toml(list(settings.socket.listen))}"]
        lines.append(f"name = {_toml(settings.socket.name)}")
    lines += procs_toml_lines(settings.processes, settings.timers)
    return "\n".join(lines) + "\n"
