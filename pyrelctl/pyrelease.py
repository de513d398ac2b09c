"""Python releases: preparing one at install (its ``[python]`` table is :mod:`pyrelctl.pyspec`'s).

A python release (made by ``pyrelctl build``) ships wheels, not a
virtualenv: a venv holds absolute paths and is bound to an interpreter, so
it is made on the host, at install, offline:

1. the unpacked files are checked against ``SHA256SUMS`` once more (the
   bytes on disk are the bytes that will run);
2. ``venv/`` is created with the host's interpreter (``--without-pip``:
   no ensurepip needed, nothing to install into it later);
3. the packages are installed from ``wheelhouse/`` only (``--no-index``):
   by uv when it is on systemd's PATH, else by the pip wheel the release
   carries (``tools/pip-*.whl``, run straight from the wheel file), so the
   host needs neither network nor pip;
4. every module is compiled to ``unchecked-hash`` pycs with the final path
   as file name: the release is read-only to the service (ProtectSystem=
   strict), and timestamp pycs would be ignored (and recompiled in memory
   at every start) as soon as a source mtime changed;
5. the venv is moved to its final path in the files that name it (console
   script shebangs, ``pyvenv.cfg``): it is built in the ``.incomplete-``
   staging directory, which is renamed to ``releases/VERSION`` only once
   complete. The interpreter finds its venv from ``pyvenv.cfg`` next to
   ``bin/``, so the tree itself is position-independent;
6. ``bin/NAME`` is written: ``start`` execs the service, ``eval`` runs
   code in a fresh interpreter, ``rpc``/``remote``/``pid`` reach the live
   process through the runtime's socket.

Steps 2 to 4 run the release's own code (its pip; the ``.pth`` files of its
wheels, which every interpreter started on the venv executes), so they run
as an unprivileged user that can write the venv and nothing else
(sandboxrun.py); root then takes the venv over without following a link.
A release that ships ``venv/`` or ``bin/NAME`` itself is refused at
detection, before anything is written.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from pyrelctl import checksums
from pyrelctl.errors import BadInput, HostError
from pyrelctl.pyspec import VENV, WHEELHOUSE, PythonSpec, read_spec, venv_argv
from pyrelctl.sandboxrun import Build, open_build

#: Where the interpreter is looked for: systemd's fixed PATH for services
#: (systemd.exec(5)), not the operator's, which may hold pyenv shims or a
#: venv the service can neither see (ProtectHome=) nor keep after logout.
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Say = Callable[[str], None]


def _hooks(release_dir: Path) -> list[tuple[str, Sequence[str]]]:
    """``[hooks]``, processes' and timers' commands of an unpacked release's
    release.toml (detection checked them): each program is a script of the
    venv, or bin/NAME."""
    with (release_dir / "release.toml").open("rb") as f:
        doc = tomllib.load(f)
    hooks = doc.get("hooks", {})
    tables = [
        (f"{table}.{name}.command", entry["command"])
        for table in ("processes", "timers")
        for name, entry in sorted(doc.get(table, {}).items())
    ]
    return [*((f"hooks.{key}", argv) for key, argv in sorted(hooks.items())), *tables]


def find_interpreter(spec: PythonSpec) -> Path:
    """The host's ``pythonX.Y``, or a :class:`HostError` saying how to get it."""
    found = shutil.which(spec.interpreter, path=SERVICE_PATH)
    if found is None:
        raise HostError(
            f"this release needs {spec.interpreter}, which is not installed on this host",
            hint=f"install it (Debian: apt-get install {spec.interpreter}), or rebuild the "
            "release with the Python this host has",
        )
    return Path(found)


def _install_packages(build: Build, spec: PythonSpec, say: Say) -> str:
    """Install every pinned package from the wheelhouse into the build's venv; name the tool."""
    python = build.venv / "bin/python"
    wheelhouse = build.prefix / WHEELHOUSE
    # Looked up on systemd's PATH, as the interpreter: the build runs where
    # root's home (~/.local/bin, ~/.cargo/bin) is hidden (ProtectHome=).
    uv = shutil.which("uv", path=SERVICE_PATH)
    if uv is not None:
        say(f"installing {len(spec.packages)} packages with uv (offline, from {WHEELHOUSE}/)")
        argv: list[str | os.PathLike[str]] = [
            uv, "pip", "install", "--python", python, "--offline", "--no-index",
            "--find-links", wheelhouse, "--no-config", "--no-cache",
            # Copies, not hard links into uv's cache: a release must not
            # share inodes with anything that can change.
            "--link-mode", "copy", *spec.packages,
        ]  # fmt: skip
        build.run("install", argv, env=_build_env(UV_NO_PROGRESS="1"))
        return "uv"
    say(f"installing {len(spec.packages)} packages with pip (offline, from {WHEELHOUSE}/)")
    # pip runs straight from its wheel (pip/__main__.py supports it): the
    # host needs no pip, and the release pins the pip that installs it. It
    # is the release's code: it runs as the build's unprivileged user.
    pip_main = build.prefix / spec.pip / "pip"
    build.run(
        "install",
        [
            python, "-I", pip_main, "install", "--no-index", "--find-links", wheelhouse,
            "--no-compile", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
            "--no-warn-script-location", "--quiet", *spec.packages,
        ],
        env=_build_env(PIP_CONFIG_FILE=os.devnull),
    )  # fmt: skip
    return "pip"


