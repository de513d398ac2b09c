"""rpc, eval, remote, pid and version against a real systemd and a real mix release.

The mix release runs as `op-shop` (installed with --app), so it never shares
a node name, a unit or directories with the deploy tests' `shop`. The
container gets a Debian-like /etc/hosts (the hostname on 127.0.1.1) for the
module: that is where a node named after the hostname stops being reachable
once EPMD and distribution are bound to 127.0.0.1, so rpc working here proves
the loopback defaults on a stock host.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand
from devtools.proc import wait_until
from tests.system.test_deploy import running_release_line

GRACE = ("--grace", "1")
APP = "op-shop"


def main_pid(machine: Machine, app: str) -> str:
    return machine.systemctl("show", "-p", "MainPID", "--value", app).stdout.strip()


def transient_units(machine: Machine) -> str:
    return machine.systemctl("list-units", "--all", "--no-legend", "pyrelctl-*").stdout.strip()


@pytest.fixture(scope="module")
def debian_hosts(machine: Machine) -> Iterator[None]:
    """/etc/hosts as Debian's installer writes it, for this module only."""
    hostname = machine.run(["hostname"]).stdout.strip()
    made = []
    for path, text in (
        ("/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n"),
        ("/etc/nsswitch.conf", "hosts: files myhostname\n"),
    ):
        if machine.run(["test", "-e", path], check=False).returncode != 0:
            machine.run(["sh", "-c", f'printf "%s" "$1" > {path}', "-", text])
            made.append(path)
    resolved = machine.run(["getent", "hosts", hostname]).stdout
    assert resolved.startswith("127.0.1.1"), resolved
    yield
    for path in made:
        machine.run(["rm", "-f", path])


@pytest.fixture(scope="module")
def op_shop(
    debian_hosts: None, machine: Machine, pyrelctl: MachineCommand, mix_artifacts: dict[str, Path]
) -> Iterator[str]:
    """The mix release 1.0.0 installed and running as `op-shop`; purged afterwards."""
    proc = pyrelctl("install", "--app", APP, mix_artifacts["1.0.0"], *GRACE)
    assert proc.returncode == 0, proc.stderr
    yield APP
    pyrelctl("uninstall", "--purge", APP)


def cookie(machine: Machine, app: str) -> str:
    return machine.run(["cat", f"/etc/pyrelctl/{app}/cookie"]).stdout.strip()


def test_rpc_runs_in_the_service_node(
    machine: Machine, pyrelctl: MachineCommand, op_shop: str
) -> None:
    pid = main_pid(machine, op_shop)
    started = time.monotonic()
    pong = pyrelctl("rpc", op_shop, "IO.puts(:pong)")
    elapsed = time.monotonic() - started
    assert (pong.returncode, pong.stdout, pong.stderr) == (0, "pong\n", ""), pong
    assert elapsed < 15, elapsed
    # It ran in the service's node: the OS pid is the service's main PID.
    node = pyrelctl("rpc", op_shop, "IO.puts(System.pid()); IO.puts(node())")
    assert node.stdout.split() == [pid, f"{op_shop}@127.0.0.1"], node

    boom = pyrelctl("rpc", op_shop, 'raise "boom from rpc"')
    assert boom.returncode != 0
    assert "boom from rpc" in boom.stderr and "boom" not in boom.stdout

    # stdin passes through to the command.
    echo = pyrelctl(
        "rpc", op_shop, 'IO.puts(IO.gets("") |> String.trim() |> String.upcase())', input="hi\n"
    )
    assert echo.stdout == "HI\n", echo

    # The service is untouched: same process, its runtime directory still there.
    assert main_pid(machine, op_shop) == pid
    assert machine.run(["test", "-d", f"/run/{op_shop}"], check=False).returncode == 0
    assert transient_units(machine) == ""


