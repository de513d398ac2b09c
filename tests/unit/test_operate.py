"""rpc / eval / remote / pid / version without a running systemd.

What is checked here is the pure part: the systemd-run command line built from
a release and an app (the same exec settings as the unit file), the order in
which the commands refuse, and how the running version is found. Whether the
commands really run as the service does is tests/system/test_operate.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.releases import make_generic_release
from pyrelctl import operate
from pyrelctl.deploy.deployer import Deployer
from pyrelctl.deploy.options import InstallOptions
from pyrelctl.errors import BadInput, NotInstalled, NotRoot, NotRunning
from pyrelctl.layout import Layout
from pyrelctl.operate import Operator
from pyrelctl.release import Kind, Release, mix_commands
from pyrelctl.run import run_attached
from pyrelctl.systemd import JobResult, OfflineSystemd, UnitState
from pyrelctl.transient import (
    EXPRESSION_CREDENTIAL,
    EXPRESSION_WRAPPER,
    INPUT_DIR,
    MAX_EXPRESSION,
    TransientCommand,
    dropins_note,
    transient_command,
)
from pyrelctl.units import ServiceSpec, default_environment_files, exec_settings, render_service

# -- the systemd-run command line ---------------------------------------------------


def mix_release(version: str = "1.0.0", **kwargs: object) -> Release:
    return Release(
        name="shop",
        version=version,
        kind=Kind.MIX,
        commands=mix_commands("shop"),
        **kwargs,  # type: ignore[arg-type]  # the remaining Release fields, by name
    )


INPUT = Path("/") / INPUT_DIR


def build(
    release: Release,
    verb: str,
    expression: str | None = None,
    *,
    app: str = "shop",
    release_dir: Path | None = None,
    pty: bool = False,
) -> TransientCommand:
    return transient_command(
        app,
        release,
        verb,
        (),
        release_dir=release_dir or Path(f"/opt/{app}/releases/{release.version}"),
        environment_files=default_environment_files(app, release),
        token="cafe0001",
        pty=pty,
        expression=expression,
        input_dir=INPUT,
    )


#: The ExecStart of a command with an expression: a fixed /bin/sh wrapper
#: ("sh" its $0) in front of the release's argv; `$` doubled for PID 1.
WRAPPED = ["/bin/sh", "-c", EXPRESSION_WRAPPER.replace("$", "$$"), "sh"]


def split(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """systemd-run's options, its --property settings (in order), and the command."""
    end = list(argv).index("--")
    options, props = [], []
    for word in argv[1:end]:
        if word.startswith("--property="):
            key, _, value = word.removeprefix("--property=").partition("=")
            props.append((key, value))
        else:
            options.append(word)
    return options, props, list(argv[end + 1 :])


def test_mix_rpc_runs_the_release_script_in_a_waited_piped_transient_unit() -> None:
    command = build(mix_release(), "rpc", "IO.puts(:pong)")
    options, props, argv = split(command.argv)
    assert command.argv[0] == "systemd-run"
    assert command.unit == "pyrelctl-shop-rpc-cafe0001.service"
    assert f"--unit={command.unit}" in options
    assert {"--wait", "--pipe", "--collect", "--quiet"} <= set(options)
    assert "--pty" not in options
    assert argv == [*WRAPPED, "/opt/shop/releases/1.0.0/bin/shop", "rpc"]
    # The expression is staged for PID 1, loaded as a credential.
    assert command.staged is not None
    assert command.staged.path == INPUT / "pyrelctl-shop-rpc-cafe0001"
    assert command.staged.data == b"IO.puts(:pong)"
    assert ("LoadCredential", f"{EXPRESSION_CREDENTIAL}:{command.staged.path}") in props
    settings = dict(props)
    assert settings["User"] == "shop" and settings["DynamicUser"] == "yes"
    assert settings["WorkingDirectory"] == "/opt/shop/releases/1.0.0"
    # The cookie comes from the root-only file, read by PID 1: never argv.
    assert ("LoadCredential", "pyrelctl+erlang-cookie:/etc/pyrelctl/shop/cookie") in props
    assert ("EnvironmentFile", "-/etc/pyrelctl/shop/env") in props


