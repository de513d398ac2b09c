"""One manifest schema for every kind (issue 17): ``[tool.pyrelctl]`` accepts
release.toml's shared tables, checked by the same parser with the same
messages, and the built release.toml carries them; a python release's hook
runs a script of its own venv."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pyrelctl.buildconfig import read_config, render_manifest
from pyrelctl.deploy import hooks
from pyrelctl.errors import BadInput
from pyrelctl.layout import Layout
from pyrelctl.manifest import detect, parse_manifest
from pyrelctl.openartifact import open_artifact
from pyrelctl.pyspec import venv_argv
from pyrelctl.release import HealthKind, Kind, Release, Sandbox, ServiceType
from tests.unit.test_python_build import fake_release

DJANGO_TOOL: dict[str, Any] = {
    "start": ["gunicorn", "mysite.wsgi"],
    "description": "My Django site",
    "hooks": {
        "pre_switch": ["python", "-m", "django", "migrate", "--noinput"],
        "post_switch": ["bin/demo", "eval", "print(1)"],
    },
    "service": {
        "type": "exec",
        "stop_timeout": 45,
        "memory_deny_write_execute": False,
        "bind_privileged_ports": True,
        "writable_paths": ["/srv/mysite/media"],
    },
    "health": {"command": ["python", "-c", "print(1)"]},
    "environment": {"DJANGO_SETTINGS_MODULE": "mysite.settings"},
    "socket": {"listen": ["127.0.0.1:8000"]},
}


def build_manifest(tool: dict[str, Any]) -> str:
    return render_manifest(
        name="demo",
        version="2.0",
        description="the project's summary",
        python="3.11",
        config=read_config({"tool": {"pyrelctl": tool}}),
        packages=["demo==2.0"],
        pip="tools/pip-24.0-py3-none-any.whl",
    )


def test_tool_tables_reach_the_built_release(tmp_path: Path) -> None:
    text = build_manifest(DJANGO_TOOL)
    with open_artifact(fake_release(tmp_path, text)) as artifact:
        release = detect(artifact)
    assert release.kind is Kind.PYTHON
    assert release.description == "My Django site"
    assert release.hooks == {
        "pre_switch": ("python", "-m", "django", "migrate", "--noinput"),
        "post_switch": ("bin/demo", "eval", "print(1)"),
    }
    assert release.service_type is ServiceType.EXEC
    assert release.stop_timeout == 45
    assert release.sandbox == Sandbox(
        memory_deny_write_execute=False,
        bind_privileged_ports=True,
        writable_paths=("/srv/mysite/media",),
    )
    assert release.health is not None and release.health.kind is HealthKind.COMMAND
    assert release.environment == {"DJANGO_SETTINGS_MODULE": "mysite.settings"}
    assert release.socket is not None and release.socket.listen == ("127.0.0.1:8000",)


def test_defaults_stay_what_they_were(tmp_path: Path) -> None:
    text = build_manifest({"start": "demo"})
    doc = tomllib.loads(text)
    assert doc["service"] == {"type": "notify"}
    assert "hooks" not in doc and "health" not in doc
    assert doc["release"]["description"] == "the project's summary"
    # The short `type` is service.type.
    assert tomllib.loads(build_manifest({"start": "demo", "type": "exec"}))["service"] == {
        "type": "exec"
    }


#: A bad value of a shared table: the same message from release.toml and
#: [tool.pyrelctl], each with its own prefix.
BAD_TABLES: list[tuple[str, Any, str]] = [
    ("service", {"type": "forking"}, 'service.type must be "exec" or "notify"'),
    ("service", {"stop_timeout": 0}, "service.stop_timeout must be whole seconds"),
    ("service", {"stop_timeout": True}, "service.stop_timeout must be whole seconds"),
    ("service", {"restart": "always"}, "unknown key service.restart"),
    ("service", {"bind_privileged_ports": "yes"}, "service.bind_privileged_ports must be true"),
    ("service", {"writable_paths": ["srv"]}, "service.writable_paths entry 'srv' is not a plain"),
    ("service", "exec", "[service] must be a table"),
    ("hooks", {"pre_switch": []}, "hooks.pre_switch must be a non-empty list"),
    ("hooks", {"pre_switch": ["+python"]}, "begins with '+'"),
    ("hooks", {"pre_switch": ["python", "a\nb"]}, "contains the control character"),
    ("hooks", {"post_deploy": ["python"]}, "unknown key hooks.post_deploy"),
    ("health", {"http": "ftp://x"}, "health.http must be an http:// or https:// URL"),
    ("health", {"http": "http://a", "tcp": "a:1"}, "[health] takes exactly one"),
    ("health", {"tcp": "nohost"}, "health.tcp must be HOST:PORT"),
    ("environment", {"1X": "a"}, "environment variable name '1X' is not valid"),
    ("environment", {"X": 1}, "environment.X must be a string"),
    ("socket", {"listen": []}, "socket.listen must be a non-empty list"),
    ("socket", {"port": 80}, "unknown key socket.port"),
]


MINIMAL_MANIFEST = """
[release]
name = "demo"
version = "2.0"
kind = "python"

