"""pyrelctl against its floor, inside a real systemd (issue 7).

    .venv/bin/python -m bench [--runs N] [--json] [--only NAME[,NAME]]
                              [--scale-apps N] [--scale-releases N] [--plot FILE]

Run as root from a checkout. Boots one systemd container
(devtools.machine), re-runs this module inside it, and prints a table (or,
with --json, one JSON document) of medians over N runs, each with its ratio
to a baseline measured in the same run and, where issue 7 sets one, its
target as met / NOT met. The measurements (NAME for --only):

  status        pyrelctl status APP against systemctl status APP
  upgrade       pyrelctl install of the next version against bench/floor.sh
  rollback      pyrelctl rollback against bench/floor.sh's symlink swap + restart
  mix           upgrade and rollback of a real mix release (built in the run)
                against bench/floor.sh; its availability under load, as below
  availability  failed requests and latency under load through an upgrade,
                failed deploys and a rollback: no socket, restart with socket,
                the overlap strategy, and Capistrano deploying the same release
                over SSH (bench/capistrano.py), with their wall times
  scale         install, status and prune at 1x1, Nx1 and NxR apps x releases

Exit status: 0 when every measurement ran (whether or not its target was
met), 1 when one failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from bench.host import PYTHON, REPO, Host, boot, log
from bench.report import Report
from devtools.proc import wait_until

SECTIONS = ("status", "upgrade", "rollback", "mix", "availability", "scale")
#: Generous: the default run takes about 7 minutes.
INSIDE_TIMEOUT = 3600.0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _sections(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown measurement {', '.join(unknown) or text!r}; choose from {', '.join(SECTIONS)}"
        )
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runs", type=_positive, default=5, metavar="N", help="runs per figure (default 5)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--only",
        type=_sections,
        default=list(SECTIONS),
        metavar="NAME[,NAME]",
        help="run only these measurements",
    )
    parser.add_argument(
        "--scale-apps", type=_positive, default=50, metavar="N", help="apps at full scale (50)"
    )
    parser.add_argument(
        "--scale-releases",
        type=_positive,
        default=20,
        metavar="N",
        help="releases per app at full scale (20)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="write the latency-over-time picture of availability and mix to FILE "
        "(.svg or .png; needs the bench extra: pip install -e '.[bench]')",
    )
    # Set by the outer process for the one inside the container.
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--commit", default="", help=argparse.SUPPRESS)
    parser.add_argument("--command", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- outside: boot, run inside, relay ----------------------------------------


def _commit() -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


def outside(args: argparse.Namespace, argv: list[str]) -> int:
    inner_args = [
        "--runs",
        str(args.runs),
        "--only",
        ",".join(args.only),
        "--scale-apps",
        str(args.scale_apps),
        "--scale-releases",
        str(args.scale_releases),
        *(["--json"] if args.json else []),
        "--commit",
        _commit(),
        "--command",
        " ".join([".venv/bin/python", "-m", "bench", *argv]),
    ]
    # pyrelctl as installed runs from bytecode (pip, dpkg and rpm compile it);
    # a checkout edited since its last run would recompile each changed
    # module in every timed command (more so under PYTHONDONTWRITEBYTECODE).
    compileall.compile_dir(REPO / "pyrelctl", quiet=1)
    with tempfile.TemporaryDirectory(prefix="pyrelctl-bench-") as tmp:
        scratch = Path(tmp)
        if "availability" in args.only:
            from bench import capistrano

            # The peer's packages come from the host's apt, before the boot.
            reason = capistrano.prepare(scratch)
            if reason:
                log(f"capistrano cannot run: {reason}")
        # Drawn inside, into the scratch directory (the container's /tmp is its own).
        picture = scratch / f"picture{args.plot.suffix}" if args.plot else None
        plot_args = ["--plot", str(picture)] if picture else []
        log(f"booting a container (scratch {scratch})")
        with boot(f"pyrelctl-bench-{os.getpid()}", scratch) as machine:
            command = machine.enter_argv(
                [str(PYTHON), "-m", "bench", *inner_args, *plot_args, "--inside", str(scratch)],
                env={"PYTHONPATH": str(REPO)},
            )
            # stderr (progress) passes through; stdout is the result.
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
                timeout=INSIDE_TIMEOUT,
                check=False,
            )
        log("container stopped")
        if picture is not None and picture.is_file():
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, args.plot)
            log(f"picture written to {args.plot}")
    sys.stdout.write(result.stdout)
    return result.returncode


# -- inside the container ------------------------------------------------------


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    from bench import availability, load
    from pyrelctl.defaults import DEFAULT_GRACE

    meminfo = Path("/proc/meminfo").read_text().split()
    memory_kib = int(meminfo[meminfo.index("MemTotal:") + 1])
    systemd = subprocess.run(
        ["systemctl", "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    os_name = "unknown"
    for line in Path("/usr/lib/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip('"')
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": args.command,
        "commit": args.commit,
        "runs": args.runs,
        "only": args.only,
        "scale_apps": args.scale_apps,
        "scale_releases": args.scale_releases,
        "pyrelctl_default_grace_s": DEFAULT_GRACE,
        "load": {
            "rate_per_s": load.RATE,
            "request_timeout_s": load.REQUEST_TIMEOUT,
            "lead_s": availability.LEAD,
            "tail_s": availability.TAIL,
            "steady_s": availability.STEADY,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "memory": f"{memory_kib / 2**20:.1f} GiB",
            "kernel": platform.release(),
            "systemd": systemd,
            "os": os_name,
            "python": platform.python_version(),
        },
    }


def _notes(args: argparse.Namespace, grace: float) -> list[str]:
    from bench.deploys import LEAST_IMPORTS
    from bench.held import HELD
    from bench.status import SAMPLES_PER_RUN

    notes = []
    if "status" in args.only:
        notes.append(
            f"status: {SAMPLES_PER_RUN} calls of each command per run "
            f"({args.runs * SAMPLES_PER_RUN} in all), alternating, after one untimed call each."
        )
    if {"upgrade", "rollback"} & set(args.only):
        notes.append(
            "upgrade/rollback: '-> answers' runs from the command's start to the first HTTP "
            "answer of the version it deploys (polled every 2 ms); the floor is bench/floor.sh "
            "(tar x, ln -s + mv -T, systemctl restart, curl until it answers) on a unit "
            f"pyrelctl generated, same sandbox. pyrelctl's grace ({grace:g} s by default) "
            "begins after that answer; the '-> exit' rows include it, or set it to 0. "
            "'python importing the least' runs this venv's python -c "
            f"{LEAST_IMPORTS!r} before floor.sh: the least a deploy tool in Python "
            "with click pays, so a lower bound for pyrelctl's ratio here. 'a bare python -c "
            "pass' is the least any front end in Python pays (even a thin client of a "
            "resident server)."
        )
    if {"availability", "mix"} & set(args.only):
        notes.append(
            "availability: 200 requests/s, a new TCP connection each, 5 s timeout each, "
            "latency from when a request was due; windows run from 0.5 s before the command "
            "to 0.5 s after its exit; pyrelctl's defaults (grace included) unless the "
            "strategy says '--grace 0'. 'by failing': requests answered by the release a "
            "failed deploy tried to install; 'serving "
            "after': what answered right after the command exited. Capistrano: cap deploy / "
            "deploy:rollback over SSH (bench/capistrano), on a unit pyrelctl generated; it "
            "leaves a failed deploy in place, so its recovery (deploy:rollback) is a row. "
            "'boots' (issue 30): starts of the release the command deployed (or tried "
            "to), one per run, from the journal: invocations of APP.service and "
            "APP@overlap.service in which it printed 'NAME VERSION started' (bench/boots.py). "
            f"'held cut': {HELD} long-lived connections (GET /hold) held through each "
            "deploy window; the most times one of them was cut in one window / all cuts, "
            "of N connections (bench/held.py)."
        )
    if "scale" in args.only:
        notes.append(
            "scale: every app is a real started unit; releases 2..R-1 of each app were "
            "installed with --no-start (untimed set-up), release R with start. Release "
            "directories live on the container's tmpfs root."
        )
    return notes


def _cleanup(host: Host) -> None:
    """Uninstall the apps of earlier measurements, so that scale counts only its own."""
    listed = json.loads(host.pyrelctl("--json", "status").stdout)
    for app in listed["apps"]:
        host.pyrelctl("uninstall", "--purge", app["app"])

    def idle() -> bool | None:
        jobs = host.run(["systemctl", "list-jobs", "--no-legend"]).stdout.strip()
        return True if not jobs else None

    # What the uninstalls set off (stop jobs, reloads) must not land in scale's samples.
    wait_until(idle, timeout=30, what="systemd's job queue to empty")


def inside(args: argparse.Namespace) -> int:
    from bench import availability, deploys, mix, scale, status
    from pyrelctl.defaults import DEFAULT_GRACE

    host = Host(args.inside)
    report = Report(meta=_meta(args), notes=_notes(args, DEFAULT_GRACE))
    log(f"inside: {report.meta['machine']['systemd']}")
    wanted = set(args.only)

    def section(name: str, body: Any) -> None:
        try:
            body()
        except Exception as e:
            log(f"{name} failed:\n{traceback.format_exc()}")
            report.errors[name] = f"{type(e).__name__}: {e}".strip()[:2000]

    if "status" in wanted:
        section("status", lambda: report.comparisons.extend(status.measure(host, args.runs)))
    if wanted & {"upgrade", "rollback"}:

        def run_deploys() -> None:
            found = deploys.measure(host, args.runs)
            report.comparisons.extend(c for c in found if c.section in wanted)

        section("upgrade/rollback", run_deploys)
    if "mix" in wanted:
        section("mix", lambda: report.comparisons.extend(mix.measure(host, args.runs)))
    plotted: dict[tuple[str, str], dict[str, availability.Window]] = {}

    def under_load(found: availability.Measured) -> None:
        report.availability.extend(found.rows)
        report.comparisons.extend(found.comparisons)
        plotted.update(found.plotted)

    if "mix" in wanted:
        section("mix availability", lambda: under_load(availability.measure_mix(host, args.runs)))
    if "availability" in wanted:

        def run_availability() -> None:
            from bench.capistrano import CapistranoUnderLoad  # the peer beside pyrelctl

            peer = CapistranoUnderLoad(host, availability.CAPISTRANO)
            under_load(availability.measure(host, args.runs, peer))

        section("availability", run_availability)
    if "scale" in wanted:

        def run_scale() -> None:
            _cleanup(host)
            report.scale.extend(
                scale.measure(host, args.runs, args.scale_apps, args.scale_releases)
            )

        section("scale", run_scale)
    if args.plot is not None and plotted:
        from bench import plot

        m = report.meta
        title = (
            f"pyrelctl {m['commit']}, {m['date']}: requests under {m['load']['rate_per_s']:g}/s "
            "through a deploy (first run; shaded: the command)"
        )
        section("plot", lambda: plot.write(args.plot, plotted, title))
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 1 if report.errors else 0


def main() -> int:
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.inside is not None:
        return inside(args)
    return outside(args, argv)


if __name__ == "__main__":
    sys.exit(main())
