"""Notification hooks and the metrics textfile after real deploys (issue 20)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.machine import Machine, MachineCommand

HOOKS = "/etc/pyrelctl/hooks.d"
LOG = "/run/notify-test.log"


def recording_hook(log: str) -> str:
    """A hook script that appends one JSON line per call to ``log``: the
    PYRELCTL_* variables and stdin."""
    return f"""#!/usr/bin/python3
import json, os, sys
entry = {{k: v for k, v in os.environ.items() if k.startswith("PYRELCTL_")}}
entry["stdin"] = sys.stdin.read()
with open("{log}", "a") as f:
    f.write(json.dumps(entry) + "\\n")
"""


RECORD = recording_hook(LOG)


def events(machine: Machine) -> list[dict[str, str]]:
    text = machine.run(["cat", LOG], check=False).stdout
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def hooks(machine: Machine) -> Iterator[None]:
    machine.run(["mkdir", "-p", HOOKS])
    machine.run(["sh", "-c", f"cat > {HOOKS}/10-record && chmod 755 {HOOKS}/10-record"],
                input=RECORD)  # fmt: skip
    # One that fails and one that others may write (never run): neither changes a result.
    machine.run(["sh", "-c", f"printf '#!/bin/sh\\nexit 7\\n' > {HOOKS}/20-fails && "
                 f"chmod 755 {HOOKS}/20-fails"])  # fmt: skip
    machine.run(["sh", "-c", f"printf '#!/bin/sh\\ntouch /run/untrusted-ran\\n' > "
                 f"{HOOKS}/30-untrusted && chmod 777 {HOOKS}/30-untrusted"])  # fmt: skip
    machine.run(["rm", "-f", LOG])
    try:
        yield
    finally:
        machine.run(["rm", "-rf", HOOKS, LOG, "/run/untrusted-ran"])


def test_hooks_hear_every_outcome_and_change_none(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
    hooks: None,
) -> None:
    app = "told"
    cleanup(app)
    # A first install that fails: nothing to restore.
    crash = pyrelctl("install", make_release(name=app, version="0", behaviour="crash"),
                     "--grace", "0.5")  # fmt: skip
    assert crash.returncode == 1, crash.stderr
    ok = pyrelctl("install", make_release(name=app, version="1"), "--grace", "0.5")
    assert ok.returncode == 0, ok.stderr  # a failing hook changes nothing
    assert "notification hook 20-fails exited with status 7" in ok.stderr
    assert "30-untrusted not run: writable by others" in ok.stderr
    bad = pyrelctl("install", make_release(name=app, version="2", behaviour="crash"),
                   "--grace", "0.5")  # fmt: skip
    assert bad.returncode == 3, bad.stderr
    conf = pyrelctl("config", "set", app, "A=1")
    assert conf.returncode == 0, conf.stderr
    seen = [(e["PYRELCTL_EVENT"], e["PYRELCTL_ACTION"], e["PYRELCTL_RESULT"],
             e["PYRELCTL_EXIT_CODE"]) for e in events(machine)]  # fmt: skip
    assert seen == [
        ("failure", "install", "failed", "1"),
        ("success", "install", "ok", "0"),
        ("rollback", "install", "rolled-back", "3"),
        ("success", "config", "ok", "0"),
    ], seen
    failure, success, rollback, config = events(machine)
    assert "failed to come up" in failure["stdin"]  # the error line, then the journal
    assert (rollback["PYRELCTL_APP"], rollback["PYRELCTL_VERSION"]) == (app, "2")
    assert rollback["PYRELCTL_PREVIOUS"] == "1"
    assert "crashing on purpose" in rollback["stdin"]  # the failed start's journal
    assert success["stdin"] == "" and success["PYRELCTL_USER"] == "root"
    assert config["PYRELCTL_VERSION"].startswith("config:")
    assert machine.run(["test", "-e", "/run/untrusted-ran"], check=False).returncode == 1


def test_a_hanging_hook_is_cut_short_and_changes_nothing(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    app = "waited"
    cleanup(app)
    machine.run(["mkdir", "-p", HOOKS])
    hang = f"{HOOKS}/10-hangs"
    machine.run(["sh", "-c", f"printf '#!/bin/sh\\nexec sleep 60\\n' > {hang} && chmod 755 {hang}"])
    machine.run(["sh", "-c", "echo 'timeout = 1' > /etc/pyrelctl/notify.toml"])
    try:
        started = time.monotonic()
        proc = pyrelctl("install", make_release(name=app, version="1"), "--grace", "0.5")
        took = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr
        assert "10-hangs: /etc/pyrelctl/hooks.d/10-hangs did not finish within 1.0 s" in proc.stderr
        assert took < 30, took  # cut at 1 s, not the hook's 60
    finally:
        machine.run(["rm", "-rf", HOOKS, "/etc/pyrelctl/notify.toml"])


def test_deploys_rewrite_the_node_exporter_textfile(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    app = "measured"
    cleanup(app)
    directory = "/var/lib/prometheus/node-exporter"
    machine.run(["mkdir", "-p", directory])
    try:
        first = pyrelctl("install", make_release(name=app, version="1"), "--grace", "0.5")
        assert first.returncode == 0, first.stderr
        bad = pyrelctl("install", make_release(name=app, version="2", behaviour="crash"),
                       "--grace", "0.5")  # fmt: skip
        assert bad.returncode == 3
        text = machine.run(["cat", f"{directory}/pyrelctl.prom"]).stdout
        got = {
            f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
            for f in text_string_to_metric_families(text)
        }
        info = (("app", app), ("kind", "generic"), ("version", "1"))
        assert got["pyrelctl_release_info"][info] == 1
        assert got["pyrelctl_auto_rollbacks"][(("app", app),)] == 1
        assert got["pyrelctl_service_up"][(("app", app),)] == 1
        assert got["pyrelctl_last_deploy_success"][(("app", app),)] == 0
        live = pyrelctl("metrics")
        assert live.returncode == 0 and 'pyrelctl_service_up{app="measured"} 1' in live.stdout
    finally:
        machine.run(["rm", "-rf", "/var/lib/prometheus"])


#: A release whose on_success / on_rollback hooks write what they were told into
#: the app's state directory (the service's user may write only there).
TOLD = """#!/bin/sh
case "$1" in
start) [ "{crash}" = yes ] && exit 3; echo started; exec sleep infinity ;;
told) echo "$2 $(id -u) $PYRELCTL_EVENT $PYRELCTL_APP $PYRELCTL_VERSION" >> /var/lib/{name}/told ;;
esac
"""


def told_release(scratch: Path, name: str, version: str, crash: bool) -> Path:
    root = scratch / "told" / f"{name}-{version}"
    (root / "bin").mkdir(parents=True)
    (root / "release.toml").write_text(
        f'[release]\nname = "{name}"\nversion = "{version}"\n\n'
        f'[commands]\nstart = ["bin/{name}", "start"]\n\n'
        f'[hooks]\non_success = ["bin/{name}", "told", "success"]\n'
        f'on_rollback = ["bin/{name}", "told", "rollback"]\n'
    )
    script = root / "bin" / name
    script.write_text(TOLD.format(name=name, crash="yes" if crash else "no"))
    script.chmod(0o755)
    return root


def test_a_release_hears_its_own_outcomes_as_the_service(
    machine: Machine,
    pyrelctl: MachineCommand,
    scratch: Path,
    cleanup: Callable[[str], None],
) -> None:
    """[hooks] on_success / on_rollback come from the artifact: they run as the
    service's dynamic user, never as root, with the PYRELCTL_* variables."""
    app = "selftold"
    cleanup(app)
    ok = pyrelctl("install", told_release(scratch, app, "1", crash=False), "--grace", "0.5")
    assert ok.returncode == 0, ok.stderr
    bad = pyrelctl("install", told_release(scratch, app, "2", crash=True), "--grace", "0.5")
    assert bad.returncode == 3, bad.stderr
    lines = machine.run(["cat", f"/var/lib/private/{app}/told"]).stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["success", "rollback"], lines
    for line in lines:
        _, uid, _event, name, _version = line.split()
        assert int(uid) != 0 and name == app, line
    assert lines[1].split()[2:] == ["rollback", app, "2"], lines
