"""``pyrelctl install URL`` in the booted systemd: the host pulls from an HTTP
server on loopback in the container (devtools/artifactserver.py, a transient
service there), and docs/deploys.md's timer units run as written (issue 31,
item 2)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand
from devtools.newhost import free_port
from devtools.proc import wait_until
from tests.cli.test_signatures import keypair
from tests.system.conftest import REPO_ROOT, Checkout

SERVER_UNIT = "pyrelctl-test-artifacts.service"
DOCS = REPO_ROOT / "docs/deploys.md"


@dataclass(frozen=True)
class Served:
    """The directory the server inside serves, its URL, and the keys that sign for it."""

    directory: Path
    base: str
    ops: Path
    intruder: Path

    def publish(self, artifact: Path, *, as_name: str = "", key: Path | None = None) -> str:
        """Serve ``artifact`` (as ``as_name``) with a signature by ``key``
        (default ops); return its file name."""
        name = as_name or artifact.name
        shutil.copyfile(artifact, self.directory / name)
        # ssh-keygen asks before it replaces a .sig, and keeps it without a terminal.
        (self.directory / f"{name}.sig").unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-Y", "sign", "-f", key or self.ops, "-n",
             "pyrelctl-release", self.directory / name],
            check=True, capture_output=True,
        )  # fmt: skip
        return name

    def trust(self, machine: Machine, app: str) -> None:
        """Make the machine trust ops (only) for ``app``."""
        public = Path(f"{self.ops}.pub").read_text().split()
        machine.run(["mkdir", "-p", "-m", "0700", f"/etc/pyrelctl/{app}"])
        machine.run(
            ["sh", "-c", f"cat > /etc/pyrelctl/{app}/allowed_signers"],
            input=f'ops@example namespaces="pyrelctl-release" {public[0]} {public[1]}\n',
        )


@pytest.fixture
def served(machine: Machine, checkout: Checkout, scratch: Path, tmp_path: Path) -> Iterator[Served]:
    directory = scratch / "served"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    # A port free on the host: the Debian 13 tier's container shares the host's
    # network (test_trixie.py); the Debian 12 one has its own, where it is free too.
    port = free_port()
    machine.run(
        ["systemd-run", f"--unit={SERVER_UNIT}", f"--working-directory={checkout.root}",
         f"--setenv=PYTHONPATH={checkout.root}", checkout.python, "-m",
         "devtools.artifactserver", directory, str(port)],
    )  # fmt: skip
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 1).close()"
    try:
        wait_until(
            lambda: machine.run(["python3", "-c", probe], check=False).returncode == 0 or None,
            timeout=20,
            what="the artifact server inside",
        )
        base = f"http://127.0.0.1:{port}"
        yield Served(directory, base, keypair(tmp_path, "ops"), keypair(tmp_path, "intruder"))
    finally:
        machine.systemctl("stop", SERVER_UNIT, check=False)


def host_state(machine: Machine, app: str) -> str:
    """What a refused pull must not change: releases, current, history, the
    running process, and nothing of a download left."""
    script = (
        f"ls /opt/{app}/releases; readlink /opt/{app}/current; "
        f"wc -l < /var/lib/pyrelctl/{app}/history.jsonl; "
        f"systemctl show -p MainPID --value {app}.service; "
        "ls -A /var/lib/pyrelctl/.downloads"
    )
    return machine.run(["sh", "-c", script]).stdout


def test_a_pull_installs_a_good_release_and_refuses_bad_ones_with_nothing_written(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
    served: Served,
) -> None:
    app = "pulled"
    cleanup(app)
    served.trust(machine, app)
    base = served.base
    good = served.publish(make_release(name=app, version="1"))
    first = pyrelctl("install", f"{base}/{good}", "--allow-http", "--grace", "0.5")
    assert first.returncode == 0, first.stderr
    assert "signature good: signed by ops@example" in first.stderr
    assert machine.systemctl("is-active", f"{app}.service", check=False).stdout.strip() == "active"
    before = host_state(machine, app)
    assert before.split()[:2] == ["1", "releases/1"] and before.endswith("\n"), before

    bad = served.publish(make_release(name=app, version="2"), key=served.intruder)
    next_ = served.publish(make_release(name=app, version="3"))
    refusals = [
        ((f"{base}/{bad}",), 2, "not made by a key trusted"),
        ((f"{base}/{next_}", "--max-size", "1K"), 2, "Content-Length"),
        ((f"{base}/nolength/{next_}", "--max-size", "1K"), 2, "its body is larger than 1024"),
        ((f"{base}/stall/{next_}", "--fetch-timeout", "1"), 1, "sent nothing for 1 s"),
        ((f"{base}/redirect-file/{next_}",), 2, "redirects to file:///etc/passwd"),
        ((f"{base}/{next_}".replace("http:", "https:"),), 1, "TLS failed"),
    ]
    for args, code, expected in refusals:
        refused = pyrelctl("install", *args, "--allow-http")
        assert refused.returncode == code, (args, refused.stderr)
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0], (args, refused.stderr)
        assert host_state(machine, app) == before, args

    # The same server and file, within the limits: installed.
    ok = pyrelctl("install", f"{base}/{next_}", "--allow-http", "--grace", "0.5")
    assert ok.returncode == 0, ok.stderr
    assert machine.run(["readlink", f"/opt/{app}/current"]).stdout.strip() == "releases/3"
    assert machine.run(["ls", "-A", "/var/lib/pyrelctl/.downloads"]).stdout == ""
    mode = machine.run(["stat", "-c", "%a %U", "/var/lib/pyrelctl/.downloads"]).stdout.split()
    assert mode == ["700", "root"]


def docs_units(app: str, base: str, program: str) -> dict[str, str]:
    """The pull units of docs/deploys.md (path -> text), for ``app``, the server
    at ``base`` and the pyrelctl at ``program``: the app's name, the URL,
    --allow-http and pyrelctl's path changed, nothing else."""
    text = DOCS.read_text()
    found = re.findall(r"```ini\n# (/etc/systemd/system/shop-pull\.\w+)\n(.*?)```", text, re.S)
    assert [path for path, _ in found] == [
        "/etc/systemd/system/shop-pull.service",
        "/etc/systemd/system/shop-pull.timer",
    ]
    units = {}
    for path, body in found:
        body = body.replace(
            "https://releases.example/shop/shop-latest.tar.gz",
            f"{base}/shop-latest.tar.gz --allow-http",
        ).replace("/usr/local/bin/pyrelctl", program)
        units[path.replace("shop", app)] = body.replace("shop", app)
    return units


