"""Rendering systemd unit files from the jinja2 templates in ``units/``.

Nothing from a release reaches a unit file raw. Every value goes through one
of the encoders below, which either produce text that systemd parses back
into exactly the original value or refuse it (systemd.syntax(7),
systemd.service(7) "Command lines", systemd.exec(7) "Environment="):

* a raw newline ends a directive, so control characters are refused;
* ``%`` starts a specifier everywhere: written ``%%``;
* in ``Exec*=`` lines ``$`` expands variables (written ``$$``) and a lone
  ``;`` separates commands: each argument is double-quoted, with ``\\`` and
  ``"`` backslash-escaped, so no word is ever a bare ``;``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

from pyrelctl import __version__, mixcookie, mixlogger
from pyrelctl.errors import BadInput
from pyrelctl.manifest import check_description, check_program_word
from pyrelctl.names import is_env_name
from pyrelctl.release import Kind, Release, Sandbox, ServiceType
from pyrelctl.sockets import Socket

#: Where pyrelctl puts an app on the target system (never prefixed by --root).
OPT = Path("/opt")


def _refuse_control(value: str, what: str) -> None:
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise BadInput(
            f"{what} contains the control character {bad!r}, which cannot be "
            "written into a unit file"
        )


def escape_specifiers(value: str) -> str:
    return value.replace("%", "%%")


def quote_word(value: str, what: str = "value") -> str:
    """One double-quoted word as systemd's unquoting parser reads it back, with
    no specifier escaping: the form of a ``systemd-run --property`` value, whose
    parser (bus-unit-util.c) unquotes and C-unescapes but expands no ``%``."""
    _refuse_control(value, what)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def quote_value(value: str, what: str = "value") -> str:
    """One double-quoted word for unit-file settings parsed with unquoting and C
    escapes (``Environment=``, ``Exec*=`` arguments after ``$`` is handled)."""
    return escape_specifiers(quote_word(value, what))


def exec_line(argv: Sequence[str], what: str = "command") -> str:
    """An ``Exec*=`` command line that systemd splits back into exactly ``argv``."""
    if not argv or not argv[0]:
        raise BadInput(f"{what} is empty")
    check_program_word(argv[0], what)
    return " ".join(quote_value(arg, what).replace("$", "$$") for arg in argv)


def environment_words(env: Mapping[str, str]) -> str:
    """The words of one ``Environment=`` setting, specifiers not escaped (see quote_word)."""
    words = []
    for key, value in env.items():
        if not is_env_name(key):
            raise BadInput(f"environment variable name {key!r} is not valid")
        words.append(quote_word(f"{key}={value}", f"environment variable {key}"))
    return " ".join(words)


def environment_line(env: Mapping[str, str]) -> str:
    """The words of one ``Environment=`` directive (values are not ``$``-expanded there)."""
    return escape_specifiers(environment_words(env))


@dataclass(frozen=True)
class ServiceSpec:
    """Everything the service template needs, already decided."""

    app: str
    release: Release
    environment: Mapping[str, str] = field(default_factory=dict)
    environment_files: tuple[str, ...] = ()
    #: Names of the app's secrets (pyrelctl secret set), handed over with LoadCredential=.
    credentials: tuple[str, ...] = ()
    #: The app's listening sockets (the host's setting, else the release's), if any.
    socket: Socket | None = None

    @property
    def app_dir(self) -> Path:
        return OPT / self.app

    @property
    def current(self) -> Path:
        return self.app_dir / "current"

    def absolute_argv(self, argv: Sequence[str], root: Path | None = None) -> list[str]:
        """A release command with its program resolved through ``current`` (or ``root``)."""
        program = argv[0]
        if "/" in program:
            program = str((root or self.current) / program)
        # Every argv pyrelctl hands systemd (unit files and transient units)
        # passes here: the manifest's check, once more where it counts.
        check_program_word(program, "command")
        return [program, *argv[1:]]


#: One exec setting of the service: a directive and its value, encoded for
#: systemd's parsers but with specifiers (``%``) not yet escaped; see
#: :func:`exec_settings`.
Setting = tuple[str, str]


def exec_settings(
    spec: ServiceSpec, *, root: Path | None = None, runtime_directory: str | None = None
) -> tuple[Setting, ...]:
    """How the app's processes run: user, directories, environment, sandbox.

    The one source of truth for both the service (rendered into the unit
    file, ``%`` doubled there) and the transient units of ``pyrelctl rpc``,
    ``eval`` and ``remote`` (passed as ``systemd-run --property``, which
    expands no specifiers), so a command runs exactly as the service does.
    ``root`` replaces ``current`` as the working directory (a given
    release); ``runtime_directory`` replaces ``RuntimeDirectory=APP``: a
    transient unit must never own ``/run/APP``, which systemd removes when
    that unit stops, under the running service's feet.
    """
    runtime = runtime_directory or spec.app
    settings: list[Setting] = [
        ("WorkingDirectory", str(root or spec.current)),
        # DynamicUser implies ProtectSystem=strict, ProtectHome=read-only,
        # PrivateTmp=yes and NoNewPrivileges=yes (systemd.exec(5)). Units with
        # the same User= share the dynamic user while both run.
        ("DynamicUser", "yes"),
        ("User", spec.app),
        ("StateDirectory", spec.app),
        ("RuntimeDirectory", runtime),
        ("LogsDirectory", spec.app),
        ("UMask", "0077"),
        *sandbox_settings(spec.release.sandbox),
    ]
    env = service_environment(spec, run_dir=f"/run/{runtime}")
    if env:
        settings.append(("Environment", environment_words(env)))
    settings.extend(("EnvironmentFile", path) for path in spec.environment_files)
    # Secrets as credentials: PID 1 reads the root-only file and gives the
    # service a copy at $CREDENTIALS_DIRECTORY/NAME. Unlike Environment=,
    # nothing of it shows over D-Bus (systemctl show) or in /proc/PID/environ.
    settings.extend(
        ("LoadCredential", f"{name}:/etc/pyrelctl/{spec.app}/credentials/{name}")
        for name in spec.credentials
    )
    if spec.release.kind is Kind.MIX:
        # The Erlang cookie, out of every command line: a credential that
        # ExecStartPre= installs as $HOME/.erlang.cookie (mixcookie.py).
        settings.extend(mixcookie.settings(spec.app))
    for key, value in settings:
        _refuse_control(value, key)
    return tuple(settings)


def sandbox_settings(sandbox: Sandbox) -> list[Setting]:
    """pyrelctl's hardened defaults, with the exceptions a release asks for.

    Each line closes something a network service does not need
    (systemd.exec(5)); together with DynamicUser= they take
    `systemd-analyze security` from 9.6 (UNSAFE, a bare unit) to about 1
    (what remains is inherent to a network service: it has a network).
    """
    capabilities = "CAP_NET_BIND_SERVICE" if sandbox.bind_privileged_ports else ""
    settings: list[Setting] = [
        ("ProtectHome", "yes"),  # stricter than DynamicUser's read-only
        ("PrivateDevices", "yes"),
        ("PrivateIPC", "yes"),
        # PrivateDevices= still binds the host's /dev/shm, world-writable and
        # shared by every service (src/core/namespace.c, mount_private_dev):
        # a /dev/shm of the service's own, writable by its processes alone.
        ("TemporaryFileSystem", "/dev/shm:mode=1777,nosuid,nodev"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        # Only root and the service's own user exist in its user namespace;
        # not with a low port: a capability held in a user namespace of its
        # own does not count in the host's network namespace.
        ("PrivateUsers", "no" if sandbox.bind_privileged_ports else "yes"),
        # Empty sets: no capability at all, unless a low port was asked for.
        ("CapabilityBoundingSet", capabilities),
        ("AmbientCapabilities", capabilities),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallArchitectures", "native"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallFilter", "~@privileged @resources"),
        # A filtered call fails with EPERM instead of killing the process,
        # so a runtime probing for a feature degrades instead of dying.
        ("SystemCallErrorNumber", "EPERM"),
    ]
    if sandbox.memory_deny_write_execute:
        # The BEAM JIT (dual-mapped through memfd) and CPython work with it;
        # cffi callbacks do not: [service] memory_deny_write_execute = false.
        settings.append(("MemoryDenyWriteExecute", "yes"))
    settings.extend(("ReadWritePaths", path) for path in sandbox.writable_paths)
    return settings


def service_environment(spec: ServiceSpec, *, run_dir: str) -> dict[str, str]:
    """``Environment=`` of the app: the release's own, pyrelctl's defaults for its
    kind, then the spec's (later ones win)."""
    env: dict[str, str] = dict(spec.release.environment)
    if spec.release.kind is Kind.MIX:
        env.update(mix_environment(spec.app, run_dir=run_dir))
    env.update(spec.environment)
    return env


