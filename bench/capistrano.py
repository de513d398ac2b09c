"""The peer: Capistrano deploying the same release, over SSH, under the same load.

Debian's ``capistrano`` package (3.17, on ruby-sshkit and net-ssh) runs its
own ``deploy`` and ``deploy:rollback`` from the project in
``bench/capistrano/``: a small SCM plugin of ours uploads the release
tarball (scp) and unpacks it into ``releases/TIMESTAMP``; Capistrano's tasks
swap ``current`` (``ln -s`` + ``mv``), clean up, log the revision; a
``deploy:restart`` task after ``deploy:publishing`` runs ``systemctl
reset-failed`` and ``systemctl restart`` of the app's unit. The unit is one
pyrelctl generated, with its socket (the app is installed once with
``pyrelctl install --strategy restart``), as bench/floor.sh reuses one: the
same unit and sandbox as the "restart" rows, only the deploy differs.

What the peer needs, set up here:

* outside, on the host: ``apt-get install capistrano`` (via
  packaging/apt-ensure), and Debian's sshd, which the host does not run:
  the ``openssh-server`` and ``libwrap0`` packages are downloaded with
  ``apt-get download`` and unpacked (``dpkg-deb -x``) into the scratch
  directory, never installed on the host (:func:`prepare`);
* inside the booted container: an ``sshd`` user (privilege separation), a
  root account that may log in with a key (``usermod -p '*'``: systemd's
  fresh /etc locks it), a host key, a client key in PEM format (net-ssh
  7.0 cannot sign with OpenSSH's newer key format under OpenSSL 3), a
  known_hosts line, and sshd on 127.0.0.1:2222 as a transient unit.

``cap`` itself runs inside the container's network namespace (the
container has a private network), as a deploy host would, connecting to
that sshd; so every deploy pays SSH's handshake and one command per step,
as Capistrano does against any server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.availability import (
    CRASH,
    RECOVERY,
    ROLLBACK,
    UPGRADE,
    App,
    AppUnderLoad,
    serving,
)
from bench.host import REPO, Host, Timed
from devtools.proc import wait_until

PROJECT = Path(__file__).resolve().parent / "capistrano"
SSH_PORT = 2222
#: What sshd needs that the host lacks; the rest of its libraries are there.
SSHD_PACKAGES = ("openssh-server", "libwrap0")


def _dirs(scratch: Path) -> tuple[Path, Path]:
    """The peer's scratch directory, and where sshd's packages are unpacked."""
    base = scratch / "capistrano"
    return base, base / "sshd-root"


def prepare(scratch: Path) -> str:
    """On the host, before the boot: Capistrano installed, sshd unpacked in
    ``scratch``. Returns why the peer cannot run, or ''."""
    ensure = subprocess.run(
        [str(REPO / "packaging" / "apt-ensure"), "capistrano"],
        capture_output=True,
        text=True,
        check=False,
    )
    if ensure.returncode != 0 or shutil.which("cap") is None:
        return f"Debian's capistrano is not installed: {ensure.stderr.strip()[-300:]}"
    base, root = _dirs(scratch)
    debs = base / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        ["apt-get", "download", *SSHD_PACKAGES],
        cwd=debs,
        capture_output=True,
        text=True,
        check=False,
    )
    found = sorted(debs.glob("*.deb"))
    if download.returncode != 0 or len(found) != len(SSHD_PACKAGES):
        return f"apt-get download {' '.join(SSHD_PACKAGES)} failed: {download.stderr.strip()}"
    for deb in found:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return ""


def _inside_a_container() -> bool:
    """This host has no systemd as PID 1; the booted container does."""
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


class Sshd:
    """Debian's sshd, unpacked by :func:`prepare`, run in the container as root."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.base, self.root = _dirs(host.scratch)
        self.keys = self.base / "keys"
        self.client_key = self.keys / "client"
        self.known_hosts = self.keys / "known_hosts"

    def start(self) -> str:
        """Start it; return why it cannot run, or ''."""
        sshd = self.root / "usr" / "sbin" / "sshd"
        if not sshd.is_file():
            return "sshd was not unpacked (bench.capistrano.prepare did not run)"
        if not _inside_a_container():
            # useradd and usermod below change /etc: only ever a container's.
            raise RuntimeError("refusing to set up sshd outside the booted container")
        h = self.host
        shutil.rmtree(self.keys, ignore_errors=True)
        self.keys.mkdir(parents=True)
        h.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", self.keys / "host"])
        pem = ["-m", "PEM", "-t", "rsa", "-b", "3072"]
        h.run(["ssh-keygen", "-q", *pem, "-N", "", "-f", self.client_key])
        shutil.copy(self.keys / "client.pub", self.keys / "authorized_keys")
        host_key = (self.keys / "host.pub").read_text().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{SSH_PORT} {host_key}\n")
        config = self.keys / "sshd_config"
        config.write_text(
            f"Port {SSH_PORT}\nListenAddress 127.0.0.1\nHostKey {self.keys / 'host'}\n"
            f"AuthorizedKeysFile {self.keys / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\n"
            # The keys live in the scratch directory, whose modes sshd would refuse.
            "StrictModes no\nPidFile none\n"
        )
        if h.run(["getent", "passwd", "sshd"], check=False).returncode != 0:
            system_user = ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
            h.run(["useradd", *system_user, "--home-dir", "/run/sshd", "sshd"])
        h.run(["usermod", "-p", "*", "root"])
        libraries = self.root / "usr" / "lib" / "x86_64-linux-gnu"  # libwrap's
        unit = ["--unit=bench-sshd", "-p", "RuntimeDirectory=sshd"]
        unit += ["-p", "RuntimeDirectoryMode=0755", "-E", f"LD_LIBRARY_PATH={libraries}"]
        h.run(["systemd-run", *unit, str(sshd), "-D", "-e", "-f", str(config)])

        def listening() -> bool | None:
            try:
                socket.create_connection(("127.0.0.1", SSH_PORT), timeout=1).close()
            except OSError:
                return None
            return True

        wait_until(listening, timeout=10, what=f"sshd on 127.0.0.1:{SSH_PORT}")
        return ""

    def stop(self) -> None:
        self.host.run(["systemctl", "stop", "bench-sshd.service"], check=False)


