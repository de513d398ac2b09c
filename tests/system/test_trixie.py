"""Debian 13 (trixie) as the host: systemd 257, Python 3.13, OTP 27 / Elixir 1.18.

Debian 13 is Debian's stable release, and users upgrade their hosts to it.
This tier boots a real trixie root (built from Debian's archive with
mmdebstrap and cached: devtools.rootfs) with this machine's
systemd-nspawn, cgroup v2 only as on a real trixie host, on a
copy-on-write overlay so the cached root stays as built. One container
serves the whole module. In it, as a new user would:

* pyrelctl installed the README's ways with trixie's own Python, pip and
  pipx (`python3 -m venv /opt/pyrelctl-venv`, `pip install .` of a clean
  copy of the checkout: pystemd compiles against systemd 257's libsystemd;
  `pipx install .`), and `pyrelctl doctor` there;
* a mix release built there with trixie's Elixir;
* the system tests that matter most for a host's behaviour, the very
  functions Debian 12 runs (class `TestOnDebian13`, which points the
  `machine`, `pyrelctl` and `mix_artifacts` fixtures at trixie): install,
  upgrade, rollback, a failed deploy (exit 3, restored), overlap under
  load, config, the watch window, `systemd-analyze security`, refused
  prefixes; then the CLI's hostile-archive corpus against trixie's
  tarfile, and the offline tiers (tests/unit, tests/cli) under Python 3.13;
* releases across hosts: one built on Debian 12 (OTP 25, ERTS included)
  serves on Debian 13, and one built on Debian 13 on Debian 12 fails to
  start there with the reason (its ERTS needs a newer glibc) in pyrelctl's
  error.

The container shares the host's network namespace, like the install-path
tests (docs/testing.md): pip reaches PyPI from inside. So ports opened
inside are the host's for the module's length.

No network, no root: the fixture fails (never skips), as CI must run this.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.machine import Machine, MachineCommand
from devtools.newhost import clean_checkout, step, trust_host_authorities
from devtools.proc import DevtoolsError
from devtools.releases import build_mix_app
from devtools.rootfs import TRIXIE, ensure_root
from pyrelctl.release import Kind
from tests.cli.test_bad_input import BAD
from tests.system import (
    test_config,
    test_deploy,
    test_grants,
    test_hardening,
    test_mix_logs,
    test_overlap,
    test_procs_units,
    test_pull,
    test_security,
    test_watch,
)
from tests.system.conftest import MIX_APP, MIX_FAILING, MIX_VERSIONS, Checkout
from tests.system.test_deb import DEB, deb_dir  # noqa: F401 (a fixture, used by name)

# The reused tests' own fixtures, for TestOnDebian13 to run them (pytest finds
# fixtures by the names a module holds).
from tests.system.test_grants import granted_host  # noqa: F401 (a fixture, used by name)
from tests.system.test_overlap import app, serving  # noqa: F401 (fixtures, used by name)
from tests.system.test_procs_units import procs_app, releases  # noqa: F401 (fixtures)
from tests.system.test_pull import served  # noqa: F401 (a fixture, used by name)
from tests.unit.test_procs_units import analyze_verify, rendered, verify_tables

VENV = "/opt/pyrelctl-venv"


@dataclass(frozen=True)
class Trixie:
    """The booted Debian 13 and a clean copy of the checkout bound into it."""

    machine: Machine
    checkout: Path
    work: Path  # bound in at the same path


@pytest.fixture(scope="module")
def trixie(scratch: Path) -> Iterator[Trixie]:
    """Debian 13 booted for this module (cgroup v2 only, the host's network)."""
    started = time.monotonic()
    try:
        root = ensure_root(TRIXIE)
    except DevtoolsError as e:
        # Not a skip: a host that cannot build the root must not pass CI.
        pytest.fail(f"no Debian 13 root for the trixie tier: {e}")
    print(f"debian 13: root {root}: {time.monotonic() - started:.1f} s")
    # Not under pytest's base temp directory, which is 0700: a clone lives
    # where other users can reach it, and the offline tiers run as some.
    work = Path(tempfile.mkdtemp(prefix="pyrelctl-trixie-", dir="/tmp"))
    work.chmod(0o755)
    checkout = clean_checkout(work / "pyrelctl")
    machine = Machine.boot(
        f"pyrelctl-trixie-{os.getpid()}",
        [work, scratch],
        work / "nspawn.log",
        lower=root,
        unified_cgroup=True,
        private_network=False,
    )
    try:
        trust_host_authorities(machine, work)
        yield Trixie(machine, checkout, work)
        # What the tier wrote: the overlay's upper layer is a tmpfs (memory).
        used = machine.run(["df", "--output=used", "-h", "/"], check=False).stdout.split()
        print(f"debian 13: written to the overlay: {used[-1:]}")
        copy = subprocess.run(["du", "-sh", work], capture_output=True, text=True, check=False)
        print(f"debian 13: the checkout copy with its venv: {copy.stdout.split()[:1]}")
    finally:
        machine.stop()
        # Only once the container is gone (nothing of it is mounted there).
        shutil.rmtree(work)


@pytest.fixture(scope="module")
def trixie_pyrelctl(trixie: Trixie) -> MachineCommand:
    """pyrelctl installed the README's way with trixie's python3 and pip."""
    machine = trixie.machine
    step(machine, "python3 -m venv", ["python3", "-m", "venv", VENV])
    step(machine, "pip install .", [f"{VENV}/bin/pip", "install", "."], cwd=trixie.checkout)
    machine.run(["ln", "-s", f"{VENV}/bin/pyrelctl", "/usr/local/bin/pyrelctl"])
    # The README's path, absolute: the reused tests put it into unit files too.
    return MachineCommand(machine, ("/usr/local/bin/pyrelctl",))


@pytest.fixture(scope="module")
def trixie_mix(trixie: Trixie, scratch: Path) -> dict[str, Path]:
    """The `shop` tarballs of conftest's mix_artifacts, built with trixie's Elixir and OTP."""
    started = time.monotonic()
    built = build_mix_app(
        scratch / "mix-trixie",
        MIX_VERSIONS,
        name=MIX_APP,
        failing=MIX_FAILING,
        runner=trixie.machine.run,
    )
    print(f"debian 13: mix release x{len(built)}: {time.monotonic() - started:.1f} s")
    return built


def test_the_host_is_what_debian_13_users_have(trixie: Trixie) -> None:
    """What differs from Debian 12 (systemd 252, Python 3.11, OTP 25, hybrid cgroups)."""
    run = trixie.machine.run
    assert 'VERSION_ID="13"' in run(["cat", "/etc/os-release"]).stdout
    assert run(["systemctl", "--version"]).stdout.startswith("systemd 257 ")
    assert run(["python3", "--version"]).stdout.startswith("Python 3.13.")
    otp_release = "io:put_chars(erlang:system_info(otp_release)), halt()."
    otp = run(["erl", "-noshell", "-eval", otp_release])
    assert otp.stdout == "27"
    assert "Elixir 1.18." in run(["elixir", "--version"]).stdout
    # cgroup v2 only, as a host booted with systemd 257 has by default.
    assert run(["stat", "-fc", "%T", "/sys/fs/cgroup"]).stdout.strip() == "cgroup2fs"
    assert run(["systemctl", "is-system-running"]).stdout.strip() == "running"


def test_doctor_knows_debian_13(trixie_pyrelctl: MachineCommand) -> None:
    proc = trixie_pyrelctl("--json", "doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ok = {f["check"]: f["message"] for f in json.loads(proc.stdout)["findings"]}
    assert ok["distribution"] == "Debian GNU/Linux 13 (trixie), a tested host", ok
    assert ok["systemd-version"].startswith("systemd 257"), ok


def test_pipx_with_trixies_pipx(trixie: Trixie) -> None:
    """README: PIPX_HOME=/opt/pipx ... pipx install . (pipx 1.7 here; the bin
    directory is pipx's own so as not to replace the venv's pyrelctl)."""
    machine = trixie.machine
    env = {"PIPX_HOME": "/opt/pipx", "PIPX_BIN_DIR": "/opt/pipx/bin"}
    assert machine.run(["pipx", "--version"]).stdout.startswith("1.7.")
    step(machine, "pipx install .", ["pipx", "install", "."], cwd=trixie.checkout, env=env)
    proc = machine.run(["/opt/pipx/bin/pyrelctl", "--json", "doctor"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["problems"] == 0


# deb_dir: test_deb.py's fixture (`make deb` on this host), imported above.
def test_the_deb_on_trixies_own_python_packages(trixie: Trixie, deb_dir: Path) -> None:  # noqa: F811
    """README: apt-get install ./dist/pyrelctl_VERSION_all.deb, the package built on
    Debian 12 (`make deb`), on Debian 13's python3-pystemd 0.13, -click, -jinja2."""
    machine = trixie.machine
    deb = trixie.work / DEB
    shutil.copyfile(deb_dir / "dist" / DEB, deb)
    out = step(
        machine,
        "apt-get install ./pyrelctl.deb",
        # Not --no-download: apt then fails on a local .deb ("Pathname to
        # install is not absolute", apt 3.0). Nothing is downloaded anyway:
        ["apt-get", "install", "-y", deb],
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )
    # ...every dependency is in the root already, Debian 13's own.
    assert "0 upgraded, 1 newly installed, 0 to remove" in out, out
    where = machine.run(
        ["/usr/bin/python3", "-c", "import pyrelctl, pystemd; print(pystemd.__file__)"]
    )
    assert where.stdout.startswith("/usr/lib/python3/dist-packages/pystemd/"), where.stdout
    proc = machine.run(["/usr/bin/pyrelctl", "--json", "doctor"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["problems"] == 0


class TestOnDebian13:
    """The Debian 12 system tests that matter most for a host, run on Debian 13.

    The fixtures below shadow conftest's for these tests only: `machine` is
    the trixie container, `pyrelctl` the one installed there with trixie's
    pip, `mix_artifacts` the releases built there.
    """

    @pytest.fixture
    def machine(self, trixie: Trixie) -> Machine:
        return trixie.machine

    @pytest.fixture
    def pyrelctl(self, trixie_pyrelctl: MachineCommand) -> MachineCommand:
        return trixie_pyrelctl

    @pytest.fixture
    def mix_artifacts(self, trixie_mix: dict[str, Path]) -> dict[str, Path]:
        return trixie_mix

    @pytest.fixture
    def checkout(self, trixie: Trixie) -> Checkout:
        # The clean copy bound in, run by trixie's python3 (devtools is stdlib only).
        return Checkout(trixie.checkout, Path("/usr/bin/python3"))

    # install, upgrade, plain systemctl, rollback both ways, history, status
    test_mix_lifecycle = staticmethod(test_deploy.test_mix_release_lifecycle)
    # a failed upgrade: exit 3, the previous release restored and running
    test_failed_upgrade = staticmethod(test_deploy.test_failed_mix_upgrade_rolls_back_by_itself)
    # overlap deploys under steady load: no request fails, a crashing release never serves
    test_overlap_under_load = staticmethod(
        test_overlap.test_no_request_waits_or_reaches_a_failing_release
    )
    test_config_values = staticmethod(
        test_config.test_values_reach_the_process_exactly_and_nowhere_else
    )
    test_config_rejected = staticmethod(
        test_config.test_a_value_the_app_rejects_is_undone_by_itself
    )
    test_watch_rollback = staticmethod(
        test_watch.test_a_release_that_crashes_after_its_grace_is_rolled_back_by_the_watch
    )
    # Elixir 1.18's Logger writes through its own :logger handler, not a backend
    test_mix_log_priorities = staticmethod(
        test_mix_logs.test_log_levels_of_a_mix_release_are_journal_priorities
    )
    # systemd 257's `systemd-analyze security` rates more than 252's does
    test_mix_exposure = staticmethod(test_hardening.test_mix_release_is_hardened_and_still_serves)
    test_generic_exposure = staticmethod(test_hardening.test_generic_release_exposure)
    test_prefix_refused = staticmethod(
        test_security.test_a_prefixed_start_command_is_refused_and_nothing_runs
    )
    test_host_names_refused = staticmethod(test_security.test_names_of_the_host_are_refused)
    # delegated deploys: the socket-activated root helper, a user's and a group's grant
    test_grant_deploys = staticmethod(
        test_grants.test_a_granted_user_deploys_its_app_and_nothing_else
    )
    test_grant_group = staticmethod(test_grants.test_a_group_grant_follows_the_user_database)
    # install URL: the refusals (size, stall, redirect, TLS, signature) and the docs' timer
    test_pull_refusals = staticmethod(
        test_pull.test_a_pull_installs_a_good_release_and_refuses_bad_ones_with_nothing_written
    )
    test_pull_timer = staticmethod(
        test_pull.test_the_docs_pull_timer_deploys_and_stops_after_a_failed_release
    )
    # processes and timers: deployed, failed, rolled back, configured with the app
    test_procs_deploy = staticmethod(
        test_procs_units.test_processes_and_timers_deploy_fail_and_roll_back_with_the_app
    )


@pytest.mark.parametrize("kind", [Kind.MIX, Kind.PYTHON, Kind.GENERIC])
def test_systemd_257_verifies_the_units_of_processes_and_timers(
    trixie: Trixie, scratch: Path, kind: Kind
) -> None:
    """tests/unit's `systemd-analyze verify` check, with trixie's systemd-analyze:
    the rendered units of a release's processes and timers draw no line at all."""
    where = Path(tempfile.mkdtemp(prefix=f"verify-{kind}-", dir=scratch))
    said = analyze_verify(
        where,
        rendered(kind, verify_tables(kind)),
        lambda argv: trixie.machine.run(argv, check=False),
    )
    assert said == []


_REFUSE_ALL = """
import json, subprocess, sys
results = {}
for case, path in json.loads(sys.argv[1]).items():
    p = subprocess.run(["pyrelctl", "install", path], capture_output=True, text=True)
    results[case] = [p.returncode, p.stdout, p.stderr]
print(json.dumps(results))
"""


def _state(machine: Machine) -> str:
    return machine.run(
        ["sh", "-c", "ls -R /opt /etc/systemd/system /var/lib/pyrelctl 2>&1 | sort"]
    ).stdout


def test_hostile_archives_are_refused_by_trixies_python(
    trixie: Trixie, trixie_pyrelctl: MachineCommand, scratch: Path
) -> None:
    """The CLI tests' hostile corpus, installed for real on Python 3.13's tarfile:
    each one refused with exit 2 and its reason, nothing written (gh-143933)."""
    work = scratch / "hostile-trixie"
    work.mkdir()
    paths = {}
    for bad in BAD:
        case = work / bad.id
        case.mkdir()
        paths[bad.id] = os.fspath(bad.build(case))
    machine = trixie.machine
    before = _state(machine)
    out = machine.run(["python3", "-c", _REFUSE_ALL, json.dumps(paths)], timeout=600).stdout
    results = json.loads(out)
    wrong = {}
    for bad in BAD:
        code, stdout, stderr = results[bad.id]
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        if code != 2 or stdout or len(errors) != 1 or bad.word not in errors[0]:
            wrong[bad.id] = (code, bad.word, stderr[-300:])
    assert not wrong, wrong
    assert _state(machine) == before


def test_the_offline_tiers_pass_under_python_3_13(trixie: Trixie) -> None:
    """tests/unit and tests/cli with trixie's Python 3.13, in a venv made as `make venv` does.

    Here systemd is PID 1, so `pyrelctl build` run by root runs its steps as a
    dynamic user with a private /tmp (docs/python.md): the interpreter and the
    tests' find-links must live outside /tmp, as on any such host. So the
    checkout is copied to /srv inside the container, and TMPDIR (pytest's and
    tempfile's temporary directories) points there too.
    """
    machine = trixie.machine
    checkout, tmp = Path("/srv/pyrelctl-offline"), Path("/srv/pyrelctl-offline-tmp")
    machine.run(["sh", "-c", f"rm -rf {checkout} {tmp} && cp -a {trixie.checkout} {checkout} "
                 f"&& mkdir -m 1777 {tmp}"])  # fmt: skip
    # apt's lists, which `make test` leaves fetched on a host (test_packaging asks apt).
    step(machine, "apt-get update", ["apt-get", "-qq", "update"])
    venv = checkout / ".venv"
    # What `make venv` does, with trixie's python3.
    step(machine, "python3 -m venv .venv", ["python3", "-m", "venv", venv])
    step(machine, "pip install --upgrade pip", [venv / "bin/pip", "install", "-U", "pip"])
    step(
        machine,
        "pip install -e .[test,ansible]",
        [venv / "bin/pip", "install", "-e", ".[test,ansible]"],
        cwd=checkout,
    )
    proc = machine.run(
        [venv / "bin/pytest", "-q", "-p", "no:cacheprovider", "tests/unit", "tests/cli"],
        cwd=checkout,
        env={"TMPDIR": str(tmp)},
        timeout=900,
        check=False,
    )
    summary = proc.stdout.strip().splitlines()[-1:] or [proc.stderr[-500:]]
    print(f"debian 13: pytest tests/unit tests/cli: {summary[0]}")
    assert proc.returncode == 0, proc.stdout[-6000:]
    machine.run(["rm", "-rf", str(checkout), str(tmp)])


def test_a_release_built_on_debian_12_serves_on_debian_13(
    trixie: Trixie, trixie_pyrelctl: MachineCommand, mix_artifacts: dict[str, Path]
) -> None:
    """OTP 25 with its own ERTS, built on this Debian 12 host: glibc 2.41 runs it."""
    name = "shop-from-12"
    proc = trixie_pyrelctl("install", "--app", name, mix_artifacts["1.0.0"], "--grace", "2")
    try:
        assert proc.returncode == 0, proc.stderr
        trixie.machine.wait_for_journal(name, "shop 1.0.0 started")
        rpc = trixie_pyrelctl("rpc", name, "IO.puts(:erlang.system_info(:otp_release))")
        assert rpc.returncode == 0 and rpc.stdout.strip() == "25", rpc.stdout + rpc.stderr
    finally:
        trixie_pyrelctl("uninstall", "--purge", name)


def test_a_release_built_on_debian_13_says_why_it_cannot_start_on_debian_12(
    machine: Machine, pyrelctl: MachineCommand, trixie_mix: dict[str, Path]
) -> None:
    """OTP 27's ERTS from trixie needs glibc 2.38+; Debian 12 has 2.36. The first
    install fails (exit 1) and pyrelctl's error carries the loader's reason."""
    name = "shop-from-13"
    try:
        proc = pyrelctl("install", "--app", name, trixie_mix["1.0.0"], "--grace", "2")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "GLIBC_2." in proc.stderr and "not found" in proc.stderr, proc.stderr
        why = [line for line in proc.stderr.splitlines() if "GLIBC" in line or "error:" in line]
        print("debian 12 on a release built on 13:", *why, sep="\n  ")
        assert machine.systemctl("is-active", name, check=False).stdout.strip() != "active"
    finally:
        pyrelctl("uninstall", "--purge", name)
