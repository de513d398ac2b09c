"""The root side: one short-lived process per connection (``pyrelctl-delegate@.service``).

systemd accepts the connection (``Accept=yes``) and starts this module with
it as descriptor 3 (sd_listen_fds(3)). It identifies the caller by the
kernel's ``SO_PEERCRED`` (the uid of the process that connected: nothing the
caller says about itself), reads one request (wire.py), checks it against
the app's grants (grants.py) and the options a granted user may give
(policy.py), and then runs the command through pyrelctl's own CLI entry
point, with the caller's stdout and stderr as its own and
``PYRELCTL_USER`` the caller's name. Every decision is logged to the
journal of the helper's unit.

For ``install``, the artifact arrives as a descriptor the caller opened:
its bytes are copied (at most ``--max-size``, 8 GiB by default) into a
directory only root can enter, and installed from there, so what the helper
verifies is what it installs and it never opens a path the caller named.
The install must carry a good signature from the app's own
``/etc/pyrelctl/APP/allowed_signers`` and be a release of that app, which is
installed already (a grant never creates an app).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrelctl.delegate import grants, policy, wire
from pyrelctl.errors import BadInput, ExitCode, NotInstalled, PyrelctlError
from pyrelctl.hostfiles import ensure_dir
from pyrelctl.layout import Layout

MAX_SIGNATURE = 64 * 1024
#: The largest artifact a granted user may hand over (root installs larger ones):
#: each connection's copy is on root's disk until the install ends.
MAX_ARTIFACT = 2 * 1024**3
#: Seconds a caller has to send its request: a connection that says nothing
#: must not hold one of the socket's few helper slots (MaxConnections=).
REQUEST_TIMEOUT = 10.0
#: Below the state root: root's, on disk (not a tmpfs /tmp), removed after each install.
UPLOADS = ".uploads"
#: The environment variable that names the caller in history and notifications (layout.who).
DELEGATED_USER = "PYRELCTL_DELEGATED_USER"


class Fallback(Exception):
    """A read command the caller has no grant for: it reads with its own rights."""


@dataclass(frozen=True)
class Peer:
    uid: int
    pid: int
    user: str


def peer_of(sock: socket.socket) -> Peer:
    """The process at the other end, as the kernel recorded it at connect() (unix(7))."""
    import pwd

    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = ""  # no name, so no grant can name it
    return Peer(uid, pid, user)


@dataclass(frozen=True)
class Job:
    """What the helper runs once the request is allowed."""

    command: str
    app: str
    argv: list[str]  # for the CLI entry point (install: without ARTIFACT), or journalctl's
    logs: bool = False
    artifact_name: str = ""  # install: the caller's file name, for its suffix only


def _parse(command: str, args: list[str]) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The command's parameters, those given on the command line, and its Ctx."""
    import click
    from click.core import ParameterSource

    from pyrelctl.cli import cli
    from pyrelctl.cli.common import Ctx

    group_ctx = click.Context(cli, obj=Ctx())
    real = cli.get_command(group_ctx, command)
    if real is None:
        raise BadInput(f"no such command: {command}")
    try:
        ctx = real.make_context(command, list(args), parent=group_ctx)
    except click.exceptions.Exit as e:  # --help: answered on the caller's side
        raise BadInput("--help is not forwarded") from e
    except click.ClickException as e:
        raise BadInput(e.format_message()) from e
    given = {
        p.name: ctx.params.get(p.name)
        for p in real.params
        if p.name
        and p.expose_value
        and ctx.get_parameter_source(p.name) not in (None, ParameterSource.DEFAULT)
    }
    flags = {p.name: (p.opts[0] if p.opts else p.name) for p in real.params if p.name}
    policy.check(command, given, flags)
    return ctx.params, flags, group_ctx.obj


