"""A release artifact never gets root or the host's names (issue 15), in a real systemd 252.

Each test first shows, where it can, what systemd itself would do with the
hostile value (so the check is against systemd's behaviour, not a guess),
then that pyrelctl refuses it with exit 2 and nothing changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand

PROBE = "prefix-probe"


def test_systemd_runs_a_plus_prefixed_quoted_command_as_root(machine: Machine) -> None:
    """The ground truth behind finding 1: quoting does not stop the prefix."""
    unit = (
        "[Service]\nType=oneshot\nDynamicUser=yes\nUser=prefix-probe\n"
        f'ExecStart="+/bin/sh" "-c" "id -u > /run/{PROBE}.uid"\n'
    )
    path = f"/etc/systemd/system/{PROBE}.service"
    machine.run(["sh", "-c", f"cat > {path}"], input=unit)
    try:
        machine.systemctl("daemon-reload")
        machine.systemctl("start", PROBE)
        assert machine.run(["cat", f"/run/{PROBE}.uid"]).stdout.strip() == "0"
    finally:
        machine.run(["rm", "-f", path, f"/run/{PROBE}.uid"])
        machine.systemctl("daemon-reload")


def _host_state(machine: Machine) -> str:
    """What a refused install must leave as it was: names of units, of what is
    in /run, /opt, /etc/pyrelctl and pyrelctl's state, and the loaded units."""
    return machine.run(
        [
            "sh",
            "-c",
            "find /etc/systemd/system /opt /etc/pyrelctl /var/lib/pyrelctl /var/lib/private "
            # (agetty touches /run/agetty.reload whenever the network changes)
            "/var/log/private -maxdepth 2 2>&1 | sort; ls -a /run | grep -vx agetty.reload; "
            "systemctl list-units --all --no-legend --plain | awk '{print $1}' | sort",
        ]
    ).stdout


@pytest.mark.parametrize("prefix", ["+", "!", "!!", "@", "-", ":"])
def test_a_prefixed_start_command_is_refused_and_nothing_runs(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
    prefix: str,
) -> None:
    app = "pwn-prefix"
    cleanup(app)
    marker = f"/run/{app}.uid"
    artifact = make_release(name=app, version="1")
    toml = artifact.parent / f"{app}-1" / "release.toml"
    text = toml.read_text().replace(
        f'start = ["bin/{app}", "start"]', f'start = ["{prefix}sh", "-c", "id -u > {marker}"]'
    )
    assert text != toml.read_text()
    toml.write_text(text)
    before = _host_state(machine)
    proc = pyrelctl("install", toml.parent, "--grace", "0")
    assert proc.returncode == 2 and "reads as a flag" in proc.stderr, proc.stderr
    assert machine.run(["test", "-e", marker], check=False).returncode == 1
    assert machine.run(["test", "-e", f"/etc/systemd/system/{app}.service"], check=False).returncode
    assert _host_state(machine) == before


def test_names_of_the_host_are_refused(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
) -> None:
    """Finding 3: an existing user (root, a static one), an existing unit (dbus),
    a reserved name (systemd, pyrelctl): exit 2, the host's files as they were."""
    machine.run(["useradd", "--system", "--no-create-home", "legacy"])
    try:
        vendor = machine.run(["systemctl", "cat", "dbus.service"], check=False).stdout
        artifact = make_release(name="plain", version="1")
        cases = {
            "root": "reserved",
            "legacy": "existing user",
            "dbus": "reserved",
            "systemd": "reserved",
            "pyrelctl": "reserved",
            "private": "reserved",
        }
        before = _host_state(machine)
        for name, word in cases.items():
            proc = pyrelctl("install", "--app", name, artifact, "--grace", "0")
            assert proc.returncode == 2 and word in proc.stderr, (name, proc.stderr)
        assert _host_state(machine) == before
        assert machine.run(["systemctl", "cat", "dbus.service"], check=False).stdout == vendor
    finally:
        machine.run(["userdel", "legacy"])


def test_a_unit_systemd_knows_is_refused(
    machine: Machine, pyrelctl: MachineCommand, make_release: Callable[..., Path]
) -> None:
    """A vendor unit (systemd's own emergency.service) and one only in PID 1's memory."""
    artifact = make_release(name="plain2", version="1")
    proc = pyrelctl("install", "--app", "emergency", artifact, "--grace", "0")
    assert proc.returncode == 2 and "emergency.service" in proc.stderr, proc.stderr
    # A transient unit exists only in PID 1's memory and /run/systemd/transient.
    machine.run(["systemd-run", "--unit=ghost", "--quiet", "sleep", "60"])
    try:
        proc = pyrelctl("install", "--app", "ghost", artifact, "--grace", "0")
        assert proc.returncode == 2 and "ghost.service" in proc.stderr, proc.stderr
    finally:
        machine.systemctl("stop", "ghost")