class CapistranoUnderLoad(AppUnderLoad):
    """The windows of the app Capistrano deploys: upgrade, a release that exits at
    start (left in place by Capistrano), the deploy:rollback that undoes it,
    and a rollback."""

    scenarios = (UPGRADE, CRASH, RECOVERY, ROLLBACK)

    def __init__(self, host: Host, app: App) -> None:
        super().__init__(host, app)
        self.sshd = Sshd(host)
        self.base = _dirs(host.scratch)[0]
        self.last_good = "1.0.0"

    def cap(self, task: str, tarball: str = "") -> Timed:
        """``cap bench TASK`` from bench/capistrano, timed."""
        env = {
            "BENCH_APP": self.app.name,
            "BENCH_TMP": "/tmp",
            "BENCH_LOG": str(self.base / "capistrano.log"),
            "BENCH_SSH_PORT": str(SSH_PORT),
            "BENCH_SSH_KEY": str(self.sshd.client_key),
            "BENCH_KNOWN_HOSTS": str(self.sshd.known_hosts),
            "BENCH_TARBALL": tarball,
        }
        return self.host.timed(["cap", "bench", task], env=env, cwd=PROJECT)

    def setup(self) -> str:
        if shutil.which("cap") is None:
            return "Debian's capistrano is not installed (apt-get install -y capistrano)"
        reason = super().setup() or self.sshd.start()
        if reason:
            return reason
        # From now on only Capistrano deploys the app; its first release is 1.0.0 too.
        self.cap("deploy", self.artifact("1.0.0"))
        return ""

    def upgrade(self, i: int) -> Timed:
        timed = self.cap("deploy", self.artifact(f"1.0.{i}"))
        self.last_good = f"1.0.{i}"
        return timed

    def crash(self, i: int) -> Timed:
        # Capistrano checks nothing after the restart: the deploy succeeds.
        return self.cap("deploy", self.artifact(self.crash_version(i), "crash"))

    def recover(self, i: int) -> Timed:
        """What an operator does after the failed deploy: deploy:rollback to the
        release before, which must then answer again."""
        timed = self.cap("deploy:rollback")
        good = self.last_good

        def back() -> bool | None:
            return True if serving(self.app.port) == good else None

        wait_until(back, timeout=30, what=f"{self.app.name} {good} to answer again")
        return timed

    def commands(self) -> dict[str, Callable[[int], Timed]]:
        return {**super().commands(), RECOVERY: self.recover}

    def rollback(self, i: int) -> Timed:
        return self.cap("deploy:rollback")

    def stop(self) -> None:
        """Stop sshd, and hand the app back to pyrelctl so that it can uninstall it:
        Capistrano's ``current`` is an absolute link to ``releases/TIMESTAMP``,
        which pyrelctl refuses to read (and with it, ``status`` of every app)."""
        self.sshd.stop()
        app = Path("/opt") / self.app.name
        if (app / "releases" / "1.0.0").is_dir():  # pyrelctl's first install, kept by cap
            link = app / "current.bench"
            link.unlink(missing_ok=True)
            link.symlink_to("releases/1.0.0")
            link.replace(app / "current")
        self.host.pyrelctl("uninstall", "--purge", self.app.name, check=False)
