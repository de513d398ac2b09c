"""What systemd 252 makes of a SO_REUSEPORT group of socket units (docs/zero-downtime.md).

Boots a throwaway container (devtools.machine; run it under the shared lock)::

    flock /tmp/pyrelctl-containers.lock .venv/bin/python -m devtools.steering_units_lab [N]

and inside it, with two socket units ``demo-a.socket`` and ``demo-b.socket``
(``ReusePort=yes``, the same ``ListenStream=``) and their services (a tiny
server that answers ``a`` or ``b``), measures: whether both units listen;
who answers N requests without a program, with a program attached through
a listener taken from PID 1 (pidfd_getfd) pointing at each, and with the
probe program; connections queued on the old listener when its units stop,
with net.ipv4.tcp_migrate_req 0 and 1; which implicit dependencies a service
gets from its socket; and what ``systemctl show`` and ``journalctl -u``
make of an alias that is moved from one unit to the other.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyrelctl import steering

REPO = Path(__file__).resolve().parent.parent
PORT = 8080
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
UNITS = Path("/etc/systemd/system")

SERVER = """\
import os, socket, sys
listener = socket.socket(fileno=3)
name = sys.argv[1]
print(f"{name} serving, LISTEN_FDNAMES={os.environ.get('LISTEN_FDNAMES')}", flush=True)
while True:
    conn, _ = listener.accept()
    conn.recv(1024)
    conn.sendall(f"HTTP/1.0 200 OK\\r\\n\\r\\n{name}".encode())
    conn.close()
"""


def sh(*argv: str, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode:
        raise SystemExit(f"{argv}: {result.returncode} {result.stderr}")
    return result.stdout.strip()


def show(unit: str, props: str) -> str:
    return sh("systemctl", "show", "-p", props, unit).replace("\n", "; ")


def answer(sock: socket.socket) -> str:
    """Who answered on ``sock`` (a or b), or the error's name."""
    sock.settimeout(3)
    try:
        return sock.recv(100).split(b"\r\n\r\n")[-1].decode() or "eof"
    except OSError as e:
        return type(e).__name__


