"""Python releases under a real systemd: build the example on the host, install it offline.

The container has a network namespace of its own with only `lo` (devtools
Machine, private_network): whatever the install needs must be in the
tarball. The example (examples/pyshop) is Flask on gunicorn with
pyrelctl_runtime: READY=1 from the worker, journal priorities, rpc.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import pyreleases
from devtools.load import Load
from devtools.machine import Machine, MachineCommand
from devtools.proc import run
from tests.system.test_procs_units import release_of
from tests.system.test_security import assert_confined

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pyshop"
PYRELCTL = REPO / ".venv" / "bin" / "pyrelctl"
GRACE = ("--grace", "1")
APP = "pyshop"
PORT = 8101
LISTEN = f"127.0.0.1:{PORT}"
#: Seconds the example warms up before it serves (PYSHOP_START_DELAY).
WARM_UP = 1.5


def build_version(workdir: Path, version: str, *, failing: bool = False) -> Path:
    """Build examples/pyshop as `version` (failing: exits 3 before READY) with pyrelctl build."""
    project = workdir / f"pyshop-{version}"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("dist", "__pycache__"))
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text().replace('version = "1.0.0"', f'version = "{version}"', 1)
    if failing:
        # Into [tool.pyrelctl], after its last key (its process and timer tables follow).
        socket = 'socket = { listen = ["127.0.0.1:8000"] }\n'
        assert socket in text
        text = text.replace(socket, socket + 'environment = { PYSHOP_FAIL_AT_START = "1" }\n', 1)

    pyproject.write_text(text)
    result = run([PYRELCTL, "--json", "build", project, "-o", workdir / "artifacts"], timeout=600)
    artifact = Path(json.loads(result.stdout)["artifact"])
    assert artifact.name == f"pyshop-{version}.tar.gz"
    return artifact


@pytest.fixture(scope="module")
def artifacts(scratch: Path) -> dict[str, Path]:
    workdir = scratch / "python"
    workdir.mkdir()
    return {
        "1.0.0": build_version(workdir, "1.0.0"),
        "1.1.0": build_version(workdir, "1.1.0"),
        "2.0.0": build_version(workdir, "2.0.0", failing=True),
    }


@pytest.fixture
def app(machine: Machine, pyrelctl: MachineCommand) -> Iterator[str]:
    """The app name, with its settings file (port, warm-up); uninstalled (purged) afterwards."""
    machine.run(["mkdir", "-p", f"/etc/pyrelctl/{APP}"])
    machine.run(
        ["tee", f"/etc/pyrelctl/{APP}/env"],
        input=f"PYSHOP_BIND=127.0.0.1:{PORT}\nPYSHOP_START_DELAY={WARM_UP}\n",
    )
    yield APP
    pyrelctl("uninstall", "--purge", APP)


WORKER = f"{APP}-worker@1.service"


def worker_release(machine: Machine) -> str:
    """The release the example's worker runs in (its main process's working directory)."""
    return release_of(machine, WORKER)


def not_root_only(machine: Machine, path: str) -> list[str]:
    """Entries below `path` not owned by root:root, or writable by group or others."""
    find = machine.run(
        ["find", path, "(", "!", "-uid", "0", "-o", "!", "-gid", "0", "-o",
         "(", "!", "-type", "l", "-perm", "/022", ")", ")", "-print"]
    )  # fmt: skip
    return find.stdout.split()


def build_leftovers(machine: Machine) -> list[str]:
    """State directories (and their links) of venv builds still on the host."""
    found = machine.run(
        ["find", "/var/lib", "-maxdepth", "2", "-name", "pyrelctl-build*"], check=False
    )
    return found.stdout.split()


def show(machine: Machine, prop: str) -> str:
    return machine.systemctl("show", "-p", prop, "--value", APP).stdout.strip()


def http_post(machine: Machine, path: str) -> str:
    code = (
        "import sys, urllib.request as u; "
        "r = u.urlopen(u.Request(sys.argv[1], method='POST'), timeout=10); "
        "print(r.read().decode())"
    )
    url = f"http://127.0.0.1:{PORT}{path}"
    return machine.run(["python3", "-c", code, url]).stdout.strip()


def rpc(pyrelctl: MachineCommand, expr: str) -> str:
    proc = pyrelctl("rpc", APP, expr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_python_release_lifecycle(
    machine: Machine,
    pyrelctl: MachineCommand,
    artifacts: dict[str, Path],
    app: str,
    scratch: Path,
) -> None:
    # The container has no network but loopback: the install below is offline.
    links = machine.run(["ls", "/sys/class/net"]).stdout.split()
    assert links == ["lo"]

    # Socket activation (the example's [tool.pyrelctl] socket), on the port
    # this host chose: gunicorn serves on the socket systemd holds.
    first = pyrelctl("--json", "install", artifacts["1.0.0"], *GRACE, "--listen", LISTEN)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["started"] is True

    # Type=notify, and active only once the worker sent READY=1: activation
    # took at least the warm-up, which a Type=exec unit would not wait for.
    assert show(machine, "Type") == "notify"
    assert show(machine, "NotifyAccess") == "all"
    started = int(show(machine, "ExecMainStartTimestampMonotonic"))
    active = int(show(machine, "ActiveEnterTimestampMonotonic"))
    assert active - started >= WARM_UP * 1e6, (started, active)
    assert show(machine, "StatusText") == f"pyshop 1.0.0 serving on {LISTEN}"
    listen = machine.systemctl("show", "-p", "Listen", "--value", f"{APP}.socket").stdout
    assert listen.strip() == f"{LISTEN} (Stream)"
    # The hardened unit: dynamic user, read-only release. The venv was built
    # by a dynamic user, and then taken over: everything is root's.
    assert not_root_only(machine, "/opt/pyshop/releases/1.0.0") == []
    assert machine.run(["test", "-d", "/opt/pyshop/releases/1.0.0/venv/lib"]).returncode == 0
    assert build_leftovers(machine) == []
    assert show(machine, "DynamicUser") == "yes"
    assert show(machine, "ProtectSystem") == "strict"
    # systemd's own rating of the unit, while it serves: 1.5 or lower (issue 6).
    security = machine.run(
        ["systemd-analyze", "security", "--no-pager", "--threshold=15", APP], check=False
    )
    assert security.returncode == 0, security.stdout[-1500:]
    assert_confined(machine, APP)  # what the rating does not see (issue 15)

    # State only the live process has: requests it served, read through rpc.
    for _ in range(3):
        http_post(machine, "/items/apple")
    assert rpc(pyrelctl, "STATS['requests'], INVENTORY") == "(3, {'apple': 3})"
    # The same through the release's own bin/ script, as root on the host.
    direct = machine.run(
        ["/opt/pyshop/current/bin/pyshop", "rpc", "sorted(INVENTORY.items())"]
    ).stdout.strip()
    assert direct == "[('apple', 3)]"
    # rpc runs in a process of the service (its cgroup), as its dynamic user.
    worker_pid = int(rpc(pyrelctl, "os.getpid()"))
    cgroup = machine.run(["cat", f"/proc/{worker_pid}/cgroup"]).stdout
    assert f"/system.slice/{APP}.service" in cgroup, cgroup
    assert rpc(pyrelctl, "os.getuid() != 0") == "True"
    # The release is read-only to the service; an rpc exception is its status.
    denied = pyrelctl("rpc", APP, "open('/opt/pyshop/current/x', 'w')")
    assert denied.returncode == 1
    assert "Read-only file system" in denied.stdout or "Permission denied" in denied.stdout

    # The example's worker (python -m pyshop.worker): the release's venv, the
    # app's dynamic user and sandbox; its nightly job runs from the release too.
    assert worker_release(machine) == "1.0.0"
    machine.wait_for_journal(f"{APP}-worker@1", "pyshop 1.0.0 worker waiting for jobs")
    assert machine.systemctl("show", "-p", "User", "--value", WORKER).stdout.strip() == APP
    machine.systemctl("start", f"{APP}-report.service")  # oneshot: returns when it ran
    report = machine.journalctl("-u", f"{APP}-report", "-o", "cat").stdout
    assert "pyshop 1.0.0 nightly report done" in report, report

    # Log levels as journal priorities.
    rpc(
        pyrelctl,
        "import logging; log = logging.getLogger('pyshop'); "
        "log.error('err-marker-7f3a'); log.info('info-marker-7f3a')",
    )
    machine.wait_for_journal(APP, "info-marker-7f3a")
    errors = machine.journalctl("-u", APP, "-p", "err", "-o", "cat").stdout
    assert "err-marker-7f3a" in errors
    assert "info-marker-7f3a" not in errors
    assert "ready on" not in errors  # info lines of the app stay out of -p err

    # remote: an interactive console in the live process, fed on stdin.
    console = machine.run(
        ["/opt/pyshop/current/bin/pyshop", "remote"],
        input="total = sum(INVENTORY.values())\ntotal * 10\n",
    )
    assert re.search(r"^>>> >>> 30$", console.stdout, re.M), console.stdout

    # eval: a fresh interpreter of the release, not the service.
    fresh = pyrelctl("eval", APP, "import pyshop.app; pyshop.app.STATS['requests']")
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == "0"

    # Upgrade: the new release runs (its live process says so), the old stays.
    # Requests sent meanwhile wait in the socket's backlog through the restart
    # and the new release's warm-up; none fails.
    load = Load(machine, f"http://{LISTEN}/items", scratch / "pyshop-stop-load")
    try:
        upgrade = pyrelctl("--json", "install", artifacts["1.1.0"], *GRACE)
    finally:
        summary = load.stop()
    assert upgrade.returncode == 0, upgrade.stderr
    # With a socket the new release started beside the old one first (overlap).
    overlap = machine.journalctl("-u", f"{APP}@overlap.service", "-o", "cat").stdout
    assert f"Started {APP}@overlap.service" in overlap, overlap
    assert summary["errors"] == [], summary["errors"][:5]
    assert sum(summary["bodies"].values()) > 20
    assert machine.run(["readlink", "/opt/pyshop/current"]).stdout.strip() == "releases/1.1.0"
    assert rpc(pyrelctl, "STATS['version']") == "'1.1.0'"
    assert worker_release(machine) == "1.1.0"  # restarted with the web process
    worker_main = machine.systemctl("show", "-p", "MainPID", "--value", WORKER).stdout

    # A failing release: exit 3, its own journal lines; it failed beside 1.1.0,
    # which never stopped serving.
    pid = show(machine, "MainPID")
    failed = pyrelctl("install", artifacts["2.0.0"], *GRACE)
    assert failed.returncode == 3, failed.stderr
    assert "PYSHOP_FAIL_AT_START is set" in failed.stderr
    assert "nothing was switched: 1.1.0 kept running" in failed.stderr
    assert show(machine, "MainPID") == pid
    assert machine.run(["readlink", "/opt/pyshop/current"]).stdout.strip() == "releases/1.1.0"
    assert machine.systemctl("is-active", APP, check=False).stdout.strip() == "active"
    assert rpc(pyrelctl, "STATS['version']") == "'1.1.0'"
    # Nothing was switched, so the worker was not touched either.
    assert machine.systemctl("show", "-p", "MainPID", "--value", WORKER).stdout == worker_main
    marks = {
        r["version"]: r["mark"]
        for r in json.loads(pyrelctl("--json", "releases", APP, check=True).stdout)["releases"]
    }
    assert marks == {"1.0.0": "good", "1.1.0": "good", "2.0.0": "failed"}


def test_python_release_runs_from_precompiled_bytecode(
    machine: Machine,
    pyrelctl: MachineCommand,
    artifacts: dict[str, Path],
    app: str,
) -> None:
    """Nothing is compiled at start: every module the service imported came from a pyc."""
    assert pyrelctl("install", artifacts["1.0.0"], *GRACE).returncode == 0
    # A module loaded from source has no cached pyc the loader could use:
    # list the release's modules whose __cached__ file does not exist (but
    # the console script itself, __main__, which Python never caches).
    check = (
        "import sys, os; "
        "[m.__name__ for m in list(sys.modules.values()) "
        "if (getattr(m, '__file__', '') or '').startswith('/opt/pyshop/') "
        "and m.__file__.endswith('.py') and m.__name__ != '__main__' "
        "and not os.path.exists(getattr(m, '__cached__', None) or '')]"
    )
    assert rpc(pyrelctl, check) == "[]"
    count = (
        "len([m for m in sys.modules.values() "
        "if (getattr(m, '__file__', '') or '').startswith('/opt/pyshop/')])"
    )
    loaded = int(rpc(pyrelctl, count))
    assert loaded > 50  # flask, werkzeug, gunicorn, jinja2... really came from the release
    flags = machine.run(
        [
            "python3",
            "-c",
            "import glob; p = glob.glob('/opt/pyshop/current/venv/lib/python3*/site-packages/"
            "flask/__pycache__/app.*.pyc')[0]; print(open(p, 'rb').read(8)[4])",
        ]
    ).stdout.strip()
    assert flags == "1"  # hash-based, source never checked (PEP 552 unchecked-hash)


# -- hostile releases: nothing of the artifact runs as root -------------------

#: Where a payload tries to leave its uid: places only root can write, the
#: host's scratch directory (open to all, bound in), and world-writable ones.
EVIL_DIRS = ("/var/tmp", "/opt", "/etc", "/root", "/tmp", "/dev/shm")


@pytest.fixture(scope="module")
def evil(scratch: Path, artifacts: dict[str, Path]) -> dict[str, Path]:
    """pyshop 1.0.0 rewritten three ways (devtools/pyreleases.py), each with a payload."""
    workdir = scratch / "python-evil"
    (workdir / "markers").mkdir(parents=True)
    (workdir / "markers").chmod(0o777)
    dirs = [*EVIL_DIRS, str(workdir / "markers")]
    good = artifacts["1.0.0"]
    return {
        "pip": pyreleases.replace_pip(good, workdir / "pip" / good.name, dirs),
        "pth": pyreleases.add_pth_wheel(good, workdir / "pth" / good.name, dirs),
        "venv": pyreleases.add_venv_python(good, workdir / "venv" / good.name, dirs),
    }


def evil_markers(machine: Machine, scratch: Path) -> dict[str, str]:
    """Every marker file a payload left, anywhere in the machine: path -> its uid."""
    found = machine.run(
        ["find", "/", *EVIL_DIRS, "/run", scratch, "-xdev", "-name", f"{pyreleases.MARKER}*"],
        check=False,
    ).stdout.split()
    return {path: machine.run(["cat", path]).stdout.strip() for path in sorted(set(found))}


@pytest.mark.parametrize("kind", ["pip", "pth"])
def test_building_the_venv_runs_the_release_code_unprivileged(
    machine: Machine,
    pyrelctl: MachineCommand,
    evil: dict[str, Path],
    app: str,
    scratch: Path,
    kind: str,
) -> None:
    """The release's own pip and its wheels' .pth files run as a sandboxed dynamic user.

    pip: the release's pip wheel records its uid and fails the install.
    pth: a wheel's evil.pth runs when the venv's interpreter starts (compileall);
    the install succeeds, and the payload could write nowhere but the venv.
    """
    # --no-start: what the service itself does with evil.pth is its own
    # sandbox's business; here only the build may have run the payload.
    proc = pyrelctl("install", "--no-start", evil[kind], "--listen", LISTEN)
    markers = evil_markers(machine, scratch)
    try:
        # Only the venv being built was writable: a marker may exist there
        # (then in the installed release), naming a uid that is not root's.
        for path, uid in markers.items():
            assert uid.isdigit() and int(uid) != 0, markers
            assert path.startswith("/opt/pyshop/releases/1.0.0/venv/"), markers
        assert "as a dynamic user in a sandbox" in proc.stderr, proc.stderr
        if kind == "pip":
            assert proc.returncode == 1, proc.stderr
            assert "the install step ran as a dynamic user" in proc.stderr
            assert machine.run(["ls", "-A", "/opt/pyshop/releases"]).stdout.split() == []
        else:
            assert proc.returncode == 0, proc.stderr
            assert not_root_only(machine, "/opt/pyshop/releases/1.0.0") == []
            assert list(markers) == [f"/opt/pyshop/releases/1.0.0/venv/{pyreleases.MARKER}pth"]
        assert build_leftovers(machine) == []
    finally:
        machine.run(["rm", "-f", *markers], check=False)


def test_a_release_that_ships_its_venv_is_refused(
    machine: Machine,
    pyrelctl: MachineCommand,
    evil: dict[str, Path],
    app: str,
    scratch: Path,
) -> None:
    """venv/bin/python, a symlink to the release's own script: refused before anything runs."""
    proc = pyrelctl("install", evil["venv"], *GRACE)
    markers = evil_markers(machine, scratch)
    try:
        assert markers == {}
        assert proc.returncode == 2, proc.stderr
        assert "contains venv/bin/python" in proc.stderr
        assert machine.run(["test", "-e", "/opt/pyshop"], check=False).returncode == 1
    finally:
        machine.run(["rm", "-f", *markers], check=False)


