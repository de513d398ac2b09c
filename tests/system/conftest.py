"""Fixtures of the system tests: one real systemd, booted once per session.

Every test here is marked `system`. Nothing is skipped: a host that cannot
boot the container (not root, no systemd-nspawn, no mix) makes the fixtures
fail with the reason, since CI must run these tests.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand
from devtools.releases import build_mix_app, make_generic_release

SYSTEM_TESTS = Path(__file__).resolve().parent
REPO_ROOT = SYSTEM_TESTS.parents[1]
VENV = REPO_ROOT / ".venv"

MIX_APP = "shop"
MIX_VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
MIX_FAILING = ("2.0.0",)


# tryfirst: the marker must be on the items before `-m 'not system'`
# deselects on it (pytest's own hook for that runs in this same phase).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/system as `system`."""
    for item in items:
        if item.path.resolve().is_relative_to(SYSTEM_TESTS):
            item.add_marker(pytest.mark.system)


def _venv_binds() -> list[Path]:
    """What the container needs besides the checkout to run the venv's Python."""
    cfg = VENV / "pyvenv.cfg"
    if not cfg.is_file():
        pytest.fail(f"no virtualenv at {VENV}: run `make venv`")
    home = next(
        (
            line.partition("=")[2].strip()
            for line in cfg.read_text().splitlines()
            if line.partition("=")[0].strip() == "home"
        ),
        "",
    )
    # The container shares only the host's /usr: a venv made from another
    # interpreter (pyenv, conda) has its Python outside it and fails inside.
    if not Path(home).resolve().is_relative_to("/usr"):
        pytest.fail(
            f"{VENV} was made with the Python in {home!r}, which the container cannot see; "
            "recreate it from /usr/bin/python3: rm -rf .venv && make venv"
        )
    real = VENV.resolve()
    return [] if real.is_relative_to(REPO_ROOT) else [real]


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of the session bound into the machine at the same path."""
    return tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="session")
def machine(scratch: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """A systemd booted in a container for the whole session, stopped at its end.

    The checkout (with its .venv) and `scratch` are bound at the same paths
    inside. The boot log stays outside, in its own temp dir.
    """
    log = tmp_path_factory.mktemp("machine") / "nspawn.log"
    booted = Machine.boot(
        f"pyrelctl-test-{os.getpid()}",
        [REPO_ROOT, *_venv_binds(), scratch],
        log,
    )
    try:
        yield booted
    finally:
        booted.stop()


@pytest.fixture(scope="session")
def mix_artifacts(scratch: Path) -> dict[str, Path]:
    """Tarballs of the mix app `shop`: version -> path; 2.0.0 crashes at start."""
    return build_mix_app(scratch / "mix", MIX_VERSIONS, name=MIX_APP, failing=MIX_FAILING)


@pytest.fixture
def make_release(scratch: Path) -> Callable[..., Path]:
    """`make_generic_release` writing into a fresh directory of this test under scratch.

    Call as `make_release(name="hello", version="1.0.0", behaviour="crash")`.
    """
    parent = scratch / "generic"
    parent.mkdir(exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="release-", dir=parent))
    return functools.partial(make_generic_release, dest)


@pytest.fixture(scope="session")
def pyrelctl(machine: Machine) -> MachineCommand:
    """Runs the venv's `pyrelctl ARGS` inside the machine; never raises on failure.

    `pyrelctl("status", input=None, timeout=120, env=None)` returns the
    CompletedProcess (returncode, stdout, stderr as text).
    """
    entry_point = VENV / "bin" / "pyrelctl"
    if not entry_point.is_file():
        pytest.fail(f"{entry_point} is missing: run `make venv`")
    return MachineCommand(machine, (os.fspath(entry_point),))


@dataclass(frozen=True)
class Checkout:
    """Where the machine sees this checkout, and a Python there that runs its devtools."""

    root: Path
    python: Path


@pytest.fixture(scope="session")
def checkout() -> Checkout:
    """The checkout bound into the machine at its own path, with the venv's Python.

    The Debian 13 tier (test_trixie.py) points it at its clean copy and trixie's python3.
    """
    return Checkout(REPO_ROOT, VENV / "bin" / "python")


@pytest.fixture
def cleanup(pyrelctl: MachineCommand) -> Iterator[Callable[[str], None]]:
    """Register app names to uninstall (with --purge) after the test."""
    apps: list[str] = []
    yield apps.append
    for app in apps:
        pyrelctl("uninstall", "--purge", app)
