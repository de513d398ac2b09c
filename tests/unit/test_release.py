"""Release detection (mix, generic) and release.toml parsing, on artifacts built in tmp_path."""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from pyrelctl.errors import BadInput, ExitCode
from pyrelctl.manifest import detect
from pyrelctl.names import app_name_from_release, check_app_name
from pyrelctl.openartifact import open_artifact
from pyrelctl.release import (
    VERBS,
    HealthCheck,
    HealthKind,
    Kind,
    Release,
    ServiceType,
    mix_commands,
)

SCRIPT = b"#!/bin/sh\nexit 0\n"

Files = Mapping[str, "bytes | str | tuple[bytes | str, int] | None"]


def write_tree(root: Path, files: Files) -> Path:
    """Create ``files`` below ``root``: content, (content, mode), or None for a directory."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, spec in files.items():
        path = root / rel
        if spec is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        content, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        path.chmod(mode)
    return root


def as_tarball(root: Path) -> Path:
    out = root.with_name(root.name + ".tar.gz")
    with tarfile.open(out, "w:gz") as tar:
        tar.add(root, arcname=".")
    return out


@pytest.fixture(params=["dir", "tar"])
def form(request: pytest.FixtureRequest) -> str:
    """Every positive detection runs on the directory and on a tarball of it."""
    return str(request.param)


def detect_files(tmp_path: Path, files: Files, form: str = "dir") -> Release:
    root = write_tree(tmp_path / "rel", files)
    path = as_tarball(root) if form == "tar" else root
    with open_artifact(path) as artifact:
        return detect(artifact)


def refused(tmp_path: Path, files: Files) -> BadInput:
    with pytest.raises(BadInput) as info:
        detect_files(tmp_path, files)
    assert info.value.exit_code is ExitCode.BAD_INPUT
    assert int(info.value.exit_code) == 2
    return info.value


# -- mix -------------------------------------------------------------------------


def mix_files(
    name: str = "shop", version: str = "1.2.3", start_erl: str | None = None
) -> dict[str, bytes | str | tuple[bytes | str, int] | None]:
    return {
        "releases/start_erl.data": start_erl if start_erl is not None else f"14.2 {version}\n",
        f"bin/{name}": (SCRIPT, 0o755),
        f"bin/{name}.bat": "@echo off\r\n",
        f"releases/{version}/{name}.rel": "{release, ...}.\n",
        f"releases/{version}/vm.args": "-name x\n",
        "releases/COOKIE": "cookie",
        f"lib/{name}-{version}/ebin/{name}.app": "{application, ...}.\n",
        "erts-14.2/bin/beam.smp": (b"\x7fELF", 0o755),
    }


def test_mix_release(tmp_path: Path, form: str) -> None:
    release = detect_files(tmp_path, mix_files(), form)
    assert release == Release(
        name="shop", version="1.2.3", kind=Kind.MIX, commands=mix_commands("shop")
    )
    assert release.command("start") == ("bin/shop", "start")
    assert release.command("rpc") == ("bin/shop", "rpc")
    assert release.command("remote") == ("bin/shop", "remote")
    assert release.command("nope") is None
    assert set(release.commands) == set(VERBS)
    assert release.service_type is ServiceType.EXEC
    assert release.health is None


def test_mix_name_with_an_underscore(tmp_path: Path, form: str) -> None:
    release = detect_files(tmp_path, mix_files("my_app", "0.1.0-rc.1"), form)
    assert (release.kind, release.name, release.version) == (Kind.MIX, "my_app", "0.1.0-rc.1")
    assert release.command("eval") == ("bin/my_app", "eval")
    assert check_app_name(app_name_from_release(release.name)) == "my-app"


def test_mix_bat_script_that_is_executable_does_not_confuse_detection(tmp_path: Path) -> None:
    files = mix_files()
    files["bin/shop.bat"] = ("@echo off\r\n", 0o755)
    assert detect_files(tmp_path, files).name == "shop"


def test_mix_rel_file_picks_the_script_among_other_executables(tmp_path: Path) -> None:
    files = mix_files()
    files["bin/migrate"] = (SCRIPT, 0o755)  # from a rel overlay
    files["bin/server"] = (SCRIPT, 0o755)
    assert detect_files(tmp_path, files).name == "shop"


def test_mix_without_rel_file_uses_the_only_plain_executable(tmp_path: Path) -> None:
    files = mix_files()
    del files["releases/1.2.3/shop.rel"]
    files["bin/README"] = "not executable"
    assert detect_files(tmp_path, files).name == "shop"


@pytest.mark.parametrize(
    ("start_erl", "word"),
    [
        ("14.2", "should hold"),
        ("", "should hold"),
        ("14.2 1.2.3 extra", "should hold"),
        ("14.2 ../../etc", "invalid release version"),
        ("14.2 .hidden", "invalid release version"),
        ("14.2 1.2.3/x", "invalid release version"),
        ("14.2 \uff11.2.3", "invalid release version"),
        ("14.2 " + "1" * 65, "invalid release version"),
    ],
)
def test_mix_with_bad_start_erl_data(tmp_path: Path, start_erl: str, word: str) -> None:
    error = refused(tmp_path, mix_files(start_erl=start_erl))
    assert word in error.message
    assert "start_erl.data" in error.message or "version" in error.message


def test_mix_start_erl_data_must_be_a_regular_file(tmp_path: Path) -> None:
    files = mix_files()
    del files["releases/start_erl.data"]
    files["releases/start_erl.data/x"] = "x"
    assert "not a regular file" in refused(tmp_path, files).message


def test_mix_with_no_executable_script(tmp_path: Path) -> None:
    files = mix_files()
    files["bin/shop"] = (SCRIPT, 0o644)
    error = refused(tmp_path, files)
    assert "cannot tell" in error.message
    assert "no executable" in error.message
    assert error.hint


def test_mix_with_two_candidate_scripts(tmp_path: Path) -> None:
    files = mix_files()
    del files["releases/1.2.3/shop.rel"]
    files["bin/other"] = (SCRIPT, 0o755)
    error = refused(tmp_path, files)
    assert "cannot tell" in error.message
    assert "other" in error.message and "shop" in error.message


def test_mix_with_release_toml_overlay(tmp_path: Path, form: str) -> None:
    files = mix_files()
    files["release.toml"] = """
