"""`pyrelctl config` against a real systemd: values reach the process exactly, a change
the app rejects is undone by itself, VM flags reach a real mix release (issue 18)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from devtools.machine import Machine, MachineCommand

#: Exits at start when MODE is "bad"; else prints its variables and sleeps.
PICKY = """#!/bin/sh
case "$1" in
start)
    if [ "${MODE:-ok}" = bad ]; then echo "MODE=bad is not a mode I know" >&2; exit 1; fi
    echo "picky started with MODE=${MODE:-ok}"
    exec sleep infinity ;;
version) echo "picky 1" ;;
esac
"""


def picky_release(scratch: Path, version: str) -> Path:
    root = scratch / "picky" / version
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "release.toml").write_text(
        f'[release]\nname = "picky"\nversion = "{version}"\n\n'
        '[commands]\nstart = ["bin/picky", "start"]\nversion = ["bin/picky", "version"]\n'
    )
    (root / "bin/picky").write_text(PICKY)
    (root / "bin/picky").chmod(0o755)
    return root


def environ(machine: Machine, app: str) -> dict[str, str]:
    pid = machine.systemctl("show", "-p", "MainPID", "--value", app).stdout.strip()
    raw = machine.run(["cat", f"/proc/{pid}/environ"]).stdout
    return dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)


#: What systemd's environment-file parser must give back exactly.
HOSTILE = {
    "DOLLAR": "$HOME ${USER} $$",
    "QUOTES": 'it\'s "quoted"',
    "BACKSLASH": "a\\b\\\\c\\n",
    "BACKQUOTE": "`id`",
    "PERCENT": "100% %n %%",
    "SPACES": "  padded  ",
    "TAB": "a\tb",
    "UNICODE": "ünïcødé ✓",
    "EMPTY": "",
    "HASH": "#not a comment",
}


def test_values_reach_the_process_exactly_and_nowhere_else(
    machine: Machine,
    pyrelctl: MachineCommand,
    scratch: Path,
    cleanup: Callable[[str], None],
) -> None:
    app = "picky"
    cleanup(app)
    # Before the first install: kept, and the first start runs with it.
    assert pyrelctl("config", "set", app, "MODE=first").returncode == 0
    first = pyrelctl("install", picky_release(scratch, "1"), "--grace", "0.5")
    assert first.returncode == 0, first.stderr
    assert environ(machine, app)["MODE"] == "first"
    assert "picky started with MODE=first" in machine.wait_for_journal(app, "MODE=first")
    # A running app restarts with the change, verified.
    pairs = [f"{k}={v}" for k, v in HOSTILE.items()]
    proc = pyrelctl("--json", "config", "set", app, *pairs)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["applied"] is True
    env = environ(machine, app)
    for key, value in HOSTILE.items():
        assert env.get(key) == value, (key, env.get(key))
    # A secret value from stdin, then: in no D-Bus property and not in the journal.
    secret = "hunter2-config-value"
    assert pyrelctl("config", "set", app, "API_TOKEN=-", input=secret + "\n").returncode == 0
    assert environ(machine, app)["API_TOKEN"] == secret
    assert secret not in machine.systemctl("show", app).stdout
    assert secret not in machine.run(["journalctl", "--no-pager", "-o", "cat"]).stdout
    assert secret not in pyrelctl("history", app).stdout
    assert secret not in pyrelctl("config", "list", app).stdout
    status = json.loads(pyrelctl("--json", "status", app).stdout)
    assert (
        status["config"]
        == json.loads(pyrelctl("--json", "config", "list", app).stdout)["generation"]
    )


def test_a_value_the_app_rejects_is_undone_by_itself(
    machine: Machine,
    pyrelctl: MachineCommand,
    scratch: Path,
    cleanup: Callable[[str], None],
) -> None:
    app = "picky"
    cleanup(app)
    assert pyrelctl("install", picky_release(scratch, "1"), "--grace", "0.5").returncode == 0
    assert pyrelctl("config", "set", app, "MODE=good").returncode == 0
    bad = pyrelctl("--json", "config", "set", app, "MODE=bad")
    assert bad.returncode == 3, bad.stderr
    report = json.loads(bad.stdout)
    assert report["restored"]["generation"] == report["previous"]
    assert any("MODE=bad is not a mode" in line for line in report["failed"]["journal"])
    assert "failed to come up with configuration generation" in bad.stderr
    # The previous value serves again, and the failed generation is marked.
    assert environ(machine, app)["MODE"] == "good"
    gens = json.loads(pyrelctl("--json", "config", "history", app).stdout)["generations"]
    assert gens[-1]["mark"] == "failed"
    history = pyrelctl("history", app).stdout
    assert "config-rollback" in history
    # install --env of a release that then fails keeps the configuration as it was.
    failing = pyrelctl("install", picky_release(scratch, "2"), "--env", "MODE=bad", "--grace", "1")
    assert failing.returncode == 3, failing.stderr
    assert environ(machine, app)["MODE"] == "good"
    assert pyrelctl("version", app).stdout.strip() == "1"  # the release that runs
    # config edit: the operator's editor on a root-only copy, applied when saved.
    editor = scratch / "picky-editor"
    editor.write_text('#!/bin/sh\nsed -i \'s/^MODE=.*/MODE="edited"/\' "$1"\n')
    editor.chmod(0o755)
    edited = pyrelctl("config", "edit", app, env={"EDITOR": str(editor)})
    assert edited.returncode == 0, edited.stderr
    assert environ(machine, app)["MODE"] == "edited"
    # A code rollback keeps the configuration; rollback --config goes back one.
    assert pyrelctl("config", "set", app, "MODE=better").returncode == 0
    back = pyrelctl("rollback", app, "--config")
    assert back.returncode == 0, back.stderr
    assert environ(machine, app)["MODE"] == "edited"


def test_vm_flags_reach_a_real_mix_release(
    machine: Machine,
    pyrelctl: MachineCommand,
    mix_artifacts: dict[str, Path],
    cleanup: Callable[[str], None],
) -> None:
    """ERL_FLAGS through `config set`, seen inside the running node through rpc."""
    app = "shop-conf"
    cleanup(app)
    proc = pyrelctl("install", "--app", app, mix_artifacts["1.0.0"], "--grace", "1")
    assert proc.returncode == 0, proc.stderr
    before = pyrelctl("rpc", app, "IO.puts(:erlang.system_info(:schedulers_online))")
    assert before.returncode == 0, before.stderr
    proc = pyrelctl("config", "set", app, "ERL_FLAGS=+S 1:1", timeout=180)
    assert proc.returncode == 0, proc.stderr
    after = pyrelctl("rpc", app, "IO.puts(:erlang.system_info(:schedulers_online))")
    assert after.stdout.strip() == "1", (before.stdout, after.stdout, after.stderr)
    # And a flag the VM refuses is undone by itself.
    bad = pyrelctl("config", "set", app, "ERL_FLAGS=+S nonsense", timeout=180)
    assert bad.returncode == 3, bad.stderr
    again = pyrelctl("rpc", app, "IO.puts(:erlang.system_info(:schedulers_online))")
    assert again.stdout.strip() == "1", again.stderr
    # unset: the VM's default again.
    assert pyrelctl("config", "unset", app, "ERL_FLAGS", timeout=180).returncode == 0
    back = pyrelctl("rpc", app, "IO.puts(:erlang.system_info(:schedulers_online))")
    assert back.stdout.strip() == before.stdout.strip(), back.stderr
