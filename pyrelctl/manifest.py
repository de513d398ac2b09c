"""Reading a release: its kind detected from an artifact, its release.toml checked.

The values it yields are :mod:`pyrelctl.release`'s. Detection reads only the
validated member list and a few small files of an
:class:`~pyrelctl.archive.Artifact`, so a release is fully understood (and
refused if it has to be) before anything is unpacked.

Kinds (DESIGN.md, "Release kinds"):

* ``mix``: ``releases/start_erl.data`` plus ``bin/<name>``, as written by
  ``mix release``. An optional ``release.toml`` (added with a rel overlay)
  may set ``[service]``, ``[health]``, ``[hooks]``, ``[environment]``,
  ``[socket]``, ``[processes.NAME]`` and ``[timers.NAME]``.
* ``generic``: ``release.toml`` with a ``[commands]`` table.
* ``python``: ``release.toml`` with ``kind = "python"``, made by ``pyrelctl build``.
"""

from __future__ import annotations

import dataclasses
import posixpath
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyrelctl.archive import Artifact, MemberType
from pyrelctl.errors import BadInput
from pyrelctl.mixlogger import LoggerMode, logger_version
from pyrelctl.names import check_app_name, check_version
from pyrelctl.procs.manifest import commands as procs_commands
from pyrelctl.procs.manifest import environment_table, parse_tables
from pyrelctl.procs.values import Process, Timer
from pyrelctl.release import (
    DEFAULT_STOP_TIMEOUT,
    VERBS,
    HealthCheck,
    HealthKind,
    Kind,
    Release,
    Sandbox,
    ServiceType,
    mix_commands,
    python_commands,
)
from pyrelctl.sockets import Socket, parse_socket_table

MANIFEST = "release.toml"
START_ERL = "releases/start_erl.data"


# -- manifest schema ----------------------------------------------------------

_SECTIONS: dict[str, frozenset[str]] = {
    "release": frozenset({"name", "version", "kind", "description"}),
    "commands": frozenset(VERBS),
    "service": frozenset(
        {
            "type",
            "stop_timeout",
            "watch",
            "strategy",
            "memory_deny_write_execute",
            "bind_privileged_ports",
            "writable_paths",
            "logger",  # mix releases only
        }
    ),
    "health": frozenset({"http", "tcp", "command"}),
    # on_*: the release's own notifications after an outcome (hooks.run_notification).
    "hooks": frozenset({"pre_switch", "post_switch", "on_success", "on_failure", "on_rollback"}),
    "environment": frozenset(),  # free-form: any variable name
    "socket": frozenset({"listen", "name"}),
    "python": frozenset(),  # python releases only; checked by pyspec.parse_spec
    "processes": frozenset(),  # named tables, checked by procs.manifest
    "timers": frozenset(),
}


def _table(doc: Mapping[str, Any], key: str, where: str = MANIFEST) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise BadInput(f"{where}: [{key}] must be a table")
    allowed = _SECTIONS[key]
    if allowed:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise BadInput(
                f"{where}: unknown key {key}.{unknown[0]}",
                hint=f"[{key}] accepts: {', '.join(sorted(allowed))}",
            )
    return value


def _string(section: str, key: str, value: object, where: str = MANIFEST) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput(f"{where}: {section}.{key} must be a non-empty string")
    return value


def check_unit_text(value: str, what: str) -> str:
    """Refuse what no unit file can hold: a control character (a raw newline ends
    a directive; systemd.syntax(7)). Checked when the manifest is read, so a
    release is refused before anything of it is written."""
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise BadInput(
            f"{what} contains the control character {bad!r}, which cannot be "
            "written into a unit file"
        )
    return value


#: Characters systemd reads as flags at the start of an ``Exec*=`` command's
#: first word, even inside quotes (systemd.service(5), "Command lines";
#: src/core/load-fragment.c): ``+`` and ``!``/``!!`` run it as root outside
#: the sandbox, ``@`` sets argv[0], ``-`` ignores failure, ``:`` turns off
#: variable expansion, ``|`` (v254+) runs it through the user's shell. A
#: program word must never begin with one of them.
EXEC_PREFIXES = frozenset("@-:+!|")


def check_program_word(program: str, what: str) -> str:
    """Refuse a command's first word that systemd would read as prefix flags."""
    if not program or program[0] in EXEC_PREFIXES:
        raise BadInput(
            f"{what}: the program {program!r} begins with {program[:1]!r}, which systemd "
            "reads as a flag of the command line (+ and ! would run it as root, "
            "outside the sandbox)",
            hint="name a program of the release (bin/app) or on the service's PATH (python3)",
        )
    return program


