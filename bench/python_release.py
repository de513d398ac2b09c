"""Benchmark of python releases (issue 5): install time and cold start. Not a test.

    .venv/bin/python bench/python_release.py [--runs N]

In one run, on this host (as root: the cold starts need a booted systemd):

1. build examples/pyshop with `pyrelctl build` (timed once, for reference);
2. install time, median of N: `pyrelctl --root DIR install --no-start` of the
   release (checksums, unpack, venv, offline install, bytecode, bin/ script)
   against `python3 -m venv` + `pip install --no-index --find-links` of the
   same wheelhouse into a fresh venv (pip's defaults: with ensurepip, compiling);
3. cold start, median of N: `systemctl start` to active (InactiveExit to
   ActiveEnter, i.e. until READY=1) of the installed release, against the
   same app run from its source tree (`python -m pyshop.server`, src/ on
   PYTHONPATH, read-only) under the same unit settings, with its
   dependencies in a venv made by `pip install` (compiled), and in one made
   with `pip install --no-compile` (nothing precompiled).

Ratios are against the baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.machine import Machine  # noqa: E402  # after the path is set
from devtools.proc import run  # noqa: E402

EXAMPLE = REPO / "examples" / "pyshop"
PYRELCTL = REPO / ".venv" / "bin" / "pyrelctl"
PYTHON = "/usr/bin/python3"
#: pip must not use this host's configuration (index mirrors, constraints).
PIP_ENV = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1"}


def median_of(runs: int, once: Callable[[], float]) -> tuple[float, list[float]]:
    samples = [once() for _ in range(runs)]
    return statistics.median(samples), samples


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_install(artifact: Path, work: Path, runs: int) -> dict[str, tuple[float, list[float]]]:
    wheelhouse = work / "unpacked"
    with tarfile.open(artifact) as tar:
        tar.extractall(wheelhouse)  # our own artifact, just built
    counter = iter(range(10_000))

    def release() -> float:
        root = work / f"root-{next(counter)}"
        root.mkdir()
        return timed(
            lambda: run([PYRELCTL, "-q", "--root", root, "install", "--no-start", artifact])
        )

    def pip_baseline() -> float:
        venv = work / f"venv-{next(counter)}"

        def install() -> None:
            run([PYTHON, "-m", "venv", venv])
            run(
                [venv / "bin/pip", "install", "-q", "--no-index", "--find-links",
                 wheelhouse / "wheelhouse", "pyshop"],
                env=PIP_ENV,
            )  # fmt: skip

        return timed(install)

    return {"release": median_of(runs, release), "pip": median_of(runs, pip_baseline)}


def _source_unit(release_unit: str, deps: str) -> str:
    """The release's unit, rewritten to run the source tree: same sandbox, same type."""
    out = []
    renamed = ("User", "StateDirectory", "RuntimeDirectory", "LogsDirectory", "SyslogIdentifier")
    for line in release_unit.splitlines():
        key, sep, _value = line.partition("=")
        if sep and key in renamed:
            line = f"{key}=pyshop-src"
        elif sep and key == "ExecStart":
            line = f"ExecStart={deps}/bin/python -m pyshop.server"
        elif sep and key == "WorkingDirectory":
            line = "WorkingDirectory=/srv/pyshop-src"
        elif sep and key == "EnvironmentFile":
            continue
        out.append(line)
        if line == "[Service]":
            # What bin/pyshop start exports, plus the source tree on the path.
            out.append(
                "Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 "
                "PYTHONPATH=/srv/pyshop-src/src PYSHOP_BIND=127.0.0.1:8000"
            )
    return "\n".join(out) + "\n"


