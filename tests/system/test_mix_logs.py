"""A mix release's log levels reach the journal as priorities (issue 27, mixlogger.py).

Elixir's Logger wrote plain lines to stdout, which journald filed at info
whatever their level: `pyrelctl logs APP -p err` showed no error at all.
Here a running node logs at several levels and crashes a Task, and the
journal must hold each event once, as one entry, at its own priority, with
no `<N>` left in the text; `eval` runs without pyrelctl's logging flags;
and a release that says `[service] logger = "release"` keeps Elixir's own
console output.

The events are logged by a process of the node whose group leader is the
node's own `:user`, as a request handler's are: code run by `rpc` has its
group leader on the rpc node, and OTP logs its events there.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from devtools.machine import Machine, MachineCommand
from tests.system.test_bandit import APP, GRACE, assert_serves

# The fixtures `app` and `shop` of test_bandit.py, for pytest to find here.
from tests.system.test_bandit import app as app
from tests.system.test_bandit import shop as shop

#: Logged inside the node by a process of its own (see the module's text).
LOG_EXPRESSION = (
    "require Logger; me = self(); "
    "spawn(fn -> Process.group_leader(self(), Process.whereis(:user)); "
    'Logger.error("TOKEN error\\nsecond line"); '
    'Logger.warning("TOKEN warning"); '
    'Logger.info("TOKEN info"); '
    'Task.start(fn -> raise "TOKEN crash" end); '
    "send(me, :logged) end); "
    'receive do :logged -> IO.puts("logged") after 10_000 -> raise "not logged" end'
)


def journal_entries(machine: Machine, unit: str, token: str) -> list[tuple[str, str]]:
    """(PRIORITY, MESSAGE) of the entries of ``unit`` that mention ``token``."""
    out = machine.journalctl(
        "-u", unit, "-o", "json", "--output-fields=PRIORITY,MESSAGE", check=False
    ).stdout
    entries = []
    for line in out.splitlines():
        entry = json.loads(line)
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald's form of a non-UTF-8 message
            message = bytes(message).decode("utf-8", "replace")
        if isinstance(message, str) and token in message:
            entries.append((entry.get("PRIORITY", ""), message))
    return entries


def log_in_node(
    machine: Machine, pyrelctl: MachineCommand, app: str, *, want: int
) -> tuple[str, list[tuple[str, str]]]:
    """Make the running node of ``app`` log (LOG_EXPRESSION) and wait until
    ``want`` journal entries mention the token; return it and the entries."""
    token = f"pyrelctl-log-{secrets.token_hex(4)}"
    rpc = pyrelctl("rpc", app, LOG_EXPRESSION.replace("TOKEN", token), timeout=90)
    assert (rpc.returncode, rpc.stdout.strip()) == (0, "logged"), rpc.stderr
    deadline = time.monotonic() + 30
    entries = journal_entries(machine, f"{app}.service", token)
    while len(entries) < want and time.monotonic() < deadline:
        time.sleep(0.3)
        entries = journal_entries(machine, f"{app}.service", token)
    return token, entries


def check_priorities(machine: Machine, pyrelctl: MachineCommand, app: str) -> None:
    """The assertions for a node whose logging pyrelctl set up."""
    token, entries = log_in_node(machine, pyrelctl, app, want=4)
    by_text = {message: priority for priority, message in entries}
    # One entry per event, each at its level's priority; the multi-line
    # message is one entry too, its newline turned into ", ".
    assert by_text.get(f"[error] {token} error, second line") == "3", entries
    assert by_text.get(f"[warning] {token} warning") == "4", entries
    assert by_text.get(f"[info] {token} info") == "6", entries
    crashes = [(p, m) for p, m in entries if f"{token} crash" in m]
    assert len(crashes) == 1 and crashes[0][0] == "3", entries
    assert crashes[0][1].startswith("[error] "), crashes
    assert len(entries) == 4, entries  # no event twice (Elixir's console is off)
    assert not any(m.startswith("<") for _, m in entries), entries

    errors = pyrelctl("logs", app, "-p", "err", "-n", "500")
    assert errors.returncode == 0, errors.stderr
    assert f"{token} error, second line" in errors.stdout
    assert f"{token} crash" in errors.stdout
    assert f"{token} warning" not in errors.stdout and f"{token} info" not in errors.stdout

    # The flags are the service's alone: eval's VM (like rpc's, remote's and
    # hooks') prints plain lines, read by a person or by pyrelctl.
    show = 'IO.puts(System.get_env("ERL_ZFLAGS") || "unset")'
    service = pyrelctl("rpc", app, show)
    assert service.returncode == 0 and "pyrelctl_error" in service.stdout, service
    command = pyrelctl("eval", app, show)
    assert (command.returncode, command.stdout.strip()) == (0, "unset"), command


def test_log_levels_of_a_mix_release_are_journal_priorities(
    machine: Machine,
    pyrelctl: MachineCommand,
    mix_artifacts: dict[str, Path],
    cleanup: Callable[[str], None],
) -> None:
    """The suite's own `mix release` (Debian 12: Elixir 1.14, console backend;
    Debian 13: Elixir 1.18, Logger's :logger handler)."""
    name = "shoplog"
    cleanup(name)
    proc = pyrelctl("install", mix_artifacts["1.0.0"], "--app", name)
    assert proc.returncode == 0, proc.stderr
    check_priorities(machine, pyrelctl, name)