[release]
name = "shop"
version = "1.2.3"

[service]
type = "notify"

[health]
tcp = "127.0.0.1:4000"

[hooks]
pre_switch = ["bin/shop", "eval", "Shop.Release.migrate()"]

[environment]
PHX_SERVER = "true"
"""
    release = detect_files(tmp_path, files, form)
    assert release == Release(
        name="shop",
        version="1.2.3",
        kind=Kind.MIX,
        commands=mix_commands("shop"),
        service_type=ServiceType.NOTIFY,
        health=HealthCheck(HealthKind.TCP, tcp="127.0.0.1:4000"),
        hooks={"pre_switch": ("bin/shop", "eval", "Shop.Release.migrate()")},
        environment={"PHX_SERVER": "true"},
    )


@pytest.mark.parametrize(
    ("overlay", "word"),
    [
        ('[commands]\nstart = ["bin/shop", "start"]\n', "remove [commands]"),
        ('[release]\nname = "other"\n', "does not match"),
        ('[release]\nversion = "9.9.9"\n', "does not match"),
        ('[release]\nkind = "generic"\n', "in a mix release"),
        ('[hooks]\npre_switch = ["../../bin/evil"]\n', "outside the release"),
        ('[hooks]\npost_switch = ["bin/nope"]\n', "not in the release"),
        ('[service]\ntype = "oneshot"\n', "service.type"),
        ("[wat]\n", "unknown table"),
    ],
)
def test_mix_overlay_refusals(tmp_path: Path, overlay: str, word: str) -> None:
    files = mix_files()
    files["release.toml"] = overlay
    assert word in refused(tmp_path, files).message


# -- generic -------------------------------------------------------------------------

FULL_MANIFEST = """\
[release]
name = "shop"
version = "1.4.0+build.7"
kind = "generic"
description = "The shop, 100% organic"

[commands]
start = ["bin/shop", "start", "--port", "8000"]
stop = ["bin/shop", "stop"]
rpc = ["bin/shop", "rpc"]
eval = ["./bin/shop", "eval"]
remote = ["bin/shop", "remote"]
pid = ["bin/shop", "pid"]
version = ["python3", "-c", "print(1)"]

[service]
type = "notify"

[health]
http = "http://127.0.0.1:8000/healthz"

[hooks]
pre_switch = ["bin/migrate", "up"]
post_switch = ["sh", "-c", "echo switched"]

