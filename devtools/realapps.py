"""Real applications from their own ecosystems, built during the run (issue 17).

- `build_django`: a project made by `django-admin startproject` and `manage.py
  startapp` from the Django release on PyPI, with the edits every production
  project makes (secret, database path and hosts from the environment,
  WhiteNoise for static files), gunicorn on a systemd socket, `migrate` as
  pre_switch; 1.1.0 adds a migration, 1.2.0 adds one that raises.
- `build_asgi`: a FastAPI app on uvicorn, socket from systemd and READY=1 through
  pyrelctl_runtime.
- `build_datasette`: datasette from PyPI, unmodified, as a python release of a
  project that only depends on it; 1.1.0 starts it with a setting it refuses.
- `build_mochiweb_app`: an Elixir `mix release` serving HTTP with Debian's
  erlang-mochiweb (an OTP application in Erlang's lib dir, which `mix release`
  copies like any OTP application); 2.0.0 crashes at start.

Python apps are built with the checkout's `pyrelctl build`; pip downloads go to
a cache under the caller's work directory, so one run shares them between builds
and nothing outlives it. Each builder returns version -> tarball.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
from collections.abc import Mapping
from pathlib import Path

from devtools.proc import run
from devtools.releases import _mix_env

REPO = Path(__file__).resolve().parents[1]
PYRELCTL = REPO / ".venv" / "bin" / "pyrelctl"
#: Debian's interpreter: the release's venv is made with the host's python3.11.
PYTHON = "/usr/bin/python3"
_BUILD_TIMEOUT = 600.0


def _pip_env(workdir: Path) -> dict[str, str]:
    """pip's cache for this run only (below `workdir`), shared by its builds."""
    return {**os.environ, "PIP_CACHE_DIR": os.fspath(workdir / ".pip-cache")}


def pyrelctl_build(project: Path, out: Path, workdir: Path) -> Path:
    """`pyrelctl --json build PROJECT -o OUT`; the tarball's path."""
    result = run(
        [PYRELCTL, "--json", "build", project, "-o", out],
        env=_pip_env(workdir),
        timeout=_BUILD_TIMEOUT,
    )
    return Path(json.loads(result.stdout)["artifact"])