def test_bandit_release_with_the_systemd_package_logs_at_journal_priorities(
    machine: Machine, pyrelctl: MachineCommand, shop: dict[str, Path], app: str
) -> None:
    """The Plug + Bandit + erlang-systemd fixture: erlang-systemd would wrap
    every stdout handler in its own prefixing formatter (a doubled `<3>`)."""
    proc = pyrelctl("install", shop["1.0.0"], *GRACE)
    assert proc.returncode == 0, proc.stderr
    assert_serves(machine, pyrelctl, "1.0.0")
    check_priorities(machine, pyrelctl, app)
    started = machine.journalctl("-u", f"{APP}.service", "-o", "json", "-p", "info..info").stdout
    assert any(
        json.loads(line)["MESSAGE"].startswith("[info] Running Shop.Router with Bandit")
        for line in started.splitlines()
    ), started


def _with_release_toml_line(source: Path, dest: Path, line: str) -> Path:
    """A copy of the tarball ``source`` whose release.toml has ``line`` added
    at the end of its [service] table (the first table there)."""
    with tarfile.open(source) as src, tarfile.open(dest, "w:gz") as out:
        for member in src.getmembers():
            content = src.extractfile(member) if member.isfile() else None
            data = content.read() if content is not None else None
            if member.name.lstrip("./") == "release.toml" and data is not None:
                text = data.decode()
                head, sep, tail = text.partition("\n\n[socket]")
                assert sep and "[service]" in head, text
                data = f"{head}\n{line}{sep}{tail}".encode()
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    return dest


def test_a_release_can_keep_its_own_logging(
    machine: Machine, pyrelctl: MachineCommand, shop: dict[str, Path], app: str
) -> None:
    """`[service] logger = "release"`: pyrelctl adds nothing, and Elixir's
    console lines reach the journal as before, all at info."""
    tarball = _with_release_toml_line(
        shop["1.0.0"], shop["1.0.0"].with_name("shop-own-logging.tar.gz"), 'logger = "release"'
    )
    proc = pyrelctl("install", tarball, *GRACE)
    assert proc.returncode == 0, proc.stderr
    assert "ERL_ZFLAGS" not in machine.unit_property(f"{APP}.service", "Environment")
    token, entries = log_in_node(machine, pyrelctl, app, want=4)
    errors = [(p, m) for p, m in entries if f"{token} error" in m]
    # Elixir 1.14's console backend: "\nHH:MM:SS.mmm [error] ..." lines, at info.
    assert errors and all(p == "6" for p, _ in errors), entries
    assert any(m.endswith(f"[error] {token} error") for _, m in errors), errors