def authorize(layout: Layout, peer: Peer, request: wire.Request) -> Job:
    """The job ``request`` asks for, if ``peer`` may have it; else BadInput or Fallback."""
    command, args = request.argv[0], request.argv[1:]
    if command not in policy.RULES:
        policy.check(command, {}, {})  # raises, with the message for it
    params, _flags, obj = _parse(command, args)
    if obj.layout.root != Layout().root:
        raise BadInput("--root is not for granted users: they work on the host itself")
    rule = policy.RULES[command]
    member = grants.groups_of(peer.user) if peer.user else ()
    granted = grants.read_all(layout).for_user(peer.user, member) if peer.user else ()
    if command == "install":
        app = _app_of_artifact(granted, peer, str(params["artifact"]))
    else:
        app = layout.app(str(params["app"])).name
        if app not in granted:
            if not rule.changes:
                raise Fallback
            raise _no_grant(peer, app)
    paths = layout.app(app)
    if command == "logs":
        from pyrelctl import journal
        from pyrelctl.deploy.settings import release_of
        from pyrelctl.procs.host import log_units

        paths.require()
        current = paths.current_version()
        release = release_of(paths, current) if current else None
        units = log_units(paths, release, params["process"])
        argv = journal.journalctl_argv(
            units[0],
            also=units[1:],
            root=layout.root if layout.offline else None,
            follow=params["follow"],
            lines=params["lines"],
            since=params["since"],
            until=params["until"],
            priority=params["priority"],
        )
        return Job(command, app, argv, logs=True)
    head = ["--root", str(layout.root)] if layout.offline else []
    head += ["--json"] if request.as_json or obj.as_json else []
    quiet = request.verbosity < 0 or obj.verbosity < 0
    head += ["-q"] if quiet else ["-v"] * max(request.verbosity, obj.verbosity)
    if command == "rollback":
        tail = [app, "--timeout", str(params["timeout"])]
        tail += ["--to", params["to_version"]] if params["to_version"] else []
        tail += ["--no-wait"] if params["no_wait"] else []
        return Job(command, app, [*head, command, *tail])
    if command == "install":
        paths.require()
        signers = paths.etc / "allowed_signers"
        if not signers.is_file():
            raise _unsigned_app(app)
        tail = [
            "--app", app,
            "--timeout", str(params["timeout"]),
            "--keep", str(params["keep"]),
            "--max-size", str(params["max_size"]),
        ]  # fmt: skip
        tail += ["--no-wait"] if params["no_wait"] else []
        tail += ["--dry-run"] if params["dry_run"] else []
        # The artifact and signature are the helper's copies (_install()).
        return Job(
            command, app, [*head, command, *tail], artifact_name=Path(params["artifact"]).name
        )
    return Job(command, app, [*head, command, app])


def _no_grant(peer: Peer, app: str) -> BadInput:
    return BadInput(
        f"{peer.user or f'uid {peer.uid}'} may not deploy {app}: no grant",
        hint=f"root can allow it: pyrelctl grant {app} --user {peer.user or 'NAME'}",
    )


def _unsigned_app(app: str) -> BadInput:
    return BadInput(
        f"{app} has no signing key: a granted user installs only releases signed by "
        f"a key in /etc/pyrelctl/{app}/allowed_signers",
        hint=f"root: add the release key to /etc/pyrelctl/{app}/allowed_signers",
    )


def _app_of_artifact(granted: tuple[str, ...], peer: Peer, artifact: str) -> str:
    """Which granted app an install is for: the one its file is named after, or the only one."""
    name = Path(artifact).name.replace("_", "-")
    named = [app for app in granted if name.startswith(app + "-")]
    if named:
        return max(named, key=len)
    if len(granted) == 1:
        return granted[0]
    if not granted:
        raise BadInput(
            f"{peer.user or f'uid {peer.uid}'} may not deploy any app: no grant",
            hint="root can allow it: pyrelctl grant APP --user NAME",
        )
    raise BadInput(
        f"{Path(artifact).name}: name the artifact after its app (APP-VERSION.tar.gz); "
        f"you may deploy {', '.join(granted)}"
    )