def _argv(section: str, key: str, value: object, where: str = MANIFEST) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(a, str) for a in value)
        or not value[0]
    ):
        raise BadInput(
            f"{where}: {section}.{key} must be a non-empty list of strings "
            '(an argv, e.g. ["bin/app", "start"])'
        )
    check_program_word(value[0], f"{where}: {section}.{key}")
    for arg in value:
        check_unit_text(arg, f"{where}: {section}.{key}")
    return tuple(value)


def _check_program(
    artifact: Artifact, where: str, argv: tuple[str, ...], *, python_name: str | None = None
) -> None:
    """A program named with a slash is a path inside the release, and must be there.

    ``python_name``: the release is a python release of that name, whose
    ``bin/NAME`` is written at install (pyrelease.launcher), so it is not in
    the artifact yet; a program without a slash is then a script of the
    release's venv (pyspec.venv_argv), checked when the venv is built.
    """
    program = argv[0]
    if "/" not in program:
        return  # looked up on systemd's fixed PATH (python3), or the venv's bin/
    norm = posixpath.normpath(program)
    if program.startswith("/") or norm == ".." or norm.startswith("../"):
        raise BadInput(
            f"{MANIFEST}: {where} runs {program!r}, outside the release",
            hint="programs are given relative to the release root, e.g. bin/app",
        )
    if python_name is not None and norm == f"bin/{python_name}":
        return
    member = artifact.member(norm)
    if member is None or member.type is MemberType.DIR:
        raise BadInput(f"{MANIFEST}: {where} runs {program!r}, which is not in the release")


def parse_manifest(
    text: bytes, artifact: Artifact, *, mix_name: str | None = None, mix_version: str | None = None
) -> Release:
    """Parse and check ``release.toml``.

    With ``mix_name``/``mix_version`` the manifest rides along a mix release:
    it may omit ``[release]`` and must not declare ``[commands]``.
    """
    try:
        doc = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BadInput(f"{MANIFEST}: not valid TOML ({e})") from e
    unknown = sorted(set(doc) - set(_SECTIONS))
    if unknown:
        raise BadInput(
            f"{MANIFEST}: unknown table [{unknown[0]}]",
            hint=f"known tables: {', '.join(_SECTIONS)}",
        )
    meta = _table(doc, "release")
    commands_table = _table(doc, "commands")

    if mix_name is not None:
        kind = Kind.MIX
        if commands_table:
            raise BadInput(
                f"{MANIFEST}: a mix release takes its commands from bin/{mix_name}; "
                "remove [commands]"
            )
        if "python" in doc:
            raise BadInput(f"{MANIFEST}: [python] belongs to python releases only")
        if meta.get("kind", "mix") != "mix":
            raise BadInput(f"{MANIFEST}: release.kind is {meta['kind']!r} in a mix release")
        for key, detected in (("name", mix_name), ("version", mix_version)):
            if key in meta and meta[key] != detected:
                raise BadInput(
                    f"{MANIFEST}: release.{key} {meta[key]!r} does not match the "
                    f"mix release ({detected!r})"
                )
        name, version = mix_name, mix_version or ""
        commands = mix_commands(mix_name)
    else:
        name = _string("release", "name", meta.get("name"))
        version = check_version(_string("release", "version", meta.get("version")))
        kind_text = _string("release", "kind", meta.get("kind", "generic"))
        try:
            kind = Kind(kind_text)
        except ValueError:
            raise BadInput(
                f"{MANIFEST}: unknown release.kind {kind_text!r}",
                hint='release.kind is "generic" or "python"',
            ) from None
        if kind is Kind.MIX:
            raise BadInput(f'{MANIFEST}: kind "mix" but no {START_ERL} in the release')
        if kind is Kind.PYTHON:
            # bin/<name> is written at install (pyrelease.launcher), with
            # the verbs of a mix release; the name becomes that file's name.
            if commands_table:
                raise BadInput(
                    f"{MANIFEST}: a python release gets its commands from pyrelctl; "
                    "remove [commands]"
                )
            check_app_name(name)
            from pyrelctl import pyspec  # python releases only

            pyspec.parse_spec(doc.get("python"), artifact)
            commands = python_commands(name)
        else:
            if "python" in doc:
                raise BadInput(f"{MANIFEST}: [python] belongs to python releases only")
            commands = {
                verb: _argv("commands", verb, value) for verb, value in commands_table.items()
            }
            if "start" not in commands:
                raise BadInput(f"{MANIFEST}: [commands] has no start command")
    for verb, argv in commands.items():
        if kind is Kind.GENERIC:
            _check_program(artifact, f"commands.{verb}", argv)

    settings = parse_settings(doc, meta.get("description", ""))
    logger = _parse_logger(_table(doc, "service"), kind)
    python_name = name if kind is Kind.PYTHON else None
    if settings.health is not None and settings.health.kind is HealthKind.COMMAND:
        _check_program(artifact, "health.command", settings.health.command)
    for key, argv in settings.hooks.items():
        _check_program(artifact, f"hooks.{key}", argv, python_name=python_name)
    for what, argv in procs_commands(settings.processes, settings.timers):
        _check_program(artifact, what, argv, python_name=python_name)
    return Release(
        name=name,
        version=version,
        kind=kind,
        commands=commands,
        service_type=settings.service_type,
        health=settings.health,
        hooks=settings.hooks,
        environment=settings.environment,
        description=settings.description,
        sandbox=settings.sandbox,
        socket=settings.socket,
        stop_timeout=settings.stop_timeout,
        watch=settings.watch,
        strategy=settings.strategy,
        processes=settings.processes,
        timers=settings.timers,
        logger=logger,
    )