def default_environment_files(app: str, release: Release) -> tuple[str, ...]:
    """``EnvironmentFile=`` settings: the operator's optional ``env`` and the app's
    configuration (``pyrelctl config``). Root-only files read by PID 1; unlike
    ``Environment=`` their values are not shown to every user over D-Bus.
    Files override ``Environment=``, so ``env`` can change any default below.
    (A mix app's cookie is no variable at all: see mixcookie.py.)"""
    # The operator's hand-written env, then the configuration generation
    # `pyrelctl config` keeps (appconfig/generations.py), which wins where both
    # set a variable: a later EnvironmentFile= overrides an earlier one.
    del release  # the same files for every kind
    return (f"-/etc/pyrelctl/{app}/env", f"-/etc/pyrelctl/{app}/config/current.env")


def _template_dirs() -> list[Path]:
    """Templates ship inside the wheel (``pyrelctl/units``); a source checkout
    keeps them in the top-level ``units/``."""
    # A plain path, not importlib.resources (~4 ms to import): pyrelctl is
    # always installed as files (wheel, .deb, RPM), never zipped.
    here = Path(__file__).resolve().parent
    candidates = [here / "units", here.parent / "units"]
    return [d for d in candidates if d.is_dir()]


def _environment() -> jinja2.Environment:
    # Imported here: jinja2 costs ~30 ms, which read-only commands (status)
    # should not pay.
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in _template_dirs()]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # unit files, not HTML: values go through the filters below
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["exec"] = exec_line
    env.filters["quote"] = quote_value
    env.filters["env"] = environment_line
    env.filters["spec"] = escape_specifiers
    return env