[python]
python = "3.11"
start = ["demo"]
packages = ["demo==2.0"]
pip = "tools/pip-24.0-py3-none-any.whl"
"""


def _message(error: pytest.ExceptionInfo[BadInput], prefix: str) -> str:
    assert error.value.message.startswith(prefix + ": "), error.value.message
    return error.value.message.removeprefix(prefix + ": ")


@pytest.mark.parametrize(("table", "value", "message"), BAD_TABLES)
def test_the_same_check_and_message_for_both_manifests(
    tmp_path: Path, table: str, value: Any, message: str
) -> None:
    with pytest.raises(BadInput) as from_tool:
        read_config({"tool": {"pyrelctl": {"start": "demo", table: value}}})
    said_by_tool = _message(from_tool, "pyproject.toml: [tool.pyrelctl]")
    assert message in said_by_tool

    # The same table in a python release's release.toml (top-level keys
    # come before the first [table] header).
    text = f"{table} = {_inline(value)}\n" + MINIMAL_MANIFEST
    root = fake_release(tmp_path, text)
    with pytest.raises(BadInput) as from_manifest, open_artifact(root) as artifact:
        parse_manifest((root / "release.toml").read_bytes(), artifact)
    assert _message(from_manifest, "release.toml") == said_by_tool


def _inline(value: Any) -> str:
    """A TOML inline value (what tests here need: strings, ints, bools, lists, tables)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return "{ " + ", ".join(f"{k} = {_inline(v)}" for k, v in value.items()) + " }"


def test_type_given_twice_is_refused() -> None:
    with pytest.raises(BadInput, match=r"type and service\.type both given"):
        read_config(
            {"tool": {"pyrelctl": {"start": "demo", "type": "exec", "service": {"type": "exec"}}}}
        )


def test_a_hook_of_a_python_release_runs_a_script_of_its_venv() -> None:
    with pytest.raises(BadInput, match="runs 'venv/bin/python'; a python release's hook"):
        read_config(
            {"tool": {"pyrelctl": {"start": "demo", "hooks": {"pre_switch": ["venv/bin/python"]}}}}
        )
    assert venv_argv(["python", "-m", "django", "migrate"]) == (
        "venv/bin/python", "-m", "django", "migrate",
    )  # fmt: skip
    assert venv_argv(["python3"]) == ("venv/bin/python",)
    assert venv_argv(["django-admin", "check"]) == ("venv/bin/django-admin", "check")
    assert venv_argv(["bin/mysite", "eval", "1"]) == ("bin/mysite", "eval", "1")


def test_run_hook_resolves_the_program_in_the_new_releases_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transient unit runs /opt/APP/releases/NEW/venv/bin/python, never a host
    `python` on the service's PATH; a generic release's bare program is left to PATH."""
    seen: list[tuple[str, ...]] = []

    def fake_run(argv: tuple[str, ...], **_: object) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr("pyrelctl.run.run", fake_run)
    app = Layout(tmp_path).app("mysite")
    hook = ("python", "-m", "django", "migrate", "--noinput")
    for kind, program in (
        (Kind.PYTHON, "/opt/mysite/releases/1.1.0/venv/bin/python"),
        (Kind.GENERIC, "python"),
    ):
        release = Release(name="mysite", version="1.1.0", kind=kind, hooks={"pre_switch": hook})
        assert hooks.run_hook(tmp_path, app, release, "pre_switch", lambda _: None) is None
        command = seen.pop()
        assert list(command[command.index("--") + 1 :]) == [program, *hook[1:]]
        assert "--property=WorkingDirectory=/opt/mysite/releases/1.1.0" in command
