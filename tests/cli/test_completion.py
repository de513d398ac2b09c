"""Shell completion (bash, zsh, fish) of app names and versions, the man page and the
completion scripts that packages ship (packaging/gendocs.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from devtools.releases import make_generic_release
from pyrelctl.cli import cli
from tests.cli.conftest import run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Apps `hello` (1.0, 2.0 current, 3.0 failed) and `world` (0.1) below tmp_path/root."""
    root = tmp_path / "root"
    for name, version in (("hello", "1.0"), ("hello", "2.0"), ("world", "0.1")):
        artifact = make_generic_release(tmp_path / "a", name=name, version=version)
        assert run(capsys, "--root", root, "install", artifact).code == 0
    failed = make_generic_release(tmp_path / "a", name="hello", version="3.0")
    assert run(capsys, "--root", root, "install", failed, "--no-start").code == 0
    assert run(capsys, "--root", root, "rollback", "hello", "--to", "2.0").code == 0
    index = root / "var/lib/pyrelctl/hello/releases.json"
    data = json.loads(index.read_text())
    data["3.0"]["mark"] = "failed"
    index.write_text(json.dumps(data))
    return root


def complete(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    shell: str,
    line: str,
) -> list[str]:
    """What pyrelctl answers a shell that completes ``line`` (the cursor at its end)."""
    words = line.split()
    monkeypatch.setenv("_PYRELCTL_COMPLETE", f"{shell}_complete")
    monkeypatch.setenv("COMP_WORDS", line)
    if shell == "fish":  # fish passes the word being completed itself
        monkeypatch.setenv("COMP_CWORD", "" if line.endswith(" ") else words[-1])
    else:
        monkeypatch.setenv("COMP_CWORD", str(len(words) if line.endswith(" ") else len(words) - 1))
    result = run(capsys, *words[1:])
    assert result.code == 0, result.err
    return result.out.splitlines()


