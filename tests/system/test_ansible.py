"""The pyrelctl.deploy Ansible collection over three real hosts (issue 9).

Three systemd containers, booted at once, are the inventory group
`pyrelctl` (web1, web2, web3 in that order), entered by the tests' own
connection plugin (tests/ansible/connection_plugins/nspawn_machine.py).
The playbooks are the collection's examples, run by ansible-playbook as an
operator would run them; a callback plugin of the tests writes each host's
task results as JSON lines for the assertions. What each host really runs
is then read on the host itself, with pyrelctl and systemctl.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.machine import Machine
from devtools.proc import wait_until
from devtools.releases import make_generic_release

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = REPO_ROOT / ".venv"
PYRELCTL = VENV / "bin" / "pyrelctl"
COLLECTIONS = REPO_ROOT / "packaging" / "ansible"
SANITY = COLLECTIONS / "sanity"
TEST_PLUGINS = REPO_ROOT / "tests" / "ansible"
HOSTS = ("web1", "web2", "web3")
DEPLOY_TASK = "Install the release"
ROLLBACK_TASK = "Go back to the previous good release"
# Each container has a network namespace of its own: the port is free in all.
PORT = 18089


@dataclass(frozen=True)
class Run:
    """One ansible-playbook (or ansible) run: its status, output and task results."""

    returncode: int
    output: str
    records: list[dict[str, Any]]

    def results(self, task: str) -> dict[str, dict[str, Any]]:
        """Host -> the result record of the task whose name starts with `task`."""
        return {r["host"]: r for r in self.records if r["task"].startswith(task)}

    def __str__(self) -> str:
        return f"exit {self.returncode}\n{self.output}"


@dataclass(frozen=True)
class Ansible:
    """ansible-playbook and ansible of the venv, set up for the three machines."""

    workdir: Path
    inventory: Path
    env: dict[str, str]

    def _run(self, argv: list[str]) -> Run:
        results = self.workdir / "results.jsonl"
        results.unlink(missing_ok=True)
        proc = subprocess.run(
            [*argv, "-i", os.fspath(self.inventory)],
            cwd=self.workdir,
            env={**self.env, "PYRELCTL_ANSIBLE_RESULTS": os.fspath(results)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        text = results.read_text() if results.exists() else ""
        records = [json.loads(line) for line in text.splitlines()]
        return Run(proc.returncode, proc.stdout + proc.stderr, records)

    def playbook(self, name: str, *options: str, **extra_vars: str) -> Run:
        """Run the collection's playbook `pyrelctl.deploy.NAME` with `-e` for each extra var."""
        argv = [os.fspath(VENV / "bin" / "ansible-playbook"), f"pyrelctl.deploy.{name}"]
        argv += [f"-e{json.dumps({k: v})}" for k, v in extra_vars.items()]
        return self._run([*argv, *options])

    def module(self, hosts: str, module: str, args: dict[str, Any]) -> Run:
        """Run one module ad hoc on `hosts`."""
        argv = [os.fspath(VENV / "bin" / "ansible"), hosts, "-m", module, "-a", json.dumps(args)]
        return self._run(argv)


def _boot_all(names: list[str], binds: list[Path], logs: Path) -> list[Machine]:
    """Boot the machines concurrently; if any fails, stop those that came up."""
    with ThreadPoolExecutor(len(names)) as pool:
        futures: list[Future[Machine]] = [
            pool.submit(Machine.boot, name, binds, logs / f"{name}.log") for name in names
        ]
    booted = [f.result() for f in futures if f.exception() is None]
    errors = [e for f in futures if (e := f.exception()) is not None]
    if errors:
        for machine in booted:
            machine.stop()
        raise errors[0]
    return booted