def test_transient_unit_has_a_runtime_directory_of_its_own() -> None:
    _, props, _ = split(build(mix_release(), "eval", "1").argv)
    settings = dict(props)
    runtime = settings["RuntimeDirectory"]
    # Never the service's: systemd removes it when the transient unit stops.
    assert runtime != "shop" and runtime == "pyrelctl/shop-eval-cafe0001"
    assert f'"RELEASE_TMP=/run/{runtime}"' in settings["Environment"]
    assert f'"HOME=/run/{runtime}"' in settings["Environment"]
    assert settings["StateDirectory"] == "shop" and settings["LogsDirectory"] == "shop"


def test_properties_are_the_service_settings_but_for_cwd_and_runtime_dir() -> None:
    release = mix_release(environment={"SHOP_MODE": "prod"})
    spec = ServiceSpec(
        "shop", release, environment_files=default_environment_files("shop", release)
    )
    settings = list(exec_settings(spec))
    _, props, _ = split(build(release, "rpc", "x").argv)
    # ... plus the credential that carries the expression (a second
    # LoadCredential= beside the cookie's: compare lists, not dicts).
    expression = [
        p for p in props if p[0] == "LoadCredential" and p[1].startswith(EXPRESSION_CREDENTIAL)
    ]
    assert len(expression) == 1
    rest = [p for p in props if p not in expression]
    assert [key for key, _ in rest] == [key for key, _ in settings]
    differing = {key for (key, a), (_, b) in zip(settings, rest, strict=True) if a != b}
    assert differing == {"WorkingDirectory", "RuntimeDirectory", "Environment"}
    service, transient = dict(settings), dict(rest)
    # ...and in the environment only what points into the runtime directory.
    words = set(service["Environment"].split()) ^ set(transient["Environment"].split())
    assert {w.strip('"').split("=")[0] for w in words} == {"RELEASE_TMP", "HOME"}
    assert '"SHOP_MODE=prod"' in transient["Environment"]


def test_every_property_is_what_the_unit_file_says() -> None:
    release = mix_release(environment={"RATIO": "100%"})
    spec = ServiceSpec(
        "shop", release, environment_files=default_environment_files("shop", release)
    )
    unit_lines = render_service(spec).splitlines()
    for key, value in exec_settings(spec):
        # Specifiers exist only in unit files; D-Bus properties take % literally.
        assert f"{key}={value.replace('%', '%%')}" in unit_lines
    _, props, _ = split(build(release, "eval", "x").argv)
    assert '"RATIO=100%"' in dict(props)["Environment"]


def test_mix_distribution_stays_on_loopback_for_commands_too() -> None:
    _, props, _ = split(build(mix_release(), "rpc", "x").argv)
    env = dict(props)["Environment"]
    assert '"RELEASE_DISTRIBUTION=name"' in env
    assert '"RELEASE_NODE=shop@127.0.0.1"' in env
    assert '"ERL_EPMD_ADDRESS=127.0.0.1"' in env
    assert '"ELIXIR_ERL_OPTIONS=-kernel inet_dist_use_interface {127,0,0,1}"' in env


def test_remote_gets_a_pty_instead_of_the_pipes() -> None:
    options, _, argv = split(build(mix_release(), "remote", pty=True).argv)
    assert "--pty" in options and "--pipe" not in options
    assert argv == ["/opt/shop/releases/1.0.0/bin/shop", "remote"]
    # No expression, no wrapper, nothing staged, no credential.
    assert build(mix_release(), "remote", pty=True).staged is None
    assert not any(w.startswith("--property=LoadCredential") for w in options)


EXPRESSION = 'IO.puts("$HOME ${USER} 100% ; \\"q\\"")\n\n'


