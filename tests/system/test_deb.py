"""The Debian package, end to end: build it, install it with apt in a booted
systemd, and deploy and roll back a real mix release with the packaged pyrelctl.

The container has a writable copy-on-write root (Machine.boot(writable_root=True),
SYSTEMD.md Recipe B) so that apt can install into it; no checkout and no
virtualenv are bound in, and every pyrelctl call is /usr/bin/pyrelctl running
on Debian's python3-click, python3-jinja2, python3-pystemd (0.11) and
python3-sdnotify.

The container has no network (a private network namespace, like the other
system tests). apt inside therefore installs offline: the dependencies the
host lacks are downloaded *on the host* first, with the host's apt lists, into
a directory bound into the container (`apt-get install --download-only` with
its own `Dir::Cache::archives`), and the container's apt takes them from
there (copied into its /var/cache/apt/archives, then `apt-get install
./pyrelctl_*.deb`). The container's root is the host's, so what the
host lacks is exactly what the container lacks. See docs/packaging.md.

It is also the .deb's install path of tests/system/test_install_paths.py:
made to look like a new user's host (devtools.newhost: empty /usr/local and
/root, no pip configuration or cache), with a clean checkout bound in for
its examples, it builds examples/pyshop with the packaged pyrelctl on
Debian's own pip, installs and serves it, and runs doctor. pip needs PyPI
for that, so this container shares the host's network namespace (no
--private-network); apt still installs offline, as above.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand
from devtools.newhost import USER_ENV, clean_checkout, free_port, http_get, make_new_host
from pyrelctl import __version__
from tests.system.conftest import MIX_APP, REPO_ROOT

DEB = f"pyrelctl_{__version__}_all.deb"


@pytest.fixture(scope="module")
def deb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make deb` into a directory of this session: the .deb and the build's lintian output."""
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "-s", "deb", f"PKG_BUILD={out / 'build'}", f"DIST={out / 'dist'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"make deb failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    print(f"make deb: {time.monotonic() - started:.1f} s")
    assert (out / "dist" / DEB).is_file(), os.listdir(out / "dist")
    return out


