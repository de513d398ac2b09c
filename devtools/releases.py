"""Real releases to deploy in tests and the demo, built during the run.

- `build_mix_app`: an Elixir app built with `mix release` (OTP 25 and Elixir
  1.14 from Debian), one tarball per version, some of which may crash at start;
  on this host, or with `runner=machine.run` inside a booted machine (Debian
  13's Elixir 1.18 on OTP 27 in the trixie tier).
- `make_generic_release`: a `release.toml` plus a POSIX sh launcher, for the
  "generic" kind of release; starts in milliseconds, no toolchain needed.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Protocol

from devtools.proc import DevtoolsError, StrPath, run

logger = logging.getLogger(__name__)

# Mix wants a lowercase Erlang atom for the app; keep to the safe subset.
_MIX_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Mix wants SemVer; releases also put the version in file names.
_MIX_VERSION_RE = re.compile(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?")
# Generic names and versions end up in sh and TOML; these cannot break either.
_GENERIC_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_GENERIC_VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")

# The first `mix release` compiles Elixir's protocols and copies ERTS: a few
# seconds here, but give slow CI machines room.
_MIX_TIMEOUT = 600.0


class ReleaseBuildError(DevtoolsError):
    """A release was built, but is not what it should be."""


class Behaviour(enum.StrEnum):
    """What a test release does when started."""

    OK = "ok"
    """Prints `<name> <version> started` and keeps running."""
    CRASH = "crash"
    """Prints `<name> <version> crashing on purpose` and exits with status 3."""
    FLAP = "flap"
    """Prints `started`, then exits with status 1 after a random 0-2.9 s."""
    SIGNAL = "signal"
    """Prints `started`, then kills itself with SIGKILL."""
    NOTIFY = "notify"
    """Prints `started`, sends READY=1 to systemd (Type=notify), keeps running."""
    SERVE = "serve"
    """Prints `started` and serves HTTP (`bin/serve.py`): `NAME VERSION` on every
    path (but HTTP 503 on `/unhealthy/VERSION` of its own version), after
    `?delay=S` seconds if asked; on `/hold` it sends the same line, then holds
    the connection open (a websocket-like client) until the client closes it
    or the server stops; with `SIDE_PORT` set it also binds that port.
    It listens on the socket systemd passes (LISTEN_FDS, socket activation) if
    there is one, else on 127.0.0.1:$PORT; SIGTERM lets requests in flight
    finish before it exits."""
    HOOKFAIL = "hookfail"
    """Starts like OK, but its `hook` verb (used as pre_switch/post_switch) exits 4."""


# -- mix ---------------------------------------------------------------------

_MIX_EXS = Template(
    """\
# Written by devtools.releases for version ${version}.
defmodule ${module}.MixProject do
  use Mix.Project

  def project do
    [
      app: :${app},
      version: "${version}",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: [],
      # :tar writes _build/prod/${app}-${version}.tar.gz next to the release.
      releases: [${app}: [steps: [:assemble, :tar]]]
    ]
  end

  def application do
    [
      extra_applications: [:logger],
      mod: {${module}.Application, []},
      env: [crash_on_start: ${crash}, unhealthy: ${unhealthy}, http_port: ${http_port}]
    ]
  end
end
"""
)

_APPLICATION_EX = Template(
    """\