def test_configuration_of_a_running_python_release(
    machine: Machine,
    pyrelctl: MachineCommand,
    artifacts: dict[str, Path],
    app: str,
    scratch: Path,
) -> None:
    """Issue 18 on a real python release: import, set, unset apply and verify; a value
    gunicorn's app cannot parse (PYSHOP_START_DELAY) is undone by itself."""
    first = pyrelctl("install", artifacts["1.0.0"], *GRACE, "--listen", LISTEN)
    assert first.returncode == 0, first.stderr
    dotenv = scratch / "pyshop.env"  # scratch: bound into the machine
    dotenv.write_text('PYSHOP_GREETING="hello from config"\nPYSHOP_START_DELAY=0\n')
    proc = pyrelctl("config", "import", app, dotenv)  # with the grace install remembered
    assert proc.returncode == 0, proc.stderr
    pid = show(machine, "MainPID")
    environ = machine.run(["cat", f"/proc/{pid}/environ"]).stdout.split("\0")
    assert "PYSHOP_GREETING=hello from config" in environ
    assert pyrelctl("config", "unset", app, "PYSHOP_GREETING").returncode == 0
    after = machine.run(["cat", f"/proc/{show(machine, 'MainPID')}/environ"]).stdout
    assert "PYSHOP_GREETING" not in after
    bad = pyrelctl("--json", "config", "set", app, "PYSHOP_START_DELAY=soon")
    assert bad.returncode == 3, bad.stderr
    assert "could not convert string to float" in "\n".join(
        json.loads(bad.stdout)["failed"]["journal"]
    )
    health = machine.run(["curl", "-sf", f"http://{LISTEN}/healthz"], check=False)
    assert health.returncode == 0 and '"version":"1.0.0"' in health.stdout.replace(" ", "")