def test_the_expression_is_in_no_command_line() -> None:
    # Issue 15: systemd-run's argv is in ps, and the unit's ExecStart is a
    # D-Bus property every local user may read.
    command = build(mix_release(), "rpc", EXPRESSION)
    assert not any(EXPRESSION.strip() in word for word in command.argv)
    assert not any("IO.puts" in word for word in command.argv)
    # ... but staged byte for byte, trailing newlines too.
    assert command.staged is not None and command.staged.data == EXPRESSION.encode()


# Any text an argv can hold: no NUL; surrogates only as Python decodes
# bytes that are not UTF-8 (surrogateescape, U+DC80..U+DCFF).
argument_text = st.text(
    st.one_of(
        st.characters(exclude_categories=["Cs"], exclude_characters="\0"),
        st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(expression=argument_text)
def test_systemd_runs_argv_does_not_depend_on_the_expression(expression: str) -> None:
    # Stronger than "the text is not in argv" (a short text is in any argv,
    # "s" in "systemd-run"): the argv is the same whatever the expression.
    command = build(mix_release(), "eval", expression)
    assert command.argv == build(mix_release(), "eval", "").argv
    assert command.staged is not None and command.staged.data == os.fsencode(expression)
    marked = f"pyrelctl-test-marker {expression}"
    assert not any(marked in word for word in build(mix_release(), "rpc", marked).argv)


def run_wrapper(tmp_path: Path, data: bytes) -> bytes:
    """Run the wrapper as PID 1 would (``$$`` -> ``$``), with the credential in a
    directory of its own; the "release command" writes its last argument out."""
    creds = tmp_path / "creds"
    creds.mkdir(exist_ok=True)
    (creds / EXPRESSION_CREDENTIAL).write_bytes(data)
    last_arg = "import os, sys; sys.stdout.buffer.write(os.fsencode(sys.argv[-1]))"
    argv = [w.replace("$$", "$") for w in WRAPPED] + ["python3", "-c", last_arg, "rpc"]
    env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(creds), "LC_ALL": "C"}
    proc = subprocess.run(argv, env=env, capture_output=True, check=True, timeout=30)
    return proc.stdout


def test_the_wrapper_hands_over_the_expression_exactly(tmp_path: Path) -> None:
    for data in (
        EXPRESSION.encode(),
        b"",
        b"\n",
        b"x",
        b"xx\n\nx",
        b"'\"$(id)`id` ${HOME} \\ \\n -e -n",
        b"\xff\xfe not UTF-8 \x01\x1b[0m\r\n",
    ):
        assert run_wrapper(tmp_path, data) == data


@settings(max_examples=40, deadline=None)
@given(expression=argument_text)
def test_any_expression_round_trips_through_the_wrapper(
    tmp_path_factory: pytest.TempPathFactory, expression: str
) -> None:
    data = os.fsencode(expression)
    assert run_wrapper(tmp_path_factory.mktemp("wrapper"), data) == data


def test_an_expression_no_argument_can_hold_is_bad_input() -> None:
    with pytest.raises(BadInput, match="NUL"):
        build(mix_release(), "eval", "a\0b")
    with pytest.raises(BadInput, match="at most"):
        build(mix_release(), "eval", "x" * (MAX_EXPRESSION + 1))
    assert build(mix_release(), "eval", "x" * MAX_EXPRESSION).staged is not None


def test_eval_of_another_release_runs_from_that_release() -> None:
    older = mix_release("0.9.0")
    _, props, argv = split(
        build(older, "eval", "1", release_dir=Path("/opt/shop/releases/0.9.0")).argv
    )
    assert dict(props)["WorkingDirectory"] == "/opt/shop/releases/0.9.0"
    assert argv[len(WRAPPED)] == "/opt/shop/releases/0.9.0/bin/shop"


def test_generic_release_command_gets_the_expression_appended() -> None:
    release = Release(
        name="hello",
        version="2",
        kind=Kind.GENERIC,
        commands={"start": ("bin/hello", "start"), "eval": ("bin/hello", "eval", "--")},
    )
    command = build(release, "eval", "1 + 1", app="hi")
    options, props, argv = split(command.argv)
    assert argv == [*WRAPPED, "/opt/hi/releases/2/bin/hello", "eval", "--"]
    assert command.staged is not None and command.staged.data == b"1 + 1"
    settings = dict(props)
    assert settings["User"] == "hi" and "Environment" not in settings
    assert [v for k, v in props if k == "EnvironmentFile"] == [
        "-/etc/pyrelctl/hi/env",
        "-/etc/pyrelctl/hi/config/current.env",
    ]
    assert any(o.startswith("--description=pyrelctl eval hi (generic release 2)") for o in options)


def test_undeclared_command_is_refused() -> None:
    release = Release(name="h", version="1", kind=Kind.GENERIC, commands={"start": ("bin/h",)})
    with pytest.raises(BadInput, match="no rpc command"):
        build(release, "rpc", "x", app="h")


# -- Operator: what is refused, in which order ----------------------------------------


@dataclass(frozen=True)
class OnlineLayout(Layout):
    """A layout below tmp_path that pyrelctl treats as the live host."""

    @property
    def offline(self) -> bool:
        return False


class FakeSystemd(OfflineSystemd):
    """Answers state() with a fixed main PID and records every call."""

    def __init__(self, main_pid: int = 0) -> None:
        self.main_pid = main_pid
        self.calls: list[tuple[str, str]] = []

    def state(self, unit: str) -> UnitState:
        self.calls.append(("state", unit))
        if self.main_pid:
            return UnitState(unit, "loaded", "active", "running", main_pid=self.main_pid)
        return UnitState(unit, "loaded", "inactive", "dead")

    def stop(self, unit: str, *, timeout: float = 90.0) -> JobResult:
        self.calls.append(("stop", unit))
        return JobResult(unit, "done")


def fake_mix_release(parent: Path, version: str) -> Path:
    """A directory that detect() takes for a mix release called shop."""
    root = parent / f"shop-{version}"
    (root / "bin").mkdir(parents=True)
    (root / f"releases/{version}").mkdir(parents=True)
    (root / "releases/start_erl.data").write_text(f"13.1.5 {version}\n")
    (root / f"releases/{version}/shop.rel").write_text("{release, ...}.\n")
    (root / "bin/shop").write_text("#!/bin/sh\n")
    (root / "bin/shop").chmod(0o755)
    return root


@pytest.fixture
def host(tmp_path: Path) -> OnlineLayout:
    """A host below tmp_path with shop 1.0.0 and 1.1.0 (current) and hello 1 installed."""
    root = tmp_path / "root"
    root.mkdir()
    installer = Deployer(Layout(root), OfflineSystemd())
    for version in ("1.0.0", "1.1.0"):
        installer.install(fake_mix_release(tmp_path / "src", version), InstallOptions())
    hello = make_generic_release(tmp_path / "src", name="hello", version="1", tarball=False)
    installer.install(hello, InstallOptions())
    return OnlineLayout(root)


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)


