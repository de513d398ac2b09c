"""`pyrelctl doctor` against a real systemd: version, D-Bus, the unit's state in systemd."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.machine import Machine, MachineCommand

APP = "doc"


def report(pyrelctl: MachineCommand, *args: str) -> tuple[int, dict[str, Any]]:
    proc = pyrelctl("--json", "doctor", *args)
    return proc.returncode, json.loads(proc.stdout)


def problems(document: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [
        (f["subject"], f["check"], f["fix"])
        for f in document["findings"]
        if f["severity"] == "problem"
    ]


def test_doctor_with_systemd(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    cleanup(APP)
    installed = pyrelctl("install", make_release(name=APP, version="1.0"), "--grace", "0.5")
    assert installed.returncode == 0, installed.stderr

    code, document = report(pyrelctl, APP)
    assert (code, problems(document)) == (0, [])
    ok = {f["check"]: f["message"] for f in document["findings"] if f["severity"] == "ok"}
    assert ok["systemd-version"].startswith("systemd 252")
    assert ok["dbus"] == "systemd answers on the system bus"
    assert ok["unit-state"].startswith(f"{APP}.service is active (running), pid ")

    unit = f"/etc/systemd/system/{APP}.service"
    dropin = f"/etc/systemd/system/{APP}.service.d"
    try:
        # 1. The unit file edited behind systemd's back: reload needed, and it
        #    differs from what pyrelctl renders.
        machine.run(["sh", "-c", f"sed -i s/RestartSec=2s/RestartSec=5s/ {unit}"])
        code, document = report(pyrelctl, APP)
        assert code == 1
        found = problems(document)
        assert (APP, "unit-state", "systemctl daemon-reload") in found
        assert any(check == "unit-file" for _, check, _ in found)
        human = pyrelctl("doctor", APP).stdout
        assert "fix: systemctl daemon-reload" in human

        # 2. A crash that systemd does not restart: the unit has failed.
        machine.run(["mkdir", "-p", dropin])
        machine.run(["sh", "-c", f"printf '[Service]\\nRestart=no\\n' > {dropin}/norestart.conf"])
        machine.systemctl("daemon-reload")
        machine.systemctl("kill", "--signal=SIGKILL", f"{APP}.service")
        machine.run(["sh", "-c", f"until systemctl is-failed -q {APP}; do sleep 0.1; done"])
        code, document = report(pyrelctl, APP)
        assert code == 1
        failed = [f for f in document["findings"] if f["check"] == "unit-state"]
        assert [f["severity"] for f in failed] == ["problem"]
        assert "failed (signal; main process killed by SIGKILL)" in failed[0]["message"]
        assert failed[0]["fix"] == f"pyrelctl logs {APP} -n 50 && pyrelctl restart {APP}"
        dropins = [f for f in document["findings"] if f["check"] == "drop-ins"]
        assert dropins[0]["severity"] == "info"
        assert dropins[0]["details"] == [f"{dropin}/norestart.conf"]

        # 3. Stopped on purpose: a warning, not a problem.
        machine.systemctl("reset-failed", f"{APP}.service")
        code, document = report(pyrelctl, APP)
        stopped = [f for f in document["findings"] if f["check"] == "unit-state"]
        assert [f["severity"] for f in stopped] == ["warning"]
        assert stopped[0]["fix"] == f"pyrelctl start {APP}"

        # 4. No D-Bus: pyrelctl cannot talk to systemd at all.
        machine.systemctl("stop", "dbus.socket", "dbus.service")
        code, document = report(pyrelctl, APP)
        assert code == 1
        assert [check for _, check, _ in problems(document)][:1] == ["dbus"]
    finally:
        machine.systemctl("start", "dbus.socket", check=False)
        machine.run(["rm", "-rf", dropin])
        machine.systemctl("daemon-reload")
    restored = pyrelctl("install", f"/opt/{APP}/releases/1.0", "--app", APP, "--grace", "0.5")
    assert restored.returncode == 0, restored.stderr
    code, document = report(pyrelctl, APP)
    assert (code, problems(document)) == (0, [])


def test_doctor_finds_a_wide_or_broken_epmd_socket_and_gives_the_real_fix(
    machine: Machine,
    pyrelctl: MachineCommand,
    mix_artifacts: dict[str, Path],
    cleanup: Callable[[str], None],
) -> None:
    """Debian's epmd.socket on every interface, and its epmd.service failing behind
    it (this container has no `epmd` user: 217/USER), seen by doctor (issue 27).

    On port 14369, through the app's ERL_EPMD_PORT: the other mix releases of
    the session's container keep their EPMD on 127.0.0.1:4369 meanwhile.
    """
    app, port = "epmdcheck", "14369"
    cleanup(app)
    dropins = "/etc/systemd/system/epmd.socket.d"
    installed = pyrelctl("install", "--app", app, mix_artifacts["1.0.0"], "--grace", "1",
                         "--env", f"ERL_EPMD_PORT={port}")  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    # Stopping it stops the EPMD its VM started (in its cgroup).
    assert pyrelctl("stop", app).returncode == 0
    machine.run(["sh", "-c", f"mkdir -p {dropins} && printf '[Socket]\\nListenStream=\\n"
                 f"ListenStream={port}\\n' > {dropins}/00-test-port.conf && "
                 "systemctl daemon-reload && systemctl start epmd.socket"])  # fmt: skip
    try:
        code, document = report(pyrelctl, app)
        epmd = [f for f in document["findings"] if f["check"] == "epmd"]
        assert [f["severity"] for f in epmd] == ["problem"], epmd
        assert f"listens on [::]:{port}" in epmd[0]["message"]
        assert f"ListenStream=127.0.0.1:{port}" in epmd[0]["fix"]

        # The release dies at start: epmd.service fails behind the socket
        # (`start` may return before the VM gives up: wait until it did).
        pyrelctl("start", app)
        machine.run(["sh", "-c", f"for _ in $(seq 200); do journalctl -u {app} | "
                     "grep -q epmd_close && exit 0; sleep 0.1; done; exit 1"])  # fmt: skip
        assert pyrelctl("stop", app).returncode == 0
        code, document = report(pyrelctl, app)
        assert code == 1
        broken = [f for f in document["findings"] if f["check"] == "epmd" and
                  "epmd_close" in f["message"]]  # fmt: skip
        assert len(broken) == 1, document["findings"]
        state = [f for f in document["findings"] if f["check"] == "unit-state"]
        assert state[0]["fix"] == broken[0]["fix"]  # not "pyrelctl start", which fails again
        assert broken[0]["fix"].startswith("systemctl disable --now epmd.socket epmd.service")

        # Both fixes, as doctor gives them, work.
        machine.run(["sh", "-c", epmd[0]["fix"]])
        listen = machine.systemctl("show", "-p", "Listen", "--value", "epmd.socket").stdout
        assert listen.strip() == f"127.0.0.1:{port} (Stream)"
        machine.run(["sh", "-c", broken[0]["fix"]])
        assert pyrelctl("start", app).returncode == 0
        code, document = report(pyrelctl, app)
        assert [f for f in document["findings"] if f["check"] == "epmd"] == []
        assert (code, problems(document)) == (0, [])
    finally:
        machine.run(["sh", "-c", f"rm -rf {dropins}; systemctl daemon-reload; "
                     "systemctl stop epmd.socket epmd.service; "
                     "systemctl reset-failed epmd.service epmd.socket"], check=False)  # fmt: skip
