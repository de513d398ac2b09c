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