defmodule ${module}.Application do
  # Written by devtools.releases: says which version started, on stdout so
  # that it lands in the journal; versions built with crash_on_start exit at
  # start instead, as a broken deploy would.
  @moduledoc false

  use Application

  @impl true
  def start(_type, _args) do
    vsn = Application.spec(:${app}, :vsn)

    if Application.fetch_env!(:${app}, :crash_on_start) do
      IO.puts("${app} #{vsn} crashing on purpose")
      # halt/1 flushes stdout first, so the line above is not lost.
      System.halt(3)
    end

    IO.puts("${app} #{vsn} started")

    children =
      case Application.fetch_env!(:${app}, :http_port) do
        nil -> []
        port -> [{Task, fn -> serve(port, "${app} #{vsn}") end}]
      end

    Supervisor.start_link(children, strategy: :one_for_one, name: ${module}.Supervisor)
  end

  # With http_port set: answers every request on 127.0.0.1:PORT with
  # "NAME VERSION", so that a poller can tell which version serves. Under
  # socket activation (LISTEN_FDS) on the socket systemd passes instead:
  # fd 3, gen_tcp's `fd` option, as Cowboy and Bandit pass it down.
  defp serve(port, body) do
    # Trapping exits, it hears the shutdown (SIGTERM: init:stop) between two
    # requests: the one in flight is answered, the queued ones stay on the
    # socket for whoever else holds it (systemd, or the overlapping release).
    Process.flag(:trap_exit, true)

    {:ok, listener} =
      case System.get_env("LISTEN_FDS") do
        nil -> :gen_tcp.listen(port, [:binary, ip: {127, 0, 0, 1}, reuseaddr: true, active: false])
        # gen_tcp calls listen(2) again, with its backlog for everyone who
        # holds the socket: keep the socket unit's 4096, not gen_tcp's 5.
        _ -> :gen_tcp.listen(0, [:binary, :inet, fd: 3, active: false, backlog: 4096])
      end

    accept(listener, body)
  end

  defp accept(listener, body) do
    receive do
      {:EXIT, from, reason} when is_pid(from) -> exit(reason)
      {:EXIT, _port, _reason} -> accept(listener, body)
    after
      0 ->
        with {:ok, conn} <- :gen_tcp.accept(listener, 200) do
          answer(conn, body)
        end

        accept(listener, body)
    end
  end

  defp answer(conn, body) do
    # A client may close before it asks (a health probe another release
    # was meant to answer): no answer then, and no crash.
    case :gen_tcp.recv(conn, 0, 1000) do
      {:ok, "GET /hold " <> _} ->
        hold(conn, body)

      {:ok, request} ->
        :gen_tcp.send(conn, "HTTP/1.0 #{status(request)}\\r\\n\\r\\n#{body}\\n")
        :gen_tcp.close(conn)

      _ ->
        :gen_tcp.close(conn)
    end
  end

  # /health: 503 from a version built unhealthy (it is up and serves, but
  # fails its health check, as with a wrong database password), else 200.
  defp status("GET /health " <> _) do
    if Application.fetch_env!(:${app}, :unhealthy), do: "503 Service Unavailable", else: "200 OK"
  end

  defp status(_request), do: "200 OK"

  # /hold: the version line, then the connection stays open (a websocket-like
  # client) in a process of its own, so that the accept loop goes on. It
  # closes when the client does, or when the release stops: stopping the
  # application ends every process it started.
  defp hold(conn, body) do
    :gen_tcp.send(conn, "HTTP/1.0 200 OK\\r\\n\\r\\n#{body}\\n")
    holder = spawn(fn -> receive do :go -> held(conn) end end)

    case :gen_tcp.controlling_process(conn, holder) do
      :ok -> send(holder, :go)
      _ -> :gen_tcp.close(conn)
    end
  end

  defp held(conn) do
    :inet.setopts(conn, active: :once)

    receive do
      {:tcp, ^conn, _data} -> held(conn)
      {:tcp_closed, ^conn} -> :ok
      {:tcp_error, ^conn, _reason} -> :gen_tcp.close(conn)
    end
  end