def operator(host: Layout, main_pid: int = 0) -> tuple[Operator, FakeSystemd, list[str]]:
    said: list[str] = []
    systemd = FakeSystemd(main_pid)
    return Operator(host, systemd, said.append), systemd, said


def test_non_root_is_refused_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    op, systemd, _ = operator(OnlineLayout(tmp_path / "nothing-here"), main_pid=42)
    for verb in operate.COMMAND_VERBS:
        with pytest.raises(NotRoot, match=f"pyrelctl {verb} must run as root"):
            op.prepare("shop", verb, "x", stdin_tty=True)
    assert systemd.calls == []


@pytest.mark.usefixtures("as_root")
def test_offline_is_refused(tmp_path: Path) -> None:
    op = Operator(Layout(tmp_path), FakeSystemd(42))
    for verb in operate.COMMAND_VERBS:
        with pytest.raises(BadInput, match="cannot work with --root"):
            op.prepare("shop", verb, "x", stdin_tty=True)
    with pytest.raises(BadInput, match="cannot work with --root"):
        op.pid("shop")
    with pytest.raises(BadInput, match="cannot work with --root"):
        op.version("shop")


@pytest.mark.usefixtures("as_root")
def test_remote_needs_a_terminal(host: OnlineLayout) -> None:
    op, systemd, _ = operator(host, main_pid=42)
    with pytest.raises(BadInput, match="needs a terminal") as info:
        op.prepare("shop", "remote")
    assert info.value.exit_code == 2
    assert systemd.calls == []
    assert "--pty" in op.prepare("shop", "remote", stdin_tty=True).argv