def values(shell: str, out: list[str]) -> list[str]:
    """The completed words, whatever each shell's protocol."""
    if shell == "bash":  # "type,value" per line
        return [line.split(",", 1)[1] for line in out]
    if shell == "zsh":  # type, value, help: three lines each
        return [out[i + 1] for i in range(0, len(out), 3)]
    return [line.split(",", 1)[1].split("\t")[0] for line in out]  # fish: "type,value\thelp"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_app_names(
    shell: str, root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = complete(capsys, monkeypatch, shell, f"pyrelctl --root {root} releases ")
    assert values(shell, out) == ["hello", "world"]
    out = complete(capsys, monkeypatch, shell, f"pyrelctl --root {root} status w")
    assert values(shell, out) == ["world"]
    if shell != "bash":  # zsh and fish show the help text beside the value
        assert any("current 0.1" in line for line in out)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_versions(
    shell: str, root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # rollback --to offers neither the current release nor a failed one
    out = complete(capsys, monkeypatch, shell, f"pyrelctl --root {root} rollback hello --to ")
    assert values(shell, out) == ["1.0"]
    # eval --release offers every release, newest first
    out = complete(capsys, monkeypatch, shell, f"pyrelctl --root {root} eval hello --release ")
    assert values(shell, out) == ["3.0", "2.0", "1.0"]


def test_without_root_the_host_is_read(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # This machine's /var/lib/pyrelctl is not the test's: record what is read instead.
    seen: list[Path] = []

    class Spy:
        def __init__(self, root: Path) -> None:
            seen.append(root)

        def apps(self) -> list[str]:
            return []

    monkeypatch.setattr("pyrelctl.completion.Layout", Spy)
    complete(capsys, monkeypatch, "bash", "pyrelctl status ")
    assert seen == [Path("/")]


def test_every_app_argument_completes_app_names(root: Path) -> None:
    """Commands added later get completion too, or this fails."""
    group_ctx = click.Context(cli, info_name="pyrelctl")
    group_ctx.params["root"] = root
    checked = []
    for name in cli.list_commands(group_ctx):
        command = cli.get_command(group_ctx, name)
        assert command is not None, name
        commands = (
            command.commands.items() if isinstance(command, click.Group) else [(name, command)]
        )
        for sub_name, sub in commands:
            ctx = click.Context(sub, info_name=sub_name, parent=group_ctx)
            for param in sub.params:
                if param.name == "app" and isinstance(param, click.Argument):
                    offered = [item.value for item in param.shell_complete(ctx, "")]
                    assert offered == ["hello", "world"], f"{sub_name}: {offered}"
                    checked.append(sub_name)
    assert {"rollback", "releases", "status", "logs", "doctor", "uninstall"} <= set(checked)


def test_completion_never_fails_loudly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "var/lib/pyrelctl/hello").mkdir(parents=True)
    (tmp_path / "opt/hello/releases").mkdir(parents=True)
    (tmp_path / "var/lib/pyrelctl/hello/releases.json").write_text("{not json")
    (tmp_path / "opt/hello/current").write_text("not a link")
    out = complete(capsys, monkeypatch, "bash", f"pyrelctl --root {tmp_path} rollback hello --to ")
    assert [line for line in out if line] == []


# -- what the packages ship ----------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gendocs")
    subprocess.run(
        [
            sys.executable,
            REPO / "packaging/gendocs.py",
            "--man",
            out / "man",
            "--completions",
            out / "completions",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": "1700000000"},
        check=True,
    )
    return out


@pytest.mark.parametrize(
    ("shell", "name", "marker"),
    [
        ("bash", "bash/pyrelctl", "complete -o nosort -F _pyrelctl_completion pyrelctl"),
        ("zsh", "zsh/_pyrelctl", "compdef _pyrelctl_completion pyrelctl"),
        ("fish", "fish/pyrelctl.fish", "complete --no-files --command pyrelctl"),
    ],
)
def test_completion_scripts_are_clicks(
    shell: str,
    name: str,
    marker: str,
    generated: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = (generated / "completions" / name).read_text()
    assert marker in script
    monkeypatch.setenv("_PYRELCTL_COMPLETE", f"{shell}_source")
    assert run(capsys).out == script  # the same text `pyrelctl` prints for the shell


def test_bash_completion_script_works_in_bash(generated: Path, root: Path) -> None:
    """bash sources the shipped script and completes an app name through pyrelctl."""
    bash = shutil.which("bash")
    assert bash is not None
    entry = Path(sys.executable).parent / "pyrelctl"
    script = f"""
        PATH={entry.parent}:$PATH
        source {generated / "completions/bash/pyrelctl"}
        complete -p pyrelctl
        COMP_WORDS=(pyrelctl --root {root} history wo); COMP_CWORD=4
        _pyrelctl_completion pyrelctl wo history
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    out = subprocess.run([bash, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "complete",
        "-o",
        "nosort",
        "-F",
        "_pyrelctl_completion",
        "pyrelctl",
        "world",
    ], out.stderr


def test_man_page(generated: Path) -> None:
    page = (generated / "man/pyrelctl.1").read_text()
    assert page.startswith('.TH PYRELCTL 1 "2023-11-14" "pyrelctl ')  # SOURCE_DATE_EPOCH
    sections = re.findall(r'^\.SS "pyrelctl (\S+)', page, re.MULTILINE)
    assert sections[:3] == ["install", "rollback", "status"]  # the order of --help
    assert {"doctor", "rpc", "eval", "prune", "uninstall"} <= set(sections)
    for option in (r"\-\-root", r"\-\-health\-http", r"\-\-keep"):
        assert f"\\fB{option}\\fR" in page
    assert "\n.SH EXIT STATUS\n" in page and "\n.B 5\n" in page
    man = shutil.which("man")
    if man is not None:  # groff's own complaints, as lintian runs them
        proc = subprocess.run(
            [man, "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", generated / "man/pyrelctl.1"],
            capture_output=True,
            text=True,
            env={**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"},
            check=False,
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