[environment]
PORT = "8000"
_PRIVATE = "with spaces and $dollar"
LANG = "C.UTF-8"
"""

GENERIC_FILES: dict[str, bytes | str | tuple[bytes | str, int] | None] = {
    "bin/shop": (SCRIPT, 0o755),
    "bin/migrate": (SCRIPT, 0o755),
    "bin/check": (SCRIPT, 0o755),
    "lib/shop/app.py": "print('hi')\n",
    "share": None,
}


def generic(manifest: str | bytes, **extra: bytes | str | tuple[bytes | str, int] | None) -> Files:
    return {**GENERIC_FILES, "release.toml": manifest, **extra}


def test_full_generic_manifest(tmp_path: Path, form: str) -> None:
    release = detect_files(tmp_path, generic(FULL_MANIFEST), form)
    assert release == Release(
        name="shop",
        version="1.4.0+build.7",
        kind=Kind.GENERIC,
        commands={
            "start": ("bin/shop", "start", "--port", "8000"),
            "stop": ("bin/shop", "stop"),
            "rpc": ("bin/shop", "rpc"),
            "eval": ("./bin/shop", "eval"),
            "remote": ("bin/shop", "remote"),
            "pid": ("bin/shop", "pid"),
            "version": ("python3", "-c", "print(1)"),
        },
        service_type=ServiceType.NOTIFY,
        health=HealthCheck(HealthKind.HTTP, http="http://127.0.0.1:8000/healthz"),
        hooks={
            "pre_switch": ("bin/migrate", "up"),
            "post_switch": ("sh", "-c", "echo switched"),
        },
        environment={"PORT": "8000", "_PRIVATE": "with spaces and $dollar", "LANG": "C.UTF-8"},
        description="The shop, 100% organic",
    )
    assert release.health is not None
    assert release.health.describe() == "http http://127.0.0.1:8000/healthz"


MINIMAL = """\
[release]
name = "shop"
version = "1.0.0"