def test_eval_runs_as_the_service_would(
    machine: Machine, pyrelctl: MachineCommand, op_shop: str
) -> None:
    expr = (
        'for v <- ~w(USER HOME RELEASE_TMP RELEASE_NODE RELEASE_COOKIE), do: IO.puts("#{v}="'
        " <> (System.get_env(v) || \"\")); IO.puts(File.cwd!()); IO.puts(:os.cmd('id -u'))"
    )
    proc = pyrelctl("eval", op_shop, expr)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    env = dict(line.split("=", 1) for line in lines[:5])
    assert env["USER"] == op_shop  # the dynamic user of the unit
    assert env["HOME"].startswith("/run/pyrelctl/") and env["HOME"] == env["RELEASE_TMP"]
    assert env["RELEASE_NODE"] == f"{op_shop}@127.0.0.1"
    # Not the cookie: the placeholder the VM reads as a flag (test_cookie.py).
    assert env["RELEASE_COOKIE"] == "-pyrelctl_cookie_from_home"
    assert lines[5] == f"/opt/{op_shop}/releases/1.0.0"
    service_uid = machine.run(["stat", "-c", "%u", f"/run/{op_shop}"]).stdout.strip()
    assert lines[6] == service_uid != "0"  # shares the service's dynamic user

    # $ and % reach the code as typed: no expansion by systemd.
    literal = pyrelctl("eval", op_shop, 'IO.puts("$HOME ${USER} 100%n")')
    assert literal.stdout == "$HOME ${USER} 100%n\n", literal
    # The command's own exit status is pyrelctl's.
    assert pyrelctl("eval", op_shop, "System.halt(7)").returncode == 7
    # Its runtime directory went with it; the service's stayed.
    assert machine.run(["ls", "-A", "/run/pyrelctl"]).stdout.strip() == ""
    assert transient_units(machine) == ""


def test_pid_and_version_of_the_running_service(
    machine: Machine, pyrelctl: MachineCommand, op_shop: str
) -> None:
    pid = pyrelctl("pid", op_shop)
    assert pid.returncode == 0 and pid.stdout.strip() == main_pid(machine, op_shop) != "0"
    doc = json.loads(pyrelctl("--json", "pid", op_shop, check=True).stdout)
    assert doc == {"app": op_shop, "pid": int(main_pid(machine, op_shop))}
    version = pyrelctl("version", op_shop)
    assert version.returncode == 0 and version.stdout == "1.0.0\n"
    assert "running (pid" in version.stderr


def test_distribution_listens_on_loopback_only(
    machine: Machine, pyrelctl: MachineCommand, op_shop: str
) -> None:
    pid = main_pid(machine, op_shop)
    listening = machine.run(["ss", "-Hltnp"]).stdout.splitlines()
    beam = [line for line in listening if f"pid={pid}," in line]
    assert beam, listening  # the distribution port
    assert all(line.split()[3].startswith("127.0.0.1:") for line in beam), beam
    epmd = [line.split()[3] for line in listening if '"epmd"' in line]
    assert epmd and set(epmd) <= {"127.0.0.1:4369", "[::1]:4369"}, epmd
    # Where mix puts the cookie on the VM's command line, the placeholder
    # (pyrelctl/mixcookie.py; every process is scanned in test_cookie.py).
    cmdline = machine.run(["cat", f"/proc/{pid}/cmdline"]).stdout.split("\0")
    assert cmdline[cmdline.index("-setcookie") + 1] == "-pyrelctl_cookie_from_home"
    assert cookie(machine, op_shop) not in "\0".join(cmdline)


def test_eval_while_stopped_and_errors_of_a_stopped_service(
    machine: Machine, pyrelctl: MachineCommand, op_shop: str
) -> None:
    assert pyrelctl("stop", op_shop).returncode == 0
    try:
        evaluated = pyrelctl("eval", op_shop, "IO.puts(:evaluated)")
        assert (evaluated.returncode, evaluated.stdout) == (0, "evaluated\n"), evaluated
        for argv in (("rpc", op_shop, "1"), ("pid", op_shop)):
            proc = pyrelctl(*argv)
            assert proc.returncode == 1, proc
            assert f"error: {op_shop} is not running" in proc.stderr
            assert f"hint: start it: pyrelctl start {op_shop}" in proc.stderr
        version = pyrelctl("--json", "version", op_shop)
        doc = json.loads(version.stdout)
        assert (doc["version"], doc["source"], doc["running"]) == ("1.0.0", "current", False)
        no_tty = pyrelctl("remote", op_shop)
        assert no_tty.returncode == 2 and "needs a terminal" in no_tty.stderr
    finally:
        assert pyrelctl("start", op_shop).returncode == 0
        # Up, not just exec'd: a BEAM that gets SIGTERM while it boots loses
        # it, and a later stop would wait for TimeoutStopSec.
        running_release_line(machine, op_shop, "shop 1.0.0 started")