@dataclass(frozen=True)
class UnitText:
    """A unit file before rendering: its template and the values that fill it.

    :meth:`digest` names the result without rendering it (no jinja2), so an
    install can tell that a unit file on disk is already what these inputs
    give (unitfiles.py).
    """

    template: str
    context: Mapping[str, Any]

    def digest(self) -> str:
        """A hash of everything the text depends on: the template, this module
        (its filters encode the values) and the values."""
        h = hashlib.sha256()
        # The file jinja2's loader would pick: the first directory that has it.
        path = next(d / self.template for d in _template_dirs() if (d / self.template).is_file())
        h.update(path.read_bytes())
        h.update(Path(__file__).read_bytes())
        h.update(json.dumps(self.context, sort_keys=True, default=list).encode())
        return h.hexdigest()

    def render(self) -> str:
        return _environment().get_template(self.template).render(**self.context)


def service_unit(spec: ServiceSpec) -> UnitText:
    """``<app>.service`` for ``spec``."""
    release = spec.release
    start = release.command("start")
    assert start is not None  # detect() guarantees a start command
    description = release.description or f"{spec.app} ({release.kind} release, managed by pyrelctl)"
    check_description(description)
    return UnitText(
        "app.service.j2",
        {
            "app": spec.app,
            "pyrelctl_version": __version__,
            "description": description,
            "service_type": release.service_type.value,
            "notify": release.service_type is ServiceType.NOTIFY,
            "notify_access": "all" if release.kind is Kind.PYTHON else "main",
            "exec_start": spec.absolute_argv(start),
            "exec_settings": exec_settings(spec),
            "kind": release.kind.value,
            "socket": spec.socket is not None,
            "stop_timeout": release.stop_timeout,
            "overlap": False,
            "log_environment": log_environment(spec),
        },
    )


