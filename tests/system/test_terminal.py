"""A release's own text reaches root's terminal shown, never obeyed (issue 26, 2).

pyrelctl runs in the booted systemd with stdout and stderr on a pty
(devtools/ptyrun.py, inside the machine); the release's failing pre_switch
hook, its health command and the previous release's on_failure hook print
escape sequences (devtools.ptyrun.HOSTILE, plus a raw 0x9b byte), and the
bytes the terminal gets are checked. The offline paths (an artifact's file
name, history) are in tests/cli/test_terminal.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from devtools.machine import Machine, MachineCommand
from devtools.ptyrun import HOSTILE, assert_harmless
from tests.system.conftest import REPO_ROOT, VENV

#: printf's format for HOSTILE's UTF-8 bytes (but its carriage return: the
#: last line would be empty) and a raw 0x9b (no UTF-8); in the app's
#: configuration, so that the command (quoted in the error line) stays short.
_FORMAT = (
    "".join(
        chr(b) if b < 0x80 and (chr(b).isalnum() or chr(b) in " .;[]") else f"\\{b:03o}"
        for b in HOSTILE.replace("\r", "").encode()
    )
    + "\\233"
)
#: A command that prints HOSTILE and fails; a TOML array (JSON's strings are TOML's).
_FAILING = json.dumps(["sh", "-c", 'printf "$TTY_FORMAT"; exit 1'])


def on_pty(machine: Machine, *args: str | os.PathLike[str]) -> tuple[int, str]:
    """``pyrelctl ARGS`` in the machine on a pty: its status and what the terminal got."""
    proc = machine.run(
        [
            VENV / "bin/python",
            REPO_ROOT / "devtools/ptyrun.py",
            VENV / "bin/pyrelctl",
            *args,
        ],
        env={"NO_COLOR": "1"},
        timeout=300,
    )
    status, hexed = proc.stdout.split()
    return int(status), assert_harmless(bytes.fromhex(hexed))


def test_hook_and_health_output_is_shown_not_obeyed(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    app = "ttyhooks"
    cleanup(app)
    # 1.0.0's on_rollback hook runs after each failed deploy below, as
    # current (notify.failure_event: the previous release was restored).
    assert pyrelctl("config", "set", app, f"TTY_FORMAT={_FORMAT}").returncode == 0
    hooks = f"[hooks]\non_failure = {_FAILING}\non_rollback = {_FAILING}\n"
    first = make_release(name=app, version="1.0.0", extra_toml=hooks)
    assert pyrelctl("install", first).returncode == 0
    hooked = make_release(
        name=app, version="2.0.0", extra_toml=f"[hooks]\npre_switch = {_FAILING}\n"
    )
    status, text = on_pty(machine, "install", hooked)
    assert status == 3, text
    assert "output of the failed hook:" in text
    assert "shop 2.0.0 is up" in text and "\\u202egnp.exe" in text
    # 1.0.0's hook, with its last line shown; the raw 0x9b that is no UTF-8
    # arrives as U+FFFD (run.run decodes so).
    warning = next(line for line in text.splitlines() if line.startswith("warning: on_rollback"))
    assert "exited with status 1: \\x1b]0;pwned\\x07" in warning
    assert warning.rstrip("\r").endswith("\ufffd"), warning
    unhealthy = make_release(
        name=app, version="3.0.0", extra_toml=f"[health]\ncommand = {_FAILING}\n"
    )
    status, text = on_pty(machine, "install", unhealthy, "--timeout", "5")
    assert status == 3, text
    error = next(line for line in text.splitlines() if line.startswith("error: "))
    assert 'printf "$TTY_FORMAT"; exit 1 exited with status 1: \\x1b]0;pwned\\x07' in error
    assert "\\x1b[1A\\x1b[2Kshop 2.0.0 is up" in error, error
    # The reason, replayed by history long after.
    status, text = on_pty(machine, "history", app)
    assert status == 0 and "\\x1b[1A\\x1b[2Kshop 2.0.0 is up" in text, text