end
"""
)


class Runner(Protocol):
    """Where build steps run: `devtools.proc.run` (this host) or a `Machine.run`."""

    def __call__(
        self,
        argv: Sequence[StrPath],
        *,
        timeout: float | None = ...,
        env: Mapping[str, str] | None = ...,
        cwd: StrPath | None = ...,
    ) -> subprocess.CompletedProcess[str]: ...


def _mix_env(workdir: Path, inherit: bool = True) -> dict[str, str]:
    """The environment for mix: offline, with its state under `workdir`.

    With `inherit`, on top of this process's environment; a machine's runner
    gets only these (it adds its own PATH and HOME: the host's mean nothing there).
    """
    base = os.environ if inherit else {}
    env = {k: v for k, v in base.items() if not k.startswith(("MIX_", "HEX_"))}
    env.update(
        MIX_HOME=os.fspath(workdir / ".mix"),
        HEX_HOME=os.fspath(workdir / ".hex"),
        HEX_OFFLINE="1",
        MIX_ENV="prod",
        # Without a UTF-8 locale the VM warns on every start about latin1.
        LANG="C.UTF-8",
    )
    return env


def _release_env(inherit: bool = True) -> dict[str, str]:
    """The host's environment without the variables a release launcher reads."""
    base = os.environ if inherit else {}
    return {k: v for k, v in base.items() if not k.startswith(("RELEASE_", "MIX_"))}


def build_mix_app(
    workdir: Path,
    versions: Sequence[str],
    *,
    name: str = "shop",
    failing: Sequence[str] = (),
    unhealthy: Sequence[str] = (),
    http_port: int | None = None,
    overlays: Mapping[str, bytes] | None = None,
    runner: Runner | None = None,
) -> dict[str, Path]:
    """Build an Elixir app with `mix release`, once per version; return version -> tarball.

    The app (`mix new NAME --sup` in `workdir/NAME`) prints `NAME VERSION
    started` at start and keeps running; a version in `failing` prints `NAME
    VERSION crashing on purpose` and exits with status 3 instead. With
    `http_port`, the app also answers every request on 127.0.0.1:PORT (or on
    the socket systemd passes, if it does) with `NAME VERSION` (HTTP/1.0,
    over gen_tcp: no deps to fetch), except `/health`, which answers 503 from
    a version in `unhealthy` (ready and serving, but failing its health
    check); on `/hold` it sends that line and keeps the connection open
    until the client closes it or the release stops. Tarballs
    are copied to `workdir/artifacts/NAME-VERSION.tar.gz`. Each is checked:
    it holds `bin/NAME` and `releases/start_erl.data`, and an extracted copy
    runs `bin/NAME eval 'IO.puts(:ok)'` on this host. `overlays` (path ->
    content) are written below the project's `rel/overlays/`, which mix
    copies into the release (files under `bin/` executable, like the
    `bin/server` and `bin/migrate` of `mix phx.gen.release`).

    With `runner` (a booted machine's `run`, `workdir` bound in at the same
    path) every mix, tar and eval step runs there instead, with that
    machine's Elixir and OTP: a release built on another Debian.
    """
    if not _MIX_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid mix app name {name!r}")
    for version in versions:
        if not _MIX_VERSION_RE.fullmatch(version):
            raise ValueError(f"invalid version {version!r}: mix wants SemVer like 1.2.3")
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate versions in {list(versions)}")
    unknown = (set(failing) | set(unhealthy)) - set(versions)
    if unknown:
        raise ValueError(f"failing or unhealthy versions {sorted(unknown)} are not in versions")

    workdir.mkdir(parents=True, exist_ok=True)
    project = workdir / name
    if project.exists():
        raise FileExistsError(f"{project} exists already; build into a fresh workdir")
    inherit = runner is None
    execute: Runner = run if runner is None else runner
    env = _mix_env(workdir, inherit)
    module = "".join(part.capitalize() for part in name.split("_"))
    execute(["mix", "new", name, "--sup"], cwd=workdir, env=env)
    values = {"app": name, "module": module}
    (project / "lib" / name / "application.ex").write_text(_APPLICATION_EX.substitute(values))
    for rel, content in (overlays or {}).items():
        path = project / "rel" / "overlays" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o755 if rel.startswith("bin/") else 0o644)

    artifacts = workdir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    built: dict[str, Path] = {}
    for version in versions:
        crash = "true" if version in failing else "false"
        port = "nil" if http_port is None else str(int(http_port))
        sick = "true" if version in unhealthy else "false"
        mix_exs = _MIX_EXS.substitute(
            values, version=version, crash=crash, unhealthy=sick, http_port=port
        )
        (project / "mix.exs").write_text(mix_exs)
        started = time.monotonic()
        # --overwrite: the release directory is reused from the previous version.
        execute(["mix", "release", "--overwrite"], cwd=project, env=env, timeout=_MIX_TIMEOUT)
        logger.info("mix release %s %s: %.1fs", name, version, time.monotonic() - started)
        tarball = project / "_build" / "prod" / f"{name}-{version}.tar.gz"
        _check_mix_tarball(tarball, name, version, workdir / "check", execute, inherit)
        built[version] = Path(shutil.copy2(tarball, artifacts / tarball.name))
    return built


