"""A booted container made to look like a new user's Debian 12 host, for the install paths.

The install-path tests (tests/system/test_install_paths.py, test_deb.py)
take pyrelctl the way the README says, inside a container, with nothing
from this machine's development setup:

* `clean_checkout(dest)`: what a fresh clone of the repository holds
  (tracked and new files that are not ignored: no .venv, no build output);
* `make_new_host(machine, workdir)`: inside the container, an empty
  /usr/local (the host's holds tools such as uv that a new Debian host has
  not) and an empty /root (no ~/.cache/pip, no ~/.config/pip), each a tmpfs
  of the container's own mount namespace, and the host's CA bundle where
  Debian's ca-certificates puts it (a fresh --volatile /etc has none; this
  machine reaches PyPI through a proxy whose CA only that bundle holds);
* `USER_ENV`: what every step gets on top of the machine's PATH/HOME/LANG:
  no pip cache at all, and no pip configuration file (this machine's own
  point pip at local mirrors a new user does not have).

The containers of these tests share the host's network namespace
(`Machine.boot(private_network=False)`): pip, pipx and the build reach
PyPI from inside, as on a host with a network. See docs/testing.md.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from devtools.machine import Machine

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

#: The environment of every user step inside (plus the machine's own PATH, HOME, LANG).
USER_ENV: Mapping[str, str] = {
    "PIP_NO_CACHE_DIR": "1",
    # pip loads no configuration file at all when this is os.devnull (pip's
    # docs, "Configuration"); the container would otherwise see the host's.
    "PIP_CONFIG_FILE": os.devnull,
}


def clean_checkout(dest: Path) -> Path:
    """Copy the checkout as a fresh clone (plus local edits) would have it into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    listed = subprocess.run(
        ["git", "-C", REPO_ROOT, "ls-files", "-z", "-co", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    for name in listed.decode().split("\0"):
        if not name:
            continue
        source = REPO_ROOT / name
        if not (source.is_file() or source.is_symlink()):
            continue  # deleted in the work tree, still in the index
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return dest


def make_new_host(machine: Machine, workdir: Path) -> None:
    """Give the container an empty /usr/local and /root and the CA bundle (module doc).

    `workdir` must be bound into the machine: the bundle travels through it.
    """
    machine.run(
        [
            "sh",
            "-euc",
            # The container's own mounts (systemd-nspawn's mount namespace):
            # nothing here reaches the host's /usr/local or /root.
            "mount -t tmpfs -o mode=0755 tmpfs /usr/local && mkdir /usr/local/bin /usr/local/lib"
            " && mount -t tmpfs -o mode=0700 tmpfs /root",
        ]
    )
    if machine.run(["test", "-s", os.fspath(HOST_CA_BUNDLE)], check=False).returncode != 0:
        copy = workdir / "ca-certificates.crt"
        shutil.copyfile(HOST_CA_BUNDLE, copy)
        machine.run(["install", "-D", "-m", "0644", copy, HOST_CA_BUNDLE])
    leftovers = machine.run(["ls", "-A", "/root", "/usr/local/bin"]).stdout.split()
    assert leftovers == ["/root:", "/usr/local/bin:"], leftovers


#: Where Debian's ca-certificates takes local authorities from (update-ca-certificates(8)).
LOCAL_AUTHORITIES = Path("/usr/local/share/ca-certificates")


def trust_host_authorities(machine: Machine, workdir: Path) -> None:
    """Add this host's local CAs to a machine with a root of its own (Debian 13's).

    Unlike make_new_host's volatile containers, such a root has Debian's
    CA bundle already, without the local authorities this machine's proxy
    to PyPI needs: they are added as an administrator would, into
    /usr/local/share/ca-certificates, then `update-ca-certificates`.
    `workdir` must be bound into the machine: the certificates travel through it.
    """
    certificates = sorted(LOCAL_AUTHORITIES.glob("*.crt"))
    if not certificates:
        return
    carry = workdir / "local-ca"
    carry.mkdir(exist_ok=True)
    for certificate in certificates:
        shutil.copyfile(certificate, carry / certificate.name)
    machine.run(["mkdir", "-p", os.fspath(LOCAL_AUTHORITIES)])
    machine.run(["sh", "-c", 'cp "$1"/*.crt "$2"/', "sh", carry, LOCAL_AUTHORITIES])
    machine.run(["update-ca-certificates"])


def free_port() -> int:
    """A TCP port free on the host's loopback now (these containers share its network)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def http_get(machine: Machine, url: str) -> str:
    """The body of GET `url`, fetched inside the machine with Debian's python3."""
    code = (
        "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).read().decode())"
    )
    return machine.run(["python3", "-c", code, url]).stdout.strip()


def step(
    machine: Machine,
    what: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 900,
) -> str:
    """Run one user step inside (USER_ENV, no pip cache or configuration); fail with its
    output if it fails; print its time (the install-path tests and the Debian 13 tier)."""
    started = time.monotonic()
    proc = machine.run(argv, env={**USER_ENV, **(env or {})}, cwd=cwd, timeout=timeout, check=False)
    print(f"{machine.name}: {what}: {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, (
        f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout
