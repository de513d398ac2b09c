"""The generated units are sandboxed, and the apps still work in the sandbox (issue 6)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand

#: systemd-analyze security's --threshold is the exposure x 10: 1.5 or lower.
THRESHOLD = "15"


def exposure(machine: Machine, unit: str) -> float:
    """The overall exposure `systemd-analyze security` gives a loaded unit."""
    out = machine.run(["systemd-analyze", "security", "--no-pager", unit]).stdout
    line = next(x for x in out.splitlines() if "Overall exposure level" in x)
    return float(line.split("exposure level for")[1].split(":")[1].split()[0])


def test_mix_release_is_hardened_and_still_serves(
    machine: Machine,
    pyrelctl: MachineCommand,
    mix_artifacts: dict[str, Path],
    cleanup: Callable[[str], None],
) -> None:
    app = "shop-hard"
    cleanup(app)
    proc = pyrelctl("install", "--app", app, mix_artifacts["1.0.0"], "--grace", "2")
    assert proc.returncode == 0, proc.stderr
    score = exposure(machine, f"{app}.service")
    assert score <= 1.5, score
    check = machine.run(
        ["systemd-analyze", "security", "--no-pager", f"--threshold={THRESHOLD}", app],
        check=False,
    )
    assert check.returncode == 0, check.stdout[-2000:]
    # The app works inside the sandbox: rpc reaches the running node.
    rpc = pyrelctl("rpc", app, "IO.puts(:sandboxed)")
    assert rpc.returncode == 0 and "sandboxed" in rpc.stdout, rpc.stderr
    machine.wait_for_journal(app, "shop 1.0.0 started")


@pytest.mark.parametrize(
    ("path", "writable"),
    [
        ("/opt/{app}/current/www/probe", False),  # the release: root's, read-only
        ("/opt/{app}/probe", False),
        ("/etc/probe", False),
        ("/tmp/probe", True),  # its own private /tmp
        ("/var/lib/{app}/probe", True),  # StateDirectory=
        ("/run/{app}/probe", True),  # RuntimeDirectory=
        ("/dev/shm/probe-{app}", True),  # its own tmpfs, not the host's (below)
    ],
)
def test_the_service_writes_only_its_own_directories(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
    path: str,
    writable: bool,
) -> None:
    app = "sandboxed"
    cleanup(app)
    assert pyrelctl("install", make_release(name=app, version="1"), "--grace", "0").returncode == 0
    target = path.format(app=app)
    # eval runs with the service's exact user and sandbox (a transient unit).
    proc = machine.run(
        [
            "systemd-run",
            "--wait",
            "--pipe",
            "--collect",
            "--quiet",
            *(f"--property={p}" for p in _service_properties(machine, app)),
            "sh",
            "-c",
            f"echo x > {target} && echo wrote",
        ],
        check=False,
    )
    assert ("wrote" in proc.stdout) is writable, proc.stdout + proc.stderr
    if writable:
        assert proc.returncode == 0
    # Nothing it writes lands in a place the host or another service shares.
    assert machine.run(["test", "-e", target], check=False).returncode != 0 or not (
        target.startswith(("/dev/shm", "/tmp"))
    ), f"{target} is visible outside the service"


def _service_properties(machine: Machine, app: str) -> list[str]:
    """The sandbox lines of the generated unit, as systemd-run properties."""
    text = machine.run(["cat", f"/etc/systemd/system/{app}.service"]).stdout
    keep = (
        "DynamicUser",
        "User",
        "StateDirectory",
        "RuntimeDirectory",
        "Protect",
        "Private",
        "ReadWrite",
        "UMask",
        "RestrictAddress",
        "SystemCall",
        "MemoryDeny",
        "Capab",
        "Temporary",
    )
    props = [line for line in text.splitlines() if line.startswith(keep)]
    assert any(p.startswith("ProtectSystem") or p == "DynamicUser=yes" for p in props)
    return props


def test_generic_release_exposure(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    app = "scored"
    cleanup(app)
    assert pyrelctl("install", make_release(name=app, version="1"), "--grace", "0").returncode == 0
    assert exposure(machine, f"{app}.service") <= 1.5


def test_sandbox_exceptions_from_the_manifest(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    app = "lowport"
    cleanup(app)
    machine.run(["mkdir", "-p", "/srv/lowport"])
    extra = (
        "[service]\nbind_privileged_ports = true\nmemory_deny_write_execute = false\n"
        'writable_paths = ["/srv/lowport"]\n'
    )
    artifact = make_release(name=app, version="1", behaviour="serve", port=80, extra_toml=extra)
    proc = pyrelctl(
        "install",
        artifact,
        *("--health-tcp", "127.0.0.1:80", "--grace", "0.5"),
        # The host's consent to each widening (issue 15): the release alone has none.
        *("--allow", "low-ports", "--allow", "wx-memory", "--allow", "write:/srv/lowport"),
    )
    assert proc.returncode == 0, proc.stderr  # it could bind port 80 without root
    show = machine.systemctl(
        "show",
        "-p",
        "MemoryDenyWriteExecute",
        "-p",
        "ReadWritePaths",
        "-p",
        "AmbientCapabilities",
        app,
    ).stdout
    assert "MemoryDenyWriteExecute=no" in show
    assert "ReadWritePaths=/srv/lowport" in show
    assert "cap_net_bind_service" in show


def test_secrets_reach_the_service_as_credentials_never_as_environment(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    app = "keeper"
    cleanup(app)
    assert pyrelctl("install", make_release(name=app, version="1"), "--grace", "0").returncode == 0
    value = "hunter2-do-not-leak"
    proc = pyrelctl("secret", "set", app, "db-password", "--restart", input=value)
    assert proc.returncode == 0, proc.stderr
    show = machine.systemctl("show", app).stdout
    assert value not in show  # D-Bus shows every property to any user
    # (systemctl 252 shows LoadCredential= as "[unprintable]": read the unit.)
    text = machine.systemctl("cat", app).stdout
    assert "LoadCredential=db-password:/etc/pyrelctl/keeper/credentials/db-password" in text
    pid = machine.systemctl("show", "-p", "MainPID", "--value", app).stdout.strip()
    environ = machine.run(["cat", f"/proc/{pid}/environ"]).stdout.split("\0")
    assert not any(value in entry for entry in environ)
    creds = next(e.split("=", 1)[1] for e in environ if e.startswith("CREDENTIALS_DIRECTORY="))
    # Read as the service itself: its own uid, inside its sandbox.
    uid = machine.run(["stat", "-c", "%u", f"/proc/{pid}"]).stdout.strip()
    read = machine.run(
        [
            "nsenter",
            f"--target={pid}",
            "--mount",
            f"--setuid={uid}",
            f"--setgid={uid}",
            "cat",
            f"{creds}/db-password",
        ],
        check=False,
    )
    assert read.stdout == value, read.stderr
    store = machine.run(["stat", "-c", "%a", f"/etc/pyrelctl/{app}/credentials/db-password"])
    assert store.stdout.strip() == "600"