def tally(answers: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for one in answers:
        counts[one] = counts.get(one, 0) + 1
    return counts


def ask(n: int) -> dict[str, int]:
    answers = []
    for _ in range(n):
        sock = socket.socket()
        sock.settimeout(3)
        try:
            sock.connect(("127.0.0.1", PORT))
            sock.sendall(REQUEST)
            answers.append(answer(sock))
        except OSError as e:
            answers.append(type(e).__name__)
        sock.close()
    return tally(answers)


def member() -> tuple[socket.socket, list[int]]:
    inodes = steering.listening_inodes("127.0.0.1", PORT)
    return steering.group_member(1, inodes), inodes


def listeners() -> int:
    return len(steering.listening_inodes("127.0.0.1", PORT))


def accept_queues() -> list[tuple[int, int]]:
    """(inode, connections waiting to be accepted) of each listener on PORT."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{PORT:04X}") and fields[3] == "0A":
            found.append((int(fields[9]), int(fields[4].split(":")[1], 16)))
    return found


def journal_lines(*args: str) -> int:
    return len(sh("journalctl", "-q", "-o", "cat", *args, check=False).splitlines())


def inside(n: int, server: str) -> None:
    for x in "ab":
        (UNITS / f"demo-{x}.socket").write_text(
            f"[Socket]\nListenStream=127.0.0.1:{PORT}\nReusePort=yes\nFileDescriptorName=listen\n"
        )
        (UNITS / f"demo-{x}.service").write_text(
            f"[Service]\nExecStart=/usr/bin/python3 {server} {x}\nSyslogIdentifier=demo\n"
        )
    sh("systemctl", "daemon-reload")
    sh("systemctl", "start", "demo-a.socket", "demo-a.service")
    deps = "Requires,Wants,BindsTo,After,TriggeredBy"
    print("implicit dependencies of demo-a.service:", show("demo-a.service", deps))
    sh("systemctl", "start", "demo-b.socket")
    print("listeners after both sockets started:", listeners())
    before = ask(n)
    state = sh("systemctl", "is-active", "demo-b.service", check=False)
    print(f"b's socket started, b's service not, no program: {before}; demo-b.service: {state}")
    sh("systemctl", "start", "demo-b.service")
    print("no program:", ask(n))
    sock, inodes = member()
    fd = steering.fd_of_inode(1, inodes)
    for k in (0, 1):
        steering.attach(sock, steering.program(k))
        print(f"program ret {k} (attached through PID 1's fd {fd}):", ask(n))
    probe_sock, probe = steering.probe_socket("127.0.0.1")
    steering.attach(sock, steering.program(0, probe=probe, probe_to=1))
    probe_sock.connect(("127.0.0.1", PORT))
    probe_sock.sendall(REQUEST)
    print("probe program: the probe got", answer(probe_sock), "; the others:", ask(n))
    probe_sock.close()
    sock.close()
    print("our duplicate closed, the program stays:", ask(n))

    for migrate in (False, True):
        steering.set_migration(migrate)
        # One after the other: a's listener joins first (index 0).
        sh("systemctl", "start", "demo-a.socket")
        sh("systemctl", "start", "demo-a.service")
        sh("systemctl", "start", "demo-b.socket")
        sh("systemctl", "start", "demo-b.service")
        sock, _ = member()
        steering.attach(sock, steering.program(0))
        # a serves; freeze it so that clients stay queued on its listener.
        pid = int(sh("systemctl", "show", "-p", "MainPID", "--value", "demo-a.service"))
        os.kill(pid, signal.SIGSTOP)
        # Only once it is stopped: a client that arrives while the signal is on
        # its way may still be accepted (and then cut), which is not the point here.
        while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            time.sleep(0.01)
        clients = []
        for _ in range(n):
            client = socket.create_connection(("127.0.0.1", PORT))
            client.sendall(REQUEST)
            clients.append(client)
        time.sleep(0.2)
        print(f"  tcp_migrate_req={steering.migration_enabled()}, accept queues: {accept_queues()}")
        steering.attach(sock, steering.program(1))  # the switch
        sock.close()
        # systemd sends SIGTERM, then SIGCONT: the frozen server dies without accepting.
        sh("systemctl", "stop", "demo-a.socket", "demo-a.service")
        got = tally([answer(client) for client in clients])
        for client in clients:
            client.close()
        print(
            f"tcp_migrate_req={int(migrate)}: {n} queued on a's listener when its units stop:"
            f" {got}; listeners left: {listeners()}; then {ask(n)}"
        )
        sh("systemctl", "stop", "demo-b.socket", "demo-b.service")

    sh("systemctl", "start", "demo-a.socket", "demo-a.service")
    sh("systemctl", "stop", "demo-a.socket")
    print(
        "demo-a.socket stopped alone: demo-a.service",
        sh("systemctl", "is-active", "demo-a.service", check=False),
        f"; listeners: {listeners()}; {ask(3)}",
    )
    sh("systemctl", "stop", "demo-a.service")

    sh("systemctl", "start", "demo-a.socket", "demo-a.service")
    (UNITS / "demo.service").symlink_to(UNITS / "demo-a.service")
    sh("systemctl", "daemon-reload")
    print("alias demo -> demo-a:", show("demo.service", "Id,MainPID"))
    sh("systemctl", "start", "demo-b.socket", "demo-b.service")
    (UNITS / "demo.tmp").symlink_to(UNITS / "demo-b.service")
    (UNITS / "demo.tmp").rename(UNITS / "demo.service")
    sh("systemctl", "daemon-reload")
    print("alias moved to demo-b, daemon-reload:", show("demo.service", "Id,Names,MainPID"))
    print("  demo-a now:", show("demo-a.service", "Id,Names,ActiveState"))
    # A drop-in under the alias's name, and the verbs through the alias.
    (UNITS / "demo.service.d").mkdir(exist_ok=True)
    (UNITS / "demo.service.d" / "env.conf").write_text("[Service]\nEnvironment=DROPIN=yes\n")
    sh("systemctl", "daemon-reload")
    print("  drop-in demo.service.d/: demo-b", show("demo-b.service", "Environment"))
    pids = {x: show(f"demo-{x}.service", "MainPID") for x in "ab"}
    sh("systemctl", "restart", "demo")
    after = {x: show(f"demo-{x}.service", "MainPID") for x in "ab"}
    print(f"  systemctl restart demo: MainPID before {pids}, after {after}")
    sh("systemctl", "stop", "demo")
    states = {x: sh("systemctl", "is-active", f"demo-{x}.service", check=False) for x in "ab"}
    print(f"  systemctl stop demo: {states}")
    sh("systemctl", "start", "demo")
    enabled = subprocess.run(["systemctl", "enable", "demo"], capture_output=True, text=True)
    print(f"  systemctl enable demo: {enabled.returncode} {enabled.stderr.strip()[:160]!r}")
    (UNITS / "demo.service.d" / "env.conf").unlink()
    (UNITS / "demo.service.d").rmdir()
    sh("systemctl", "daemon-reload")
    time.sleep(1)
    print(
        "  journal lines: -u demo",
        journal_lines("-u", "demo"),
        "; -u demo-a",
        journal_lines("-u", "demo-a"),
        "; -u demo-b",
        journal_lines("-u", "demo-b"),
        "; -u 'demo-*'",
        journal_lines("-u", "demo-*"),
        "; -t demo",
        journal_lines("-t", "demo"),
    )
    sh("systemctl", "stop", "demo-a.service", "demo-a.socket", "demo-b.service", "demo-b.socket")
    (UNITS / "demo.service").unlink()

    # Both slots in one slice: `journalctl -u NAME.slice` matches _SYSTEMD_SLICE.
    for x in "ab":
        (UNITS / f"demo-{x}.service.d").mkdir(exist_ok=True)
        (UNITS / f"demo-{x}.service.d" / "slice.conf").write_text("[Service]\nSlice=demo.slice\n")
    # A template's instance as the target of a plain name's alias.
    (UNITS / "tpl@.service").write_text("[Service]\nExecStart=/bin/sleep infinity\n")
    (UNITS / "tpl.service").symlink_to(UNITS / "tpl@a.service")
    reload = subprocess.run(["systemctl", "daemon-reload"], capture_output=True, text=True)
    sh("systemctl", "start", "demo-a.socket", "demo-a.service", "demo-b.socket", "demo-b.service")
    time.sleep(1)
    print(
        "slots in demo.slice: journal lines -u demo.slice",
        journal_lines("-u", "demo.slice"),
        "; -u demo-a",
        journal_lines("-u", "demo-a"),
        "; -u demo-b",
        journal_lines("-u", "demo-b"),
    )
    started = subprocess.run(["systemctl", "start", "tpl.service"], capture_output=True, text=True)
    print(
        "alias tpl.service -> tpl@a.service:",
        show("tpl.service", "Id,LoadState,ActiveState"),
        f"; start: {started.returncode} {started.stderr.strip()[:160]!r}",
        f"; daemon-reload said: {reload.stderr.strip()[:200]!r}",
    )


def main() -> None:
    if sys.argv[1:2] == ["--inside"]:
        inside(int(sys.argv[2]), sys.argv[3])
        return
    from devtools.machine import Machine

    # A timeout's SIGTERM must still stop the container (the with block below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory(prefix="steer-lab-", dir="/var/tmp") as tmp:
        scratch = Path(tmp)
        server = scratch / "server.py"
        server.write_text(SERVER)
        with Machine.boot("steer-lab", [REPO, scratch], scratch / "boot.log") as machine:
            kernel = machine.run(["uname", "-r"]).stdout.strip()
            version = machine.run(["systemctl", "--version"]).stdout.splitlines()[0]
            print(f"kernel {kernel}, {version}")
            python = os.fspath(REPO / ".venv/bin/python")
            argv = [python, "-m", "devtools.steering_units_lab", "--inside", str(n), str(server)]
            result = machine.run(argv, check=False, timeout=300, cwd=REPO)
            print(result.stdout, end="")
            if result.returncode:
                print(result.stderr, file=sys.stderr)


if __name__ == "__main__":
    main()
