"""Ansible connection plugin of the tests: enter a booted devtools Machine with nsenter.

Each host names its container's PID 1 (`machine_pid`) and that process's
mount namespace (`machine_mount_ns`, as `readlink /proc/PID/ns/mnt` prints
it). Before every command and file transfer the plugin checks that the pid
still has that namespace: `nsenter --target PID` on a pid that is no longer
the container's would run the command on the test host as root (the rule of
devtools.machine, shared/SYSTEMD.md). Files go through `cat` inside the
container, never through /proc/PID/root, whose absolute symlinks resolve on
the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
name: nspawn_machine
short_description: enter a systemd-nspawn container of the test suite with nsenter
description:
  - Runs commands in the namespaces of the container's PID 1, as root (or machine_user).
author: pyrelctl developers
options:
  machine_pid:
    description: The container's PID 1, as a host PID.
    type: int
    required: true
    vars:
      - name: machine_pid
  machine_mount_ns:
    description: That process's mount namespace, as readlink /proc/PID/ns/mnt prints it.
    type: str
    required: true
    vars:
      - name: machine_mount_ns
  machine_user:
    description:
      - A user of the container to run as (setpriv, its own groups, no sudo), as an
        ssh connection as that user would; root when unset.
    type: str
    vars:
      - name: machine_user
extends_documentation_fragment:
  - connection_pipelining
"""

# What commands inside get instead of the controller's environment (as in
# devtools.machine): the test host's PATH and VIRTUAL_ENV mean nothing there.
_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


class Connection(ConnectionBase):  # type: ignore[misc]  # ansible-core ships no type information
    """Commands and files through `nsenter --target PID --all`."""

    transport = "nspawn_machine"
    has_pipelining = True
    _connected: bool
    _nsenter = ""

    def _connect(self) -> Connection:
        if not self._connected:
            nsenter = shutil.which("nsenter")
            if nsenter is None:
                raise AnsibleConnectionFailure("nsenter not found: apt-get install util-linux")
            self._nsenter = nsenter
            self._connected = True
        return self

    def _argv(self, argv: list[str]) -> list[str]:
        pid = int(self.get_option("machine_pid"))
        expected = self.get_option("machine_mount_ns")
        try:
            found = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            found = None
        if found != expected:
            raise AnsibleConnectionFailure(
                f"PID {pid} is no longer the container's PID 1 (mount namespace {found}, "
                f"expected {expected}): refusing to enter it"
            )
        user = self.get_option("machine_user")
        if user:
            # The container's user database names the group (useradd may make none).
            drop = (
                'u=$1; shift; exec setpriv --reuid="$u" --regid="$(id -g "$u")" '
                '--init-groups -- "$@"'
            )
            env = [f"{k}={v}" for k, v in {**_ENV, "HOME": f"/home/{user}"}.items()]
            argv = ["/bin/sh", "-c", drop, "setpriv", user, "env", "-i", *env, *argv]
            return [self._nsenter, f"--target={pid}", "--all", "--", *argv]
        env = [f"{k}={v}" for k, v in _ENV.items()]
        return [self._nsenter, f"--target={pid}", "--all", "--", "env", "-i", *env, *argv]

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        proc = subprocess.run(
            self._argv(["/bin/sh", "-c", cmd]),
            input=in_data or b"",
            capture_output=True,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        if not os.path.isfile(in_path):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        with open(in_path, "rb") as source:
            proc = subprocess.run(
                self._argv(["/bin/sh", "-c", 'cat > "$1"', "put_file", out_path]),
                stdin=source,
                capture_output=True,
                check=False,
            )
        if proc.returncode != 0:
            raise AnsibleError(
                f"failed to write {out_path}: {proc.stderr.decode(errors='replace')}"
            )

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        with open(out_path, "wb") as dest:
            proc = subprocess.run(
                self._argv(["cat", "--", in_path]),
                stdout=dest,
                stderr=subprocess.PIPE,
                check=False,
            )
        if proc.returncode != 0:
            raise AnsibleError(f"failed to read {in_path}: {proc.stderr.decode(errors='replace')}")

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self._connected = False