def _parse_logger(service: Mapping[str, Any], kind: Kind) -> LoggerMode:
    """``[service] logger``: who sets up a mix release's logging."""
    if "logger" not in service:
        return LoggerMode.PYRELCTL
    if kind is not Kind.MIX:
        raise BadInput(f"{MANIFEST}: service.logger applies to mix releases only")
    try:
        return LoggerMode(service["logger"])
    except (ValueError, TypeError):
        raise BadInput(
            f'{MANIFEST}: service.logger must be "pyrelctl" or "release", not {service["logger"]!r}'
        ) from None


def check_writable_path(path: str, what: str) -> str:
    """A ``ReadWritePaths=`` entry: a plain absolute path, nothing systemd reads
    otherwise (a leading ``-`` or ``+``, spaces splitting it into two, ``%``
    specifiers, quotes, escapes), no ``..`` and not ``/`` itself."""
    parts = path.split("/")
    if (
        not path.startswith("/")
        or path == "/"
        or ".." in parts
        or any(ord(c) < 0x20 or ord(c) == 0x7F or c in " \"'\\%$;" for c in path)
    ):
        raise BadInput(
            f"{what} {path!r} is not a plain absolute path",
            hint="e.g. /srv/shop/uploads: no spaces, quotes, %, $, ; or ..",
        )
    return path