def _check_mix_tarball(
    tarball: Path, name: str, version: str, scratch: Path, execute: Runner, inherit: bool
) -> None:
    """Check the members of a mix tarball, then that an extracted copy evaluates code."""
    if not tarball.is_file():
        raise ReleaseBuildError(f"mix release did not write {tarball}")
    with tarfile.open(tarball, "r:gz") as tar:
        members = set(tar.getnames())
    for needed in (f"bin/{name}", "releases/start_erl.data", f"releases/{version}/start.boot"):
        if needed not in members:
            raise ReleaseBuildError(f"{tarball}: no member {needed}")
    escaping = sorted(m for m in members if m.startswith("/") or ".." in m.split("/"))
    if escaping:
        raise ReleaseBuildError(f"{tarball}: members outside the release root: {escaping[:5]}")

    root = scratch / f"{name}-{version}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        # tar(1), not tarfile: Python 3.11.2 (Debian 12) has no extraction
        # filters, and GNU tar refuses absolute and `..` members by itself.
        execute(["tar", "-xzf", tarball, "-C", root])
        result = execute(
            [root / "bin" / name, "eval", "IO.puts(:ok)"], env=_release_env(inherit), timeout=60
        )
        if result.stdout.strip() != "ok":
            raise ReleaseBuildError(
                f"{tarball}: `bin/{name} eval 'IO.puts(:ok)'` printed {result.stdout!r}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- generic -----------------------------------------------------------------

_LAUNCHER = Template(
    """\
#!/bin/sh
# Launcher of a generic test release, written by devtools.releases.
set -eu
NAME='${name}'
VERSION='${version}'
BEHAVIOUR='${behaviour}'
PORT='${port}'

case "$${1:-}" in
start)
    if [ "$$BEHAVIOUR" = crash ]; then
        echo "$$NAME $$VERSION crashing on purpose"
        exit 3
    fi
    echo "$$NAME $$VERSION started"
    case "$$BEHAVIOUR" in
    flap)
        n=$$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
        sleep "$$((n % 3)).$$((n % 10))"
        echo "$$NAME $$VERSION flapping out"
        exit 1
        ;;
    signal)
        kill -KILL $$$$
        ;;
    notify)
        # exec: READY=1 must come from the main process (NotifyAccess=main).
        exec python3 -c 'if True:
            import os, socket, time
            addr = os.environ["NOTIFY_SOCKET"]
            addr = "\0" + addr[1:] if addr.startswith("@") else addr
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.connect(addr)
            s.sendall(b"READY=1")
            time.sleep(1e9)'
        ;;
    serve)
        exec python3 "$$(dirname "$$0")/serve.py" "$$NAME $$VERSION" "$$PORT"
        ;;
    esac
    # exec: the service's main PID stays this process, and SIGTERM from
    # systemd ends it at once.
    exec sleep infinity
    ;;
hook)
    echo "$$NAME $$VERSION hook $${2:-} as uid $$(id -u)"
    if [ "$$BEHAVIOUR" = hookfail ]; then
        echo "$$NAME $$VERSION hook failing on purpose" >&2
        exit 4
    fi
    ;;
version)
    echo "$$NAME $$VERSION"
    ;;
eval)
    shift
    echo "$$*"
    ;;
*)
    echo "usage: $$0 start|version|eval EXPR" >&2
    exit 2
    ;;
esac
"""
)


# The "serve" behaviour's server: stdlib only, run by the host's python3.
_SERVE_PY = """\
# HTTP server of a generic test release, written by devtools.releases.
import os
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BODY = (sys.argv[1] + "\\n").encode()
PORT = int(sys.argv[2])
# Set at SIGTERM: the held connections (/hold) close, as a websocket server
# closes its sockets when it stops, while ordinary requests in flight finish.
STOPPING = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/hold":
            self.hold()
            return
        delay = parse_qs(url.query).get("delay", ["0"])[0]
        time.sleep(float(delay))
        # /unhealthy/VERSION: 503 from that version alone, 200 from any other.
        # A health check there passes only when another release answers it.
        sick = url.path == "/unhealthy/" + sys.argv[1].split()[-1]
        self.send_response(503 if sick else 200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def hold(self):
        # No Content-Length: the body is the version line, then nothing
        # until this release stops (or the client leaves).
        self.send_response(200)
        self.end_headers()
        self.wfile.write(BODY)
        self.wfile.flush()
        try:
            while not STOPPING.is_set():
                readable, _, _ = select.select([self.connection], [], [], 0.1)
                if readable and not self.connection.recv(1024):
                    return  # the client closed it
        except OSError:
            return  # or reset it

    def log_message(self, *args):
        pass  # one journal line per request would drown the journal under load


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True


if os.environ.get("SIDE_PORT"):
    # A port the release binds itself beside the socket from systemd (an
    # admin or metrics port): a second copy cannot start while one runs.
    side = socket.create_server(("127.0.0.1", int(os.environ["SIDE_PORT"])))

inherited = os.environ.get("LISTEN_PID") == str(os.getpid())
if inherited:
    # sd_listen_fds(3): the first passed descriptor is 3.
    server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=3)
    # Non-blocking, as every real server's listener is: during an overlap
    # deploy two releases accept from this socket; both wake up for a
    # connection, one accepts it, and a blocking accept() would keep the
    # other waiting for the next client, deaf to shutdown() (its stop then
    # waits for TimeoutStopSec). socketserver passes over the EAGAIN.
    server.socket.setblocking(False)
else:
    server = Server(("127.0.0.1", PORT), Handler)


def graceful(signum, frame):
    STOPPING.set()
    # shutdown() waits for serve_forever() to return: not from its own thread.
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, graceful)
print("serving on", "the socket from systemd" if inherited else f"127.0.0.1:{PORT}", flush=True)
server.serve_forever(poll_interval=0.05)  # shutdown() waits up to one interval
server.server_close()
print("stopped after the requests in flight", flush=True)
"""


def _toml_string(value: str) -> str:
    # A JSON string (ASCII-escaped) is also a valid TOML basic string.
    return json.dumps(value)


def _release_toml(name: str, version: str, extra: str = "") -> str:
    launcher = f"bin/{name}"
    commands: Mapping[str, list[str]] = {
        "start": [launcher, "start"],
        "eval": [launcher, "eval"],
        "version": [launcher, "version"],
    }
    lines = [
        "[release]",
        f"name = {_toml_string(name)}",
        f"version = {_toml_string(version)}",
        'kind = "generic"',
        "",
        "[commands]",
        *(f"{k} = [{', '.join(_toml_string(a) for a in v)}]" for k, v in commands.items()),
    ]
    return "\n".join(lines) + "\n" + (f"\n{extra.strip()}\n" if extra.strip() else "")


def make_generic_release(
    dest: Path,
    *,
    name: str,
    version: str,
    behaviour: Behaviour | str = Behaviour.OK,
    tarball: bool = True,
    extra_toml: str = "",
    port: int = 0,
) -> Path:
    """Write a generic release to `dest/NAME-VERSION/`; return it, or its tarball.

    The release is a `release.toml` and an executable `bin/NAME`: `start`
    prints `NAME VERSION started` and sleeps forever (or, with behaviour
    "crash", prints `NAME VERSION crashing on purpose` and exits 3),
    `version` prints `NAME VERSION`, `eval ARGS` echoes ARGS, `hook WHICH`
    prints a line (the other behaviours are in `Behaviour`). `extra_toml` is
    appended to release.toml (e.g. `[service]`, `[health]`, `[hooks]`);
    `port` is where the "serve" behaviour listens. With `tarball`,
    also writes `dest/NAME-VERSION.tar.gz` with members relative to the
    release root (no top-level folder, like mix's) and returns its path.
    """
    if not _GENERIC_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid release name {name!r}")
    if not _GENERIC_VERSION_RE.fullmatch(version):
        raise ValueError(f"invalid release version {version!r}")
    behaviour = Behaviour(behaviour)

    root = dest / f"{name}-{version}"
    root.mkdir(parents=True)  # fails if it exists: never mix two releases
    (root / "release.toml").write_text(_release_toml(name, version, extra_toml))
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text(f"{name} {version}\n")
    launcher = root / "bin" / name
    launcher.parent.mkdir()
    launcher.write_text(
        _LAUNCHER.substitute(name=name, version=version, behaviour=behaviour.value, port=port)
    )
    launcher.chmod(0o755)
    (root / "bin" / "serve.py").write_text(_SERVE_PY)
    if not tarball:
        return root

    archive = dest / f"{name}-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            member = tar.gettarinfo(path, arcname=path.relative_to(root).as_posix())
            # Like mix's tarballs: owned by 0:0, no names, files only.
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            with path.open("rb") as f:
                tar.addfile(member, f)
    return archive
