"""Every way a deploy can fail ends with the previous release serving again (issue 3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.load import Background
from devtools.machine import Machine, MachineCommand

PORT = 18080  # the container has a network namespace of its own


def readlink(machine: Machine, app: str) -> str:
    return machine.run(["readlink", f"/opt/{app}/current"]).stdout.strip()


def main_pid(machine: Machine, app: str) -> str:
    return machine.systemctl("show", "-p", "MainPID", "--value", app).stdout.strip()


def marks(pyrelctl: MachineCommand, app: str) -> dict[str, str]:
    doc = json.loads(pyrelctl("--json", "releases", app, check=True).stdout)
    return {r["version"]: r["mark"] for r in doc["releases"]}


@pytest.fixture
def good(
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> Callable[[str], str]:
    """Install a good 1.0.0 of APP (registered for cleanup); return its MainPID."""

    def install(app: str, **kwargs: object) -> str:
        cleanup(app)
        proc = pyrelctl(
            "install", make_release(name=app, version="1.0.0", **kwargs), "--grace", "0.5"
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    return install


def assert_previous_serves(
    machine: Machine, pyrelctl: MachineCommand, app: str, failed: str
) -> None:
    assert readlink(machine, app) == "releases/1.0.0"
    assert machine.systemctl("is-active", app, check=False).stdout.strip() == "active"
    assert marks(pyrelctl, app)[failed] == "failed"


@pytest.mark.parametrize(
    ("behaviour", "words"),
    [
        ("crash", ["exited with status 3", "crashing on purpose"]),
        ("signal", ["killed by SIGKILL", "started"]),
    ],
)
def test_a_release_that_dies_at_start_is_rolled_back(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
    behaviour: str,
    words: list[str],
) -> None:
    app = f"die-{behaviour}"
    good(app)
    old_pid = main_pid(machine, app)
    proc = pyrelctl(
        "--json",
        "install",
        make_release(name=app, version="2.0.0", behaviour=behaviour),
        "--grace",
        "2",
    )
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed"]["version"] == "2.0.0"
    assert report["restored"]["version"] == "1.0.0"
    for word in words:
        assert word in proc.stderr
    # Only the failed invocation's lines: not 1.0.0's "started" from before.
    assert f"{app} 1.0.0 started" not in "\n".join(report["failed"]["journal"])
    assert f"{app} 2.0.0" in "\n".join(report["failed"]["journal"])
    assert_previous_serves(machine, pyrelctl, app, "2.0.0")
    assert main_pid(machine, app) != old_pid  # really restarted


# Holds journald (SIGSTOP) from before the deploy until the unit's second new
# invocation (the failed start, then the restore) has begun, then lets it go.
HOLD_JOURNALD = """
set -eu
app=$1
journald=$(systemctl show -p MainPID --value systemd-journald)
kill -STOP "$journald"
trap 'kill -CONT "$journald"' EXIT
touch /run/journald-held
prev=$(systemctl show -p InvocationID --value "$app")
seen=0
for _ in $(seq 3000); do
    cur=$(systemctl show -p InvocationID --value "$app")
    if [ "$cur" != "$prev" ]; then seen=$((seen + 1)); prev=$cur; fi
    [ "$seen" -ge 2 ] && break
    sleep 0.01
done
"""


def test_last_words_journald_files_late_are_in_the_failure_report(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
) -> None:
    # journald reads the crash line only once the restore has started: it
    # files it under the unit's invocation id then, the restore's (systemd
    # 252). The report still has it, found by the failed main process's pid.
    app = "late-words"
    good(app)
    machine.run(["rm", "-f", "/run/journald-held"])
    hold = Background(machine, ["sh", "-c", HOLD_JOURNALD, "hold", app], timeout=60)
    machine.run(["sh", "-c", "until [ -e /run/journald-held ]; do sleep 0.01; done"], timeout=10)
    proc = pyrelctl(
        "--json", "install", make_release(name=app, version="2.0.0", behaviour="crash"),
        "--grace", "2",
    )  # fmt: skip
    hold.result(timeout=60)
    assert proc.returncode == 3, proc.stderr
    journal = "\n".join(json.loads(proc.stdout)["failed"]["journal"])
    assert f"{app} 2.0.0 crashing on purpose" in journal, journal
    assert f"{app} 1.0.0 started" not in journal, journal
    assert_previous_serves(machine, pyrelctl, app, "2.0.0")


def test_type_notify_waits_for_ready_and_a_release_never_ready_is_rolled_back(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
) -> None:
    app = "notified"
    notify = '[service]\ntype = "notify"\n'
    good(app, behaviour="notify", extra_toml=notify)
    unit = machine.systemctl("show", "-p", "Type", "--value", app).stdout.strip()
    assert unit == "notify"
    # "ok" never sends READY=1: the start job cannot finish.
    silent = make_release(name=app, version="2.0.0", extra_toml=notify)
    proc = pyrelctl("install", silent, "--timeout", "3", "--grace", "0.5")
    assert proc.returncode == 3, proc.stderr
    assert "not ready within 3 s" in proc.stderr
    assert_previous_serves(machine, pyrelctl, app, "2.0.0")


def test_a_start_held_by_a_dependency_says_what_it_waits_for(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
) -> None:
    """A start job that never began (ordered after a job that does not finish) has
    no journal lines: the report names the job it waited for (issue 27)."""
    app = "held"
    good(app)
    holder = "held-dependency.service"
    machine.run(["sh", "-c", f"""
