"""The harness itself: a real, booted systemd that real releases run in.

If these fail, every other system test's result means nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand, MachineError

VENV = Path(__file__).resolve().parents[2] / ".venv"


def _extract_inside(machine: Machine, tarball: Path, root: str) -> None:
    """Extract a release tarball to `root`, a directory on the container's own disk."""
    machine.run(["mkdir", "-p", root])
    machine.run(["tar", "-xzf", os.fspath(tarball), "-C", root])


def _processes_named(fragment: str) -> list[int]:
    """Host PIDs whose command line contains `fragment`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if fragment.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # the process exited while we looked
    return found


def test_system_is_running(machine: Machine) -> None:
    state = machine.systemctl("is-system-running", check=False).stdout.strip()
    assert state in {"running", "degraded"}


def test_commands_run_inside_the_container(machine: Machine) -> None:
    assert machine.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    hostname = machine.run(["cat", "/proc/sys/kernel/hostname"]).stdout.strip()
    assert hostname == machine.name
    inside_id = machine.run(["cat", "/etc/machine-id"]).stdout.strip()
    host_id = Path("/etc/machine-id")
    if host_id.exists():
        assert inside_id != host_id.read_text().strip()


def test_cwd_is_inside_the_container(machine: Machine, scratch: Path) -> None:
    # A directory that exists only inside: if cwd were resolved on the host
    # (as `nsenter --wd` does), this would fail or list the host's /opt.
    machine.run(["mkdir", "-p", "/opt/harness/cwd-probe/inside-only"])
    listing = machine.run(["ls"], cwd="/opt/harness/cwd-probe").stdout.split()
    assert listing == ["inside-only"]
    assert not Path("/opt/harness/cwd-probe").exists()


def test_network_is_private(machine: Machine) -> None:
    inside = machine.run(["readlink", "/proc/self/ns/net"]).stdout.strip()
    assert inside != os.readlink("/proc/self/ns/net")
    interfaces = machine.run(["ls", "/sys/class/net"]).stdout.split()
    assert interfaces == ["lo"]


def test_network_online_target_is_reached_at_once(machine: Machine) -> None:
    # Generated services order themselves after network-online.target.
    result = machine.run(
        [
            "systemd-run",
            "--unit=harness-online",
            "--property=After=network-online.target",
            "--property=Wants=network-online.target",
            "--wait",
            "true",
        ],
        timeout=15,
    )
    assert "status=0" in result.stderr


def test_debian_alternatives_resolve_inside(machine: Machine) -> None:
    # mix's bin/NAME needs awk, which Debian reaches through /etc/alternatives.
    result = machine.run(["awk", "BEGIN { print 6 * 7 }"])
    assert result.stdout.strip() == "42"


def test_epmd_socket_is_stopped(machine: Machine) -> None:
    state = machine.systemctl("is-active", "epmd.socket", check=False).stdout.strip()
    assert state == "inactive"


def test_transient_units_report_their_result(machine: Machine) -> None:
    ok = machine.run(["systemd-run", "--unit=harness-true", "--wait", "true"], check=False)
    assert ok.returncode == 0, ok.stderr
    failed = machine.run(
        ["systemd-run", "--unit=harness-false", "--wait", "--collect", "false"], check=False
    )
    assert failed.returncode != 0
    assert "status=1" in failed.stderr + failed.stdout


def test_venv_python_works_inside(machine: Machine) -> None:
    python = MachineCommand(machine, (os.fspath(VENV / "bin" / "python"),))
    result = python("-c", "import sys, pyrelctl; print(sys.prefix)", check=True)
    assert result.stdout.strip() == os.fspath(VENV)


def test_pyrelctl_fixture_runs_the_venv_entry_point(pyrelctl: MachineCommand) -> None:
    assert pyrelctl.prefix == (os.fspath(VENV / "bin" / "pyrelctl"),)
    result = pyrelctl("--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: pyrelctl" in result.stdout


def test_mix_release_evaluates_inside(machine: Machine, mix_artifacts: dict[str, Path]) -> None:
    root = "/opt/harness/shop-eval"
    _extract_inside(machine, mix_artifacts["1.0.0"], root)
    result = machine.run([f"{root}/bin/shop", "eval", "IO.puts(:ok)"])
    assert result.stdout.strip() == "ok"
    version = machine.run([f"{root}/bin/shop", "version"]).stdout.split()
    assert version == ["shop", "1.0.0"]


def test_mix_release_starts_under_systemd(machine: Machine, mix_artifacts: dict[str, Path]) -> None:
    root = "/opt/harness/shop-1.0.0"
    unit = "harness-shop.service"
    _extract_inside(machine, mix_artifacts["1.0.0"], root)
    # Default distribution (sname): this also proves the release can start
    # its own EPMD, i.e. that Machine.boot stopped epmd.socket.
    machine.run(
        ["systemd-run", f"--unit={unit}", "--property=Type=exec", f"{root}/bin/shop", "start"]
    )
    try:
        journal = machine.wait_for_journal(unit, "shop 1.0.0 started")
        assert "epmd_close" not in journal
        assert machine.systemctl("is-active", unit, check=False).stdout.strip() == "active"
    finally:
        machine.systemctl("stop", unit, check=False)


def test_failing_mix_release_exits_at_start(
    machine: Machine, mix_artifacts: dict[str, Path]
) -> None:
    root = "/opt/harness/shop-2.0.0"
    unit = "harness-shop-crash.service"
    _extract_inside(machine, mix_artifacts["2.0.0"], root)
    result = machine.run(
        ["systemd-run", f"--unit={unit}", "--wait", "--collect", f"{root}/bin/shop", "start"],
        check=False,
        env={"RELEASE_DISTRIBUTION": "none"},
    )
    assert result.returncode != 0
    assert "status=3" in result.stderr + result.stdout
    machine.wait_for_journal(unit, "shop 2.0.0 crashing on purpose")


def test_generic_release_runs_under_systemd(
    machine: Machine, make_release: Callable[..., Path]
) -> None:
    tarball = make_release(name="hello", version="1.0.0")
    root = "/opt/harness/hello-1.0.0"
    unit = "harness-hello.service"
    _extract_inside(machine, tarball, root)
    assert machine.run([f"{root}/bin/hello", "version"]).stdout.strip() == "hello 1.0.0"
    assert machine.run([f"{root}/bin/hello", "eval", "1 + 1"]).stdout.strip() == "1 + 1"
    machine.run(["systemd-run", f"--unit={unit}", f"{root}/bin/hello", "start"])
    try:
        machine.wait_for_journal(unit, "hello 1.0.0 started")
        assert machine.systemctl("is-active", unit, check=False).stdout.strip() == "active"
    finally:
        machine.systemctl("stop", unit, check=False)


def test_crashing_generic_release_exits_3(
    machine: Machine, make_release: Callable[..., Path]
) -> None:
    root = make_release(name="hello", version="2.0.0", behaviour="crash", tarball=False)
    result = machine.run([os.fspath(root / "bin" / "hello"), "start"], check=False)
    assert result.returncode == 3
    assert result.stdout.strip() == "hello 2.0.0 crashing on purpose"


def test_a_stopped_machine_refuses_to_run(tmp_path: Path) -> None:
    name = f"pyrelctl-test-{os.getpid()}-stop"
    with Machine.boot(name, [tmp_path], tmp_path / "nspawn.log") as other:
        assert other.running
        other.run(["true"])
    assert not other.running
    with pytest.raises(MachineError, match="was stopped"):
        other.run(["true"])
    other.stop()  # idempotent
    assert _processes_named(name) == []


def test_a_failed_boot_stops_the_container(tmp_path: Path) -> None:
    name = f"pyrelctl-test-{os.getpid()}-fail"
    log = tmp_path / "nspawn.log"
    with pytest.raises(MachineError, match="tail of"):
        Machine.boot(name, [tmp_path], log, timeout=0.0)
    assert _processes_named(name) == []


def test_host_system_directories_cannot_be_bound(tmp_path: Path) -> None:
    with pytest.raises(MachineError, match="refusing"):
        Machine.boot(f"pyrelctl-test-{os.getpid()}-bad", [Path("/etc")], tmp_path / "log")
