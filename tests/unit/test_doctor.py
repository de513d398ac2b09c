"""doctor's systemd-facing checks with a stand-in systemd (the real one: tests/system)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from pyrelctl.deploy.deployer import Deployer
from pyrelctl.deploy.options import InstallOptions
from pyrelctl.doctor import (
    MIN_SYSTEMD,
    Doctor,
    Finding,
    Report,
    Severity,
    parse_systemd_version,
    report_lines,
)
from pyrelctl.errors import SystemdError
from pyrelctl.layout import Layout
from pyrelctl.systemd import OfflineSystemd, Systemd, UnitState


@dataclass(frozen=True)
class OnlineLayout(Layout):
    """A tree in tmp_path that doctor treats as the running host (no --root)."""

    @property
    def offline(self) -> bool:
        return False


@dataclass
class FakeSystemd:
    version_text: str = "252.39-1~deb12u2"
    states: dict[str, UnitState] = field(default_factory=dict)

    def version(self) -> str:
        return self.version_text

    def state(self, unit: str) -> UnitState:
        return self.states.get(unit, UnitState(unit))


@pytest.fixture
def host(tmp_path: Path) -> OnlineLayout:
    """`hello` installed (offline) into a tree that then plays the running host."""
    root = tmp_path / "root"
    artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
    Deployer(Layout(root), OfflineSystemd()).install(artifact, InstallOptions())
    (root / "run/systemd/system").mkdir(parents=True)
    return OnlineLayout(root)


RUNNING = UnitState(
    "hello.service", load_state="loaded", active_state="active", sub_state="running", main_pid=42
)


def check(
    layout: Layout, systemd: object, *, which: dict[str, str | None] | None = None
) -> list[Finding]:
    def connect() -> Systemd:
        if isinstance(systemd, Exception):
            raise systemd
        return systemd  # type: ignore[return-value]  # a duck-typed stand-in

    found = which or {}
    doctor = Doctor(
        layout, connect, euid=lambda: 0, which=lambda name: found.get(name, f"/usr/bin/{name}")
    )
    return list(doctor.run().findings)


def problems(found: list[Finding]) -> list[tuple[str, str]]:
    return [(f.check, f.message) for f in found if f.severity is Severity.PROBLEM]


@pytest.mark.parametrize(
    ("text", "major"),
    [("252.39-1~deb12u2", 252), ("247", 247), ("256.1", 256), ("v255", None), ("", None)],
)
def test_parse_systemd_version(text: str, major: int | None) -> None:
    assert parse_systemd_version(text) == major


def test_a_running_service_on_a_recent_systemd(host: OnlineLayout) -> None:
    found = check(host, FakeSystemd(states={"hello.service": RUNNING}))
    assert problems(found) == []
    ok = {f.check: f.message for f in found if f.severity is Severity.OK}
    assert ok["systemd-version"].startswith("systemd 252.39-1~deb12u2")
    assert ok["unit-state"] == "hello.service is active (running), pid 42"


def test_an_old_systemd_names_what_it_lacks(host: OnlineLayout) -> None:
    found = check(host, FakeSystemd("245.4-4ubuntu3", {"hello.service": RUNNING}))
    ((name, message),) = problems(found)
    assert name == "systemd-version"
    assert "LoadCredential=" in message and "Type=exec" not in message
    fix = next(f.fix for f in found if f.check == "systemd-version")
    assert fix is not None and str(MIN_SYSTEMD) in fix


def test_dbus_unreachable(host: OnlineLayout) -> None:
    found = check(host, SystemdError("cannot reach systemd over D-Bus (No such file)"))
    assert [name for name, _ in problems(found)] == ["dbus"]
    assert not [f for f in found if f.check == "unit-state"]  # nothing to ask without a bus


def test_no_systemd_as_init(host: OnlineLayout) -> None:
    (host.root / "run/systemd/system").rmdir()
    found = check(host, FakeSystemd())
    assert [name for name, _ in problems(found)] == ["systemd"]


def test_missing_programs(host: OnlineLayout) -> None:
    found = check(host, FakeSystemd(states={"hello.service": RUNNING}), which={"systemd-run": None})
    ((name, message),) = problems(found)
    assert name == "programs" and "systemd-run" in message


@pytest.mark.parametrize(
    ("state", "severity", "fix"),
    [
        (UnitState("hello.service", load_state="masked"), Severity.PROBLEM, "systemctl unmask"),
        (
            UnitState(
                "hello.service",
                load_state="loaded",
                active_state="failed",
                result="exit-code",
                exec_main_code=1,
                exec_main_status=3,
            ),
            Severity.PROBLEM,
            "pyrelctl restart hello",
        ),
        (
            UnitState("hello.service", load_state="loaded", active_state="inactive"),
            Severity.WARNING,
            "pyrelctl start hello",
        ),
        (
            UnitState(
                "hello.service",
                load_state="loaded",
                active_state="active",
                sub_state="running",
                need_daemon_reload=True,
            ),
            Severity.PROBLEM,
            "systemctl daemon-reload",
        ),
    ],
    ids=["masked", "failed", "stopped", "needs-reload"],
)
def test_unit_states(host: OnlineLayout, state: UnitState, severity: Severity, fix: str) -> None:
    found = check(host, FakeSystemd(states={"hello.service": state}))
    # (a unit that needs a reload can be running fine otherwise: two findings)
    (finding,) = [f for f in found if f.check == "unit-state" and f.severity is not Severity.OK]
    assert finding.severity is severity
    assert finding.fix is not None and fix in finding.fix
    if state.active_state == "failed":
        assert "exited with status 3" in finding.message


def test_report_lines() -> None:
    report = Report(
        (
            Finding("dbus", "host", Severity.OK, "fine"),
            Finding("secrets", "shop", Severity.PROBLEM, "bad", fix="chmod 0600 x", details=("x",)),
        )
    )
    lines = report_lines(report)
    assert lines == [
        "host",
        "  ok       dbus: fine",
        "shop",
        "  PROBLEM  secrets: bad",
        "           | x",
        "           fix: chmod 0600 x",
        "1 problem, 0 warnings",
    ]
    assert report_lines(report, quiet=True)[0] == "shop"
    assert "\033[1;31m" in report_lines(report, colour=True)[3]


def test_a_socket_in_the_runtime_directory_and_the_fix_that_moves_it(host: OnlineLayout) -> None:
    """An app set up before install refused such paths: doctor says where to move them."""
    app = host.app("hello")
    app.write_settings({"socket": {"listen": ["/run/hello/http.sock", "127.0.0.1:80"]}})
    found = [f for f in check(host, FakeSystemd()) if "empties" in f.message]
    assert [(f.check, f.severity) for f in found] == [("socket", Severity.PROBLEM)]
    fix = found[0].fix or ""
    assert fix.endswith("--listen /run/hello.http.sock --listen 127.0.0.1:80"), fix

    # What the fix runs, done offline (its --app and --listen options):
    Deployer(Layout(host.root), OfflineSystemd()).install(
        app.release("1.0"),
        InstallOptions(app="hello", listen=("/run/hello.http.sock", "127.0.0.1:80")),
    )
    assert not [f for f in check(host, FakeSystemd()) if "empties" in f.message]


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("[::]:4369", False),  # Debian's ListenStream=4369 with BindIPv6Only=both
        ("0.0.0.0:4369", False),
        ("4369", False),
        ("10.0.0.5:4369", False),
        ("/run/epmd.sock", False),
        ("127.0.0.1:4369", True),
        ("[::1]:4369", True),
    ],
)
def test_epmd_socket_addresses_on_loopback_only(address: str, loopback: bool) -> None:
    from pyrelctl.doctor.epmd import loopback_only

    assert loopback_only(address) is loopback


def _refused_config(host: OnlineLayout, variables: dict[str, str]) -> None:
    """What a configuration change the service did not come up with leaves: the
    generation made current, then undone and marked failed, by the functions that
    do it (an install --env that failed; `config set` undoes the same way)."""
    from pyrelctl.appconfig.generations import stage_with_deploy

    app = host.app("hello")
    undo = stage_with_deploy(app, variables, lambda _: None)
    assert undo is not None
    undo()


def config_findings(found: list[Finding]) -> list[tuple[Severity, str, str | None]]:
    return [(f.severity, f.message, f.fix) for f in found if f.check == "config"]


def test_a_refused_first_configuration_is_not_proposed_again(host: OnlineLayout) -> None:
    """Issue 28: after a refused first `config set` (exit 3, undone to no configuration)
    doctor proposed `config rollback --to 1`, applying what was just refused."""
    _refused_config(host, {"GREETING": "crash"})
    found = check(host, FakeSystemd(states={"hello.service": RUNNING}))
    assert problems(found) == []
    assert config_findings(found) == [
        (Severity.OK, "no configuration is applied (generation 1 was refused and undone)", None)
    ]


def test_a_missing_current_configuration_goes_back_to_one_not_refused(host: OnlineLayout) -> None:
    from pyrelctl.appconfig.generations import Generations

    gens = Generations(host.app("hello"))
    good = gens.create({"GREETING": "hi"})
    gens.switch(good)
    _refused_config(host, {"GREETING": "crash"})
    gens.switch(None)  # current.env lost (by hand): the service runs without it
    ((severity, message, fix),) = config_findings(
        check(host, FakeSystemd(states={"hello.service": RUNNING}))
    )
    assert severity is Severity.PROBLEM and "current.env is missing" in message
    assert fix == f"pyrelctl config rollback hello --to {good}"