@pytest.fixture(scope="module")
def apt_archives(deb_dir: Path) -> Path:
    """The .debs of the dependencies this host (hence the container) lacks, fetched here."""
    archives = deb_dir / "archives"
    (archives / "partial").mkdir(parents=True)
    proc = subprocess.run(
        [
            "apt-get",
            "install",
            "--download-only",
            "-y",
            "-qq",
            "-o",
            f"Dir::Cache::archives={archives}",
            deb_dir / "dist" / DEB,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    assert proc.returncode == 0, f"downloading pyrelctl's dependencies failed:\n{proc.stderr}"
    return archives


@pytest.fixture(scope="module")
def deb_checkout(deb_dir: Path) -> Path:
    """A clean copy of the checkout (as cloned: no .venv), for examples/pyshop."""
    return clean_checkout(deb_dir / "checkout")


@pytest.fixture(scope="module")
def deb_machine(
    deb_dir: Path,
    deb_checkout: Path,
    apt_archives: Path,
    scratch: Path,
    mix_artifacts: dict[str, Path],
) -> Iterator[Machine]:
    """A new user's host with a writable copy-on-write root and the host's network.

    No virtualenv is bound in; the clean checkout is under `deb_dir`.
    """
    booted = Machine.boot(
        f"pyrelctl-deb-{os.getpid()}",
        [deb_dir, scratch],
        deb_dir / "nspawn.log",
        writable_root=True,
        # pip builds examples/pyshop from PyPI in there (module doc).
        private_network=False,
    )
    try:
        make_new_host(booted, deb_dir)
        yield booted
    finally:
        booted.stop()


@pytest.fixture(scope="module")
def installed_deb(deb_dir: Path, apt_archives: Path, deb_machine: Machine) -> Machine:
    """The container, with the .deb installed by apt (offline, from `apt_archives`)."""
    m = deb_machine
    assert m.run(["sh", "-c", "command -v pyrelctl"], check=False).returncode != 0, (
        "pyrelctl is on the host already: the container would not test the package"
    )
    started = time.monotonic()
    # Into the container's own apt cache (its copy-on-write /var), where apt
    # looks before downloading.
    m.run(["sh", "-c", f"cp {apt_archives}/*.deb /var/cache/apt/archives/ 2>/dev/null; true"])
    install = m.run(
        # Without --no-download, which apt 2.6 refuses for a local ./x.deb ("Internal
        # Error, Pathname to install is not absolute"); apt finds what it needs in
        # its cache and downloads nothing.
        ["apt-get", "install", "-y", f"./{DEB}"],
        cwd=deb_dir / "dist",
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    print(f"apt-get install: {time.monotonic() - started:.1f} s")
    return m


def test_lintian_reports_no_errors(deb_dir: Path) -> None:
    report = (deb_dir / "build" / "deb" / "lintian.txt").read_text()
    assert not [line for line in report.splitlines() if line.startswith("E: ")], report


def test_packaged_pyrelctl_builds_and_serves_a_python_release(
    installed_deb: Machine, deb_checkout: Path
) -> None:
    """The .deb's install path (test_install_paths.py): build, install, serve, doctor.

    Runs before the mix test below, which removes the package at its end.
    """
    m = installed_deb
    # `pyrelctl build` runs pip with the package's interpreter: Debian's
    # python3-pip (docs/packaging.md says the package's users need it).
    pip = m.run(["python3", "-m", "pip", "--version"]).stdout
    assert pip.startswith("pip 23.0.1 from /usr/lib/python3/dist-packages/pip"), pip
    started = time.monotonic()
    build = m.run(
        ["pyrelctl", "--json", "build", "examples/pyshop", "-o", "/tmp/dist"],
        cwd=deb_checkout,
        env=dict(USER_ENV),
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    print(f"pyrelctl build examples/pyshop: {time.monotonic() - started:.1f} s")
    artifact = json.loads(build.stdout)["artifact"]
    port = free_port()
    install = m.run(
        ["pyrelctl", "install", artifact, "--listen", f"127.0.0.1:{port}"],
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    health = json.loads(http_get(m, f"http://127.0.0.1:{port}/healthz"))
    assert health == {"status": "ok", "version": "1.0.0"}
    doctor = m.run(["pyrelctl", "doctor", "pyshop"], check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "PROBLEM" not in doctor.stdout, doctor.stdout
    assert "pyshop.service is active" in doctor.stdout, doctor.stdout
    gone = m.run(["pyrelctl", "uninstall", "--purge", "pyshop"], check=False, timeout=120)
    assert gone.returncode == 0, gone.stderr


def test_packaged_pyrelctl_deploys_and_rolls_back_a_mix_release(
    installed_deb: Machine, mix_artifacts: dict[str, Path]
) -> None:
    m = installed_deb

    # What runs is the package, on Debian's libraries.
    assert m.run(["sh", "-c", "command -v pyrelctl"]).stdout.strip() == "/usr/bin/pyrelctl"
    where = m.run(
        ["python3", "-c", "import pyrelctl, pystemd; print(pyrelctl.__file__, pystemd.__version__)"]
    ).stdout.split()
    assert where[0] == "/usr/lib/python3/dist-packages/pyrelctl/__init__.py"
    assert where[1] == "0.11.0"  # Debian 12's python3-pystemd
    assert __version__ in m.run(["pyrelctl", "--version"]).stdout
    assert m.run(["man", "-w", "pyrelctl"]).stdout.strip() == "/usr/share/man/man1/pyrelctl.1.gz"

    pyrelctl = MachineCommand(m, ("pyrelctl",))
    a = {v: os.fspath(p) for v, p in mix_artifacts.items()}

    first = pyrelctl("--json", "install", a["1.0.0"], timeout=180)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["started"] is True
    assert m.systemctl("is-active", f"{MIX_APP}.service").stdout.strip() == "active"

    upgrade = pyrelctl("install", a["1.1.0"], timeout=180)
    assert upgrade.returncode == 0, upgrade.stderr
    assert pyrelctl("version", MIX_APP).stdout.strip() == "1.1.0"

    # 2.0.0 crashes at start: the packaged pyrelctl puts 1.1.0 back by itself.
    failed = pyrelctl("install", a["2.0.0"], timeout=240)
    assert failed.returncode == 3, failed.stderr
    assert m.run(["readlink", f"/opt/{MIX_APP}/current"]).stdout.strip() == "releases/1.1.0"

    back = pyrelctl("rollback", MIX_APP, timeout=180)
    assert back.returncode == 0, back.stderr
    status = json.loads(pyrelctl("--json", "status", MIX_APP).stdout)
    assert status["current"] == "1.0.0"
    assert status["state"]["active_state"] == "active"
    assert pyrelctl("version", MIX_APP).stdout.strip() == "1.0.0"

    # The completion script the package ships reaches the installed app.
    completed = m.run(
        ["pyrelctl"],
        env={
            "_PYRELCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": "pyrelctl rollback ",
            "COMP_CWORD": "2",
        },
    ).stdout.split()
    assert f"plain,{MIX_APP}" in completed
    assert m.run(["test", "-f", "/usr/share/bash-completion/completions/pyrelctl"]).returncode == 0

    doctor = pyrelctl("doctor", MIX_APP)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr

    # Removing the tool leaves the deployed service alone.
    removed = m.run(["apt-get", "remove", "-y", "pyrelctl"], check=False, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert m.systemctl("is-active", f"{MIX_APP}.service").stdout.strip() == "active"


def test_rpm_spec_builds(tmp_path: Path) -> None:
    """`make rpm`: the spec builds with rpmbuild (Debian's rpm package) and ships it all."""
    proc = subprocess.run(
        ["make", "-s", "rpm", f"PKG_BUILD={tmp_path / 'build'}", f"DIST={tmp_path / 'dist'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"make rpm failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    rpm = tmp_path / "dist" / f"pyrelctl-{__version__}-1.noarch.rpm"
    listing = subprocess.run(
        ["rpm", "-qlp", rpm], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "/usr/bin/pyrelctl" in listing
    assert any(p.endswith("/site-packages/pyrelctl/units/app.service.j2") for p in listing)
    assert any(p.startswith("/usr/share/man/man1/pyrelctl.1") for p in listing)
    for path in (
        "/usr/share/bash-completion/completions/pyrelctl",
        "/usr/share/zsh/site-functions/_pyrelctl",
        "/usr/share/fish/vendor_completions.d/pyrelctl.fish",
    ):
        assert path in listing
    requires = subprocess.run(
        ["rpm", "-qpR", rpm], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "python3dist(pystemd) >= 0.11" in requires
    assert "systemd >= 247" in requires