@pytest.mark.usefixtures("as_root")
def test_app_must_be_installed(host: OnlineLayout) -> None:
    op, _, _ = operator(host, main_pid=42)
    with pytest.raises(NotInstalled, match="'nope' is not installed"):
        op.prepare("nope", "eval", "x")
    with pytest.raises(NotInstalled, match=r"release 0\.1 of shop is not installed"):
        op.prepare("shop", "eval", "x", version="0.1")


@pytest.mark.usefixtures("as_root")
def test_rpc_and_remote_need_the_service_running_but_eval_does_not(host: OnlineLayout) -> None:
    op, _, _ = operator(host, main_pid=0)
    for verb in ("rpc", "remote"):
        with pytest.raises(NotRunning, match="shop is not running") as info:
            op.prepare("shop", verb, "x" if verb == "rpc" else None, stdin_tty=True)
        assert info.value.exit_code == 1 and info.value.hint == "start it: pyrelctl start shop"
    command = op.prepare("shop", "eval", "1")
    assert command.argv[-2:] == (str(host.root / "opt/shop/releases/1.1.0/bin/shop"), "eval")
    assert command.staged is not None and command.staged.data == b"1"
    assert command.staged.path.parent == host.root / INPUT_DIR


@pytest.mark.usefixtures("as_root")
def test_eval_of_an_older_release(host: OnlineLayout) -> None:
    op, _, _ = operator(host)
    command = op.prepare("shop", "eval", "1", version="1.0.0")
    _, props, argv = split(command.argv)
    assert argv[len(WRAPPED)] == str(host.root / "opt/shop/releases/1.0.0/bin/shop")
    assert dict(props)["WorkingDirectory"] == str(host.root / "opt/shop/releases/1.0.0")


@pytest.mark.usefixtures("as_root")
def test_generic_release_without_the_command_is_bad_input(host: OnlineLayout) -> None:
    op, systemd, _ = operator(host, main_pid=42)
    for verb in ("rpc", "remote"):
        with pytest.raises(BadInput, match=f"does not declare the {verb} command") as info:
            op.prepare("hello", verb, "x", stdin_tty=True)
        assert info.value.exit_code == 2
    assert op.prepare("hello", "eval", "x").argv[-1] == "eval"
    assert systemd.calls == []  # eval needs no running service


@pytest.mark.usefixtures("as_root")
def test_dropins_are_pointed_out(host: OnlineLayout) -> None:
    op, _, said = operator(host, main_pid=42)
    op.prepare("shop", "rpc", "x")
    assert said == []
    dropins = host.root / "etc/systemd/system/shop.service.d"
    dropins.mkdir(parents=True)
    (dropins / "override.conf").write_text("[Service]\nEnvironment=X=1\n")
    op.prepare("shop", "rpc", "x")
    assert len(said) == 1 and "/etc/pyrelctl/shop/env" in said[0]


