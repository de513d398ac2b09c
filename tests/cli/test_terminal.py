"""No text from a release or an artifact reaches root's terminal raw (issue 26, 2).

Each test runs ``python -m pyrelctl`` as a new process with its stdout and
stderr on a pseudo-terminal, and looks at the bytes the terminal receives:
no ESC, BEL, CSI (0x9b), OSC (0x9d) or bidi override the release wrote may
be among them, only their visible rendering (``\\x1b``). ``--json`` keeps
the text exact (JSON escapes it).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from devtools import ptyrun
from devtools.ptyrun import HOSTILE, assert_harmless
from devtools.releases import make_generic_release

REPO = Path(__file__).resolve().parents[2]


def on_pty(*args: str | os.PathLike[str]) -> tuple[int, bytes]:
    """``python -m pyrelctl ARGS`` with stdout and stderr on a pty: its status and bytes."""
    env = {**os.environ, "NO_COLOR": "1"}
    return ptyrun.on_pty([sys.executable, "-m", "pyrelctl", *args], env=env, cwd=REPO, timeout=60)


def test_the_artifact_file_name_is_shown_not_obeyed(tmp_path: Path) -> None:
    built = make_generic_release(tmp_path / "a", name="shop", version="1.0.0")
    # The file name is the artifact's, chosen by whoever made it; a raw 0x9b
    # byte (no UTF-8) too.
    hostile = os.fsencode(HOSTILE).replace(b"/", b"") + b"\x9b1A.tar.gz"
    artifact = os.path.join(os.fsencode(tmp_path), hostile)
    os.rename(built, artifact)
    code, out = on_pty("--root", tmp_path / "root", "install", os.fsdecode(artifact))
    assert code == 0, out
    text = assert_harmless(out)
    assert "unpacking \\x1b]0;pwned\\x07\\x1b[1A\\x1b[2Kshop 2.0.0 is up" in text
    assert "\\x9b1A.tar.gz into" in text  # the undecodable byte, as its value


def _failed_record(root: Path) -> None:
    """The history of a deploy whose health command failed with the release's last line."""
    history = root / "var/lib/pyrelctl/shop/history.jsonl"
    record = {
        "time": 1_700_000_000.0,
        "action": "install",
        "from": "1.0.0",
        "to": "2.0.0",
        "result": f"auto-rollback: health command exited with status 1: {HOSTILE}",
        "user": "root",
    }
    with history.open("a") as f:
        f.write(json.dumps(record) + "\n")


def test_history_replays_a_failure_reason_shown_not_obeyed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    artifact = make_generic_release(tmp_path / "a", name="shop", version="1.0.0")
    assert on_pty("--root", root, "install", artifact)[0] == 0
    _failed_record(root)
    code, out = on_pty("--root", root, "history", "shop")
    assert code == 0, out
    text = assert_harmless(out)
    assert "shop 2.0.0 is up" in text and "\\u202egnp.exe" in text
    # --json keeps the exact text, escaped by JSON.
    code, out = on_pty("--root", root, "--json", "history", "shop")
    assert code == 0
    assert "\x1b" not in out.decode()
    doc = json.loads(out.decode().replace("\r\n", "\n"))
    assert doc["history"][-1]["result"].endswith(HOSTILE)


def test_every_line_for_people_is_printed_by_the_one_echo() -> None:
    """click.echo (or print) is called only by cli.common.echo and echo_exact."""
    import ast

    calls = []
    for path in sorted((REPO / "pyrelctl").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name not in ("click.echo", "click.secho", "print", "sys.stdout.write"):
                continue
            where = next(
                (f.name for f in functions if f.lineno <= node.lineno <= (f.end_lineno or 0)),
                None,
            )
            calls.append((path.relative_to(REPO).as_posix(), where, name))
    allowed = {
        ("pyrelctl/cli/common.py", "echo", "click.echo"),
        ("pyrelctl/cli/common.py", "echo_exact", "click.echo"),
        # sys.exit("text")'s message, as the interpreter itself prints it.
        ("pyrelctl/cli/__init__.py", "run", "print"),
    }
    assert set(calls) <= allowed, sorted(set(calls) - allowed)


def test_an_error_line_is_a_few_hundred_characters_whatever_the_artifact_holds(
    tmp_path: Path,
) -> None:
    """Issue 26 (1): a 800 KB version in release.toml makes one short error line."""
    release = make_generic_release(tmp_path / "a", name="shop", version="1.0.0", tarball=False)
    manifest = release / "release.toml"
    huge = "\x1b]0;x\x07" * 50_000
    text = manifest.read_text().replace('version = "1.0.0"', f"version = {json.dumps(huge)}")
    manifest.write_text(text)
    code, out = ptyrun.on_pty(
        [sys.executable, "-m", "pyrelctl", "--root", tmp_path / "root", "install", release],
        cwd=REPO,
        timeout=60,
    )
    assert code == 2, out[:1000]
    lines = out.decode().splitlines()
    assert max(len(line) for line in lines) <= 400, [len(line) for line in lines]
    error = next(line for line in lines if line.startswith("error: invalid release version"))
    cut = re.search(r"\.\.\. \((\d+) characters in all\)$", error)
    assert cut is not None and int(cut[1]) > len(huge), error
    assert "\x1b" not in out.decode()