def copy_bounded(fd: int, dest: Path, limit: int, what: str) -> None:
    """Copy the regular file open at ``fd`` (from offset 0) into ``dest``, at most ``limit`` bytes.

    Read with ``pread`` on the caller's descriptor: an ``O_PATH`` descriptor
    (which needs no read permission to open) or one opened for writing only
    fails here, so the caller gets nothing it could not read itself.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"the {what} must be a regular file")
    if st.st_size > limit:
        raise BadInput(f"the {what} is larger than {limit} bytes")
    done = 0
    with open(dest, "xb") as out:
        while True:
            try:
                chunk = os.pread(fd, 1 << 20, done)
            except OSError as e:
                if e.errno == errno.EBADF:
                    raise BadInput(f"the {what} was not opened for reading") from e
                raise BadInput(f"cannot read the {what}: {e.strerror}") from e
            if not chunk:
                break
            done += len(chunk)
            if done > limit:
                raise BadInput(f"the {what} is larger than {limit} bytes")
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def _artifact_suffix(name: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return suffix
    return ".tar.gz"


@contextlib.contextmanager
def _uploads(layout: Layout) -> Iterator[Path]:
    base = layout.state_root / UPLOADS
    ensure_dir(base, 0o700)
    directory = Path(tempfile.mkdtemp(dir=base))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def check_release(layout: Layout, app: str, artifact: Path, signature: Path) -> None:
    """Refuse an artifact that is not a release of ``app`` signed by one of its keys.

    The signature is checked (ssh-keygen, against the app's own
    allowed_signers) before any byte is parsed, then the release's own name
    must be ``app``: a key trusted for one app vouches for that app's
    releases only.
    """
    from pyrelctl import signatures
    from pyrelctl.manifest import detect
    from pyrelctl.names import app_name_from_release
    from pyrelctl.openartifact import open_artifact

    verification = signatures.Verification(layout, app, artifact, signature)
    if verification.signers != layout.app(app).etc / "allowed_signers":
        raise _unsigned_app(app)
    with open_artifact(artifact, verify=verification) as opened:
        own = app_name_from_release(detect(opened).name)
    if own != app:
        raise BadInput(f"this artifact is a release of {own}, not of {app}")


class _Tolerant(io.TextIOWrapper):
    """The caller's stdout or stderr: a caller gone away must not stop a deploy halfway."""

    # try/except, not contextlib.suppress: flush() also runs when the object is
    # collected at interpreter exit, when module globals may already be None.
    def write(self, s: str) -> int:
        try:
            return super().write(s)
        except (OSError, ValueError):
            return len(s)

    def flush(self) -> None:
        try:  # noqa: SIM105 (see above)
            super().flush()
        except (OSError, ValueError):
            pass


def _in_process(argv: list[str], out_fd: int, err_fd: int, user: str) -> int:
    """Run ``pyrelctl ARGV`` here, its output on the caller's descriptors."""
    from pyrelctl.cli import main

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1), os.dup(2)
    streams = sys.stdout, sys.stderr
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    sys.stdout = _Tolerant(open(1, "wb", closefd=False), line_buffering=True)  # noqa: SIM115
    sys.stderr = _Tolerant(open(2, "wb", closefd=False), line_buffering=True)  # noqa: SIM115
    os.environ[DELEGATED_USER] = user
    try:
        main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.environ.pop(DELEGATED_USER, None)
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    return 0  # main() always exits; kept for the type checker