def test_the_docs_pull_timer_deploys_and_stops_after_a_failed_release(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
    served: Served,
) -> None:
    app = "polled"
    cleanup(app)
    served.trust(machine, app)
    units = docs_units(app, served.base, pyrelctl.prefix[0])
    for path, text in units.items():
        machine.run(["sh", "-c", f"cat > {path}"], input=text)
    try:
        machine.systemctl("daemon-reload")
        verify = machine.run(["systemd-analyze", "verify", *units], check=False)
        assert verify.returncode == 0, verify.stderr
        served.publish(make_release(name=app, version="4"), as_name=f"{app}-latest.tar.gz")
        machine.systemctl("enable", "--now", f"{app}-pull.timer")
        run = machine.systemctl("start", f"{app}-pull.service", check=False, timeout=120)
        assert run.returncode == 0, machine.journalctl("-u", f"{app}-pull.service").stdout
        assert machine.run(["readlink", f"/opt/{app}/current"]).stdout.strip() == "releases/4"
        assert machine.systemctl("is-active", f"{app}.service", check=False).stdout.strip() == (
            "active"
        )
        # Again, with nothing new: converges, changes nothing.
        again = machine.systemctl("start", f"{app}-pull.service", check=False, timeout=120)
        assert again.returncode == 0
        assert "is already current" in machine.journalctl("-u", f"{app}-pull.service").stdout

        # A release that fails to come up: rolled back, the timer stops.
        crash = make_release(name=app, version="5", behaviour="crash")
        served.publish(crash, as_name=f"{app}-latest.tar.gz")
        failed = machine.systemctl("start", f"{app}-pull.service", check=False, timeout=120)
        assert failed.returncode != 0
        log = machine.journalctl("-u", f"{app}-pull.service").stdout
        assert "rolled back" in log or "restored" in log, log
        assert machine.run(["readlink", f"/opt/{app}/current"]).stdout.strip() == "releases/4"
        assert machine.systemctl("is-active", f"{app}.service", check=False).stdout.strip() == (
            "active"
        )
        timer = machine.systemctl("is-active", f"{app}-pull.timer", check=False).stdout.strip()
        assert timer == "inactive", log
        status = machine.unit_property(f"{app}-pull.service", "ExecMainStatus")
        assert status == "3", log
    finally:
        machine.systemctl("disable", "--now", f"{app}-pull.timer", check=False)
        machine.systemctl("stop", f"{app}-pull.service", check=False)
        machine.run(["rm", "-f", *units])
        machine.systemctl("daemon-reload")
        machine.systemctl("reset-failed", check=False)
