"""How fast does a failed deploy give the service back? (issue 3)

Measured in one run inside a booted systemd (devtools.machine), each figure
the median of several runs:

* recovery: from the moment the failed release's main process exited (the
  journal's timestamp of systemd's "Main process exited" message for that
  invocation) to the first HTTP answer of the restored previous release;
* floor: a bare ``systemctl restart`` of that same previous release, from the
  command's start to its first HTTP answer.

The target (issue 3) is recovery <= 1.5 x floor + the detection time the
user configured; a crash at start is seen by pyrelctl's poll of the unit
(POLL_INTERVAL), so that is the detection time here.

Run it as root from the repository: ``.venv/bin/python -m bench.rollback``
(add ``--runs N`` and ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.probe import Poller

REPO = Path(__file__).resolve().parent.parent
APP = "bench-rb"
PORT = 18090


def exit_time(invocation: str) -> float:
    """When systemd saw the main process of ``invocation`` exit (realtime seconds)."""
    out = subprocess.run(
        # PID 1's own line: INVOCATION_ID alone is a field any process may log
        # (pyrelctl/journal.py, PID1_MATCHES).
        [
            "journalctl",
            "--no-pager",
            "-o",
            "json",
            "_PID=1",
            "_UID=0",
            f"INVOCATION_ID={invocation}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        entry = json.loads(line)
        if "Main process exited" in str(entry.get("MESSAGE", "")):
            return int(entry["__REALTIME_TIMESTAMP"]) / 1e6
    raise RuntimeError(f"no 'Main process exited' in the journal of invocation {invocation}")


def inside(pyrelctl: str, bad: str, runs: int) -> dict[str, list[float]]:
    """Runs in the container: alternate failed deploys and bare restarts."""
    recovery, floor = [], []
    # Realtime clock: answers are compared with the journal's timestamps.
    with Poller(PORT, interval=0.005, clock=time.time) as poller:
        poller.first_answer_after(0)
        for _ in range(runs):
            proc = subprocess.run(
                [pyrelctl, "--json", "install", bad, "--grace", "1"],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 3:
                raise RuntimeError(f"expected exit 3, got {proc.returncode}: {proc.stderr}")
            failed = exit_time(json.loads(proc.stdout)["failed"]["invocation_id"])
            recovery.append(poller.first_answer_after(failed) - failed)

            started = time.time()
            subprocess.run(["systemctl", "restart", APP], check=True)
            # Answers before the restart returned came from the old process
            # (for Type=exec the job is done once the new one was exec'd).
            returned = time.time()
            floor.append(poller.first_answer_after(returned) - started)
    return {"recovery": recovery, "floor": floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--inside", nargs=2, metavar=("PYRELCTL", "ARTIFACT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(inside(args.inside[0], args.inside[1], args.runs)))
        return

    sys.path.insert(0, str(REPO))
    from bench.host import binds
    from devtools.machine import Machine
    from devtools.releases import make_generic_release
    from pyrelctl.deploy.readiness import POLL_INTERVAL

    health = f'[health]\nhttp = "http://127.0.0.1:{PORT}/"\n'
    with tempfile.TemporaryDirectory(prefix="pyrelctl-bench-") as tmp:
        scratch = Path(tmp)
        good = make_generic_release(
            scratch, name=APP, version="1.0.0", behaviour="serve", port=PORT, extra_toml=health
        )
        bad = make_generic_release(
            scratch, name=APP, version="2.0.0", behaviour="crash", extra_toml=health
        )
        pyrelctl = str(REPO / ".venv/bin/pyrelctl")
        # This checkout's pyrelctl, also where the venv was installed from another.
        env = {"PYTHONPATH": str(REPO)}
        with Machine.boot(
            f"pyrelctl-bench-{os.getpid()}", binds(scratch), scratch / "nspawn.log"
        ) as machine:
            machine.run([pyrelctl, "install", str(good), "--grace", "1"], env=env)
            out = machine.run(
                [
                    str(REPO / ".venv/bin/python"),
                    "-m",
                    "bench.rollback",
                    "--runs",
                    str(args.runs),
                    "--inside",
                    pyrelctl,
                    str(bad),
                ],
                cwd=REPO,
                env=env,
                timeout=60.0 * args.runs,
            ).stdout
    figures = json.loads(out)
    recovery = statistics.median(figures["recovery"])
    floor = statistics.median(figures["floor"])
    budget = 1.5 * floor + POLL_INTERVAL
    result = {
        "runs": args.runs,
        "recovery_median_s": round(recovery, 4),
        "floor_median_s": round(floor, 4),
        "ratio_to_floor": round(recovery / floor, 2),
        "detection_s": POLL_INTERVAL,
        "target_s": round(budget, 4),
        "within_target": recovery <= budget,
        "samples": figures,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"failed deploy -> previous release serving again, median of {args.runs} runs")
    print(f"  recovery (pyrelctl automatic rollback) {recovery * 1000:8.1f} ms")
    print(f"  floor (bare systemctl restart)         {floor * 1000:8.1f} ms")
    print(f"  ratio recovery / floor                 {recovery / floor:8.2f} x")
    print(
        f"  target 1.5 x floor + {POLL_INTERVAL * 1000:.0f} ms detection     "
        f"{budget * 1000:8.1f} ms  -> {'met' if result['within_target'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