def start_seconds(machine: Machine, unit: str) -> float:
    machine.systemctl("stop", unit)
    machine.systemctl("start", unit)
    props = machine.systemctl(
        "show", "-p", "InactiveExitTimestampMonotonic,ActiveEnterTimestampMonotonic", unit
    ).stdout
    values = dict(line.split("=", 1) for line in props.split())
    return (
        int(values["ActiveEnterTimestampMonotonic"]) - int(values["InactiveExitTimestampMonotonic"])
    ) / 1e6


def bench_start(
    artifact: Path, work: Path, runs: int, machine: Machine
) -> dict[str, tuple[float, list[float]]]:
    wheelhouse = work / "unpacked" / "wheelhouse"
    for name, extra in (("deps", []), ("deps-nocompile", ["--no-compile"])):
        run([PYTHON, "-m", "venv", "--without-pip", work / name])
        run(
            [PYTHON, "-m", "pip", "--python", work / name / "bin/python", "install", "-q",
             "--no-index", "--find-links", wheelhouse, *extra, "flask", "gunicorn",
             "pyrelctl-runtime"],
            env=PIP_ENV,
        )  # fmt: skip
    shutil.copytree(
        EXAMPLE, work / "src-tree", ignore=shutil.ignore_patterns("__pycache__", "dist")
    )

    pyrelctl = [os.fspath(PYRELCTL)]
    machine.run([*pyrelctl, "install", "--no-start", artifact])
    # Outside /tmp (PrivateTmp hides it) and read-only to the service, as the release is.
    machine.run(["mkdir", "-p", "/srv"])
    for name in ("deps", "deps-nocompile"):
        machine.run(["cp", "-a", work / name, f"/srv/{name}"])
    machine.run(["cp", "-a", work / "src-tree", "/srv/pyshop-src"])
    release_unit = machine.run([*pyrelctl, "unit", "pyshop"]).stdout
    release_unit = "\n".join(
        line for line in release_unit.splitlines() if not line.startswith("# /")
    )
    for name in ("deps", "deps-nocompile"):
        machine.run(
            ["tee", f"/etc/systemd/system/pyshop-{name}.service"],
            input=_source_unit(release_unit, f"/srv/{name}"),
        )
    machine.systemctl("daemon-reload")

    results = {}
    for label, unit in (
        ("release", "pyshop"),
        ("source, deps compiled", "pyshop-deps"),
        ("source, nothing compiled", "pyshop-deps-nocompile"),
    ):
        start_seconds(machine, unit)  # warm the page cache alike for all
        results[label] = median_of(runs, functools.partial(start_seconds, machine, unit))
        machine.systemctl("stop", unit)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per measurement (median)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pyrelctl-bench-"))
    try:
        started = time.perf_counter()
        out = run([PYRELCTL, "--json", "build", EXAMPLE, "-o", work / "dist"])
        build_s = time.perf_counter() - started
        artifact = Path(json.loads(out.stdout)["artifact"])
        install = bench_install(artifact, work, args.runs)
        with Machine.boot(f"pyrelctl-bench-{os.getpid()}", [REPO, work], work / "nspawn.log") as m:
            start = bench_start(artifact, work, args.runs, m)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"pyrelctl build of examples/pyshop: {build_s:.2f} s (once, pip cache warm)")
    print(f"\ninstall, median of {args.runs} (lower is better; ratio = release / baseline)")
    release, pip = install["release"][0], install["pip"][0]
    print(f"  {'pyrelctl install --no-start (release)':44s} {release:7.3f} s")
    print(f"  {'python3 -m venv + pip install (baseline)':44s} {pip:7.3f} s   {release / pip:.2f}")
    print(
        f"\ncold start to READY=1, median of {args.runs} (lower is better; ratio = release / this)"
    )
    release = start["release"][0]
    for label, (value, _samples) in start.items():
        ratio = "" if label == "release" else f"   {release / value:.2f}"
        print(f"  {label:44s} {value:7.3f} s{ratio}")
    if args.json:
        print(json.dumps({"install": install, "start": start, "build": build_s}, indent=1))


if __name__ == "__main__":
    main()