def _build_env(**extra: str) -> dict[str, str]:
    """The environment of a build step: systemd's PATH, nothing of the operator's
    shell (PIP_*, UV_*, PYTHON*: an index URL, a constraint file) that could
    reach an install that must use the wheelhouse alone."""
    env = {"PATH": SERVICE_PATH, "LC_ALL": "C.UTF-8"}
    env.update(extra)
    return env


#: The shebang pip (distlib) writes when the interpreter's path is too long
#: for the kernel's shebang buffer (127 bytes on older kernels) or has spaces.
_SH_SHEBANG = re.compile(
    rb"\A#!/bin/sh\n'''exec' \"?(?P<python>[^\" ]+)\"? \"\$0\" \"\$@\"\n' '''\n"
)
_MAX_SHEBANG = 127


def _relocate(venv: Path, old_prefix: Path, final: Path) -> None:
    """Replace the build's path by the final one where the venv names itself.

    ``venv`` is root's by now (sandboxrun.adopt): files are read and replaced
    without following a symlink all the same.
    """
    old, new = os.fsencode(old_prefix), os.fsencode(final)
    bindir = venv / "bin"
    if bindir.is_symlink() or not bindir.is_dir():
        # The build's user could have made it a link to a directory of the
        # host's, whose files root would then read and rewrite.
        raise BadInput("the venv built from the release has no bin/ directory")
    candidates = [venv / "pyvenv.cfg", *sorted(bindir.iterdir())]
    for path in candidates:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            continue
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
            data = f.read()
        if old in data:
            data = data.replace(old, new)
            # The staging path is longer than the final one: where it made
            # pip fall back to a /bin/sh trampoline, a plain shebang may fit now.
            match = _SH_SHEBANG.match(data)
            python = match["python"] if match else b""
            if match and len(python) + 2 <= _MAX_SHEBANG and b" " not in python:
                data = b"#!" + python + b"\n" + data[match.end() :]
            _write_new(path.with_name(path.name + ".pyrelctl-tmp"), data, stat.S_IMODE(st.st_mode))
            os.replace(path.with_name(path.name + ".pyrelctl-tmp"), path)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet (O_EXCL, O_NOFOLLOW: never through a link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(os.open(path, flags, 0o600), "wb") as f:
        f.write(data)
        os.fchmod(f.fileno(), mode)


def _compile(build: Build, final: Path, say: Say) -> None:
    say("compiling bytecode (unchecked-hash pycs)")

    def compileall(jobs: str) -> subprocess.CompletedProcess[str]:
        # The venv's interpreter runs every .pth file of the installed packages
        # (site.py, -I or not): the build's unprivileged user runs it.
        return build.run(
            "compile",
            [
                build.venv / "bin/python", "-I", "-m", "compileall", "-q", "-j", jobs,
                "--invalidation-mode", "unchecked-hash",
                # The file name recorded in each code object: the final path,
                # so tracebacks name files that exist.
                "-s", build.prefix, "-p", final, build.venv / "lib",
            ],
            env=_build_env(),
            check=False,
        )  # fmt: skip

    proc = compileall("0")
    # compileall prints "***" for each file that does not compile. Failing
    # without one, its worker pool failed, not a file: Python 3.13's compileall
    # starts its workers with forkserver (where fork is the default), which
    # wrote no pyc at all as nobody in the offline build's namespaces on
    # Debian 13. One worker needs no pool.
    if proc.returncode != 0 and not _not_compiled(proc.stdout):
        proc = compileall("1")
    if proc.returncode != 0:
        # A module that does not compile cannot be imported either; pip too
        # installs such packages (test data, templates named *.py) and skips them.
        lines = _not_compiled(proc.stdout)
        say(f"warning: {len(lines) or 'some'} files do not compile (left as source)")


def _not_compiled(output: str) -> list[str]:
    """compileall's lines for the files that do not compile."""
    return [line for line in output.splitlines() if line.startswith("***")]


def _normalise_modes(root: Path) -> None:
    """Readable by the service user whatever pyrelctl's umask was; writable by nobody else."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o755 if st.st_mode & stat.S_IXUSR else 0o644)


def launcher(*, app: str, name: str, version: str, final: Path, start: Sequence[str]) -> str:
    """The text of ``bin/NAME`` for a release whose venv is at ``final/venv``."""
    program = start[0]
    bindir = final / VENV / "bin"
    argv = [str(bindir / ("python" if program in ("python", "python3") else program)), *start[1:]]
    q = shlex.quote
    return f"""\
#!/bin/sh
# bin/{name} of the python release {name} {version}, written by pyrelctl at install.
#   start          run the service (in the foreground; systemd's ExecStart)
#   eval CODE      run Python code in a fresh interpreter of this release
#   rpc CODE       run Python code inside the running service
#   remote         an interactive console inside the running service
#   pid            the pid of the service process that serves rpc
#   version        print "{name} {version}"
set -eu
PYTHON={q(str(bindir / "python"))}
SOCKET="${{PYRELCTL_RPC_SOCKET:-/run/{app}/rpc.sock}}"
case "${{1:-}}" in
start)
    shift
    # Unbuffered: print() lines reach the journal at once. No bytecode
    # writes: the release is read-only and precompiled.
    export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
    exec {" ".join(q(a) for a in argv)} "$@"
    ;;