@pytest.fixture(scope="module")
def fleet(scratch: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Machine]]:
    """Three booted machines, host name -> Machine; the checkout and scratch bound inside."""
    binds = [REPO_ROOT, scratch]
    if not VENV.resolve().is_relative_to(REPO_ROOT):
        binds.append(VENV.resolve())
    logs = tmp_path_factory.mktemp("fleet-logs")
    names = [f"pyrelctl-ansible-{os.getpid()}-{i}" for i in range(1, len(HOSTS) + 1)]
    machines = _boot_all(names, binds, logs)
    try:
        yield dict(zip(HOSTS, machines, strict=True))
    finally:
        for machine in machines:
            machine.stop()


@pytest.fixture(scope="module")
def ansible(fleet: dict[str, Machine], tmp_path_factory: pytest.TempPathFactory) -> Ansible:
    """The inventory of the three machines and an environment that sees nothing else."""
    workdir = tmp_path_factory.mktemp("ansible")
    hosts = {
        name: {
            "machine_pid": machine.pid,
            # The connection plugin refuses to enter a pid without this namespace.
            "machine_mount_ns": os.readlink(f"/proc/{machine.pid}/ns/mnt"),
        }
        for name, machine in fleet.items()
    }
    inventory = workdir / "inventory.json"
    inventory.write_text(
        json.dumps(
            {
                "pyrelctl": {
                    "hosts": hosts,
                    "vars": {
                        "ansible_connection": "nspawn_machine",
                        # The containers share the host's /usr.
                        "ansible_python_interpreter": "/usr/bin/python3",
                        "ansible_pipelining": True,
                        "pyrelctl_executable": os.fspath(PYRELCTL),
                        "pyrelctl_grace": 1,
                    },
                }
            }
        )
    )
    config = workdir / "ansible.cfg"
    config.write_text("")  # neither /etc/ansible/ansible.cfg nor ~/.ansible.cfg
    home = workdir / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=os.fspath(config),
        ANSIBLE_HOME=os.fspath(home),
        ANSIBLE_LOCAL_TEMP=os.fspath(home / "tmp"),
        ANSIBLE_COLLECTIONS_PATH=os.fspath(COLLECTIONS),
        ANSIBLE_CONNECTION_PLUGINS=os.fspath(TEST_PLUGINS / "connection_plugins"),
        ANSIBLE_CALLBACK_PLUGINS=os.fspath(TEST_PLUGINS / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="results_jsonl",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",  # for ad hoc `ansible` too
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    return Ansible(workdir, inventory, env)


@pytest.fixture(scope="module")
def artifacts(scratch: Path) -> dict[str, Path]:
    """Release tarballs on the controller: good 1.0.0, notify-type 1.1.0, crashing 2.0.0."""
    dest = scratch / "ansible-releases"
    dest.mkdir()
    notify = '[service]\ntype = "notify"\n'
    return {
        "1.0.0": make_generic_release(dest, name="roll", version="1.0.0"),
        "1.1.0": make_generic_release(
            dest, name="roll", version="1.1.0", behaviour="notify", extra_toml=notify
        ),
        "2.0.0": make_generic_release(dest, name="roll", version="2.0.0", behaviour="crash"),
    }


def releases(machine: Machine, app: str) -> dict[str, Any]:
    doc = machine.run([PYRELCTL, "--json", "releases", app]).stdout
    result: dict[str, Any] = json.loads(doc)
    return result


def marks(machine: Machine, app: str) -> dict[str, str]:
    return {r["version"]: r["mark"] for r in releases(machine, app)["releases"]}


def main_pid(machine: Machine, app: str) -> int:
    return int(machine.systemctl("show", "-p", "MainPID", "--value", app).stdout)


def is_active(machine: Machine, app: str) -> bool:
    return machine.systemctl("is-active", app, check=False).stdout.strip() == "active"


@pytest.fixture(scope="module")
def rolled_out(ansible: Ansible, artifacts: dict[str, Path]) -> Run:
    """`roll` 1.0.0 rolled out over the three hosts."""
    return ansible.playbook("rollout", pyrelctl_artifact=os.fspath(artifacts["1.0.0"]))


def test_a_good_release_lands_on_every_host(rolled_out: Run, fleet: dict[str, Machine]) -> None:
    assert rolled_out.returncode == 0, rolled_out
    deployed = rolled_out.results(DEPLOY_TASK)
    assert list(deployed) == list(HOSTS), rolled_out  # serial: 1, in inventory order
    for host, machine in fleet.items():
        result = deployed[host]["result"]
        assert deployed[host]["status"] == "ok"
        assert (result["changed"], result["app"], result["version"]) == (True, "roll", "1.0.0")
        assert result["main_pid"] == main_pid(machine, "roll") > 0
        assert [(r["version"], r["mark"]) for r in result["releases"]] == [("1.0.0", "good")]
        # On the host itself: current, good, running; the artifact kept its name.
        doc = releases(machine, "roll")
        assert doc["current"] == "1.0.0"
        assert doc["releases"][0]["artifact"] == "roll-1.0.0.tar.gz"
        assert is_active(machine, "roll")


def test_a_second_run_of_the_same_release_changes_nothing(
    rolled_out: Run, ansible: Ansible, artifacts: dict[str, Path], fleet: dict[str, Machine]
) -> None:
    assert rolled_out.returncode == 0, rolled_out
    pids = {host: main_pid(machine, "roll") for host, machine in fleet.items()}
    again = ansible.playbook("rollout", pyrelctl_artifact=os.fspath(artifacts["1.0.0"]))
    assert again.returncode == 0, again
    deployed = again.results(DEPLOY_TASK)
    assert list(deployed) == list(HOSTS), again
    for host, machine in fleet.items():
        assert deployed[host]["result"]["changed"] is False, again
        assert "already current" in deployed[host]["result"]["msg"]
        # Not restarted: the very same process serves.
        assert main_pid(machine, "roll") == pids[host]
    assert not any(r["result"].get("changed") for r in again.records), again


def test_a_release_that_fails_to_start_stops_the_rollout_at_the_first_host(
    rolled_out: Run, ansible: Ansible, artifacts: dict[str, Path], fleet: dict[str, Machine]
) -> None:
    assert rolled_out.returncode == 0, rolled_out
    pids = {host: main_pid(machine, "roll") for host, machine in fleet.items()}
    run = ansible.playbook("rollout", pyrelctl_artifact=os.fspath(artifacts["2.0.0"]))

    assert run.returncode != 0, run
    deployed = run.results(DEPLOY_TASK)
    assert list(deployed) == ["web1"], run  # web2 and web3 were never tried
    first = deployed["web1"]
    assert first["status"] == "failed", run
    result = first["result"]
    # pyrelctl's failure report, as task result fields.
    assert result["rc"] == 3
    assert result["rolled_back"] is True
    assert result["failure"]["version"] == "2.0.0"
    assert any("crashing on purpose" in line for line in result["failure"]["journal"])
    assert result["restored"]["version"] == "1.0.0"
    assert "roll 2.0.0 failed" in result["msg"]

    web1 = fleet["web1"]
    assert releases(web1, "roll")["current"] == "1.0.0"
    assert marks(web1, "roll")["2.0.0"] == "failed"
    assert is_active(web1, "roll")
    assert main_pid(web1, "roll") == result["restored"]["main_pid"]
    for host in ("web2", "web3"):
        # Nothing reached them: not even unpacked, the same process serving.
        assert list(marks(fleet[host], "roll")) == ["1.0.0"]
        assert main_pid(fleet[host], "roll") == pids[host]


def test_check_and_diff_mode_predict_an_upgrade_without_making_it(
    rolled_out: Run, ansible: Ansible, artifacts: dict[str, Path], fleet: dict[str, Machine]
) -> None:
    assert rolled_out.returncode == 0, rolled_out
    pids = {host: main_pid(machine, "roll") for host, machine in fleet.items()}
    run = ansible.playbook(
        "rollout", "--check", "--diff", pyrelctl_artifact=os.fspath(artifacts["1.1.0"])
    )
    assert run.returncode == 0, run
    deployed = run.results(DEPLOY_TASK)
    assert list(deployed) == list(HOSTS), run
    for host, machine in fleet.items():
        result = deployed[host]["result"]
        assert result["changed"] is True
        assert (result["version"], result["previous"]) == ("1.1.0", "1.0.0")
        version, unit = result["diff"]
        assert (version["before"], version["after"]) == ("releases/1.0.0\n", "releases/1.1.0\n")
        assert unit["before_header"] == "/etc/systemd/system/roll.service"
        assert "Type=exec\n" in unit["before"] and "Type=notify\n" in unit["after"]
        # ... and nothing happened: no 1.1.0 on the host, the same process.
        assert releases(machine, "roll")["current"] == "1.0.0"
        assert "1.1.0" not in marks(machine, "roll")
        assert main_pid(machine, "roll") == pids[host]
        assert "Type=exec" in machine.run(["cat", "/etc/systemd/system/roll.service"]).stdout

    same = ansible.playbook(
        "rollout", "--check", "--diff", pyrelctl_artifact=os.fspath(artifacts["1.0.0"])
    )
    assert same.returncode == 0, same
    for host in HOSTS:
        result = same.results(DEPLOY_TASK)[host]["result"]
        assert result["changed"] is False, same
        assert result["diff"] == []


def test_facts_describe_the_releases(
    rolled_out: Run, ansible: Ansible, fleet: dict[str, Machine]
) -> None:
    assert rolled_out.returncode == 0, rolled_out
    run = ansible.module(
        "pyrelctl",
        "pyrelctl.deploy.pyrelctl_facts",
        {"apps": ["roll", "absent"], "executable": os.fspath(PYRELCTL)},
    )
    assert run.returncode == 0, run
    for host, machine in fleet.items():
        (record,) = [r for r in run.records if r["host"] == host]
        apps = record["result"]["ansible_facts"]["pyrelctl"]["apps"]
        roll = apps["roll"]
        assert roll["current"] == "1.0.0"
        assert roll["state"]["active_state"] == "active"
        assert roll["state"]["main_pid"] == main_pid(machine, "roll")
        assert [r["version"] for r in roll["releases"]] == list(marks(machine, "roll"))
        assert apps["absent"]["installed"] is False


def test_a_failing_first_install_fails_with_nothing_restored(
    ansible: Ansible, scratch: Path, fleet: dict[str, Machine]
) -> None:
    dest = scratch / "ansible-first"
    dest.mkdir()
    # On the host already (scratch is bound at the same path): `artifact`, no copy.
    crash = make_generic_release(dest, name="first", version="1.0.0", behaviour="crash")
    run = ansible.module(
        "web2",
        "pyrelctl.deploy.pyrelctl_release",
        {"artifact": os.fspath(crash), "grace": 1, "executable": os.fspath(PYRELCTL)},
    )
    assert run.returncode != 0, run
    (record,) = run.records
    result = record["result"]
    assert record["status"] == "failed"
    assert (result["rc"], result["rolled_back"], result["restored"]) == (1, False, None)
    assert result["failure"]["version"] == "1.0.0"
    assert not is_active(fleet["web2"], "first")
    fleet["web2"].run([PYRELCTL, "uninstall", "--purge", "first"])


def test_config_is_applied_once_verified_and_never_shown(
    ansible: Ansible, scratch: Path, fleet: dict[str, Machine]
) -> None:
    """Issue 18: the module's `config`: check and diff mode name keys only, a real run
    applies it (the process has it), a second run changes nothing, no value is logged."""
    dest = scratch / "ansible-config"
    dest.mkdir()
    artifact = make_generic_release(dest, name="conf", version="1.0.0", behaviour="ok")
    secret = "s3cret-not-in-any-log"
    args = {
        "artifact": os.fspath(artifact),
        "grace": 1,
        "executable": os.fspath(PYRELCTL),
        "config": {"GREETING": 'it\'s "quoted" $HOME', "TOKEN": secret},
    }
    machine = fleet["web3"]
    argv = [os.fspath(VENV / "bin" / "ansible"), "web3", "-m", "pyrelctl.deploy.pyrelctl_release"]
    checked = ansible._run([*argv, "-a", json.dumps(args), "--check", "--diff"])
    assert checked.returncode == 0, checked
    (record,) = checked.records
    assert record["result"]["changed"] is True
    assert record["result"]["config_change"]["added"] == ["GREETING", "TOKEN"]
    config_diff = record["result"]["diff"][-1]
    assert "TOKEN=<hidden>" in config_diff["after"]
    assert machine.run(["test", "-e", "/etc/pyrelctl/conf/config"], check=False).returncode
    ran = ansible.module("web3", "pyrelctl.deploy.pyrelctl_release", args)
    assert ran.returncode == 0, ran
    assert ran.records[0]["result"]["changed"] is True
    pid = main_pid(machine, "conf")
    environ = machine.run(["cat", f"/proc/{pid}/environ"]).stdout.split("\0")
    assert f"TOKEN={secret}" in environ and 'GREETING=it\'s "quoted" $HOME' in environ
    again = ansible.module("web3", "pyrelctl.deploy.pyrelctl_release", args)
    assert again.returncode == 0, again
    assert again.records[0]["result"]["changed"] is False, again
    for run in (checked, ran, again):
        assert secret not in run.output and secret not in json.dumps(run.records)
    machine.run([PYRELCTL, "uninstall", "--purge", "conf"])


def _squat(machine: Machine, port: int) -> None:
    """Hold `port` on the machine's loopback, so that a release serving on it dies there."""
    machine.run(
        [
            "systemd-run",
            "--unit=squatter",
            "python3",
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
        ]
    )
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"
    wait_until(
        lambda: machine.run(["python3", "-c", probe], check=False).returncode == 0 or None,
        timeout=30,
        what=f"port {port} to be held on {machine.name}",
    )


def test_the_hosts_a_stopped_rollout_upgraded_are_rolled_back(
    ansible: Ansible, scratch: Path, fleet: dict[str, Machine]
) -> None:
    dest = scratch / "ansible-part"
    dest.mkdir()
    good = make_generic_release(dest, name="part", version="1.0.0")
    serving = make_generic_release(dest, name="part", version="1.1.0", behaviour="serve", port=PORT)
    first = ansible.playbook("rollout", pyrelctl_artifact=os.fspath(good))
    assert first.returncode == 0, first

    # 1.1.0 serves on PORT, which something else holds on web3 only.
    _squat(fleet["web3"], PORT)
    stopped = ansible.playbook("rollout", pyrelctl_artifact=os.fspath(serving))
    assert stopped.returncode != 0, stopped
    deployed = stopped.results(DEPLOY_TASK)
    assert [deployed[h]["status"] for h in HOSTS] == ["ok", "ok", "failed"], stopped
    assert deployed["web3"]["result"]["rolled_back"] is True
    assert [releases(fleet[h], "part")["current"] for h in HOSTS] == ["1.1.0", "1.1.0", "1.0.0"]
    web3_pid = main_pid(fleet["web3"], "part")  # 1.0.0 again, restarted by pyrelctl

    # The documented way back: the rollback playbook, from the version of the rollout.
    preview = ansible.playbook(
        "rollback", "--check", "--diff", pyrelctl_app="part", pyrelctl_from_version="1.1.0"
    )
    assert preview.returncode == 0, preview
    predicted = preview.results(ROLLBACK_TASK)
    assert [predicted[h]["result"]["changed"] for h in HOSTS] == [True, True, False], preview
    assert predicted["web1"]["result"]["diff"][0]["after"] == "releases/1.0.0\n"
    assert [releases(fleet[h], "part")["current"] for h in HOSTS] == ["1.1.0", "1.1.0", "1.0.0"]

    back = ansible.playbook("rollback", pyrelctl_app="part", pyrelctl_from_version="1.1.0")
    assert back.returncode == 0, back
    rolled = back.results(ROLLBACK_TASK)
    assert [rolled[h]["result"]["changed"] for h in HOSTS] == [True, True, False], back
    for host in HOSTS:
        assert releases(fleet[host], "part")["current"] == "1.0.0"
        assert is_active(fleet[host], "part")
    assert main_pid(fleet["web3"], "part") == web3_pid  # the rollback left web3 alone

    again = ansible.playbook("rollback", pyrelctl_app="part", pyrelctl_from_version="1.1.0")
    assert again.returncode == 0, again
    assert not any(r["result"]["changed"] for r in again.results(ROLLBACK_TASK).values()), again


def test_the_collection_passes_ansible_test_sanity() -> None:
    """ansible-test sanity, every test, on Python 3.11 (packaging/ansible/sanity).

    Here rather than in the fast tier: it builds ansible-test's virtualenvs
    from PyPI the first time (about 2.5 minutes; 40 s once they exist).
    """
    proc = subprocess.run(
        [os.fspath(SANITY)],
        env={**os.environ, "VENV": os.fspath(VENV)},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert 'Running sanity test "validate-modules"' in output
    assert 'Running sanity test "pylint"' in output


def test_a_granted_user_deploys_without_become(
    ansible: Ansible, scratch: Path, fleet: dict[str, Machine], rolled_out: Run
) -> None:
    """Issue 31: the collection connects as `ci`, whom root granted `roll`, with no
    become; the signature travels with src; the host records ci as the deployer."""
    from tests.cli.test_signatures import keypair, sign

    web1 = fleet["web1"]
    dest = scratch / "ansible-granted"
    dest.mkdir()
    key = keypair(dest, "release")
    signed = make_generic_release(dest, name="roll", version="3.0.0")
    sign(key, signed)
    unsigned = make_generic_release(dest / "u", name="roll", version="3.1.0")
    public = Path(f"{key}.pub").read_text().split()
    before = releases(web1, "roll")["current"]
    web1.run(["useradd", "--create-home", "ci"])
    web1.run(["sh", "-c", "cat > /etc/pyrelctl/roll/allowed_signers"],
             input=f"release {public[0]} {public[1]}\n")  # fmt: skip
    try:
        assert web1.run([PYRELCTL, "grant", "roll", "--user", "ci"]).returncode == 0
        as_ci = ("--limit", "web1", "-e", "machine_user=ci")

        refused = ansible._run([*_adhoc(ansible, unsigned), *as_ci])
        assert refused.returncode != 0, refused
        assert refused.records[-1]["result"]["rc"] == 2, refused
        assert ".sig does not exist" in refused.records[-1]["result"]["msg"], refused
        assert releases(web1, "roll")["current"] == before

        predicted = ansible._run([*_adhoc(ansible, signed), "--check", "--diff", *as_ci])
        assert predicted.returncode == 0, predicted
        seen = predicted.records[-1]["result"]
        assert seen["changed"] is True and seen["version"] == "3.0.0", seen
        assert seen["diff"][0]["after"] == "releases/3.0.0\n", seen
        assert releases(web1, "roll")["current"] == before

        done = ansible._run([*_adhoc(ansible, signed), *as_ci])
        assert done.returncode == 0, done
        result = done.records[-1]["result"]
        assert result["version"] == "3.0.0" and result["changed"] is True, result
        assert releases(web1, "roll")["current"] == "3.0.0"
        history = json.loads(web1.run([PYRELCTL, "--json", "history", "roll"]).stdout)
        assert history["history"][-1]["user"] == "ci (by grant)"
    finally:
        web1.run([PYRELCTL, "revoke", "roll", "--user", "ci"], check=False)
        web1.run(["rm", "-f", "/etc/pyrelctl/roll/allowed_signers"])
        web1.run(["userdel", "--remove", "ci"], check=False)


def _adhoc(ansible: Ansible, artifact: Path) -> list[str]:
    """`ansible web1 -m pyrelctl_release -a {src: ARTIFACT}`, without become."""
    module = "pyrelctl.deploy.pyrelctl_release"
    args = json.dumps({"src": os.fspath(artifact), "executable": os.fspath(PYRELCTL)})
    return [os.fspath(VENV / "bin" / "ansible"), "web1", "-m", module, "-a", args]
