"""The mix cookie is in no process's command line (issue 26, item 5).

Mix's `bin/NAME` passes `--cookie "$RELEASE_COOKIE"` down to the VM as
`-setcookie COOKIE`, and every local user may read `/proc/PID/cmdline`.
pyrelctl gives the script a placeholder instead and the VM its cookie in
`$HOME/.erlang.cookie` (pyrelctl/mixcookie.py). Here an unprivileged user
reads every process's command line inside the booted systemd, over and over,
while the app runs and pyrelctl runs its commands against it: rpc, eval,
remote, a command health check, and an overlap deploy's second node.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand
from tests.system.test_operate import Console

APP = "ck-shop"
PORT = 18441
#: What RELEASE_COOKIE holds for a mix app (pyrelctl.mixcookie.PLACEHOLDER),
#: written out: the test states what users see in `ps`.
PLACEHOLDER = "-pyrelctl_cookie_from_home"
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
STOP_FILE = "/run/ck-scan-stop"

#: Reads every process's argv until STOP_FILE appears (run as nobody). The
#: needle comes on stdin, never in this script's own argv. Prints the argvs
#: that hold it, and every BEAM's, which shows that the scan saw the VMs at all.
SCAN = """
import json, os, sys, time
needle = sys.stdin.readline().strip().encode()
stop, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
me, leaks, beams, rounds = str(os.getpid()), {}, set(), 0
while True:
    rounds += 1
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                data = f.read()
        except OSError:
            continue
        text = " ".join(w.decode(errors="replace") for w in data.split(b"\\0"))
        if needle in data:
            leaks[pid] = text
        if b"beam.smp" in data:
            beams.add(text)
    if os.path.exists(stop) or time.monotonic() > deadline:
        break
    time.sleep(0.01)