def _journalctl(argv: list[str], out_fd: int, err_fd: int, sock: socket.socket) -> int:
    """``logs``: journalctl as root, on the caller's descriptors, stopped when it hangs up."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_fd, stderr=err_fd)
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP)
    while proc.poll() is None:
        if poller.poll(200):  # the caller closed its end (Ctrl-C on `logs -f`)
            proc.send_signal(signal.SIGTERM)
            break
    return proc.wait()


Runner = Callable[[list[str], int, int, str], int]


def _journal(line: str) -> None:
    """One line to the helper's own stderr (its unit's journal), shown, never obeyed:
    it quotes what the caller sent."""
    from pyrelctl.cli.common import echo
    from pyrelctl.terminal import LINE_LIMIT

    echo(line, err=True, limit=LINE_LIMIT)


def _refuse(sock: socket.socket, say: Callable[[str], None], who: str, e: BadInput) -> int:
    say(f"{who}: refused: {e.message}")
    with contextlib.suppress(OSError):
        wire.send_reply(sock, {"exit": int(e.exit_code), "error": e.message})
    return int(e.exit_code)


def serve(
    sock: socket.socket,
    layout: Layout,
    *,
    run: Runner = _in_process,
    log: Callable[[str], None] | None = None,
) -> int:
    """Answer one connection; the exit status of what ran (also sent to the caller)."""
    say = log or _journal
    peer = peer_of(sock)
    who = f"uid {peer.uid} ({peer.user or 'no name'}, pid {peer.pid})"
    sock.settimeout(REQUEST_TIMEOUT)
    try:
        request = wire.receive_request(sock)
    except TimeoutError:
        return _refuse(sock, say, who, BadInput("no request in time"))
    except BadInput as e:
        return _refuse(sock, say, who, e)
    sock.settimeout(None)
    try:
        try:
            job = authorize(layout, peer, request)
        except Fallback:
            say(f"{who}: {request.argv[0]}: no grant, read with the caller's own rights")
            wire.send_reply(sock, {"fallback": True})
            return 0
        out_fd, err_fd = request.fds[0], request.fds[1]
        if job.logs:
            say(f"{who}: allowed: logs {job.app}")
            code = _journalctl(job.argv, out_fd, err_fd, sock)
        elif job.command == "install":
            code = _install(layout, peer, request, job, say, run)
        else:
            say(f"{who}: allowed: {job.command} {job.app}")
            code = run(job.argv, out_fd, err_fd, peer.user)
    except PyrelctlError as e:
        say(f"{who}: refused {' '.join(request.argv[:1])}: {e.message}")
        wire.send_reply(sock, {"exit": int(e.exit_code), "error": e.message, "hint": e.hint or ""})
        return int(e.exit_code)
    finally:
        for fd in request.fds:
            os.close(fd)
    say(f"{who}: {job.command} {job.app}: exit {code}")
    with contextlib.suppress(OSError):
        wire.send_reply(sock, {"exit": code})
    return code


def _install(
    layout: Layout,
    peer: Peer,
    request: wire.Request,
    job: Job,
    say: Callable[[str], None],
    run: Runner,
) -> int:
    files = dict(zip(request.files, request.fds[2:], strict=True))
    if "artifact" not in files:
        raise BadInput("no artifact sent")
    limit = min(int(job.argv[job.argv.index("--max-size") + 1]), MAX_ARTIFACT)
    with _uploads(layout) as directory:
        artifact = directory / f"{job.app}-upload{_artifact_suffix(job.artifact_name)}"
        signature = artifact.with_name(artifact.name + ".sig")
        copy_bounded(files["artifact"], artifact, limit, "artifact")
        if "signature" in files:
            copy_bounded(files["signature"], signature, MAX_SIGNATURE, "signature")
        check_release(layout, job.app, artifact, signature)
        say(
            f"uid {peer.uid} ({peer.user}): allowed: install {job.app} "
            f"({artifact.stat().st_size} bytes, signature good)"
        )
        argv = [*job.argv, str(artifact), "--signature", str(signature)]
        return run(argv, request.fds[0], request.fds[1], peer.user)


def main() -> int:
    """The helper unit's entry point: the connection is descriptor 3 (sd_listen_fds)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        _journal("pyrelctl.delegate.serve runs from pyrelctl-delegate.socket")
        return int(ExitCode.BAD_INPUT)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for the commands it runs
    sock = socket.socket(fileno=3)
    os.set_inheritable(3, False)
    try:
        return serve(sock, Layout())
    except NotInstalled:
        return int(ExitCode.BAD_INPUT)
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