def _pyproject(name: str, version: str, deps: list[str], tool: str, extra: str = "") -> str:
    return (
        textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "{version}"
        requires-python = ">=3.11"
        dependencies = {json.dumps(deps)}
        """)
        + extra
        + "\n[tool.pyrelctl]\n"
        + textwrap.dedent(tool)
    )


# -- Django --------------------------------------------------------------------

DJANGO_APP = "mysite"
DJANGO_REQUIREMENT = "django>=4.2,<6"
#: What settings.py gets besides the replacements below.
_DJANGO_SETTINGS_TAIL = """

# -- production edits (devtools/realapps.py; docs/python.md, "Django") --------
# Static files: WhiteNoise serves them from the installed packages (the
# release is immutable, so there is nothing to collect into at run time).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False
# Errors to stderr, which is the journal.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
"""

_DJANGO_VIEWS = '''\
from importlib.metadata import PackageNotFoundError, version

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Note

try:
    VERSION = version("mysite")
except PackageNotFoundError:  # manage.py in the source tree
    VERSION = "dev"


def index(request):
    """`mysite VERSION N`: which release answers, and how many notes it reads."""
    return HttpResponse(f"mysite {VERSION} {Note.objects.count()}", content_type="text/plain")


@csrf_exempt
def add(request):
    note = Note.objects.create(text=request.GET.get("text", ""))
    return HttpResponse(f"added {note.pk}", content_type="text/plain")


def texts(request):
    return HttpResponse(
        "\\n".join(Note.objects.order_by("pk").values_list("text", flat=True)),
        content_type="text/plain",
    )
'''

_FAILING_MIGRATION = """\
from django.db import migrations


def fail(apps, schema_editor):
    raise RuntimeError("migration 0003 fails on purpose")


class Migration(migrations.Migration):
    dependencies = [("notes", "0002_note_done")]
    operations = [migrations.RunPython(fail)]
"""

DJANGO_CSS = "/* mysite-static-marker */\n"


def _edit(path: Path, edits: Mapping[str, str]) -> None:
    """Regex replacements, each of which must match once: a changed Django template fails loudly."""
    text = path.read_text()
    for pattern, replacement in edits.items():
        text, count = re.subn(pattern, replacement, text, count=1, flags=re.M)
        if count != 1:
            raise RuntimeError(f"{path}: no match for {pattern!r}")
    path.write_text(text)


def build_django(workdir: Path, *, port: int) -> dict[str, Path]:
    """mysite 1.0.0, 1.1.0 (a migration adding a field) and 1.2.0 (a migration that raises)."""
    workdir.mkdir(parents=True)
    tools = workdir / "tools"
    run([PYTHON, "-m", "venv", tools])
    run([tools / "bin/pip", "install", "-q", DJANGO_REQUIREMENT], env=_pip_env(workdir))
    project = workdir / DJANGO_APP
    project.mkdir()
    run([tools / "bin/django-admin", "startproject", DJANGO_APP, project])
    run([tools / "bin/python", "manage.py", "startapp", "notes"], cwd=project)

    _edit(
        project / DJANGO_APP / "settings.py",
        {
            r"^from pathlib import Path$": "import os\nfrom pathlib import Path",
            r"^SECRET_KEY = .*$": 'SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]',
            r"^DEBUG = True$": 'DEBUG = os.environ.get("DJANGO_DEBUG") == "1"',
            r"^ALLOWED_HOSTS = \[\]$": (
                'ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",")'
            ),
            r"^(\s*)['\"]django\.contrib\.staticfiles['\"],$": r'\g<0>\n\1"notes",',
            r"^(\s*)['\"]django\.middleware\.security\.SecurityMiddleware['\"],$": (
                r'\g<0>\n\1"whitenoise.middleware.WhiteNoiseMiddleware",'
            ),
            r"^(\s*)['\"]NAME['\"]: BASE_DIR / ['\"]db\.sqlite3['\"],$": (
                r'\1"NAME": os.environ.get("DJANGO_DB_PATH", BASE_DIR / "db.sqlite3"),'
            ),
        },
    )
    with (project / DJANGO_APP / "settings.py").open("a") as f:
        f.write(_DJANGO_SETTINGS_TAIL)
    with (project / DJANGO_APP / "urls.py").open("a") as f:
        f.write(
            "\nfrom notes import views  # noqa: E402\n\nurlpatterns += [\n"
            '    path("", views.index),\n    path("add", views.add),\n'
            '    path("texts", views.texts),\n]\n'
        )
    notes = project / "notes"
    (notes / "views.py").write_text(_DJANGO_VIEWS)
    (notes / "static" / "notes").mkdir(parents=True)
    (notes / "static" / "notes" / "site.css").write_text(DJANGO_CSS)
    models = notes / "models.py"
    models.write_text(
        "from django.db import models\n\n\nclass Note(models.Model):\n"
        "    text = models.CharField(max_length=200)\n"
    )
    manage_env = {
        **os.environ,
        "DJANGO_SECRET_KEY": "build-only",
        "DJANGO_DB_PATH": os.fspath(workdir / "build.sqlite3"),
    }

    def makemigrations() -> None:
        run(
            [tools / "bin/python", "manage.py", "makemigrations", "notes"],
            cwd=project,
            env=manage_env,
        )

    def pyproject(version: str) -> None:
        tool = f"""\
            start = ["gunicorn", "mysite.wsgi", "--workers", "2", "--graceful-timeout", "20"]
            description = "mysite (Django on gunicorn)"
            hooks = {{ pre_switch = ["python", "-m", "django", "migrate", "--noinput"] }}
            socket = {{ listen = ["127.0.0.1:{port}"] }}
            service = {{ stop_timeout = 25 }}

            [tool.pyrelctl.environment]
            DJANGO_SETTINGS_MODULE = "mysite.settings"
            DJANGO_DB_PATH = "/var/lib/mysite/db.sqlite3"
            DJANGO_ALLOWED_HOSTS = "127.0.0.1,localhost"
            """
        extra = textwrap.dedent("""
            [tool.setuptools.packages.find]
            include = ["mysite*", "notes*"]

            [tool.setuptools.package-data]
            notes = ["static/notes/*"]
            """)
        deps = [DJANGO_REQUIREMENT, "gunicorn>=23", "whitenoise>=6"]
        (project / "pyproject.toml").write_text(_pyproject(DJANGO_APP, version, deps, tool, extra))

    out = workdir / "artifacts"
    built: dict[str, Path] = {}
    makemigrations()
    pyproject("1.0.0")
    built["1.0.0"] = pyrelctl_build(project, out, workdir)

    with models.open("a") as f:
        f.write("    done = models.BooleanField(default=False)\n")
    makemigrations()
    assert (notes / "migrations" / "0002_note_done.py").is_file()
    pyproject("1.1.0")
    built["1.1.0"] = pyrelctl_build(project, out, workdir)

    (notes / "migrations" / "0003_fails.py").write_text(_FAILING_MIGRATION)
    pyproject("1.2.0")
    built["1.2.0"] = pyrelctl_build(project, out, workdir)
    shutil.rmtree(project / "build", ignore_errors=True)
    return built


# -- ASGI: FastAPI on uvicorn --------------------------------------------------

ASGI_APP = "asgishop"

_ASGI_MODULE = '''\
"""FastAPI on uvicorn under systemd: the socket from systemd, READY=1 from the lifespan."""

import asyncio
import contextlib
import os
from importlib.metadata import version

import pyrelctl_runtime
import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

VERSION = version("asgishop")
STATE = {"version": VERSION, "requests": 0}


@contextlib.asynccontextmanager
async def lifespan(app):
    # The app is loaded and the loop runs: ready. rpc code runs in a thread
    # of this process; `loop` lets it schedule work on the event loop.
    loop = asyncio.get_running_loop()
    pyrelctl_runtime.serve({"STATE": STATE, "app": app, "loop": loop, "asyncio": asyncio})
    yield
    pyrelctl_runtime.stopping()


app = FastAPI(lifespan=lifespan)


@app.get("/", response_class=PlainTextResponse)
async def index(delay: float = 0.0) -> str:
    STATE["requests"] += 1
    if delay:
        await asyncio.sleep(delay)
    return f"asgishop {VERSION}"


class Server(uvicorn.Server):
    async def shutdown(self, sockets=None):
        # Stop accepting first, then give connections accepted a moment ago
        # the time to deliver their requests: uvicorn's shutdown closes every
        # connection with no parsed request yet, and a client whose request
        # was on its way gets "connection reset" (uvicorn discussion #2315).
        for server in self.servers:
            server.close()
        await asyncio.sleep(0.1)
        await super().shutdown(sockets)


def main() -> None:
    pyrelctl_runtime.init()
    sockets = pyrelctl_runtime.listen_sockets().get("listen", [])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("PORT", "8000")),
        timeout_graceful_shutdown=20,
        log_config=None,  # the root logger pyrelctl_runtime set up (journal priorities)
    )
    # With systemd's sockets uvicorn serves on them and binds nothing itself.
    Server(config).run(sockets=sockets or None)
'''


def build_asgi(workdir: Path, *, port: int) -> dict[str, Path]:
    """asgishop 1.0.0 and 1.1.0."""
    workdir.mkdir(parents=True)
    project = workdir / ASGI_APP
    (project / ASGI_APP).mkdir(parents=True)
    (project / ASGI_APP / "__init__.py").write_text(_ASGI_MODULE)
    tool = f"""\
        start = "asgishop"
        socket = {{ listen = ["127.0.0.1:{port}"] }}
        """
    extra = '\n[project.scripts]\nasgishop = "asgishop:main"\n'
    deps = ["fastapi>=0.110", "uvicorn>=0.29", "pyrelctl-runtime>=0.1"]
    built: dict[str, Path] = {}
    for version in ("1.0.0", "1.1.0"):
        (project / "pyproject.toml").write_text(_pyproject(ASGI_APP, version, deps, tool, extra))
        built[version] = pyrelctl_build(project, workdir / "artifacts", workdir)
        shutil.rmtree(project / "build", ignore_errors=True)
    return built


# -- datasette, as it is on PyPI ------------------------------------------------

DATASETTE_APP = "datasette-site"


def build_datasette(workdir: Path, *, port: int) -> dict[str, Path]:
    """1.0.0: datasette serving; 1.1.0: the same with `--setting` of a name it refuses."""
    workdir.mkdir(parents=True)
    project = workdir / DATASETTE_APP
    project.mkdir()
    built: dict[str, Path] = {}
    for version, setting in (("1.0.0", "sql_time_limit_ms"), ("1.1.0", "no_such_setting")):
        tool = f"""\
            start = ["datasette", "serve", "--host", "127.0.0.1", "--port", "{port}",
                     "--setting", "{setting}", "3000"]
            type = "exec"
            health = {{ http = "http://127.0.0.1:{port}/-/versions.json" }}
            """
        # A project that is nothing but its dependency: no package of its own.
        extra = "\n[tool.setuptools]\npy-modules = []\n"
        text = _pyproject(DATASETTE_APP, version, ["datasette>=0.64"], tool, extra)
        (project / "pyproject.toml").write_text(text)
        built[version] = pyrelctl_build(project, workdir / "artifacts", workdir)
        shutil.rmtree(project / "build", ignore_errors=True)
    return built


# -- Elixir on mochiweb (Debian's erlang-mochiweb) --------------------------------

MOCHI_APP = "mochishop"
#: Where Debian's erlang-mochiweb puts the OTP application.
MOCHIWEB_DIR = Path("/usr/lib/erlang/lib/mochiweb")

_MOCHI_MIX_EXS = """\
defmodule Mochishop.MixProject do
  use Mix.Project

  def project do
    [
      app: :mochishop,
      version: "@VERSION@",
      elixir: "~> 1.14",
      start_permanent: true,
      deps: [],
      releases: [mochishop: [steps: [:assemble, :tar]]]
    ]
  end

  # mochiweb is an OTP application in Erlang's lib dir (Debian's
  # erlang-mochiweb), like inets: listed here, `mix release` copies it (and
  # the applications its .app file names) into the release. hex.pm is not
  # needed, and not reachable here.
  def application do
    [
      extra_applications: [:logger, :mochiweb],
      mod: {Mochishop.Application, []},
      env: [crash_on_start: @CRASH@]
    ]
  end
end
"""

_MOCHI_APPLICATION_EX = """\
defmodule Mochishop.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    vsn = to_string(Application.spec(:mochishop, :vsn))

    if Application.fetch_env!(:mochishop, :crash_on_start) do
      IO.puts("mochishop #{vsn} crashing on purpose")
      System.halt(3)
    end

    port = String.to_integer(System.get_env("PORT", "4000"))
    # mochiweb binds its own port: its socket server takes no inherited
    # descriptor (docs/zero-downtime.md).
    loop = &Mochishop.Web.handle(&1, vsn)
    options = [name: :mochishop_http, ip: {127, 0, 0, 1}, port: port, loop: loop]
    children = [%{id: :http, start: {:mochiweb_http, :start_link, [options]}}]
    IO.puts("mochishop #{vsn} serving on 127.0.0.1:#{port}")
    Supervisor.start_link(children, strategy: :one_for_one, name: Mochishop.Supervisor)
  end
end

defmodule Mochishop.Web do
  @moduledoc false
  # mochiweb's request is a tuple module: mochiweb_request:F(Args..., Req).
  def handle(req, vsn) do
    :mochiweb_request.ok({~c"text/plain", "mochishop #{vsn}"}, req)
  end
end
"""


_MOCHI_RELEASE_TOML = """\
# Put into the release by mix (rel/overlays); read by pyrelctl install.
[environment]
PORT = "@PORT@"

[health]
http = "http://127.0.0.1:@PORT@/"
"""


def build_mochiweb_app(workdir: Path, *, port: int) -> dict[str, Path]:
    """mochishop 1.0.0 and 1.1.0 serving HTTP with mochiweb; 2.0.0 crashes at start."""
    if not (MOCHIWEB_DIR / "ebin" / "mochiweb.app").is_file():
        raise RuntimeError(
            f"no {MOCHIWEB_DIR}: apt-get install erlang-mochiweb (the Makefile's APT_PACKAGES)"
        )
    workdir.mkdir(parents=True)
    env = _mix_env(workdir)
    run(["mix", "new", MOCHI_APP, "--sup"], cwd=workdir, env=env)
    project = workdir / MOCHI_APP
    (project / "lib" / MOCHI_APP / "application.ex").write_text(_MOCHI_APPLICATION_EX)
    (project / "rel" / "overlays").mkdir(parents=True)
    (project / "rel" / "overlays" / "release.toml").write_text(
        _MOCHI_RELEASE_TOML.replace("@PORT@", str(int(port)))
    )
    out = workdir / "artifacts"
    out.mkdir()
    built: dict[str, Path] = {}
    for version, crash in (("1.0.0", "false"), ("1.1.0", "false"), ("2.0.0", "true")):
        mix_exs = _MOCHI_MIX_EXS.replace("@VERSION@", version).replace("@CRASH@", crash)
        (project / "mix.exs").write_text(mix_exs)
        run(["mix", "release", "--overwrite"], cwd=project, env=env, timeout=_BUILD_TIMEOUT)
        tarball = project / "_build" / "prod" / f"{MOCHI_APP}-{version}.tar.gz"
        built[version] = Path(shutil.copy2(tarball, out / tarball.name))
    return built
