"""Socket activation in a real systemd: no request fails through upgrades and rollbacks.

The "serve" test release answers `NAME VERSION` on the socket systemd
passes, and on SIGTERM finishes the requests in flight before it exits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.load import Background, Load
from devtools.machine import Machine, MachineCommand

PORT = 18300  # the container has a network namespace of its own
URL = f"http://127.0.0.1:{PORT}/"
SOCKET = f'[socket]\nlisten = ["127.0.0.1:{PORT}"]\n'
HEALTH = f'[health]\nhttp = "{URL}"\n'


@pytest.fixture
def releases(make_release: Callable[..., Path]) -> dict[str, Path]:
    def serving(version: str, extra: str = SOCKET) -> Path:
        return make_release(
            name="sock", version=version, behaviour="serve", port=PORT, extra_toml=extra + HEALTH
        )

    return {
        "1.0.0": serving("1.0.0"),
        "2.0.0": serving("2.0.0"),
        "3.0.0": make_release(
            name="sock", version="3.0.0", behaviour="crash", extra_toml=SOCKET + HEALTH
        ),
        "4.0.0": serving("4.0.0", extra=""),  # binds the port itself
    }


@pytest.fixture
def app(pyrelctl: MachineCommand) -> Iterator[str]:
    yield "sock"
    pyrelctl("uninstall", "--purge", "sock")


def test_no_request_fails_through_upgrade_failed_deploy_and_rollback(
    machine: Machine,
    pyrelctl: MachineCommand,
    releases: dict[str, Path],
    scratch: Path,
    app: str,
) -> None:
    def install(version: str, *args: str, code: int = 0) -> None:
        proc = pyrelctl("install", releases[version], "--grace", "0.5", *args)
        assert proc.returncode == code, proc.stderr

    install("1.0.0")
    assert machine.systemctl("is-active", f"{app}.socket").stdout.strip() == "active"
    # The listener belongs to PID 1, the app only got a copy of it.
    assert machine.unit_property(f"{app}.socket", "Listen") == f"127.0.0.1:{PORT} (Stream)"
    assert machine.http_get(URL) == "sock 1.0.0"
    listening_since = machine.unit_property(f"{app}.socket", "ActiveEnterTimestampMonotonic")

    load = Load(machine, URL, scratch / "stop-load")
    try:
        install("2.0.0")
        install("3.0.0", code=3)  # crashes at start: 2.0.0 is restored
        # A request in flight when the old process is told to stop still
        # gets its answer from it (KillMode=mixed, graceful SIGTERM).
        slow = Background(machine, ["python3", "-c", LOAD_ONE, URL + "?delay=2"])
        machine.run(["sleep", "0.5"])
        rollback = pyrelctl("rollback", app, "--grace", "0.5")
        assert rollback.returncode == 0, rollback.stderr
        assert slow.result().strip() == "sock 2.0.0"
    finally:
        summary = load.stop()
    assert summary["errors"] == [], summary["errors"][:5]
    served = summary["bodies"]
    assert served.get("sock 1.0.0", 0) > 10 and served.get("sock 2.0.0", 0) > 10, served
    assert "sock 3.0.0" not in served
    assert machine.http_get(URL) == "sock 1.0.0"
    # The same socket unit listened throughout: never restarted by a deploy.
    after = machine.unit_property(f"{app}.socket", "ActiveEnterTimestampMonotonic")
    assert after == listening_since


LOAD_ONE = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode().strip())
"""


