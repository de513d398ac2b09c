"""The install paths the README names, taken as a new user takes them, end to end.

Each path gets a systemd container of its own (Recipe A: the host's /usr
read-only, everything else a fresh tmpfs), made to look like a new Debian
12 host (devtools.newhost: an empty /usr/local and /root, no pip
configuration, no pip cache at all) with a clean copy of the checkout: the
development venv is neither bound in nor used. There, as root:

* venv: `/usr/bin/python3 -m venv` (Debian's pip 23.0.1, no `wheel`, left
  as it is), `pip install .`, a link in /usr/local/bin;
* pipx: Debian's pipx 1.1, `PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin
  pipx install .`;

and then, with that pyrelctl, `pyrelctl build examples/pyshop`,
`pyrelctl install` of the result and an HTTP request it must answer. The
.deb is the third path, in test_deb.py (its container needs a writable
root for apt, and it shares the .deb `make deb` built once).

These containers share the host's network namespace (no --private-network):
pip reaches PyPI from inside, as on a real host. Each serves on a port
free on the host at that moment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.machine import Machine
from devtools.newhost import (
    REPO_ROOT,
    clean_checkout,
    free_port,
    http_get,
    make_new_host,
    step,
)

APP = "pyshop"


def build_install_serve(machine: Machine, pyrelctl: str, checkout: Path) -> dict[str, object]:
    """`pyrelctl build examples/pyshop`, install the tarball, check it answers; its status."""
    out = step(
        machine,
        "pyrelctl build examples/pyshop",
        [pyrelctl, "--json", "build", "examples/pyshop", "-o", "/tmp/dist"],
        cwd=checkout,
    )
    artifact = json.loads(out)["artifact"]
    assert artifact == "/tmp/dist/pyshop-1.0.0.tar.gz"
    port = free_port()
    step(
        machine,
        "pyrelctl install",
        [pyrelctl, "install", artifact, "--listen", f"127.0.0.1:{port}"],
        timeout=300,
    )
    health = json.loads(http_get(machine, f"http://127.0.0.1:{port}/healthz"))
    assert health == {"status": "ok", "version": "1.0.0"}
    # README: "pyrelctl doctor then checks the host", and completion from the CLI.
    doctor = machine.run([pyrelctl, "doctor", APP], check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"{APP}.service is active" in doctor.stdout, doctor.stdout
    for shell, needle in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")):
        script = machine.run([pyrelctl], env={"_PYRELCTL_COMPLETE": f"{shell}_source"}).stdout
        assert needle in script, (shell, script[:300])
    status: dict[str, object] = json.loads(
        step(machine, "status", [pyrelctl, "--json", "status", APP])
    )
    return status


#: What README and docs/packaging.md say a pip or pipx install needs from Debian
#: (pystemd is compiled from its sdist). The containers' /usr is the host's:
#: these are what they have, and the tests pass with them.
BUILD_PACKAGES = ("libsystemd-dev", "pkg-config", "gcc", "python3-dev", "python3-venv")


def test_the_documented_packages_are_what_the_paths_ran_with() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    packaging = (REPO_ROOT / "docs" / "packaging.md").read_text()
    for package in (*BUILD_PACKAGES, "pipx"):
        assert package in readme and package in packaging, package
        state = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        ).stdout
        assert state == "install ok installed", (package, state)


@pytest.fixture
def new_host(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Machine, Path]]:
    """A new-user container with a clean checkout at a path bound in."""
    checkout = clean_checkout(tmp_path / "pyrelctl")
    assert not (checkout / ".venv").exists()
    name = f"pyrelctl-{request.node.name.removeprefix('test_')[:20]}-{os.getpid()}".replace(
        "_", "-"
    )
    machine = Machine.boot(name, [tmp_path], tmp_path / "nspawn.log", private_network=False)
    try:
        make_new_host(machine, tmp_path)
        yield machine, checkout
    finally:
        machine.stop()


def test_venv_with_debians_pip(new_host: tuple[Machine, Path]) -> None:
    """README: python3 -m venv /opt/pyrelctl-venv && .../pip install . && ln -s ..."""
    machine, checkout = new_host
    venv = "/opt/pyrelctl-venv"
    step(machine, "python3 -m venv", ["/usr/bin/python3", "-m", "venv", venv])
    # Debian's pip as it comes, without the wheel package: issue 16's case.
    pip = step(machine, "pip --version", [f"{venv}/bin/pip", "--version"])
    assert pip.startswith("pip 23.0.1 "), pip
    no_wheel = machine.run([f"{venv}/bin/python", "-c", "import wheel"], check=False)
    assert no_wheel.returncode != 0
    step(machine, "pip install .", [f"{venv}/bin/pip", "install", "."], cwd=checkout)
    step(machine, "ln -s", ["ln", "-s", f"{venv}/bin/pyrelctl", "/usr/local/bin/pyrelctl"])
    assert (
        machine.run(["sh", "-c", "command -v pyrelctl"]).stdout.strip() == "/usr/local/bin/pyrelctl"
    )
    status = build_install_serve(machine, "pyrelctl", checkout)
    assert status["current"] == "1.0.0"


def test_pipx(new_host: tuple[Machine, Path]) -> None:
    """README: PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install ."""
    machine, checkout = new_host
    assert machine.run(["pipx", "--version"]).stdout.strip() == "1.1.0"  # Debian 12's
    step(
        machine,
        "pipx install .",
        ["pipx", "install", "."],
        cwd=checkout,
        env={"PIPX_HOME": "/opt/pipx", "PIPX_BIN_DIR": "/usr/local/bin"},
    )
    where = machine.run(["readlink", "-f", "/usr/local/bin/pyrelctl"]).stdout.strip()
    assert where.startswith("/opt/pipx/venvs/pyrelctl/"), where
    status = build_install_serve(machine, "pyrelctl", checkout)
    assert status["current"] == "1.0.0"