def test_an_app_upgrades_while_nss_knows_its_dynamic_user(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    """The running service's own DynamicUser= resolves by name (nss-systemd):
    that user is the app's, not a collision."""
    app = "dynuser"
    cleanup(app)
    # Debian's /etc/nsswitch.conf has "passwd: files systemd"; the container's
    # fresh /etc has none, so it is written here as a real host has it.
    saved = machine.run(["cat", "/etc/nsswitch.conf"], check=False)
    machine.run(
        ["sh", "-c", "cat > /etc/nsswitch.conf"],
        input="passwd: files systemd\ngroup: files systemd\nhosts: files\n",
    )
    try:
        first = pyrelctl("install", make_release(name=app, version="1"), "--grace", "0.5")
        assert first.returncode == 0, first.stderr
        getent = machine.run(["getent", "passwd", app], check=False)
        assert getent.returncode == 0, "nss-systemd resolves the running app's dynamic user"
        uid = int(getent.stdout.split(":")[2])
        assert 61184 <= uid <= 65519, uid
        proc = pyrelctl("install", make_release(name=app, version="2"), "--grace", "0.5")
        assert proc.returncode == 0, proc.stderr
        # While it runs, a new app of that name is refused: the user is taken.
        pyrelctl("uninstall", "--purge", app)
        machine.run(["systemd-run", "--unit=squatter", "-p", "DynamicUser=yes", "-p",
                     f"User={app}", "--quiet", "sleep", "60"])  # fmt: skip
        try:
            other = pyrelctl("install", make_release(name=app, version="3"), "--grace", "0")
            assert other.returncode == 2 and "existing user" in other.stderr, other.stderr
        finally:
            machine.systemctl("stop", "squatter")
    finally:
        if saved.returncode == 0:
            machine.run(["sh", "-c", "cat > /etc/nsswitch.conf"], input=saved.stdout)
        else:
            machine.run(["rm", "-f", "/etc/nsswitch.conf"])


def test_a_release_socket_cannot_replace_host_files(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    """Finding 4: PID 1 unlinks what is at a ListenStream= path; pyrelctl never lets
    a release name one outside /run/APP.*, nor a low port without the host."""
    app = "sockpwn"
    cleanup(app)
    machine.run(["sh", "-c", "echo secret > /root/precious && chmod 600 /root/precious"])
    for version, listen, word in (
        ("1a", '["/root/precious"]', "outside /run/sockpwn."),
        ("1b", '["/run/dbus/system_bus_socket"]', "outside /run/sockpwn."),
        ("1c", '["127.0.0.1:22"]', "low-ports"),
    ):
        toml = f"[socket]\nlisten = {listen}\n"
        artifact = make_release(name=app, version=version, extra_toml=toml)
        proc = pyrelctl("install", artifact, "--grace", "0")
        assert proc.returncode == 2 and word in proc.stderr, (listen, proc.stderr)
    assert machine.run(["cat", "/root/precious"]).stdout == "secret\n"
    assert machine.run(["test", "-S", "/run/dbus/system_bus_socket"], check=False).returncode == 0
    # Its own prefix is fine, and the socket works.
    ok = make_release(name=app, version="2", extra_toml=f'[socket]\nlisten = ["/run/{app}.sock"]\n')
    proc = pyrelctl("install", ok, "--grace", "0")
    assert proc.returncode == 0, proc.stderr
    assert machine.run(["test", "-S", f"/run/{app}.sock"], check=False).returncode == 0


def test_widening_needs_the_host_and_shows(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    """Finding 5: the release alone cannot turn PrivateUsers= off or write /etc."""
    app = "widener"
    cleanup(app)
    extra = '[service]\nbind_privileged_ports = true\nwritable_paths = ["/etc"]\n'
    artifact = make_release(name=app, version="1", extra_toml=extra)
    proc = pyrelctl("install", artifact, "--grace", "0")
    assert proc.returncode == 2 and "--allow low-ports --allow write:/etc" in proc.stderr
    assert machine.run(["test", "-e", f"/opt/{app}"], check=False).returncode == 1
    proc = pyrelctl(
        "install", artifact, "--grace", "0", "--allow", "low-ports", "--allow", "write:/etc"
    )
    assert proc.returncode == 0, proc.stderr
    assert "sandbox widened for widener" in proc.stderr
    status = json.loads(pyrelctl("--json", "status", app).stdout)
    assert status["widened"] == ["low-ports", "write:/etc"]
    assert "sandbox widened (low-ports, write:/etc)" in pyrelctl("status", app).stdout


def assert_confined(machine: Machine, app: str) -> None:
    """What `systemd-analyze security` does not rate, checked on the loaded unit:
    no Exec prefix, a dynamic user that is not a static account, and
    directories of the app's own name."""
    text = machine.systemctl("cat", f"{app}.service").stdout
    for line in text.splitlines():
        if re.match(r"Exec\w+=", line):
            value = line.split("=", 1)[1]
            first = value.lstrip('"')
            assert first[:1] == "/" and first[:1] not in "@-:+!|", line
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[:1].isalpha()
    )
    assert settings["DynamicUser"] == "yes"
    assert settings["User"] == app
    passwd = machine.run(["cat", "/etc/passwd"]).stdout
    assert not any(line.startswith(f"{app}:") for line in passwd.splitlines())
    for key in ("StateDirectory", "RuntimeDirectory", "LogsDirectory"):
        assert settings[key] == app, (key, settings[key])
    show = machine.systemctl("show", "-p", "ExecStart", f"{app}.service").stdout
    assert "ignore_errors=no" in show
    assert "path=/opt/" in show or "path=/usr/" in show, show


def test_mix_and_generic_units_are_confined(
    machine: Machine,
    pyrelctl: MachineCommand,
    mix_artifacts: dict[str, Path],
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    cleanup("shop-confined")
    cleanup("gen-confined")
    proc = pyrelctl("install", "--app", "shop-confined", mix_artifacts["1.0.0"], "--grace", "1")
    assert proc.returncode == 0, proc.stderr
    assert_confined(machine, "shop-confined")
    proc = pyrelctl("install", make_release(name="gen-confined", version="1"), "--grace", "0")
    assert proc.returncode == 0, proc.stderr
    assert_confined(machine, "gen-confined")