version)
    echo {q(f"{name} {version}")}
    ;;
rpc | remote | pid)
    PYRELCTL_PROG="$0" exec "$PYTHON" -I -m pyrelctl_runtime --socket "$SOCKET" "$@"
    ;;
eval)
    PYRELCTL_PROG="$0" exec "$PYTHON" -I -m pyrelctl_runtime "$@"
    ;;
*)
    echo "usage: $0 start | eval CODE | rpc CODE | remote | pid | version" >&2
    exit 2
    ;;
esac
"""


def prepare(
    staging: Path,
    final: Path,
    *,
    app: str,
    name: str,
    version: str,
    say: Say,
    online: bool,
) -> None:
    """Turn an unpacked python release in ``staging`` into a runnable one for ``final``.

    ``final`` is the path the release will have on the running system
    (``/opt/APP/releases/VERSION``, without any ``--root`` prefix); ``app``
    names the runtime directory (``/run/APP``) where rpc finds the service.
    Nothing of the release runs as root: the venv is built by an
    unprivileged user (sandboxrun: a sandboxed dynamic user when
    ``online``, ``nobody`` through setpriv offline as root).
    """
    sums_file = staging / checksums.SUMS_FILE
    if not sums_file.is_file():
        raise BadInput(f"no {checksums.SUMS_FILE} in the python release")
    checksums.verify_tree(staging, checksums.parse(sums_file.read_bytes()))
    spec = read_spec(staging)
    for path in (staging / VENV, staging / "bin" / name):
        if os.path.lexists(path):  # detection refuses these (_refuse_install_paths)
            raise BadInput(f"the python release contains {path.relative_to(staging)}")
    interpreter = find_interpreter(spec)
    # Readable by the build's user, whatever modes the archive had.
    _normalise_modes(staging)
    with open_build(staging, app=app, online=online, inputs=(WHEELHOUSE, spec.pip)) as build:
        say(f"creating the virtualenv with {interpreter}, as {build.who}")
        build.run(
            "venv",
            [interpreter, "-I", "-m", "venv", "--without-pip", build.venv],
            env=_build_env(),
        )
        _install_packages(build, spec, say)
        _compile(build, final, say)
        build.collect()
    venv = staging / VENV
    for what, argv in (("python.start", spec.start), *_hooks(staging)):
        program = venv_argv(argv)[0]
        if "/" in argv[0]:
            continue  # bin/NAME, written below
        if not (staging / program).is_file():
            raise BadInput(
                f"release.toml: {what} runs {argv[0]!r}, which no package of the release installs"
            )
    _relocate(venv, build.prefix, final)
    bindir = staging / "bin"
    if not os.path.lexists(bindir):
        bindir.mkdir(mode=0o755)
    elif bindir.is_symlink() or not bindir.is_dir():  # detection refuses it
        raise BadInput("the python release's bin is not a directory")
    text = launcher(app=app, name=name, version=version, final=final, start=spec.start)
    _write_new(bindir / name, text.encode(), 0o755)
    _normalise_modes(staging)
