"""Real apps from their own ecosystems under a real systemd (issue 17).

Each is built once per run from its real packages (devtools/realapps.py):
Django made by django-admin, FastAPI on uvicorn, datasette as it is on PyPI,
and an Elixir release serving HTTP with Debian's mochiweb. The machine is the
session's; each app gets its own port and is purged afterwards. The recipes
in docs/python.md and docs/zero-downtime.md are what these tests run.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools import realapps
from devtools.load import Load
from devtools.machine import Machine, MachineCommand

GRACE = ("--grace", "1")
DJANGO_PORT, ASGI_PORT, DATASETTE_PORT, MOCHI_PORT = 8111, 8112, 8113, 8121

_GET = """
import sys, urllib.request, urllib.error
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(sys.argv[1], method=sys.argv[2])
try:
    with opener.open(req, timeout=10) as r:
        print(r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode(errors="replace"))
"""


def http(machine: Machine, port: int, path: str, method: str = "GET") -> tuple[int, str]:
    """Status and body of one request from inside the machine."""
    out = machine.run(["python3", "-c", _GET, f"http://127.0.0.1:{port}{path}", method]).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def current(machine: Machine, app: str) -> str:
    return machine.run(["readlink", f"/opt/{app}/current"]).stdout.strip()


def main_pid(machine: Machine, app: str) -> str:
    return machine.systemctl("show", "-p", "MainPID", "--value", app).stdout.strip()


@pytest.fixture
def purge(pyrelctl: MachineCommand) -> Iterator[Callable[[str], None]]:
    """Apps to uninstall with --purge (their configuration too) after the test."""
    apps: list[str] = []
    yield apps.append
    for app in apps:
        pyrelctl("uninstall", "--purge", app)


# -- Django --------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_artifacts(scratch: Path) -> dict[str, Path]:
    return realapps.build_django(scratch / "django", port=DJANGO_PORT)


def applied_migrations(machine: Machine) -> list[str]:
    """The notes app's migrations recorded in the database in the service's StateDirectory."""
    query = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); print(','.join(r[0] for r in "
        "db.execute(\"select name from django_migrations where app = 'notes' order by id\")))"
    )
    db = f"/var/lib/{realapps.DJANGO_APP}/db.sqlite3"
    return machine.run(["python3", "-c", query, db]).stdout.strip().split(",")


def test_django_migrations_static_files_and_an_upgrade_under_load(
    machine: Machine,
    pyrelctl: MachineCommand,
    django_artifacts: dict[str, Path],
    scratch: Path,
    purge: Callable[[str], None],
) -> None:
    app = realapps.DJANGO_APP
    purge(app)
    # The first deploy of an app that needs configuration: the secret, then install.
    key = secrets.token_urlsafe(50)
    staged = pyrelctl("config", "set", app, "DJANGO_SECRET_KEY=-", input=key)
    assert staged.returncode == 0, staged.stderr
    first = pyrelctl("install", django_artifacts["1.0.0"], *GRACE)
    assert first.returncode == 0, first.stderr
    # migrate ran as pre_switch, as the service's user, into its StateDirectory.
    assert "running pre_switch hook: python -m django migrate --noinput" in first.stderr
    assert applied_migrations(machine) == ["0001_initial"]
    # gunicorn serves on the socket systemd holds, and said READY=1 itself.
    assert machine.systemctl("show", "-p", "Type", "--value", app).stdout.strip() == "notify"
    assert http(machine, DJANGO_PORT, "/") == (200, "mysite 1.0.0 0")
    for text in ("apple", "pear", "plum"):
        assert http(machine, DJANGO_PORT, f"/add?text={text}", "POST")[0] == 200
    # The secret reached the app, and no D-Bus property shows it.
    digest = pyrelctl(
        "eval", app, "import hashlib, os; "
        "print(hashlib.sha256(os.environ['DJANGO_SECRET_KEY'].encode()).hexdigest())",
    )  # fmt: skip
    assert digest.stdout.strip() == hashlib.sha256(key.encode()).hexdigest(), digest.stderr
    assert key not in machine.systemctl("show", app).stdout
    # Static files, by WhiteNoise from the release's packages: the app's own
    # and Django admin's, with DEBUG off.
    assert http(machine, DJANGO_PORT, "/static/notes/site.css") == (200, realapps.DJANGO_CSS)
    status, css = http(machine, DJANGO_PORT, "/static/admin/css/base.css")
    assert status == 200 and "DJANGO Admin styles" in css
    assert http(machine, DJANGO_PORT, "/static/notes/missing.css")[0] == 404

    # 1.1.0 adds a migration; requests wait in the socket's backlog meanwhile.
    load = Load(machine, f"http://127.0.0.1:{DJANGO_PORT}/", scratch / "django-load-1")
    try:
        upgrade = pyrelctl("install", django_artifacts["1.1.0"], *GRACE)
    finally:
        summary = load.stop()
    assert upgrade.returncode == 0, upgrade.stderr
    assert applied_migrations(machine) == ["0001_initial", "0002_note_done"]
    assert summary["errors"] == [], summary["errors"][:5]
    assert set(summary["bodies"]) <= {"mysite 1.0.0 3", "mysite 1.1.0 3"}, summary["bodies"]
    assert summary["bodies"].get("mysite 1.1.0 3", 0) > 0
    assert http(machine, DJANGO_PORT, "/texts") == (200, "apple\npear\nplum")  # data kept

    # 1.2.0's migration raises: exit 3, nothing switched, 1.1.0 never stopped.
    pid = main_pid(machine, app)
    load = Load(machine, f"http://127.0.0.1:{DJANGO_PORT}/", scratch / "django-load-2")
    try:
        failed = pyrelctl("install", django_artifacts["1.2.0"], *GRACE)
    finally:
        summary = load.stop()
    assert failed.returncode == 3, failed.stderr
    assert "pre_switch hook" in failed.stderr
    assert "migration 0003 fails on purpose" in failed.stderr
    assert summary["errors"] == [], summary["errors"][:5]
    assert set(summary["bodies"]) == {"mysite 1.1.0 3"}
    assert current(machine, app) == "releases/1.1.0"
    assert main_pid(machine, app) == pid
    assert http(machine, DJANGO_PORT, "/") == (200, "mysite 1.1.0 3")
    assert applied_migrations(machine) == ["0001_initial", "0002_note_done"]


# -- ASGI: FastAPI on uvicorn --------------------------------------------------


@pytest.fixture(scope="module")
def asgi_artifacts(scratch: Path) -> dict[str, Path]:
    return realapps.build_asgi(scratch / "asgi", port=ASGI_PORT)


def rpc(pyrelctl: MachineCommand, app: str, expr: str) -> str:
    proc = pyrelctl("rpc", app, expr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_fastapi_on_uvicorn_takes_its_socket_from_systemd(
    machine: Machine,
    pyrelctl: MachineCommand,
    asgi_artifacts: dict[str, Path],
    scratch: Path,
    purge: Callable[[str], None],
) -> None:
    app = realapps.ASGI_APP
    purge(app)
    first = pyrelctl("install", asgi_artifacts["1.0.0"], *GRACE)
    assert first.returncode == 0, first.stderr
    # READY=1 came from the lifespan, through pyrelctl_runtime.
    status = machine.systemctl("show", "-p", "StatusText", "--value", app).stdout.strip()
    assert status.startswith("ready (pid "), status
    for _ in range(3):
        assert http(machine, ASGI_PORT, "/") == (200, "asgishop 1.0.0")
    # rpc runs in the live process, beside its event loop, and can use it.
    assert rpc(pyrelctl, app, "STATE['requests']") == "3"
    on_loop = "asyncio.run_coroutine_threadsafe(asyncio.sleep(0, result=41), loop).result(5) + 1"
    assert rpc(pyrelctl, app, on_loop) == "42"
    assert rpc(pyrelctl, app, "os.getpid()") == main_pid(machine, app)
    # uvicorn serves on the socket systemd passed: the service's process
    # holds no listening socket of its own on the port (the socket's inode
    # is PID 1's, and the same).
    listen = machine.systemctl("show", "-p", "Listen", "--value", f"{app}.socket").stdout
    assert listen.strip() == f"127.0.0.1:{ASGI_PORT} (Stream)"

    load = Load(machine, f"http://127.0.0.1:{ASGI_PORT}/", scratch / "asgi-load")
    try:
        upgrade = pyrelctl("install", asgi_artifacts["1.1.0"], *GRACE)
    finally:
        summary = load.stop()
    assert upgrade.returncode == 0, upgrade.stderr
    assert summary["errors"] == [], summary["errors"][:5]
    assert summary["bodies"].get("asgishop 1.1.0", 0) > 0, summary["bodies"]
    assert rpc(pyrelctl, app, "STATE['version']") == "'1.1.0'"


# -- datasette, unmodified -----------------------------------------------------


@pytest.fixture(scope="module")
def datasette_artifacts(scratch: Path) -> dict[str, Path]:
    return realapps.build_datasette(scratch / "datasette", port=DATASETTE_PORT)


def test_datasette_from_pypi_as_is_and_a_bad_setting_rolls_back(
    machine: Machine,
    pyrelctl: MachineCommand,
    datasette_artifacts: dict[str, Path],
    purge: Callable[[str], None],
) -> None:
    app = realapps.DATASETTE_APP
    purge(app)
    first = pyrelctl("install", datasette_artifacts["1.0.0"], *GRACE)
    assert first.returncode == 0, first.stderr
    assert machine.systemctl("show", "-p", "Type", "--value", app).stdout.strip() == "exec"
    status, body = http(machine, DATASETTE_PORT, "/-/versions.json")
    assert status == 200 and "datasette" in json.loads(body)
    status, body = http(machine, DATASETTE_PORT, "/_memory.json?sql=select+6*7+as+n")
    assert status == 200 and json.loads(body)["rows"] == [[42]], body

    # 1.1.0 starts it with a setting it refuses: it exits, pyrelctl restores 1.0.0.
    failed = pyrelctl("install", datasette_artifacts["1.1.0"], *GRACE)
    assert failed.returncode == 3, failed.stderr
    assert "no_such_setting" in failed.stderr  # datasette's own message, from the journal
    assert "1.0.0 was restored" in failed.stderr
    assert current(machine, app) == "releases/1.0.0"
    assert http(machine, DATASETTE_PORT, "/-/versions.json")[0] == 200


# -- Elixir on mochiweb --------------------------------------------------------


@pytest.fixture(scope="module")
def mochi_artifacts(scratch: Path) -> dict[str, Path]:
    return realapps.build_mochiweb_app(scratch / "mochi", port=MOCHI_PORT)


#: What a client sees in the gap while a server that binds its own port restarts.
CONNECTION_ERRORS = ("Connection refused", "ConnectionResetError", "RemoteDisconnected")


def test_elixir_on_mochiweb_upgrade_and_failed_deploy_under_load(
    machine: Machine,
    pyrelctl: MachineCommand,
    mochi_artifacts: dict[str, Path],
    scratch: Path,
    purge: Callable[[str], None],
) -> None:
    app = realapps.MOCHI_APP
    purge(app)
    first = pyrelctl("install", mochi_artifacts["1.0.0"], *GRACE)
    assert first.returncode == 0, first.stderr
    assert http(machine, MOCHI_PORT, "/") == (200, "mochishop 1.0.0")
    # mochiweb came from Debian's package, copied into the release by mix.
    assert (
        machine.run(["test", "-d", f"/opt/{app}/current/lib/mochiweb-3.1.1/ebin"]).returncode == 0
    )

    load = Load(machine, f"http://127.0.0.1:{MOCHI_PORT}/", scratch / "mochi-load-1")
    try:
        upgrade = pyrelctl("install", mochi_artifacts["1.1.0"], *GRACE)
    finally:
        summary = load.stop()
    assert upgrade.returncode == 0, upgrade.stderr
    assert set(summary["bodies"]) <= {"mochishop 1.0.0", "mochishop 1.1.0"}, summary["bodies"]
    assert summary["bodies"].get("mochishop 1.1.0", 0) > 0
    # mochiweb binds its own port, so the restart has a gap (docs/zero-downtime.md):
    # requests in it are refused, none gets a wrong answer.
    assert all(any(e in error for e in CONNECTION_ERRORS) for error in summary["errors"]), summary
    assert http(machine, MOCHI_PORT, "/") == (200, "mochishop 1.1.0")

    load = Load(machine, f"http://127.0.0.1:{MOCHI_PORT}/", scratch / "mochi-load-2")
    try:
        failed = pyrelctl("install", mochi_artifacts["2.0.0"], *GRACE)
    finally:
        summary = load.stop()
    assert failed.returncode == 3, failed.stderr
    assert "mochishop 2.0.0 crashing on purpose" in failed.stderr
    assert current(machine, app) == "releases/1.1.0"
    assert set(summary["bodies"]) == {"mochishop 1.1.0"}, summary["bodies"]
    assert all(any(e in error for e in CONNECTION_ERRORS) for error in summary["errors"]), summary
    assert http(machine, MOCHI_PORT, "/") == (200, "mochishop 1.1.0")
