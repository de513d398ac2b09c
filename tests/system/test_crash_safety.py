"""SIGKILL at random moments of install and rollback never leaves a broken host."""

from __future__ import annotations

import json
import random
import tarfile
from collections.abc import Callable
from pathlib import Path

from devtools.machine import Machine, MachineCommand
from devtools.releases import make_generic_release

APP = "bulky"
FILES = 3000  # per release, besides release.toml and bin/bulky
RUNS = 50  # issue 6: at least 50 runs with random timing


def bulky_release(dest: Path, version: str) -> Path:
    """A generic release of a few thousand small files, as a tarball."""
    root = make_generic_release(dest, name=APP, version=version, tarball=False)
    data = root / "data"
    for i in range(FILES):
        sub = data / f"d{i % 30:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.txt").write_text(f"{version} {i}\n" * 8)
    archive = dest / f"{APP}-{version}.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return archive


def check_invariants(machine: Machine) -> str | None:
    """`current` points to a complete release (or does not exist yet); return its version."""
    link = machine.run(["readlink", f"/opt/{APP}/current"], check=False)
    if link.returncode != 0:
        return None
    target = link.stdout.strip()
    assert target.startswith("releases/") and "/" not in target.removeprefix("releases/"), target
    version = target.removeprefix("releases/")
    count = machine.run(
        ["sh", "-c", f"find /opt/{APP}/releases/{version}/data -type f | wc -l"]
    ).stdout.strip()
    assert count == str(FILES), f"current -> {target} holds {count} of {FILES} files"
    manifest = machine.run(["cat", f"/opt/{APP}/releases/{version}/release.toml"]).stdout
    assert f'version = "{version}"' in manifest
    # The configuration: current.env, if there, names a whole generation.
    config = f"/etc/pyrelctl/{APP}/config"
    gen = machine.run(["readlink", f"{config}/current.env"], check=False)
    if gen.returncode == 0:
        name = gen.stdout.strip()
        assert len(name) == 10 and name.endswith(".env") and name[:6].isdigit(), name
        text = machine.run(["cat", f"{config}/{name}"]).stdout
        assert text.startswith("# Generation") and text.endswith("\n"), text
        assert "RUN=" in text, text
    return version


def leftovers(machine: Machine) -> list[str]:
    out = machine.run(["ls", "-A", f"/opt/{APP}/releases"], check=False).stdout.split()
    return [name for name in out if name.startswith(".")]


def test_sigkill_during_install_and_rollback_keeps_current_complete(
    machine: Machine,
    pyrelctl: MachineCommand,
    scratch: Path,
    cleanup: Callable[[str], None],
) -> None:
    cleanup(APP)
    dest = scratch / "bulky"
    dest.mkdir()
    versions = [f"1.{i}" for i in range(4)]
    artifacts = {v: bulky_release(dest, v) for v in versions}
    assert pyrelctl("install", artifacts["1.0"], "--grace", "0.3").returncode == 0

    rng = random.Random(20261123)  # fixed seed: a failure can be replayed
    killed = 0
    for run in range(RUNS):
        if run % 5 == 2:
            argv = ["rollback", APP, "--grace", "0.3"]
        elif run % 5 == 4:
            argv = ["prune", APP, "--keep", "1"]
        elif run % 5 == 3:  # a configuration change is a deploy too (issue 18)
            argv = ["config", "set", APP, f"RUN={run}", "--keep", "2"]
        else:
            argv = ["install", str(artifacts[rng.choice(versions)]), "--grace", "0.3"]
        delay = rng.uniform(0.05, 1.5)
        proc = machine.run(
            ["timeout", "--signal=KILL", f"{delay:.3f}", str(pyrelctl.prefix[0]), *argv],
            check=False,
            timeout=120,
        )
        # 137 from timeout(1); nsenter re-raises its child's signal on itself (-9).
        killed += proc.returncode in (137, -9)
        # Right after the kill: current is whole, whatever was interrupted.
        check_invariants(machine)
        # The next command (a read) works, and a mutating one cleans up.
        assert pyrelctl("status", APP).returncode == 0
        assert pyrelctl("prune", APP, "--keep", "3").returncode == 0
        assert leftovers(machine) == []
        if check_invariants(machine) is None:  # killed before the first switch: start over
            assert pyrelctl("install", artifacts["1.0"], "--grace", "0.3").returncode == 0
        assert check_invariants(machine) is not None
    assert killed >= RUNS // 4, f"only {killed} of {RUNS} runs were interrupted"
    # After all that, the service runs the current release.
    assert machine.systemctl("is-active", APP, check=False).stdout.strip() in (
        "active",
        "activating",
    )