def test_socket_comes_and_goes_with_the_release_and_the_app(
    machine: Machine, pyrelctl: MachineCommand, releases: dict[str, Path], app: str
) -> None:
    def install(version: str, *args: str) -> None:
        proc = pyrelctl("install", releases[version], "--grace", "0.5", *args)
        assert proc.returncode == 0, proc.stderr

    # No socket activation yet: the release binds the port itself.
    install("4.0.0")
    assert machine.http_get(URL) == "sock 4.0.0"
    assert machine.systemctl("cat", f"{app}.socket", check=False).returncode != 0
    # Switching to socket activation: the old process lets go of the port first.
    install("1.0.0")
    assert machine.http_get(URL) == "sock 1.0.0"
    # Enabled with the service, which the first good install enabled.
    assert machine.systemctl("is-enabled", f"{app}.socket", check=False).stdout.strip() == (
        "enabled"
    )
    # Moved by the host: the socket unit restarts on the new address.
    other = PORT + 1
    install(
        "2.0.0", "--listen", f"127.0.0.1:{other}", "--health-http", f"http://127.0.0.1:{other}/"
    )
    assert machine.http_get(f"http://127.0.0.1:{other}/") == "sock 2.0.0"
    listen = machine.unit_property(f"{app}.socket", "Listen")
    assert listen == f"127.0.0.1:{other} (Stream)"
    # And back to a release without socket activation.
    install("4.0.0", "--listen-reset", "--health-reset")
    assert machine.systemctl("is-active", f"{app}.socket", check=False).stdout.strip() in (
        "inactive",
        "",
    )
    assert machine.http_get(URL) == "sock 4.0.0"
    install("1.0.0")

    # stop stops the socket too (a connection would start the service again).
    assert pyrelctl("stop", app).returncode == 0
    assert machine.systemctl("is-active", f"{app}.socket", check=False).stdout.strip() == (
        "inactive"
    )
    status = json.loads(pyrelctl("--json", "status", app).stdout)["socket"]
    assert (status["listen"], status["active_state"]) == ([f"127.0.0.1:{PORT}"], "inactive")
    refused = machine.run(["python3", "-c", LOAD_ONE, URL], check=False)
    assert refused.returncode != 0 and "Connection refused" in refused.stderr
    assert pyrelctl("start", app).returncode == 0
    assert machine.systemctl("is-active", f"{app}.socket").stdout.strip() == "active"
    assert machine.http_get(URL) == "sock 1.0.0"
    status = json.loads(pyrelctl("--json", "status", app).stdout)["socket"]
    assert status == {
        "unit": f"{app}.socket",
        "active_state": "active",
        "sub_state": "running",  # "listening" while the service is stopped
        "listen": [f"127.0.0.1:{PORT}"],
    }
    checks = json.loads(pyrelctl("--json", "doctor", app).stdout)["findings"]
    (socket_check,) = [c for c in checks if c["check"] == "socket"]
    assert socket_check["severity"] == "ok", socket_check
    assert socket_check["message"] == f"{app}.socket listens on 127.0.0.1:{PORT}"
    table = pyrelctl("status", app).stdout.splitlines()
    assert table[0].split()[-1] == "SOCKET" and table[1].split()[-1] == f"127.0.0.1:{PORT}"

    assert pyrelctl("uninstall", app).returncode == 0
    assert machine.run(["test", "-e", f"/etc/systemd/system/{app}.socket"], check=False).returncode
    load = machine.unit_property(f"{app}.socket", "LoadState")
    assert load == "not-found"


# Elixir code for `rpc`: a process of the node takes the listening socket
# systemd passed (fd 3: gen_tcp's `fd` option, what Cowboy and Bandit pass
# down as a socket option) and answers three HTTP requests on it.
SERVE_ON_FD_3 = """
spawn(fn ->
  {:ok, listener} = :gen_tcp.listen(0, [:binary, :inet, fd: 3, active: false])
  for _ <- 1..3 do
    {:ok, conn} = :gen_tcp.accept(listener)
    {:ok, _request} = :gen_tcp.recv(conn, 0)
    :gen_tcp.send(conn, "HTTP/1.0 200 OK\\r\\n\\r\\nelixir on the systemd socket\\n")
    :gen_tcp.close(conn)
  end
end)
:ok
"""


def test_a_mix_release_gets_the_socket(
    machine: Machine, pyrelctl: MachineCommand, mix_artifacts: dict[str, Path]
) -> None:
    app, port = "shopsock", PORT + 10
    try:
        proc = pyrelctl(
            "install", mix_artifacts["1.0.0"], "--app", app, "--listen", f"127.0.0.1:{port}"
        )
        assert proc.returncode == 0, proc.stderr
        names = pyrelctl("rpc", app, 'IO.puts(System.get_env("LISTEN_FDNAMES"))')
        assert names.stdout.strip() == "listen", names.stdout + names.stderr
        served = pyrelctl("rpc", app, SERVE_ON_FD_3)
        assert served.returncode == 0, served.stdout + served.stderr
        assert machine.http_get(f"http://127.0.0.1:{port}/") == "elixir on the systemd socket"
        # An upgrade keeps the listener: the new node gets the same socket.
        proc = pyrelctl("install", mix_artifacts["1.1.0"], "--app", app)
        assert proc.returncode == 0, proc.stderr
        assert pyrelctl("rpc", app, SERVE_ON_FD_3).returncode == 0
        assert machine.http_get(f"http://127.0.0.1:{port}/") == "elixir on the systemd socket"
    finally:
        pyrelctl("uninstall", "--purge", app)