def log_environment(spec: ServiceSpec) -> dict[str, str]:
    """The service's own ``Environment=`` for its logging (mixlogger.py): a mix
    release's log levels as journal priorities. Not in :func:`exec_settings`:
    the transient units of rpc, eval, remote and hooks do without it."""
    release = spec.release
    if release.kind is not Kind.MIX:
        return {}
    return mixlogger.environment(
        release.logger,
        release.elixir_logger,
        release.environment.get(mixlogger.VARIABLE),
    )


def overlap_unit(
    spec: ServiceSpec, next_link: Path, *, runtime_directory: str, starting_nice: int
) -> UnitText:
    """``<app>@overlap.service``: ``spec``'s release started through ``next_link``
    beside the running ``<app>.service``, on the same sockets (deploy/overlap.py).

    The same definition as the service's, except: the ``next`` link instead of
    ``current`` (which still points to the running release), a runtime
    directory of its own (``/run/APP`` belongs to the service, and systemd
    removes it when that stops), ``Sockets=`` naming the app's socket unit, no
    automatic restart and no ``[Install]``: pyrelctl starts and stops it,
    nothing else; and ``Nice=starting_nice``. No version in it: the next
    deploy finds the same text, and systemd needs no daemon-reload.
    """
    unit = service_unit(spec)
    start = spec.release.command("start")
    assert start is not None
    return UnitText(
        "app.service.j2",
        {
            **unit.context,
            "overlap": True,
            "starting_nice": starting_nice,
            "exec_start": spec.absolute_argv(start, root=next_link),
            "exec_settings": exec_settings(
                spec, root=next_link, runtime_directory=runtime_directory
            ),
        },
    )


def socket_unit(app: str, socket: Socket) -> UnitText:
    """``<app>.socket`` holding ``socket``'s listeners."""
    for address in socket.listen:
        _refuse_control(address, "socket.listen")
    return UnitText(
        "app.socket.j2",
        {"app": app, "pyrelctl_version": __version__, "listen": socket.listen, "name": socket.name},
    )


def render_service(spec: ServiceSpec) -> str:
    """The text of ``<app>.service``."""
    return service_unit(spec).render()


def render_socket(app: str, socket: Socket) -> str:
    """The text of ``<app>.socket``."""
    return socket_unit(app, socket).render()


def mix_environment(app: str, *, run_dir: str | None = None) -> dict[str, str]:
    """What a mix release's ``bin/<name>`` needs under systemd (FACTS.md, mix releases).

    The release directory is read-only to the service, so ``RELEASE_TMP``
    (written when runtime config is on) and ``HOME`` (wanted by ``remote``,
    elixir #13127) live in the unit's runtime directory (``run_dir``,
    default ``/run/APP``).
    """
    run = run_dir or f"/run/{app}"
    return {
        "RELEASE_TMP": run,
        "HOME": run,
        # The node is named after the app, not the release: two apps installed
        # from one release (--app) must not claim the same name in EPMD. A long
        # name on the loopback address, not `sname`: an sname node's host is the
        # hostname, which Debian's /etc/hosts maps to 127.0.1.1, where nothing
        # listens once EPMD and distribution are bound to 127.0.0.1 (rpc then
        # fails with :nodedown). The literal address needs no resolver at all.
        "RELEASE_DISTRIBUTION": "name",
        "RELEASE_NODE": f"{app}@127.0.0.1",
        # EPMD (started by the VM when none runs) and the distribution port
        # listen on loopback only (EEF Security WG guidance). Clustering opts
        # in through /etc/pyrelctl/APP/env (EnvironmentFile= overrides
        # Environment=, and reaches rpc/eval/remote too, unlike a drop-in).
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        # Read by the release's `elixir` script (word-split into erl flags).
        "ELIXIR_ERL_OPTIONS": "-kernel inet_dist_use_interface {127,0,0,1}",
        # Not the cookie: a word that makes the VM read $HOME/.erlang.cookie
        # instead of taking a cookie from its command line (mixcookie.py).
        "RELEASE_COOKIE": mixcookie.PLACEHOLDER,
        # Crash dumps can hold secrets; keep them in the state directory,
        # never in the (read-only, shared) release directory.
        "ERL_CRASH_DUMP": f"/var/lib/{app}/erl_crash.dump",
    }