def test_sigkill_during_uninstall_is_finished_by_the_next_uninstall(
    machine: Machine, pyrelctl: MachineCommand, scratch: Path
) -> None:
    app = "gone"
    dest = scratch / "gone"
    dest.mkdir()
    rng = random.Random(7)
    for run in range(5):
        root = make_generic_release(dest, name=app, version=f"{run}.0", tarball=False)
        for i in range(FILES):
            (root / f"f{i:05d}").write_text("x\n")
        assert pyrelctl("install", root, "--grace", "0").returncode == 0, run
        delay = rng.uniform(0.05, 0.6)
        machine.run(
            ["timeout", "--signal=KILL", f"{delay:.3f}", str(pyrelctl.prefix[0]), "uninstall", app],
            check=False,
        )
        again = pyrelctl("uninstall", app)
        # Either the first one finished (exit 2: nothing left) or this one does.
        assert again.returncode in (0, 2), again.stderr
        assert machine.run(["test", "-e", f"/opt/{app}"], check=False).returncode == 1
        assert (
            machine.run(
                ["test", "-e", f"/etc/systemd/system/{app}.service"], check=False
            ).returncode
            == 1
        )


def test_concurrent_installs_are_serialised(
    machine: Machine,
    pyrelctl: MachineCommand,
    make_release: Callable[..., Path],
    cleanup: Callable[[str], None],
) -> None:
    app = "queued"
    cleanup(app)
    artifacts = [make_release(name=app, version=f"{i}.0") for i in range(3)]
    script = " & ".join(
        f"{pyrelctl.prefix[0]} install {a} --grace 0.5 >/dev/null 2>/tmp/q{i}.err"
        for i, a in enumerate(artifacts)
    )
    machine.run(["sh", "-c", f"{script} & wait"], timeout=120)
    waited = machine.run(["sh", "-c", "cat /tmp/q*.err"]).stdout
    assert "waiting for queued's lock" in waited  # someone had to wait, and said so
    history = json.loads(pyrelctl("--json", "history", app, check=True).stdout)["history"]
    # What each install said, should one of them be missing (seen once under load).
    assert sorted(r["to"] for r in history) == ["0.0", "1.0", "2.0"], waited
    assert all(r["result"] == "ok" for r in history)
    # Serialised: each install started from what the previous one left.
    assert [r["from"] for r in history][1:] == [r["to"] for r in history][:-1]


OVERLAP_APP = "killov"
OVERLAP_PORT = 18420
OVERLAP_RUNS = 12


def test_sigkill_mid_overlap_leaves_exactly_one_release_serving(
    machine: Machine,
    pyrelctl: MachineCommand,
    scratch: Path,
    cleanup: Callable[[str], None],
) -> None:
    """Killed at any moment of an overlap deploy (deploy/overlap.py): the next
    pyrelctl command leaves one release serving, in APP.service, and clients
    never see an error meanwhile."""
    from devtools.load import Load

    cleanup(OVERLAP_APP)
    url = f"http://127.0.0.1:{OVERLAP_PORT}/"
    extra = f'[socket]\nlisten = ["127.0.0.1:{OVERLAP_PORT}"]\n[health]\nhttp = "{url}"\n'
    dest = scratch / "killov"
    dest.mkdir()
    artifacts = [
        make_generic_release(
            dest,
            name=OVERLAP_APP,
            version=f"{i}.0",
            behaviour="serve",
            port=OVERLAP_PORT,
            extra_toml=extra,
        )
        for i in range(3)
    ]
    assert pyrelctl("install", artifacts[0], "--grace", "0").returncode == 0
    overlap_unit = f"{OVERLAP_APP}@overlap.service"
    rng = random.Random(20261203)
    load = Load(machine, url, scratch / "stop-killov-load")
    killed = 0
    try:
        for run in range(OVERLAP_RUNS):
            delay = rng.uniform(0.1, 2.5)
            argv = ["install", str(artifacts[run % 3]), "--grace", "1"]
            proc = machine.run(
                ["timeout", "--signal=KILL", f"{delay:.3f}", str(pyrelctl.prefix[0]), *argv],
                check=False,
                timeout=120,
            )
            killed += proc.returncode in (137, -9)
            assert pyrelctl("prune", OVERLAP_APP, "--keep", "3").returncode == 0
            state = machine.systemctl(
                "show", "-p", "ActiveState", "--value", overlap_unit
            ).stdout.strip()
            assert state == "inactive", f"run {run}: {overlap_unit} is {state}"
            gone = machine.run(["test", "-L", f"/opt/{OVERLAP_APP}/next"], check=False)
            assert gone.returncode != 0, f"run {run}: /opt/{OVERLAP_APP}/next is left"
            assert machine.systemctl("is-active", OVERLAP_APP).stdout.strip() == "active"
            link = machine.run(["readlink", f"/opt/{OVERLAP_APP}/current"]).stdout.strip()
            current = link.removeprefix("releases/")
            answer = machine.run(["python3", "-c", FETCH, url]).stdout.strip()
            assert answer == f"{OVERLAP_APP} {current}", f"run {run}: {answer} (current {current})"
    finally:
        summary = load.stop()
    assert killed >= OVERLAP_RUNS // 3, f"only {killed} of {OVERLAP_RUNS} runs were interrupted"
    assert summary["errors"] == [], summary["errors"][:5]


FETCH = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).read().decode())"