mkdir -p /etc/systemd/system/{app}.service.d
printf '[Service]\\nType=oneshot\\nExecStart=/bin/sleep 30\\n' > /etc/systemd/system/{holder}
printf '[Unit]\\nWants={holder}\\nAfter={holder}\\n' > /etc/systemd/system/{app}.service.d/hold.conf
systemctl daemon-reload
"""])  # fmt: skip
    try:
        proc = pyrelctl(
            "install", make_release(name=app, version="2.0.0"), "--timeout", "3", "--grace", "0.5"
        )
        assert proc.returncode in (3, 4), proc.stderr
        assert "not ready within 3 s: its start job never began: it waits for " in proc.stderr, (
            proc.stderr
        )
        assert f"{holder} (start, running)" in proc.stderr, proc.stderr
    finally:
        machine.run(["sh", "-c", f"rm -f /etc/systemd/system/{app}.service.d/hold.conf "
                     f"/etc/systemd/system/{holder}; systemctl stop {holder}; "
                     "systemctl daemon-reload"])  # fmt: skip


def test_health_check_gates_the_deploy(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
) -> None:
    app = "webby"
    health = f'[health]\nhttp = "http://127.0.0.1:{PORT}/"\n'
    out = good(app, behaviour="serve", port=PORT, extra_toml=health)
    assert "installed and running" in out
    # Runs, but serves nothing: the health check never passes.
    deaf = make_release(name=app, version="2.0.0", extra_toml=health)
    proc = pyrelctl("install", deaf, "--timeout", "3", "--grace", "0.5")
    assert proc.returncode == 3, proc.stderr
    assert "health check never passed" in proc.stderr
    assert "Connection refused" in proc.stderr  # the last probe's own error
    assert_previous_serves(machine, pyrelctl, app, "2.0.0")
    served = machine.run(
        [
            "python3",
            "-c",
            "import urllib.request as u; print(u.urlopen("
            f"'http://127.0.0.1:{PORT}/').read().decode())",
        ]
    ).stdout
    assert "webby 1.0.0" in served


def test_health_override_is_remembered_per_app(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
) -> None:
    app = "remembers"
    good(app)
    port = PORT + 1
    tcp = f"127.0.0.1:{port}"
    # A failed deploy changes nothing, not even the settings it was given.
    proc = pyrelctl(
        "install",
        make_release(name=app, version="1.1.0"),
        "--health-tcp",
        tcp,
        "--timeout",
        "2",
        "--grace",
        "0",
    )
    assert proc.returncode == 3 and f"connect {tcp}" in proc.stderr, proc.stderr
    remembered = json.loads(machine.run(["cat", f"/etc/pyrelctl/{app}/settings.json"]).stdout)
    assert "health" not in remembered  # only the grace of the good install
    serving = make_release(name=app, version="2.0.0", behaviour="serve", port=port)
    proc = pyrelctl("install", serving, "--health-tcp", tcp, "--grace", "0")
    assert proc.returncode == 0, proc.stderr
    settings = machine.run(["cat", f"/etc/pyrelctl/{app}/settings.json"]).stdout
    assert json.loads(settings)["health"]["tcp"] == tcp
    # Not given again, still applied: it is the app's setting now.
    proc = pyrelctl("install", make_release(name=app, version="3.0.0"), "--timeout", "2")
    assert proc.returncode == 3 and f"connect {tcp}" in proc.stderr, proc.stderr
    assert readlink(machine, app) == "releases/2.0.0"
    proc = pyrelctl("install", make_release(name=app, version="4.0.0"), "--health-reset")
    assert proc.returncode == 0, proc.stderr
    assert readlink(machine, app) == "releases/4.0.0"


def test_pre_switch_hook_failure_switches_nothing(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
) -> None:
    app = "hooked"
    hooks = '[hooks]\npre_switch = ["bin/hooked", "hook", "pre"]\n'
    good(app, extra_toml=hooks)  # a passing hook
    pid = main_pid(machine, app)
    # An operator's drop-in amends the service, not the hook's transient unit: said.
    dropins = f"/etc/systemd/system/{app}.service.d"
    machine.run(["mkdir", "-p", dropins])
    machine.run(["sh", "-c", f"printf '[Service]\\nEnvironment=X=1\\n' > {dropins}/x.conf"])
    bad = make_release(name=app, version="2.0.0", behaviour="hookfail", extra_toml=hooks)
    proc = pyrelctl("install", bad)
    assert proc.returncode == 3, proc.stderr
    assert "pre_switch hook" in proc.stderr and "failing on purpose" in proc.stderr
    assert f"note: {dropins} is not applied to the pre_switch hook" in proc.stderr
    uid = proc.stderr.split("as uid ")[1].split()[0]
    assert uid != "0"  # ran as the service's (dynamic) user, not root
    assert_previous_serves(machine, pyrelctl, app, "2.0.0")
    assert main_pid(machine, app) == pid  # never even restarted


def test_a_passing_hooks_output_is_in_the_install_output_and_the_journal(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    """A migration's lines are not dropped when it passes (issue 27)."""
    app = "hooksays"
    cleanup(app)
    hooks = '[hooks]\npre_switch = ["bin/hooksays", "hook", "pre"]\n'
    proc = pyrelctl("install", make_release(name=app, version="1.0.0", extra_toml=hooks),
                    "--grace", "0.5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    said = "hooksays 1.0.0 hook pre as uid "
    assert f"pre_switch hook output:\n  {said}" in proc.stderr, proc.stderr
    journal = machine.run(["journalctl", "-u", app, "--no-pager", "-o", "cat"]).stdout
    assert said in journal, journal
    logs = pyrelctl("logs", app, "-n", "50").stdout
    assert f"{app}-pre-switch" in logs and said in logs, logs


def test_post_switch_hook_failure_rolls_back(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
) -> None:
    app = "posthook"
    good(app)
    hooks = '[hooks]\npost_switch = ["bin/posthook", "hook", "post"]\n'
    bad = make_release(name=app, version="2.0.0", behaviour="hookfail", extra_toml=hooks)
    proc = pyrelctl("install", bad, "--grace", "0.5")
    assert proc.returncode == 3, proc.stderr
    assert "post_switch hook" in proc.stderr
    assert_previous_serves(machine, pyrelctl, app, "2.0.0")


def test_exit_4_when_the_previous_release_cannot_come_back(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
) -> None:
    app = "doomed"
    good(app)
    # Someone broke the installed release by hand.
    machine.run(["rm", f"/opt/{app}/releases/1.0.0/bin/{app}"])
    proc = pyrelctl(
        "install", make_release(name=app, version="2.0.0", behaviour="crash"), "--grace", "0.5"
    )
    assert proc.returncode == 4, proc.stderr
    assert "restoring 1.0.0 FAILED too" in proc.stderr
    assert "THE APP IS DOWN" in proc.stderr


def test_a_flapping_release_is_never_left_current(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
) -> None:
    app = "flappy"
    good(app)
    flapping = make_release(name=app, version="2.0.0", behaviour="flap")
    results = []
    for _ in range(20):
        proc = pyrelctl("install", flapping, "--grace", "3")
        results.append(proc.returncode)
        assert readlink(machine, app) == "releases/1.0.0", proc.stderr
    assert results == [3] * 20
    assert machine.systemctl("is-active", app, check=False).stdout.strip() == "active"
    history = json.loads(pyrelctl("--json", "history", app, check=True).stdout)["history"]
    assert sum(r["action"] == "auto-rollback" for r in history) == 20


def test_command_health_check_and_retrying_a_failed_version(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    good: Callable[..., str],
) -> None:
    app = "cmdcheck"
    good(app)
    # The check runs as the service's user, from the release: `version` exits 0,
    # an unknown verb exits 2 (the launcher's usage error).
    failing = make_release(
        name=app, version="2.0.0", extra_toml='[health]\ncommand = ["bin/cmdcheck", "nope"]\n'
    )
    proc = pyrelctl("install", failing, "--timeout", "3", "--grace", "0")
    assert proc.returncode == 3, proc.stderr
    assert "command bin/cmdcheck nope exited with status 2" in proc.stderr
    assert_previous_serves(machine, pyrelctl, app, "2.0.0")
    # The same failed version, fixed by a host setting: allowed, and the mark clears.
    proc = pyrelctl("install", failing, "--health-command", "bin/cmdcheck version", "--grace", "0")
    assert proc.returncode == 0, proc.stderr
    assert marks(pyrelctl, app)["2.0.0"] == "good"
    assert readlink(machine, app) == "releases/2.0.0"
