"""A real Elixir web release, Plug + Bandit + erlang-systemd, under load (issue 27).

`shop` is the prebuilt test data in the shared fixtures (its README says
what each tarball does): 1.0.0 and 1.1.0 serve `shop VERSION` on
127.0.0.1:4000 from the socket systemd passes, 1.2.0 raises in
`Application.start/2` before Bandit starts. Each carries a release.toml with
`type = "notify"`, `[socket]` and an http health check, so every deploy here
is an overlap deploy (deploy/overlap.py).

The failed overlap deploy of 1.2.0 once left 1.1.0 alive but deaf while
pyrelctl said it "kept running": systemd cleared O_NONBLOCK on the shared
socket when it started the overlap unit (NonBlocking=, systemd.service(5)),
and the BEAM of 1.1.0 then blocked its schedulers in accept(2)
(docs/zero-downtime.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.load import Load
from devtools.machine import Machine, MachineCommand

APP = "shop"
URL = "http://127.0.0.1:4000/"
GRACE = ("--grace", "1")
FIXTURE_DIR = Path("shared/fixtures/elixir-bandit")


def _fixture_root() -> Path:
    """The fixture's directory: $PYRELCTL_BANDIT_FIXTURE, else the first
    ``shared/fixtures/elixir-bandit`` beside the checkout or above it."""
    override = os.environ.get("PYRELCTL_BANDIT_FIXTURE")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parents[2]
    for parent in here.parents:
        if (parent / FIXTURE_DIR / "artifacts").is_dir():
            return parent / FIXTURE_DIR
    pytest.fail(
        f"no {FIXTURE_DIR} above {here}: set PYRELCTL_BANDIT_FIXTURE to the fixture's directory"
    )


@pytest.fixture(scope="module")
def shop(scratch: Path) -> dict[str, Path]:
    """The fixture's tarballs, checked against its SHA256SUMS, copied into scratch
    (which the machine sees): version -> path."""
    source = _fixture_root() / "artifacts"
    dest = scratch / "bandit"
    dest.mkdir(exist_ok=True)
    sums = {
        name.lstrip("*"): digest
        for digest, name in (
            line.split() for line in (source / "SHA256SUMS").read_text().splitlines()
        )
    }
    found = {}
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        name = f"shop-{version}.tar.gz"
        data = (source / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sums[name], name
        shutil.copyfile(source / name, dest / name)
        found[version] = dest / name
    return found


@pytest.fixture
def app(pyrelctl: MachineCommand) -> Any:
    pyrelctl("uninstall", "--purge", APP)  # a mix test of this session may have left one
    yield APP
    pyrelctl("uninstall", "--purge", APP)


def main_pid(machine: Machine) -> str:
    return machine.unit_property(f"{APP}.service", "MainPID")


def assert_no_failed_request(summary: dict[str, Any], versions: tuple[str, ...]) -> None:
    assert summary["errors"] == [], (len(summary["errors"]), summary["errors"][:5])
    served = summary["bodies"]
    assert set(served) <= {f"shop {v}" for v in versions}, served
    assert sum(served.values()) > 100, served  # the load ran through the deploy


def assert_serves(machine: Machine, pyrelctl: MachineCommand, version: str) -> None:
    """HTTP and distribution both answer: the node is not deaf."""
    assert machine.http_get(URL, timeout=5) == f"shop {version}"
    rpc = pyrelctl("rpc", APP, "IO.puts(:ok)", timeout=60)
    assert (rpc.returncode, rpc.stdout.strip()) == (0, "ok"), rpc.stderr


def test_upgrade_failed_overlap_deploy_and_rollback_under_load(
    machine: Machine,
    pyrelctl: MachineCommand,
    shop: dict[str, Path],
    scratch: Path,
    app: str,
) -> None:
    first = pyrelctl("install", shop["1.0.0"], *GRACE)
    assert first.returncode == 0, first.stderr
    assert_serves(machine, pyrelctl, "1.0.0")

    load = Load(machine, URL, scratch / "bandit-load-upgrade")
    try:
        upgrade = pyrelctl("install", shop["1.1.0"], *GRACE)
    finally:
        summary = load.stop()
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"starting beside the running release: {app}@overlap.service" in upgrade.stderr
    assert_no_failed_request(summary, ("1.0.0", "1.1.0"))
    assert_serves(machine, pyrelctl, "1.1.0")

    # 1.2.0 exits at start beside 1.1.0. The load goes on for a few seconds
    # after the deploy: a deaf 1.1.0 would time out every request from then on.
    pid = main_pid(machine)
    load = Load(machine, URL, scratch / "bandit-load-failed")
    try:
        failed = pyrelctl("install", shop["1.2.0"], *GRACE)
        machine.run(["sleep", "3"])
    finally:
        summary = load.stop()
    assert failed.returncode == 3, failed.stderr
    assert "intentional failure during start" in failed.stderr
    assert "nothing was switched: 1.1.0 kept running" in failed.stderr, failed.stderr
    assert_no_failed_request(summary, ("1.1.0",))
    assert main_pid(machine) == pid  # it served all along: nothing had to restore it
    assert_serves(machine, pyrelctl, "1.1.0")
    # The listener every release shares stays non-blocking (fcntl(2) F_GETFL).
    flags = machine.run(["cat", f"/proc/{pid}/fdinfo/3"]).stdout
    assert int(flags.split("flags:")[1].split()[0], 8) & os.O_NONBLOCK, flags

    load = Load(machine, URL, scratch / "bandit-load-rollback")
    try:
        rollback = pyrelctl("rollback", app, *GRACE)
    finally:
        summary = load.stop()
    assert rollback.returncode == 0, rollback.stderr
    assert_no_failed_request(summary, ("1.0.0", "1.1.0"))
    assert_serves(machine, pyrelctl, "1.0.0")


def test_a_release_left_deaf_after_a_failed_deploy_is_restarted(
    machine: Machine, pyrelctl: MachineCommand, shop: dict[str, Path], app: str
) -> None:
    """No "kept running" without evidence: the release that should serve is
    checked after a failed overlap deploy and restarted when it does not answer."""
    first = pyrelctl("install", shop["1.1.0"], *GRACE)
    assert first.returncode == 0, first.stderr
    # Deaf in another way: the VM is stopped (SIGSTOP); the kernel still
    # queues connections on the socket, and systemd still says "active".
    pid = main_pid(machine)
    machine.run(["kill", "-STOP", pid])
    failed = pyrelctl("install", shop["1.2.0"], *GRACE)
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "kept running" not in failed.stderr, failed.stderr
    assert "1.1.0 does not serve after the failed deploy" in failed.stderr, failed.stderr
    assert "1.1.0 was restarted and runs" in failed.stderr, failed.stderr
    assert main_pid(machine) not in ("0", pid)
    assert_serves(machine, pyrelctl, "1.1.0")
    history = pyrelctl("history", app).stdout
    assert "restart" in history, history


#: Starts UNIT without waiting and freezes its main process (SIGSTOP) once it
#: is a BEAM that catches SIGTERM (SigCgt bit 15): from then until its kernel
#: application runs the signal server, a SIGTERM is dropped (bootwindow.py).
#: systemd's stop sends SIGCONT after SIGTERM, so the stop lands in that window.
_FREEZE_IN_BOOT_WINDOW = r"""
unit=$1
systemctl start --no-block "$unit"
i=0
while [ $i -lt 20000 ]; do
  pid=$(systemctl show -p MainPID --value "$unit")
  if [ "$pid" != 0 ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = beam.smp ]; then
    caught=$(sed -n 's/^SigCgt:\t//p' /proc/$pid/status)
    if [ $(( 0x$caught & 0x4000 )) != 0 ]; then kill -STOP "$pid"; echo "$pid"; exit 0; fi
  fi
  i=$((i+1))