def check_description(text: str, where: str = MANIFEST, key: str = "release.description") -> str:
    """A ``Description=`` value: one line, and not ending in a backslash, which
    systemd reads as "continued on the next line" (systemd.syntax(7)): the
    unit's next directive would become part of the description."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) or text.rstrip().endswith("\\"):
        raise BadInput(f"{where}: {key} must be one line of text, not ending in a backslash")
    return text


#: The tables release.toml shares with ``[tool.pyrelctl]`` of a Python
#: project (buildconfig.read_config), parsed by :func:`parse_settings` for both.
SETTINGS_TABLES = ("service", "health", "hooks", "environment", "socket", "processes", "timers")


@dataclass(frozen=True)
class Settings:
    """How a release runs, as every kind of manifest declares it: ``[service]``,
    ``[health]``, ``[hooks]``, ``[environment]``, ``[socket]`` and the description."""

    service_type: ServiceType = ServiceType.EXEC
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    sandbox: Sandbox = field(default_factory=Sandbox)
    health: HealthCheck | None = None
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    socket: Socket | None = None
    description: str = ""
    watch: float = 0.0
    strategy: str = ""
    processes: tuple[Process, ...] = ()
    timers: tuple[Timer, ...] = ()


#: The values of ``[service] strategy`` (deploy/strategy.py says what each does).
STRATEGIES = ("restart", "overlap")


def parse_settings(
    doc: Mapping[str, Any],
    description: object = "",
    *,
    where: str = MANIFEST,
    description_key: str = "release.description",
    default_type: ServiceType = ServiceType.EXEC,
) -> Settings:
    """Check the :data:`SETTINGS_TABLES` of ``doc`` and ``description``.

    The one parser of these tables: release.toml (:func:`parse_manifest`)
    and ``[tool.pyrelctl]`` (buildconfig.read_config, ``where`` naming it) give
    the same messages. Programs are checked against the artifact by the
    caller, which knows the release's files.
    """
    service = _table(doc, "service", where)
    type_text = service.get("type", default_type.value)
    try:
        service_type = ServiceType(type_text)
    except (ValueError, TypeError):
        raise BadInput(
            f'{where}: service.type must be "exec" or "notify", not {type_text!r}'
        ) from None
    stop_timeout = service.get("stop_timeout", DEFAULT_STOP_TIMEOUT)
    if (
        not isinstance(stop_timeout, int)
        or isinstance(stop_timeout, bool)
        or not (1 <= stop_timeout <= 3600)
    ):
        raise BadInput(f"{where}: service.stop_timeout must be whole seconds, 1 to 3600")
    if not isinstance(description, str):
        raise BadInput(f"{where}: {description_key} must be a string")
    from pyrelctl.durations import parse_duration

    watch = parse_duration(service.get("watch", 0), f"{where}: service.watch")
    strategy = service.get("strategy", "")
    if strategy != "" and strategy not in STRATEGIES:
        raise BadInput(
            f'{where}: service.strategy must be "restart" or "overlap", not {strategy!r}'
        )
    processes, timers = parse_tables(doc, where, argv=_argv, text=check_unit_text)
    return Settings(
        processes=processes,
        timers=timers,
        service_type=service_type,
        stop_timeout=stop_timeout,
        watch=watch,
        strategy=strategy,
        sandbox=_parse_sandbox(service, where),
        health=parse_health_table(_table(doc, "health", where), where),
        hooks={
            key: _argv("hooks", key, value, where)
            for key, value in _table(doc, "hooks", where).items()
        },
        environment=environment_table(
            _table(doc, "environment", where), f"{where}: environment", check_unit_text
        ),
        socket=parse_socket_table(_table(doc, "socket", where), where),
        description=check_description(description, where, description_key),
    )


def _parse_sandbox(service: Mapping[str, Any], where: str = MANIFEST) -> Sandbox:
    flags = {}
    for key in ("memory_deny_write_execute", "bind_privileged_ports"):
        if key in service:
            if not isinstance(service[key], bool):
                raise BadInput(f"{where}: service.{key} must be true or false")
            flags[key] = service[key]
    paths = service.get("writable_paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BadInput(f"{where}: service.writable_paths must be a list of absolute paths")
    for path in paths:
        check_writable_path(path, f"{where}: service.writable_paths entry")
    return Sandbox(
        memory_deny_write_execute=flags.get("memory_deny_write_execute", True),
        bind_privileged_ports=flags.get("bind_privileged_ports", False),
        writable_paths=tuple(paths),
    )


def parse_health_table(table: Mapping[str, Any], where: str = MANIFEST) -> HealthCheck | None:
    """A ``[health]`` table (from a manifest, or the install options) as a check."""
    if not table:
        return None
    if len(table) != 1:
        raise BadInput(f"{where}: [health] takes exactly one of http, tcp, command")
    ((key, value),) = table.items()
    if key == "command":
        return HealthCheck(HealthKind.COMMAND, command=_argv("health", key, value, where))
    # One line: the URL goes into the probe's request line as it is.
    text = check_unit_text(_string("health", key, value, where), f"{where}: health.{key}")
    if key == "http" and not text.startswith(("http://", "https://")):
        raise BadInput(f"{where}: health.http must be an http:// or https:// URL")
    if key == "tcp":
        host, sep, port = text.rpartition(":")
        # isascii(): str.isdigit() admits "²" and fullwidth digits.
        if not (sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise BadInput(f"{where}: health.tcp must be HOST:PORT, not {text!r}")
        return HealthCheck(HealthKind.TCP, tcp=text)
    return HealthCheck(HealthKind.HTTP, http=text)


# -- detection ---------------------------------------------------------------


def _mix_name(artifact: Artifact, version: str) -> str:
    scripts = [
        m.path.removeprefix("bin/")
        for m in artifact.list_dir("bin")
        if m.type is MemberType.FILE and m.mode & 0o100
    ]
    # mix writes releases/<vsn>/<name>.rel next to the boot script; prefer
    # the script that has one (bin/ may hold other executables from overlays).
    named = [s for s in scripts if artifact.has(f"releases/{version}/{s}.rel")]
    plain = [s for s in scripts if "." not in s]
    for candidates in (named, plain):
        if len(candidates) == 1:
            return candidates[0]
    raise BadInput(
        "cannot tell the mix release's name: bin/ holds "
        + (", ".join(sorted(scripts)) or "no executable"),
        hint="a mix release has exactly one bin/<name> script",
    )


def detect(artifact: Artifact) -> Release:
    """Tell what release ``artifact`` holds, or refuse it with :class:`BadInput`."""
    if artifact.has(START_ERL):
        fields = artifact.read(START_ERL).decode("utf-8", "replace").split()
        if len(fields) != 2:
            raise BadInput(f'{START_ERL} should hold "ERTS_VSN REL_VSN", not {fields!r}')
        version = check_version(fields[1])
        name = _mix_name(artifact, version)
        if artifact.has(MANIFEST):
            release = parse_manifest(
                artifact.read(MANIFEST), artifact, mix_name=name, mix_version=version
            )
        else:
            release = Release(
                name=name, version=version, kind=Kind.MIX, commands=mix_commands(name)
            )
        return dataclasses.replace(
            release, elixir_logger=logger_version(m.path for m in artifact.members)
        )
    if artifact.has(MANIFEST):
        return parse_manifest(artifact.read(MANIFEST), artifact)
    raise BadInput(
        f"{artifact.source}: not a release: no {START_ERL} (mix) and no {MANIFEST}",
        hint="pyrelctl installs mix releases and releases with a release.toml",
    )
