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

import importlib.resources
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from pyrelctl import __version__
from pyrelctl.errors import BadInput
from pyrelctl.names import is_env_name
from pyrelctl.release import Kind, Release, ServiceType

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


def quote_value(value: str, what: str = "value") -> str:
    """One double-quoted word for settings parsed with unquoting and C escapes
    (``Environment=``, ``Exec*=`` arguments after ``$`` is handled)."""
    _refuse_control(value, what)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escape_specifiers(escaped)}"'


def exec_line(argv: Sequence[str], what: str = "command") -> str:
    """An ``Exec*=`` command line that systemd splits back into exactly ``argv``."""
    if not argv or not argv[0]:
        raise BadInput(f"{what} is empty")
    return " ".join(quote_value(arg, what).replace("$", "$$") for arg in argv)


def environment_line(env: Mapping[str, str]) -> str:
    """The words of one ``Environment=`` directive (values are not ``$``-expanded there)."""
    words = []
    for key, value in env.items():
        if not is_env_name(key):
            raise BadInput(f"environment variable name {key!r} is not valid")
        words.append(quote_value(f"{key}={value}", f"environment variable {key}"))
    return " ".join(words)


@dataclass(frozen=True)
class ServiceSpec:
    """Everything the service template needs, already decided."""

    app: str
    release: Release
    environment: Mapping[str, str] = field(default_factory=dict)
    environment_files: tuple[str, ...] = ()

    @property
    def app_dir(self) -> Path:
        return OPT / self.app

    @property
    def current(self) -> Path:
        return self.app_dir / "current"

    def absolute_argv(self, argv: Sequence[str]) -> list[str]:
        """A release command with its program resolved through ``current``."""
        program = argv[0]
        if "/" in program:
            program = str(self.current / program)
        return [program, *argv[1:]]


def _template_dirs() -> list[Path]:
    """Templates ship inside the wheel (``pyrelctl/units``); a source checkout
    keeps them in the top-level ``units/``."""
    packaged = importlib.resources.files("pyrelctl") / "units"
    candidates = [Path(str(packaged)), Path(__file__).resolve().parent.parent / "units"]
    return [d for d in candidates if d.is_dir()]


def _environment() -> jinja2.Environment:
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


def render_service(spec: ServiceSpec) -> str:
    """The text of ``<app>.service``."""
    release = spec.release
    start = release.command("start")
    assert start is not None  # detect() guarantees a start command
    env: dict[str, str] = dict(release.environment)
    if release.kind is Kind.MIX:
        env.update(mix_environment(spec.app))
    env.update(spec.environment)
    description = release.description or f"{spec.app} ({release.kind} release, managed by pyrelctl)"
    _refuse_control(description, "release.description")
    template = _environment().get_template("app.service.j2")
    return template.render(
        app=spec.app,
        pyrelctl_version=__version__,
        description=description,
        service_type=release.service_type.value,
        notify=release.service_type is ServiceType.NOTIFY,
        exec_start=spec.absolute_argv(start),
        working_directory=str(spec.current),
        environment=env,
        environment_files=spec.environment_files,
        kind=release.kind.value,
    )


def mix_environment(app: str) -> dict[str, str]:
    """What a mix release's ``bin/<name>`` needs under systemd (FACTS.md, mix releases).

    The release directory is read-only to the service, so ``RELEASE_TMP``
    (written when runtime config is on) and ``HOME`` (wanted by ``remote``,
    elixir #13127) live in the unit's runtime directory.
    """
    run = f"/run/{app}"
    return {
        "RELEASE_TMP": run,
        "HOME": run,
        # The node is named after the app, not the release: two apps installed
        # from one release (--app) must not claim the same name in EPMD.
        "RELEASE_NODE": app,
        # EPMD (started by the VM when none runs) listens on loopback only
        # (EEF Security WG guidance); clustering opts in through a drop-in.
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        # Crash dumps can hold secrets; keep them in the state directory,
        # never in the (read-only, shared) release directory.
        "ERL_CRASH_DUMP": f"/var/lib/{app}/erl_crash.dump",
    }