done
exit 1
"""


def freeze_in_boot_window(machine: Machine) -> str:
    return machine.run(["sh", "-c", _FREEZE_IN_BOOT_WINDOW, "sh", f"{APP}.service"]).stdout.strip()


def timed(pyrelctl: MachineCommand, *args: str, input: str | None = None) -> tuple[Any, float]:
    started = time.monotonic()
    proc = pyrelctl(*args, input=input)
    return proc, time.monotonic() - started


def test_restarts_wait_for_readiness_and_stop_a_booting_vm_at_once(
    machine: Machine, pyrelctl: MachineCommand, shop: dict[str, Path], app: str
) -> None:
    first = pyrelctl("install", shop["1.1.0"], *GRACE)
    assert first.returncode == 0, first.stderr
    # A restart waits for what an install waits for: READY=1, the health
    # check, the grace period; `rpc` right after it reaches the node.
    restart = pyrelctl("restart", app)
    assert restart.returncode == 0, restart.stderr
    assert "waiting for health check http" in restart.stderr, restart.stderr
    assert "shop 1.1.0 is up" in restart.stderr, restart.stderr
    assert_serves(machine, pyrelctl, "1.1.0")
    secret = pyrelctl("secret", "set", app, "token", "--restart", input="s3cret")
    assert secret.returncode == 0, secret.stderr
    assert "shop 1.1.0 is up" in secret.stderr, secret.stderr
    assert_serves(machine, pyrelctl, "1.1.0")

    # A stop that lands while the VM boots (TimeoutStopSec=30s would end it).
    machine.systemctl("stop", f"{app}.service")
    assert freeze_in_boot_window(machine)
    stop, took = timed(pyrelctl, "stop", app)
    assert stop.returncode == 0, stop.stderr
    assert took < 10, took
    assert machine.unit_property(f"{app}.service", "Result") == "success"
    # And a restart.
    assert freeze_in_boot_window(machine)
    restart, took = timed(pyrelctl, "restart", app)
    assert restart.returncode == 0, restart.stderr
    assert took < 15, took
    assert_serves(machine, pyrelctl, "1.1.0")