print(json.dumps({"uid": os.getuid(), "rounds": rounds, "leaks": leaks, "beams": sorted(beams)}))
"""


class Scan:
    """SCAN, run as nobody inside the machine from a thread until :meth:`stop`."""

    def __init__(self, machine: Machine, needle: str, timeout: float = 240) -> None:
        self.machine = machine
        machine.run(["rm", "-f", STOP_FILE])
        argv = [*NOBODY, "python3", "-c", SCAN, STOP_FILE, str(timeout)]
        self._out: list[str] = []
        self._thread = threading.Thread(
            target=lambda: self._out.append(
                machine.run(argv, input=needle + "\n", timeout=timeout + 30).stdout
            ),
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> dict[str, object]:
        self.machine.run(["touch", STOP_FILE])
        self._thread.join(60)
        assert self._out, "the scan failed or is still running"
        result: dict[str, object] = json.loads(self._out[0])
        return result


def app_cookie(machine: Machine, app: str) -> str:
    """The app's cookie as pyrelctl keeps it (root's file)."""
    found = machine.run(["cat", f"/etc/pyrelctl/{app}/cookie"], check=False)
    if found.returncode == 0:
        return found.stdout.strip()
    # Where pyrelctl kept it before this change: read here too, so that the
    # test fails on such a pyrelctl for the leak itself, not for a file name.
    text = machine.run(["cat", f"/etc/pyrelctl/{app}/release.env"]).stdout
    return text.strip().removeprefix("RELEASE_COOKIE=")


@pytest.fixture(scope="module")
def ck_shop(
    machine: Machine, pyrelctl: MachineCommand, mix_artifacts: dict[str, Path]
) -> Iterator[str]:
    """The mix release 1.0.0 running as `ck-shop` on a socket (so that a deploy
    can overlap), checked by an rpc; purged afterwards."""
    proc = pyrelctl(
        "install",
        "--app",
        APP,
        mix_artifacts["1.0.0"],
        "--grace",
        "1",
        "--listen",
        f"127.0.0.1:{PORT}",
        "--strategy",
        "overlap",
        "--health-command",
        "bin/shop rpc 'IO.puts(:healthy)'",
    )
    assert proc.returncode == 0, proc.stderr
    yield APP
    pyrelctl("uninstall", "--purge", APP)


def test_no_command_line_holds_the_cookie(
    machine: Machine, pyrelctl: MachineCommand, mix_artifacts: dict[str, Path], ck_shop: str
) -> None:
    cookie = app_cookie(machine, ck_shop)
    assert len(cookie) >= 32, cookie
    scan = Scan(machine, cookie)
    try:
        # rpc (a second, short-lived VM) reaches the node: both have the cookie.
        # The sleep keeps its VM up long enough for the scan to see it.
        rpc = pyrelctl("rpc", ck_shop, "IO.puts(Node.get_cookie()); Process.sleep(1500)")
        assert (rpc.returncode, rpc.stdout) == (0, cookie + "\n"), rpc
        # eval: a VM with no distribution (what its script got: below).
        evaluated = pyrelctl(
            "eval", ck_shop, 'IO.puts(System.get_env("RELEASE_COOKIE")); Process.sleep(1500)'
        )
        assert evaluated.returncode == 0, evaluated
        # remote: a console in the service's node.
        console = Console(
            machine.enter_argv([*pyrelctl.prefix, "remote", ck_shop], {"TERM": "xterm"})
        )
        try:
            console.expect(f"iex({ck_shop}@127.0.0.1)1>".encode())
            console.send(b"Node.get_cookie() |> Atom.to_string() |> String.length()\r")
            console.expect(f"{len(cookie)}".encode())
            console.send(b"\x03")
            console.expect(b"BREAK")
            console.send(b"\x03")
            assert console.wait() == 0, console.output
        finally:
            console.kill()
        # An overlap deploy: the new release's node beside the running one,
        # checked by the health command (an rpc from the new release).
        deploy = pyrelctl("install", "--app", ck_shop, mix_artifacts["1.1.0"], "--grace", "1")
        assert deploy.returncode == 0, deploy.stderr
        assert f"starting beside the running release: {ck_shop}@overlap.service" in deploy.stderr
        # The service's node, started by the deploy, has the same cookie.
        # (Never typed into an expression: that is on the script's argv.)
        after = pyrelctl("rpc", ck_shop, "IO.puts(Node.get_cookie())")
        assert after.stdout == cookie + "\n", after
    finally:
        result = scan.stop()

    assert result["uid"] == 65534 and isinstance(result["rounds"], int) and result["rounds"] > 10
    assert result["leaks"] == {}, result["leaks"]
    beams = result["beams"]
    assert isinstance(beams, list)
    # The scan saw every VM (no hidden /proc made it pass): the service's
    # node, the overlap node, the rpc and remote nodes, eval's VM, each
    # started with the placeholder where mix puts the cookie.
    for what in (
        f"-name {ck_shop}@127.0.0.1",
        f"-name {ck_shop}_overlap@127.0.0.1",
        "-name rpc-",
        "-name rem-",
        "--eval IO.puts(System.get_env",
    ):
        assert any(what in argv for argv in beams), (what, beams)
    assert all(f"-setcookie {PLACEHOLDER} " in argv for argv in beams), beams
    assert evaluated.stdout == PLACEHOLDER + "\n", evaluated  # RELEASE_COOKIE


def test_the_cookie_reaches_the_service_user_alone(
    machine: Machine, pyrelctl: MachineCommand, ck_shop: str
) -> None:
    cookie = app_cookie(machine, ck_shop)
    # Not over D-Bus either, which every user may read.
    assert cookie not in machine.systemctl("show", f"{ck_shop}.service").stdout
    assert cookie not in machine.run([*NOBODY, "systemctl", "cat", ck_shop]).stdout
    # The VM's copy: the service user's, 0400, in its runtime directory.
    home = f"/run/{ck_shop}/.erlang.cookie"
    service_uid = machine.run(["stat", "-c", "%u", f"/run/{ck_shop}"]).stdout.strip()
    assert machine.run(["stat", "-c", "%a %u", home]).stdout.split() == ["400", service_uid]
    assert machine.run(["cat", home]).stdout == cookie
    assert machine.run([*NOBODY, "cat", home], check=False).returncode != 0
    # The root-only source; the older release.env is gone.
    assert machine.run(
        ["stat", "-c", "%a %u", f"/etc/pyrelctl/{ck_shop}/cookie"]
    ).stdout.split() == [
        "600",
        "0",
    ]
    assert machine.run(
        ["test", "-e", f"/etc/pyrelctl/{ck_shop}/release.env"], check=False
    ).returncode