def test_non_root_is_refused(machine: Machine, pyrelctl: MachineCommand, op_shop: str) -> None:
    nobody = MachineCommand(
        machine, ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *pyrelctl.prefix)
    )
    for argv in (("rpc", op_shop, "IO.puts(1)"), ("eval", op_shop, "1"), ("remote", op_shop)):
        proc = nobody(*argv)
        assert proc.returncode == 1, proc
        assert proc.stderr.startswith(f"error: pyrelctl {argv[0]} must run as root"), proc.stderr
        assert cookie(machine, op_shop) not in proc.stdout + proc.stderr
    # Reading pid and version leaks nothing and works for anyone.
    assert nobody("pid", op_shop).stdout.strip() == main_pid(machine, op_shop)
    version = nobody("version", op_shop)
    assert version.stdout == "1.0.0\n" and "Permission denied" in version.stderr


def test_offline_commands_refuse(pyrelctl: MachineCommand, op_shop: str) -> None:
    for argv in (("rpc", op_shop, "1"), ("eval", op_shop, "1"), ("pid", op_shop)):
        proc = pyrelctl("--root", "/tmp", *argv)
        assert proc.returncode == 2 and "cannot work with --root" in proc.stderr, proc


class Console:
    """A command inside the machine on a pseudo-terminal of the host (pty.fork)."""

    def __init__(self, argv: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the command (nothing else may run here)
            try:
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        self.output = b""

    def expect(self, needle: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(remaining, 0))
            if not ready:
                raise AssertionError(f"no {needle!r} in {timeout} s; got {self.output!r}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: the other side closed
                chunk = b""
            if not chunk:
                raise AssertionError(f"console closed before {needle!r}; got {self.output!r}")
            self.output += chunk

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 20.0) -> int:
        def exited() -> int | None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            return os.waitstatus_to_exitcode(status) if pid else None

        try:
            return wait_until(exited, timeout=timeout, what="the console to exit")
        finally:
            os.close(self.fd)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_remote_console_on_a_pseudo_terminal(
    machine: Machine, pyrelctl: MachineCommand, op_shop: str
) -> None:
    pid = main_pid(machine, op_shop)
    console = Console(machine.enter_argv([*pyrelctl.prefix, "remote", op_shop], {"TERM": "xterm"}))
    try:
        started = time.monotonic()
        console.expect(f"iex({op_shop}@127.0.0.1)1>".encode())
        prompt_after = time.monotonic() - started
        console.send(b"1+41\r")
        console.expect(b"42")
        console.send(b"System.pid()\r")
        console.expect(f'"{pid}"'.encode())  # evaluated in the service's node
        # Ctrl-C twice leaves the console (never System.halt(): that would run
        # in the service's node and stop the service).
        console.send(b"\x03")
        console.expect(b"BREAK")
        console.send(b"\x03")
        status = console.wait()
    finally:
        console.kill()
    assert status == 0, console.output
    assert prompt_after < 15
    assert main_pid(machine, op_shop) == pid  # the service kept running
    wait_until(lambda: transient_units(machine) == "" or None, timeout=10, what="unit gone")


def test_version_names_the_running_release_until_restart(
    machine: Machine,
    pyrelctl: MachineCommand,
    mix_artifacts: dict[str, Path],
    cleanup: Callable[[str], None],
    debian_hosts: None,
) -> None:
    app = "op-ver"
    cleanup(app)
    assert pyrelctl("install", "--app", app, mix_artifacts["1.0.0"], *GRACE).returncode == 0
    upgrade = pyrelctl("install", "--app", app, "--no-start", mix_artifacts["1.1.0"])
    assert upgrade.returncode == 0, upgrade.stderr
    doc = json.loads(pyrelctl("--json", "version", app, check=True).stdout)
    assert (doc["version"], doc["source"], doc["current"]) == ("1.0.0", "process", "1.1.0")
    assert "current is 1.1.0" in pyrelctl("version", app).stderr
    # rpc uses the current release's script against the running 1.0.0 node.
    vsn = pyrelctl("rpc", app, "IO.puts(Application.spec(:shop, :vsn))")
    assert vsn.stdout == "1.0.0\n", vsn
    # eval --release runs the release asked for.
    old = pyrelctl("eval", app, "--release", "1.0.0", 'IO.puts(System.get_env("RELEASE_VSN"))')
    assert old.stdout == "1.0.0\n", old
    new = pyrelctl("eval", app, 'IO.puts(System.get_env("RELEASE_VSN"))')
    assert new.stdout == "1.1.0\n", new

    assert pyrelctl("restart", app).returncode == 0
    running_release_line(machine, app, "shop 1.1.0 started")  # see the stopped-service test
    assert pyrelctl("version", app).stdout == "1.1.0\n"


def test_generic_release_declares_some_verbs(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    cleanup("op-hello")
    artifact = make_release(name="op-hello", version="2.0.0")
    assert pyrelctl("install", artifact, *GRACE).returncode == 0
    # The manifest's eval argv with the expression appended.
    echoed = pyrelctl("eval", "op-hello", "a $HOME b")
    assert (echoed.returncode, echoed.stdout) == (0, "a $HOME b\n"), echoed
    assert pyrelctl("version", "op-hello").stdout == "2.0.0\n"
    assert pyrelctl("pid", "op-hello").stdout.strip() == main_pid(machine, "op-hello")
    undeclared = pyrelctl("rpc", "op-hello", "x")
    assert undeclared.returncode == 2
    assert "error: op-hello 2.0.0 (generic release) does not declare the rpc command" in (
        undeclared.stderr
    )
    missing = pyrelctl("rpc", "op-nothing", "x")
    assert missing.returncode == 2 and "'op-nothing' is not installed" in missing.stderr


# -- the expression stays out of every command line but the release's (issue 15) ----------

ARGS_APP = "op-args"
#: A generic release whose rpc and eval write their last argument back, byte
#: for byte (printf, not echo: dash's echo would read backslashes), and
#: whose `eval wait...` sleeps, to be looked at while it runs.
ARGS_SCRIPT = """\
#!/bin/sh
case "$1" in
start) exec sleep infinity ;;
rpc|eval)
    shift
    case "$1" in wait*) sleep 300 ;; esac
    printf '%s' "$1"
    ;;
*) exit 2 ;;
esac
"""
#: Everything systemd or a shell could eat: $ and ${}, %, both quotes,
#: backquotes and $(...), backslashes, a tab, Unicode, newlines, and
#: trailing newlines (which $(...) strips).
TRICKY = (
    "a $HOME ${USER} $$ 100% %n \"dq\" 'sq' `id -u` $(id -u) \\ \\n \\\\\n"
    "\tline 2; ls | cat && echo é ✓ -e -n\n\n"
)


def write_args_release(dest: Path) -> Path:
    root = dest / f"{ARGS_APP}-1.0.0"
    (root / "bin").mkdir(parents=True)
    (root / "release.toml").write_text(
        "[release]\n"
        f'name = "{ARGS_APP}"\nversion = "1.0.0"\nkind = "generic"\n\n'
        "[commands]\n"
        f'start = ["bin/{ARGS_APP}", "start"]\n'
        f'rpc = ["bin/{ARGS_APP}", "rpc"]\n'
        f'eval = ["bin/{ARGS_APP}", "eval"]\n'
    )
    script = root / "bin" / ARGS_APP
    script.write_text(ARGS_SCRIPT)
    script.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def op_args(machine: Machine, pyrelctl: MachineCommand, scratch: Path) -> Iterator[str]:
    """The release above, installed and running as `op-args`; purged afterwards."""
    dest = scratch / "op-args"
    dest.mkdir(exist_ok=True)
    proc = pyrelctl("install", write_args_release(dest), *GRACE)
    assert proc.returncode == 0, proc.stderr
    yield ARGS_APP
    pyrelctl("uninstall", "--purge", ARGS_APP)


def test_expression_round_trips_exactly(
    machine: Machine, pyrelctl: MachineCommand, op_args: str
) -> None:
    for verb in ("rpc", "eval"):
        for expr in (TRICKY, "", "\n", "x", "-", "--help"):
            proc = pyrelctl(verb, op_args, "--", expr)
            assert (proc.returncode, proc.stdout, proc.stderr) == (0, expr, ""), (verb, proc)
    # Nothing staged is left behind, nor a unit.
    assert machine.run(["ls", "-A", "/run/pyrelctl-input"]).stdout == ""
    assert transient_units(machine) == ""


def test_mix_expression_with_quotes_and_newlines(
    machine: Machine, pyrelctl: MachineCommand, op_shop: str
) -> None:
    expr = 'x = "it\'s \\"quoted\\", $HOME, #{1 + 1}"\nIO.puts(x)\n\n'
    for verb in ("rpc", "eval"):
        proc = pyrelctl(verb, op_shop, expr)
        assert (proc.returncode, proc.stdout) == (0, 'it\'s "quoted", $HOME, 2\n'), proc


def test_a_running_expression_is_in_no_command_line_but_the_releases(
    machine: Machine, pyrelctl: MachineCommand, op_args: str
) -> None:
    marker = f"wait secret-{os.getpid()}-$HOME\n'\"tail"
    argv = machine.enter_argv([*pyrelctl.prefix, "eval", op_args, marker])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:

        def started() -> tuple[str, list[str]] | None:
            units = transient_units(machine).split()
            unit = next((u for u in units if u.startswith(f"pyrelctl-{op_args}-eval-")), None)
            if unit is None:
                return None
            # The wrapper execs the release's script: the unit's main process.
            pid = machine.systemctl("show", "-p", "MainPID", "--value", unit).stdout.strip()
            read = machine.run(["cat", f"/proc/{pid}/cmdline"], check=False)
            script_argv = read.stdout.split("\0")
            # Until the wrapper's exec, the main process is `/bin/sh -c ...`, whose
            # argv names the script too but not the expression: wait for the exec.
            execed = len(script_argv) > 1 and script_argv[1] != "-c"
            return (unit, script_argv) if execed and f"bin/{op_args}" in read.stdout else None

        unit, script_argv = wait_until(started, timeout=30, what="the eval to run")
        # Where the expression is: the release's own script's argv, as typed.
        assert script_argv[-3:] == ["eval", marker, ""], script_argv
        needle = f"secret-{os.getpid()}"
        exec_start = machine.systemctl("show", "-p", "ExecStart", unit).stdout
        assert "/bin/sh" in exec_start and needle not in exec_start, exec_start
        assert needle not in machine.systemctl("show", unit).stdout
        (run_pid,) = machine.run(["pgrep", "-x", "systemd-run"]).stdout.split()
        cmdline = machine.run(["cat", f"/proc/{run_pid}/cmdline"]).stdout.split("\0")
        assert "--pipe" in cmdline and not any(needle in word for word in cmdline), cmdline
        # ... and in the unit's private credential, readable by its user only.
        creds = machine.run(["ls", "-A", f"/run/credentials/{unit}"]).stdout.split()
        assert creds == ["pyrelctl+expression"]

        # Interrupted: the unit stops, the staged copy goes.
        pyrelctl_pid = machine.run(["ps", "-o", "ppid=", "-p", run_pid]).stdout.strip()
        machine.run(["kill", "-TERM", pyrelctl_pid])
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert machine.run(["ls", "-A", "/run/pyrelctl-input"]).stdout == ""
    wait_until(lambda: transient_units(machine) == "" or None, timeout=30, what="unit gone")