[commands]
start = ["bin/shop"]
"""


def test_minimal_generic_manifest_defaults(tmp_path: Path, form: str) -> None:
    release = detect_files(tmp_path, generic(MINIMAL), form)
    assert release == Release(
        name="shop", version="1.0.0", kind=Kind.GENERIC, commands={"start": ("bin/shop",)}
    )
    assert release.service_type is ServiceType.EXEC
    assert release.health is None
    assert release.hooks == {}
    assert release.environment == {}
    assert release.description == ""
    assert release.command("rpc") is None


@pytest.mark.parametrize(
    ("health", "expected", "described"),
    [
        (
            'http = "https://shop.example:8443/up"',
            HealthCheck(HealthKind.HTTP, http="https://shop.example:8443/up"),
            "http https://shop.example:8443/up",
        ),
        (
            'tcp = "127.0.0.1:8000"',
            HealthCheck(HealthKind.TCP, tcp="127.0.0.1:8000"),
            "tcp 127.0.0.1:8000",
        ),
        ('tcp = "[::1]:1"', HealthCheck(HealthKind.TCP, tcp="[::1]:1"), "tcp [::1]:1"),
        (
            'tcp = "localhost:65535"',
            HealthCheck(HealthKind.TCP, tcp="localhost:65535"),
            "tcp localhost:65535",
        ),
        (
            'command = ["bin/check", "--quick"]',
            HealthCheck(HealthKind.COMMAND, command=("bin/check", "--quick")),
            "command bin/check --quick",
        ),
    ],
)
def test_health_checks(tmp_path: Path, health: str, expected: HealthCheck, described: str) -> None:
    release = detect_files(tmp_path, generic(MINIMAL + f"\n[health]\n{health}\n"))
    assert release.health == expected
    assert expected.describe() == described


@pytest.mark.parametrize("service_type", ["exec", "notify"])
def test_service_types(tmp_path: Path, service_type: str) -> None:
    release = detect_files(tmp_path, generic(MINIMAL + f'\n[service]\ntype = "{service_type}"\n'))
    assert release.service_type == ServiceType(service_type)


def test_program_on_the_path_is_not_looked_up_in_the_release(tmp_path: Path) -> None:
    manifest = MINIMAL.replace('["bin/shop"]', '["python3", "-m", "shop"]')
    assert detect_files(tmp_path, generic(manifest)).command("start") == (
        "python3",
        "-m",
        "shop",
    )


def test_program_may_be_a_symlink_inside_the_release(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "rel", generic(MINIMAL.replace("bin/shop", "bin/current")))
    (root / "bin/current").symlink_to("shop")
    with open_artifact(root) as artifact:
        assert detect(artifact).command("start") == ("bin/current",)


# -- refusals --------------------------------------------------------------------------


def m(
    release: str = 'name = "shop"\nversion = "1.0.0"',
    commands: str = 'start = ["bin/shop"]',
    extra: str = "",
) -> str:
    """A manifest from its [release] and [commands] bodies, plus more tables."""
    return f"[release]\n{release}\n\n[commands]\n{commands}\n\n{extra}\n"


REFUSALS: list[tuple[str, str | bytes, str]] = [
    # TOML itself
    ("invalid-toml", "[release\nname = ", "not valid TOML"),
    ("invalid-toml-value", m(release='name = shop\nversion = "1"'), "not valid TOML"),
    ("duplicate-key", m(release='name = "a"\nname = "b"\nversion = "1"'), "not valid TOML"),
    ("not-utf8", b'[release]\nname = "sh\xffop"\n', "not valid TOML"),
    # schema
    ("unknown-table", m(extra="[deploy]\nhost = 'x'"), "unknown table [deploy]"),
    ("unknown-top-level-key", 'kind = "generic"\n' + m(), "unknown table [kind]"),
    (
        "unknown-key-release",
        m(release='name = "shop"\nversion = "1"\nauthor = "me"'),
        "release.author",
    ),
    (
        "unknown-key-commands",
        m(commands='start = ["bin/shop"]\nrestart = ["bin/shop"]'),
        "commands.restart",
    ),
    ("unknown-key-service", m(extra="[service]\nuser = 'root'"), "unknown key service.user"),
    ("unknown-key-health", m(extra="[health]\ngrpc = 'x:1'"), "unknown key health.grpc"),
    (
        "unknown-key-hooks",
        m(extra="[hooks]\npre_start = ['bin/shop']"),
        "unknown key hooks.pre_start",
    ),
    (
        "release-not-a-table",
        'release = "shop"\n[commands]\nstart = ["bin/shop"]\n',
        "must be a table",
    ),
    ("commands-not-a-table", '[release]\nname = "s"\nversion = "1"\ncommands = 1\n', "unknown key"),
    (
        "commands-array",
        'commands = ["bin/shop"]\n[release]\nname = "s"\nversion = "1"\n',
        "[commands] must be a table",
    ),
    ("environment-not-a-table", 'environment = "X=1"\n' + m(), "[environment] must be a table"),
    ("health-not-a-table", 'health = "http://x"\n' + m(), "[health] must be a table"),
    # wrong types
    ("name-int", m(release='name = 3\nversion = "1"'), "release.name must be a non-empty string"),
    (
        "name-empty",
        m(release='name = ""\nversion = "1"'),
        "release.name must be a non-empty string",
    ),
    ("name-missing", m(release='version = "1"'), "release.name"),
    ("version-float", m(release='name = "shop"\nversion = 1.0'), "release.version must be"),
    ("version-missing", m(release='name = "shop"'), "release.version"),
    ("kind-int", m(release='name = "shop"\nversion = "1"\nkind = 1'), "release.kind must be"),
    (
        "description-int",
        m(release='name = "s"\nversion = "1"\ndescription = 3'),
        "release.description",
    ),
    (
        "start-string",
        m(commands='start = "bin/shop start"'),
        "commands.start must be a non-empty list",
    ),
    ("start-empty-list", m(commands="start = []"), "commands.start must be a non-empty list"),
    ("start-with-int", m(commands='start = ["bin/shop", 8000]'), "commands.start must be"),
    ("start-empty-program", m(commands='start = ["", "x"]'), "commands.start must be"),
    ("start-table", m(commands="start = {program = 'bin/shop'}"), "commands.start must be"),
    (
        "rpc-string",
        m(commands='start = ["bin/shop"]\nrpc = "bin/shop rpc"'),
        "commands.rpc must be",
    ),
    (
        "service-type-other",
        m(extra="[service]\ntype = 'forking'"),
        'service.type must be "exec" or "notify"',
    ),
    ("service-type-int", m(extra="[service]\ntype = 1"), "service.type must be"),
    ("service-type-list", m(extra="[service]\ntype = ['notify']"), "service.type must be"),
    ("hook-string", m(extra="[hooks]\npre_switch = 'bin/migrate'"), "hooks.pre_switch must be"),
    ("env-value-int", m(extra="[environment]\nPORT = 8000"), "environment.PORT must be a string"),
    (
        "env-value-bool",
        m(extra="[environment]\nDEBUG = true"),
        "environment.DEBUG must be a string",
    ),
    # commands
    ("no-start", m(commands='rpc = ["bin/shop", "rpc"]'), "no start command"),
    ("empty-commands", m(commands=""), "no start command"),
    ("no-commands-table", '[release]\nname = "shop"\nversion = "1"\n', "no start command"),
    ("program-dotdot", m(commands='start = ["../x"]'), "outside the release"),
    ("program-absolute", m(commands='start = ["/bin/sh", "-c", "x"]'), "outside the release"),
    ("program-deep-dotdot", m(commands='start = ["bin/../../x"]'), "outside the release"),
    ("program-dot-dotdot", m(commands='start = ["./../bin/shop"]'), "outside the release"),
    ("program-parent", m(commands='start = ["bin/.."]'), "not in the release"),
    (
        "rpc-outside",
        m(commands='start = ["bin/shop"]\nrpc = ["/usr/bin/env"]'),
        "commands.rpc runs '/usr/bin/env', outside",
    ),
    (
        "hook-outside",
        m(extra="[hooks]\npre_switch = ['../migrate']"),
        "hooks.pre_switch runs '../migrate', outside",
    ),
    ("program-missing", m(commands='start = ["bin/nope"]'), "not in the release"),
    ("program-is-a-dir", m(commands='start = ["lib/shop/"]'), "not in the release"),
    ("program-is-dir-share", m(commands='start = ["./share"]'), "not in the release"),
    ("hook-missing", m(extra="[hooks]\npost_switch = ['bin/gone']"), "not in the release"),
    # health
    ("health-ftp", m(extra="[health]\nhttp = 'ftp://127.0.0.1/'"), "http:// or https://"),
    (
        "health-no-scheme",
        m(extra="[health]\nhttp = '127.0.0.1:8000/healthz'"),
        "http:// or https://",
    ),
    ("health-http-empty", m(extra="[health]\nhttp = ''"), "health.http must be a non-empty string"),
    ("health-http-int", m(extra="[health]\nhttp = 8000"), "health.http must be"),
    ("tcp-port-only", m(extra="[health]\ntcp = '8000'"), "HOST:PORT"),
    ("tcp-no-host", m(extra="[health]\ntcp = ':8000'"), "HOST:PORT"),
    ("tcp-port-zero", m(extra="[health]\ntcp = 'localhost:0'"), "HOST:PORT"),
    ("tcp-port-too-big", m(extra="[health]\ntcp = 'localhost:65536'"), "HOST:PORT"),
    ("tcp-port-name", m(extra="[health]\ntcp = 'localhost:http'"), "HOST:PORT"),
    ("tcp-port-empty", m(extra="[health]\ntcp = 'localhost:'"), "HOST:PORT"),
    ("tcp-port-negative", m(extra="[health]\ntcp = 'localhost:-1'"), "HOST:PORT"),
    ("tcp-int", m(extra="[health]\ntcp = 8000"), "health.tcp must be"),
    ("health-two-keys", m(extra="[health]\nhttp = 'http://x/'\ntcp = 'x:1'"), "exactly one"),
    (
        "health-three-keys",
        m(extra="[health]\nhttp = 'http://x/'\ntcp = 'x:1'\ncommand = ['true']"),
        "exactly one",
    ),
    ("health-command-string", m(extra="[health]\ncommand = 'bin/check'"), "health.command must be"),
    ("health-command-empty", m(extra="[health]\ncommand = []"), "health.command must be"),
    # environment names
    ("env-leading-digit", m(extra="[environment]\n1PORT = '1'"), "'1PORT' is not valid"),
    ("env-dash", m(extra="[environment]\nMY-VAR = '1'"), "'MY-VAR' is not valid"),
    ("env-space", m(extra="[environment]\n'MY VAR' = '1'"), "is not valid"),
    ("env-dot", m(extra="[environment]\nA.B = '1'"), "must be a string"),  # a dotted key is a table
    ("env-equals", m(extra="[environment]\n'A=B' = '1'"), "is not valid"),
    ("env-non-ascii", m(extra="[environment]\n'\u00c4PFEL' = '1'"), "is not valid"),
    ("env-fullwidth", m(extra="[environment]\n'PORT\uff11' = '1'"), "is not valid"),
    ("env-newline", m(extra='[environment]\n"A\\nB" = "1"'), "is not valid"),
    # kinds and versions
    # python releases get their commands from pyrelctl and need a [python] table
    (
        "kind-python",
        m(release='name = "shop"\nversion = "1"\nkind = "python"'),
        "remove [commands]",
    ),
    (
        "kind-python-no-table",
        '[release]\nname = "shop"\nversion = "1"\nkind = "python"\n',
        "needs a [python] table",
    ),
    ("python-table-in-generic", m(extra='[python]\npython = "3.11"'), "python releases only"),
    (
        "kind-mix-without-start-erl",
        m(release='name = "shop"\nversion = "1"\nkind = "mix"'),
        "no releases/start_erl.data",
    ),
    (
        "kind-unknown",
        m(release='name = "shop"\nversion = "1"\nkind = "docker"'),
        "unknown release.kind 'docker'",
    ),
    ("kind-empty", m(release='name = "shop"\nversion = "1"\nkind = ""'), "release.kind must be"),
    ("version-dotdot", m(release='name = "shop"\nversion = ".."'), "invalid release version"),
    (
        "version-slash",
        m(release='name = "shop"\nversion = "1.0/../../x"'),
        "invalid release version",
    ),
    ("version-leading-dot", m(release='name = "shop"\nversion = ".1"'), "invalid release version"),
    ("version-newline", m(release='name = "shop"\nversion = "1.0\\n"'), "invalid release version"),
    ("version-space", m(release='name = "shop"\nversion = "1 0"'), "invalid release version"),
    (
        "version-fullwidth",
        m(release='name = "shop"\nversion = "\uff11.0"'),
        "invalid release version",
    ),
    (
        "version-too-long",
        m(release=f'name = "shop"\nversion = "{"1" * 65}"'),
        "invalid release version",
    ),
]


@pytest.mark.parametrize(
    ("manifest", "word"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_generic_manifest_refused(tmp_path: Path, manifest: str | bytes, word: str) -> None:
    error = refused(tmp_path, generic(manifest))
    assert word in error.message, error.message
    assert error.message.startswith("release.toml: ") or "version" in error.message


def test_at_least_the_refusals_the_design_asks_for() -> None:
    assert len(REFUSALS) >= 40
    assert len({r[0] for r in REFUSALS}) == len(REFUSALS)


@pytest.mark.parametrize(
    ("files", "word"),
    [
        ({"bin/shop": (SCRIPT, 0o755)}, "not a release"),
        ({"release.toml/x": "x", "bin/shop": (SCRIPT, 0o755)}, "not a regular file"),
        (generic(b"#" * (1024 * 1024 + 1)), "larger than"),
    ],
    ids=["no-manifest", "manifest-is-a-dir", "manifest-too-big"],
)
def test_artifact_without_a_usable_manifest(tmp_path: Path, files: Files, word: str) -> None:
    error = refused(tmp_path, files)
    assert word in error.message


def test_manifest_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "rel", GENERIC_FILES)
    (root / "real.toml").write_text(MINIMAL)
    (root / "release.toml").symlink_to("real.toml")
    with open_artifact(root) as artifact, pytest.raises(BadInput, match="not a regular file"):
        detect(artifact)


def test_invalid_release_name_never_becomes_an_app_name(tmp_path: Path) -> None:
    manifest = MINIMAL.replace('name = "shop"', 'name = "../Shop Name"')
    try:
        release = detect_files(tmp_path, generic(manifest))
    except BadInput:
        return
    with pytest.raises(BadInput):
        check_app_name(app_name_from_release(release.name))


# -- known bugs -------------------------------------------------------------------------


def test_empty_environment_variable_name_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, generic(m(extra='[environment]\n"" = "x"')))
    assert "is not valid" in error.message


def test_tcp_port_with_a_superscript_digit_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, generic(m(extra="[health]\ntcp = 'localhost:\u00b2'")))
    assert "HOST:PORT" in error.message


def test_tcp_port_with_fullwidth_digits_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, generic(m(extra="[health]\ntcp = 'localhost:\uff18\uff10'")))


@pytest.mark.parametrize("program", ["../../usr/bin/evil", "/bin/sh", "bin/missing"])
def test_health_command_program_is_checked_like_commands(tmp_path: Path, program: str) -> None:
    refused(tmp_path, generic(m(extra=f"[health]\ncommand = ['{program}']")))
