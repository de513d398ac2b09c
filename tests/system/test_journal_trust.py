"""A failure report holds only what journald vouches for (issue 26, item 6).

Any local process may log any field not starting with ``_`` on journald's
native socket, and a unit's invocation id is world-readable
(``/run/systemd/units/invocation:UNIT``). A forger running as ``nobody``
watches the target's units and logs, for each new invocation, lines with
``INVOCATION_ID=<it>`` and ``SYSLOG_IDENTIFIER=systemd``: they must not reach
the failure report (human and --json), nor turn an overlap deploy into a
restart with a forged "address already in use" (deploy/overlap.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand
from devtools.proc import wait_until

FORGED = "FORGED-LINE bind: address already in use"
PORT = 18470
URL = f"http://127.0.0.1:{PORT}/"

#: The forger: the native protocol is "FIELD=value" lines in one datagram to
#: /run/systemd/journal/socket (systemd's JOURNAL_NATIVE_PROTOCOL.md).
FORGER = """if True:
    import os, socket, sys, time
    units = sys.argv[1].split(",")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    seen = set()
    while True:
        for unit in units:
            try:
                invocation = os.readlink("/run/systemd/units/invocation:" + unit)
            except OSError:
                continue
            if invocation in seen:
                continue
            seen.add(invocation)
            fields = {
                "MESSAGE": sys.argv[2], "SYSLOG_IDENTIFIER": "systemd", "SYSLOG_PID": "1",
                "INVOCATION_ID": invocation, "UNIT": unit, "PRIORITY": "3",
            }
            data = "".join(f"{k}={v}\\n" for k, v in fields.items()).encode()
            sock.sendto(data, "/run/systemd/journal/socket")
            print("forged for", unit, invocation, flush=True)
        time.sleep(0.005)
"""


@pytest.fixture
def forger(machine: Machine) -> Iterator[Callable[[str, list[str]], None]]:
    """Start the forger as nobody (a plain systemd-run unit) against units of an app."""
    started: list[str] = []

    def start(name: str, units: list[str]) -> None:
        unit = f"forger-{name}"
        # One line of code: systemd 252 writes a transient unit's ExecStart=
        # arguments into /run/systemd/transient/ with their newlines raw.
        code = f"import base64; exec(base64.b64decode({base64.b64encode(FORGER.encode())!r}))"
        machine.run(
            ["systemd-run", f"--unit={unit}", "--uid=nobody", "--property=Type=exec",
             "/usr/bin/python3", "-c", code, ",".join(units), FORGED]
        )  # fmt: skip
        started.append(unit)

    yield start
    for unit in started:
        machine.systemctl("stop", unit, check=False)


def forged_invocations(machine: Machine, unit: str) -> list[str]:
    """The invocations the forger wrote lines for (proof that it did)."""
    out = machine.journalctl(f"_SYSTEMD_UNIT={unit}", "-o", "cat", check=False).stdout
    return [line.split()[-1] for line in out.splitlines() if line.startswith("forged for")]


def assert_forged_for(machine: Machine, forger: str, invocation: str) -> None:
    wait_until(
        lambda: invocation in forged_invocations(machine, forger) or None,
        timeout=10,
        what=f"the forger to forge lines for {invocation}",
    )
    # The forged lines are in the journal under the target's INVOCATION_ID.
    out = machine.journalctl(f"INVOCATION_ID={invocation}", "-o", "cat").stdout
    assert FORGED in out, out


def test_forged_lines_stay_out_of_the_failure_report(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    forger: Callable[[str, list[str]], None],
    cleanup: Callable[[str], None],
) -> None:
    app = "jtrust"
    cleanup(app)
    assert (
        pyrelctl("install", make_release(name=app, version="1.0.0"), "--grace", "0").returncode == 0
    )
    forger(app, [f"{app}.service"])
    # 2.0.0 runs but its health command fails: its invocation lives for the
    # whole --timeout, and the forger gets its id from /run/systemd/units.
    sick = '[health]\ncommand = ["bin/jtrust", "nope"]\n'
    for version, json_output in (("2.0.0", False), ("2.0.1", True)):
        release = make_release(name=app, version=version, extra_toml=sick)
        args = ("--json",) if json_output else ()
        proc = pyrelctl(*args, "install", release, "--timeout", "3", "--grace", "0")
        assert proc.returncode == 3, proc.stdout + proc.stderr
        if json_output:
            failed = json.loads(proc.stdout)["failed"]
            invocation, report = failed["invocation_id"], "\n".join(failed["journal"])
        else:
            (line,) = [x for x in proc.stderr.splitlines() if "journal of the failed start" in x]
            invocation = line.split("invocation ")[1].rstrip("):")
            report = proc.stderr
        assert invocation
        assert_forged_for(machine, f"forger-{app}.service", invocation)
        assert f"{app} {version} started" in report, report  # its own lines are there
        assert FORGED not in report and "FORGED" not in proc.stdout + proc.stderr, report


def test_a_forged_line_does_not_turn_an_overlap_deploy_into_a_restart(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    forger: Callable[[str, list[str]], None],
    cleanup: Callable[[str], None],
) -> None:
    app = "jtrustovl"
    cleanup(app)
    socket = f'[socket]\nlisten = ["127.0.0.1:{PORT}"]\n'

    def serving(version: str, health: str) -> Path:
        extra = socket + f'[health]\nhttp = "{health}"\n'
        return make_release(name=app, version=version, behaviour="serve", port=PORT,
                            extra_toml=extra)  # fmt: skip

    proc = pyrelctl("install", serving("1.0.0", URL), "--grace", "0", "--strategy", "overlap")
    assert proc.returncode == 0, proc.stderr
    forger(app, [f"{app}@overlap.service"])
    # 2.0.0 answers 503 on its own /unhealthy/2.0.0: its overlap start fails.
    sick = serving("2.0.0", f"{URL}unhealthy/2.0.0")
    proc = pyrelctl("install", sick, "--grace", "0", "--timeout", "3")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    # Not "cannot run beside 1.0.0: a port it binds itself is taken ...; restarting instead".
    assert "cannot run" not in proc.stderr and "restarting instead" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "journal of the failed start" in x]
    invocation = line.split("invocation ")[1].rstrip("):")
    assert_forged_for(machine, f"forger-{app}.service", invocation)
    assert f"{app}@overlap.service" in proc.stderr, proc.stderr  # the failed start was the overlap
    assert "FORGED" not in proc.stdout + proc.stderr
    assert machine.http_get(URL) == f"{app} 1.0.0"
