"""Deploys by grant in a booted systemd (issue 31): an unprivileged user deploys its
app's signed releases through pyrelctl-delegate.socket, and nothing else."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand
from tests.cli.test_signatures import keypair, sign

APP, OTHER = "granted", "notgranted"
HOOK, HOOK_LOG = "/etc/pyrelctl/hooks.d/10-grant-test", "/run/grant-hook.log"
HOME = "/home/ci"


def as_user(pyrelctl: MachineCommand, user: str) -> MachineCommand:
    """The same `pyrelctl ARGS` run by ``user`` (no sudo, its own groups) inside the machine."""
    machine = pyrelctl.machine
    uid = machine.run(["id", "-u", user]).stdout.strip()
    gid = machine.run(["id", "-g", user]).stdout.strip()
    return MachineCommand(
        machine,
        ("setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--",
         *pyrelctl.prefix),
    )  # fmt: skip


def current(machine: Machine, app: str) -> str:
    return machine.run(["readlink", f"/opt/{app}/current"], check=False).stdout.strip()


@pytest.fixture
def granted_host(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    scratch: Path,
) -> Iterator[dict[str, Path]]:
    """APP and OTHER 1.0 installed (signed); users ci and nobody-special; keys."""
    keys = scratch / "grant-keys"
    keys.mkdir(exist_ok=True)
    for name in ("ops", "intruder"):
        if not (keys / name).exists():
            keypair(keys, name)
    public = (keys / "ops.pub").read_text().split()
    for user in ("ci", "stranger"):
        machine.run(["useradd", "--create-home", "--shell", "/bin/sh", user])
    artifacts: dict[str, Path] = {}
    for app in (APP, OTHER):
        machine.run(["mkdir", "-p", f"/etc/pyrelctl/{app}"])
        machine.run(["sh", "-c", f"cat > /etc/pyrelctl/{app}/allowed_signers"],
                    input=f"ops@example {public[0]} {public[1]}\n")  # fmt: skip
        first = make_release(name=app, version="1.0")
        sign(keys / "ops", first)
        done = pyrelctl("install", first, "--grace", "0.5")
        assert done.returncode == 0, done.stderr
    for version, key in (("1.1", "ops"), ("1.2", None), ("1.3", "intruder")):
        artifact = make_release(name=APP, version=version)
        if key is not None:
            sign(keys / key, artifact)
        artifacts[version] = artifact
    other = make_release(name=OTHER, version="1.1")
    sign(keys / "ops", other)
    artifacts["other"] = other
    # What ci can read: its own copies (the scratch directory is root's, 0700).
    for artifact in artifacts.values():
        for path in (artifact, Path(f"{artifact}.sig")):
            if path.exists():
                machine.run(["install", "-o", "ci", "-m", "0644", path, f"{HOME}/{path.name}"])
    try:
        yield artifacts
    finally:
        for who in ("ci", "stranger"):
            pyrelctl("revoke", APP, "--user", who)
        for app in (APP, OTHER):
            pyrelctl("uninstall", "--purge", app)
        for user in ("ci", "stranger"):
            machine.run(["userdel", "--remove", user], check=False)
        machine.run(["rm", "-f", HOOK, HOOK_LOG])


def test_a_granted_user_deploys_its_app_and_nothing_else(
    machine: Machine, pyrelctl: MachineCommand, granted_host: dict[str, Path]
) -> None:
    ci = as_user(pyrelctl, "ci")
    art = {k: f"{HOME}/{v.name}" for k, v in granted_host.items()}
    # Before any grant there is no helper: ci's install fails with its own rights.
    done = ci("install", art["1.1"])
    assert done.returncode != 0 and done.stderr.startswith("error: "), done.stderr
    assert current(machine, APP) == "releases/1.0"

    done = pyrelctl("grant", APP, "--user", "ci")
    assert done.returncode == 0, done.stderr
    assert machine.systemctl("is-active", "pyrelctl-delegate.socket").stdout.strip() == "active"
    assert machine.run(["stat", "-c", "%a %U", "/run/pyrelctl/delegate.sock"]).stdout.split() == [
        "666", "root"
    ]  # fmt: skip

    # A signed release of its app: deployed, recorded as ci (history, notifications).
    machine.run(["mkdir", "-p", "/etc/pyrelctl/hooks.d"])
    record = f'#!/bin/sh\necho "$PYRELCTL_ACTION $PYRELCTL_USER" >> {HOOK_LOG}\n'
    machine.run(["sh", "-c", f"cat > {HOOK} && chmod 755 {HOOK}"], input=record)
    done = ci("install", art["1.1"], "--grace", "0.5")
    assert done.returncode == 2 and "--grace" in done.stderr  # the host's decision
    done = ci("install", art["1.1"], "--dry-run", "--json")  # check mode, changes nothing
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "1.1" and current(machine, APP) == "releases/1.0"
    done = ci("install", art["1.1"])
    assert done.returncode == 0, done.stderr
    assert f"{APP} 1.1 installed and running" in done.stdout
    assert current(machine, APP) == "releases/1.1"
    history = json.loads(ci("history", APP, "--json").stdout)["history"]
    assert history[-1]["user"] == "ci (by grant)" and history[-1]["to"] == "1.1"
    status = ci("status", APP, "--json")
    assert status.returncode == 0 and "1.1" in status.stdout
    assert ci("releases", APP).returncode == 0
    logs = ci("logs", APP, "-n", "50")
    assert logs.returncode == 0 and f"{APP} 1.1 started" in logs.stdout
    # The helper's journal names every decision.
    helper = machine.journalctl("-u", "pyrelctl-delegate@*", "-o", "cat").stdout
    assert "(ci, pid" in helper and f"allowed: install {APP}" in helper

    done = ci("rollback", APP)
    assert done.returncode == 0, done.stderr
    assert current(machine, APP) == "releases/1.0"
    told = machine.run(["cat", HOOK_LOG]).stdout.splitlines()
    assert told == ["install ci (by grant)", "rollback ci (by grant)"], told

    # Refused, exit 2, nothing changed.
    refusals: list[tuple[str, ...]] = [
        ("install", art["other"]),  # another app
        ("install", art["1.2"]),  # unsigned
        ("install", art["1.3"]),  # signed by a key not trusted for the app
        ("install", granted_host["1.1"].as_posix()),  # only root can read it
        ("install", art["1.1"], "--allow", "low-ports"),
        ("install", art["1.1"], "--listen", "8089"),
        ("install", art["1.1"], "--env", "A=1"),
        ("install", art["1.1"], "--strategy", "restart"),
        ("install", art["1.1"], "--app", APP),
        ("install", art["1.1"], "--allow-downgrade"),
        ("install", art["1.1"], "--keep", "1"),
        ("rollback", OTHER),
    ]
    machine.run(["sh", "-c", f"echo A=1 > {HOME}/env && chown ci {HOME}/env"])
    refusals.append(("install", art["1.1"], "--env-file", f"{HOME}/env"))
    for argv in refusals:
        done = ci(*argv)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert done.stderr.startswith("error: "), (argv, done.stderr)
    # A URL: root fetches no address ci chose (ci's own rights would fail as exit 1).
    done = ci("install", f"https://127.0.0.1:9/{granted_host['1.1'].name}")
    assert done.returncode == 2 and "not from a URL" in done.stderr, done.stderr
    # Commands a grant never covers: root's.
    for argv in (
        ("config", "set", APP, "A=1"),
        ("secret", "set", APP, "token"),
        ("uninstall", APP),
        ("prune", APP, "--keep", "1"),
        ("grant", OTHER, "--user", "ci"),
    ):
        done = ci(*argv, input="x\n")
        assert done.returncode == 2, (argv, done.stderr)
        assert "needs root" in done.stderr, (argv, done.stderr)
    assert current(machine, APP) == "releases/1.0"
    assert current(machine, OTHER) == "releases/1.0"
    assert machine.run(["ls", f"/opt/{APP}/releases"]).stdout.split() == ["1.0", "1.1"]

    # Revoked: the next command is refused; the last grant takes the socket away.
    assert pyrelctl("revoke", APP, "--user", "ci").returncode == 0
    done = ci("install", art["1.1"])
    assert done.returncode != 0 and current(machine, APP) == "releases/1.0"
    socket_state = machine.systemctl("is-active", "pyrelctl-delegate.socket", check=False)
    assert socket_state.stdout.strip() != "active"


def test_a_user_without_a_grant_reads_what_it_could_before(
    machine: Machine, pyrelctl: MachineCommand, granted_host: dict[str, Path]
) -> None:
    assert pyrelctl("grant", APP, "--user", "ci").returncode == 0
    stranger = as_user(pyrelctl, "stranger")
    art = f"{HOME}/{granted_host['1.1'].name}"
    machine.run(["chmod", "755", HOME])
    for argv in (("install", art), ("rollback", APP)):
        done = stranger(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert "no grant" in done.stderr
    assert current(machine, APP) == "releases/1.0"
    # status is what any local user may read: answered with its own rights.
    mine = stranger("status", APP)
    assert mine.returncode == 0, mine.stderr
    # The journal is not: the app's lines stay out of its logs.
    logs = stranger("logs", APP, "-n", "50")
    assert f"{APP} 1.0 started" not in logs.stdout
    helper = machine.journalctl("-u", "pyrelctl-delegate@*", "-o", "cat").stdout
    assert "(stranger, pid" in helper and "no grant" in helper


def test_a_group_grant_follows_the_user_database(
    machine: Machine, pyrelctl: MachineCommand, granted_host: dict[str, Path]
) -> None:
    """Groups are read from the user database at each command, not from the caller's
    process: adding `stranger` to the group lets it deploy, removing it stops it at
    once, even for a process that still has the group."""
    machine.run(["groupadd", "deployers"])
    try:
        assert pyrelctl("grant", APP, "--group", "deployers").returncode == 0
        stranger = as_user(pyrelctl, "stranger")
        art = f"{HOME}/{granted_host['1.1'].name}"
        machine.run(["chmod", "755", HOME])
        assert stranger("rollback", APP).returncode == 2
        machine.run(["usermod", "--append", "--groups", "deployers", "stranger"])
        done = stranger("install", art)
        assert done.returncode == 0, done.stderr
        assert current(machine, APP) == "releases/1.1"
        gid = machine.run(["getent", "group", "deployers"]).stdout.split(":")[2]
        machine.run(["gpasswd", "--delete", "stranger", "deployers"])
        # Its process still carries the group (as a session from before the removal
        # would): the database, not the process, decides.
        uid, own = (machine.run(["id", opt, "stranger"]).stdout.strip() for opt in ("-u", "-g"))
        still = MachineCommand(
            machine,
            ("setpriv", f"--reuid={uid}", f"--regid={own}", f"--groups={gid}", "--",
             *pyrelctl.prefix),
        )  # fmt: skip
        assert (
            gid
            in still.machine.run(
                ["setpriv", f"--reuid={uid}", f"--regid={own}", f"--groups={gid}", "--", "id", "-G"]
            ).stdout.split()
        )
        done = still("rollback", APP)
        assert done.returncode == 2 and "no grant" in done.stderr, done.stderr
        assert current(machine, APP) == "releases/1.1"
    finally:
        pyrelctl("revoke", APP, "--group", "deployers")
        machine.run(["groupdel", "deployers"], check=False)