@pytest.mark.usefixtures("as_root")
def test_run_command_exits_with_the_commands_status(
    host: OnlineLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[tuple[str, ...]] = []
    staged: list[tuple[Path, bytes, int]] = []

    def fake_run(argv: Sequence[str], *, interrupted: object) -> int:
        ran.append(tuple(argv))
        # While systemd-run runs, the expression waits for PID 1, root-only.
        (path,) = (host.root / INPUT_DIR).iterdir()
        staged.append((path, path.read_bytes(), path.stat().st_mode & 0o7777))
        return 7

    monkeypatch.setattr(operate, "run_attached", fake_run)
    op, _, _ = operator(host, main_pid=42)
    assert op.run_command("shop", "rpc", "IO.puts(:x)\n") == 7
    assert ran[0][0] == "systemd-run" and ran[0][-1] == "rpc"
    assert not any("IO.puts" in word for word in ran[0])
    ((path, data, mode),) = staged
    assert (data, mode) == (b"IO.puts(:x)\n", 0o600)
    assert f"--property=LoadCredential={EXPRESSION_CREDENTIAL}:{path}" in ran[0]
    assert (host.root / INPUT_DIR).stat().st_mode & 0o777 == 0o700
    # ... and is gone afterwards, also when the command failed to run.
    assert not path.exists()

    def broken(argv: Sequence[str], *, interrupted: object) -> int:
        raise OSError("systemd-run vanished")

    monkeypatch.setattr(operate, "run_attached", broken)
    with pytest.raises(OSError, match="vanished"):
        op.run_command("shop", "eval", "1")
    assert list((host.root / INPUT_DIR).iterdir()) == []


# -- pid and version -------------------------------------------------------------------


def test_pid_is_the_main_pid_or_an_error(host: OnlineLayout) -> None:
    assert operator(host, main_pid=4242)[0].pid("shop") == 4242
    with pytest.raises(NotRunning, match="not running"):
        operator(host, main_pid=0)[0].pid("shop")


def test_version_comes_from_the_main_process_working_directory(
    host: OnlineLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This test process stands in for the service: its cwd is release 1.0.0
    # while `current` says 1.1.0 (an install --no-start).
    monkeypatch.chdir(host.root / "opt/shop/releases/1.0.0")
    found = operator(host, main_pid=os.getpid())[0].version("shop")
    assert (found.version, found.source, found.current) == ("1.0.0", "process", "1.1.0")
    assert found.to_json()["running"] is True


def test_version_falls_back_to_current_and_says_why(
    host: OnlineLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped = operator(host, main_pid=0)[0].version("shop")
    assert (stopped.version, stopped.source) == ("1.1.0", "current")
    assert "not running" in stopped.detail and stopped.to_json()["running"] is False

    monkeypatch.chdir(tmp_path)  # running, but not from a release of shop
    elsewhere = operator(host, main_pid=os.getpid())[0].version("shop")
    assert (elsewhere.version, elsewhere.source) == ("1.1.0", "current")
    assert "is not a release of shop" in elsewhere.detail

    pruned = host.root / "opt/shop/releases/.removing-1.0.0.abcd"
    pruned.mkdir()
    monkeypatch.chdir(pruned)
    gone = operator(host, main_pid=os.getpid())[0].version("shop")
    assert gone.source == "current" and "no longer installed" in gone.detail


# -- run_attached ----------------------------------------------------------------------


def test_run_attached_returns_the_status() -> None:
    def never(signum: int) -> None:
        raise AssertionError(f"interrupted by {signum}")

    assert run_attached(["sh", "-c", "exit 3"], interrupted=never) == 3
    assert run_attached(["sh", "-c", "kill -KILL $$"], interrupted=never) == 128 + signal.SIGKILL


def test_run_attached_passes_a_signal_on_and_cleans_up() -> None:
    got: list[int] = []
    # SIGTERM to pyrelctl itself, as `kill` or systemd would send it.
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        status = run_attached(["sleep", "30"], interrupted=got.append)
    finally:
        timer.cancel()
    assert got == [signal.SIGTERM]
    assert status == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_drop_ins_are_named_when_a_transient_unit_would_miss_them(tmp_path: Path) -> None:
    app = Layout(tmp_path).app("shop")
    assert dropins_note(app, "this command") is None
    app.dropin_dir.mkdir(parents=True)
    (app.dropin_dir / "README").write_text("systemd reads only *.conf here\n")
    assert dropins_note(app, "this command") is None
    (app.dropin_dir / "db.conf").write_text("[Service]\nEnvironment=DATABASE_URL=x\n")
    note = dropins_note(app, "the pre_switch hook")
    assert note is not None
    assert f"{app.dropin_dir} is not applied to the pre_switch hook" in note
    assert "/etc/pyrelctl/shop/env" in note
