"""Any manifest value either installs or is refused with nothing changed (issue 16).

DESIGN.md, step 1: every check runs before the first write. The corpus in
test_bad_input.py names known hostile artifacts; here hypothesis puts hostile
text (newlines, quotes, specifiers, Exec prefixes, NULs, non-ASCII) into every
value of a release.toml in turn, installs it offline into an empty root and
into one with the app installed, and requires one of two outcomes: exit 0, or
exit 2 with one error line and the --root tree byte-for-byte as it was.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrelctl.cli import main
from tests.cli.conftest import run
from tests.cli.test_bad_input import (
    M,
    assert_one_error_line,
    release_members,
    snapshot,
    tarball,
)

#: Characters systemd, TOML, the shell or a path read specially.
HOSTILE = "\n\r\t\x00\x7f%$\\\";' +!@-:|/.*~`{}[]#="
_free = st.text(
    alphabet=st.one_of(
        st.sampled_from(HOSTILE),
        st.characters(exclude_categories=["Cs"]),  # no lone surrogates: not TOML
    ),
    max_size=12,
)
#: Mostly values with at least one hostile character somewhere in them.
text = st.one_of(
    st.builds(lambda a, h, b: a + h + b, _free, st.sampled_from(HOSTILE), _free),
    _free,
)


def toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, surrogates aside)."""
    return json.dumps(value)


def argv(values: list[str]) -> str:
    return "[" + ", ".join(toml(v) for v in values) + "]"


#: One manifest per field: the hostile value put where the field goes.
FIELDS: dict[str, Callable[[str], str]] = {
    "name": lambda v: f'[release]\nname = {toml(v)}\nversion = "1"\n',
    "version": lambda v: f'[release]\nname = "app"\nversion = {toml(v)}\n',
    "description": lambda v: f'[release]\nname = "app"\nversion = "1"\ndescription = {toml(v)}\n',
    "program": lambda v: f"[commands]\nstart = {argv([v])}\n",
    "argument": lambda v: f"[commands]\nstart = {argv(['bin/app', v])}\n",
    "environment": lambda v: f"[environment]\nVAR = {toml(v)}\n",
    "environment-name": lambda v: f'[environment]\n{toml(v)} = "1"\n',
    "health-http": lambda v: f"[health]\nhttp = {toml('http://127.0.0.1:80/' + v)}\n",
    "health-tcp": lambda v: f"[health]\ntcp = {toml(v)}\n",
    "health-command": lambda v: f"[health]\ncommand = {argv([v, '-c', v])}\n",
    "hook": lambda v: f"[hooks]\npre_switch = {argv([v])}\n",
    "listen": lambda v: f"[socket]\nlisten = [{toml(v)}]\n",
    "socket-name": lambda v: f'[socket]\nlisten = ["127.0.0.1:8000"]\nname = {toml(v)}\n',
    "writable-path": lambda v: f"[service]\nwritable_paths = [{toml('/srv/' + v)}]\n",
    "service-type": lambda v: f"[service]\ntype = {toml(v)}\n",
}

BASE = {
    "release": '[release]\nname = "app"\nversion = "1"\n',
    "commands": '[commands]\nstart = ["bin/app", "start"]\n',
}


def manifest_with(field: str, value: str) -> str:
    part = FIELDS[field](value)
    tables = dict(BASE)
    table = part.split("]", 1)[0].lstrip("[")
    if table in tables:
        tables[table] = part
        return "\n".join(tables.values())
    return "\n".join([*tables.values(), part])


@pytest.fixture(scope="module")
def installed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with app 0 installed, copied for each example."""
    base = tmp_path_factory.mktemp("installed")
    artifact = tarball(base / "app-0.tar.gz", release_members(manifest_with("version", "0")))
    root = base / "root"
    # main() directly: run() needs the function-scoped capsys.
    with pytest.raises(SystemExit) as done:
        main(["--root", str(root), "-q", "install", str(artifact)])
    assert done.value.code in (0, None)
    return root


@pytest.mark.parametrize("field", sorted(FIELDS))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=text, installed=st.booleans())
def test_a_value_installs_or_changes_nothing(
    capsys: pytest.CaptureFixture[str],
    installed_root: Path,
    field: str,
    value: str,
    installed: bool,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "root"
        if installed:
            shutil.copytree(installed_root, root, symlinks=True)
        else:
            root.mkdir()
        members = release_members(manifest_with(field, value))
        members.append(M("bin/tool", data=b"#!/bin/sh\n", mode=0o755))
        artifact = tarball(work / "a.tar.gz", members)
        before = snapshot(root)
        result = run(capsys, "--root", root, "install", artifact)
        if result.code == 0:
            return
        assert_one_error_line(result, "")
        assert snapshot(root) == before, (field, value, result.err)
