"""`make demo`: pyrelctl deploying a real mix release in a throwaway systemd.

Builds three versions of a small Elixir app with `mix release` (2.0.0 crashes
at start on purpose), boots a systemd in a container (nothing on this host is
touched: the container's /etc, /opt and /var live in memory), and runs the
commands an operator would type, printing each with its output:

install 1.0.0 -> upgrade to 1.1.0 -> a failed deploy of 2.0.0 that rolls back
by itself -> a manual rollback -> status, releases, history -> rpc -> the
same three deploys of a socket-activated web app under steady load, without
a failed request. Then it stops the container.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from devtools.load import Load
from devtools.machine import Machine
from devtools.releases import build_mix_app, make_generic_release

REPO = Path(__file__).resolve().parent.parent
PYRELCTL = REPO / ".venv/bin/pyrelctl"
BOLD, DIM, RESET = (
    ("\033[1m", "\033[2m", "\033[0m")
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    else ("", "", "")
)


def step(title: str, text: str = "") -> None:
    print(f"\n{BOLD}== {title}{RESET}")
    if text:
        print(f"{DIM}{text}{RESET}")


def show(machine: Machine, argv: Sequence[str], *, expect: int = 0) -> str:
    """Run `argv` inside the machine, print it like a terminal session would."""
    shown = [Path(a).name if a == str(PYRELCTL) else a for a in argv]
    print(f"{BOLD}# {shlex.join(shown)}{RESET}")
    proc = machine.run(list(argv), check=False, timeout=180)
    # Progress (stderr) first: on a terminal it comes before the result line
    # that pyrelctl prints on stdout when it is done.
    for stream in (proc.stderr, proc.stdout):
        if stream.strip():
            print(stream.rstrip())
    if proc.returncode != 0:
        print(f"{DIM}(exit status {proc.returncode}){RESET}")
    if proc.returncode != expect:
        raise SystemExit(f"demo: expected exit status {expect} from {shlex.join(shown)}")
    return proc.stdout


def zero_downtime(machine: Machine, pyrelctl: str, scratch: Path) -> None:
    """Upgrade, failed deploy and rollback of a socket-activated app under load."""
    url = "http://127.0.0.1:8080/"
    toml = f'[socket]\nlisten = ["127.0.0.1:8080"]\n\n[health]\nhttp = "{url}"\n'
    web = {
        version: make_generic_release(
            scratch / "web",
            name="web",
            version=version,
            behaviour=behaviour,
            port=8080,
            extra_toml=toml,
        )
        for version, behaviour in (("1.0.0", "serve"), ("2.0.0", "serve"), ("3.0.0", "crash"))
    }
    step(
        "Zero downtime: socket activation",
        '[socket] listen = ["127.0.0.1:8080"] in release.toml: systemd holds the listener '
        "in web.socket,\nwhich stays up while web.service restarts; connections wait in its "
        "backlog",
    )
    show(machine, [pyrelctl, "install", str(web["1.0.0"]), "--grace", "1"])
    show(machine, ["systemctl", "status", "web.socket", "--no-pager", "--lines=0"])
    step(
        "The same three deploys, with a request every 10 ms meanwhile",
        "with a socket each new release first starts beside the running one (web@overlap) and\n"
        "must pass its checks there: upgrade to 2.0.0, a failed deploy of 3.0.0 (stopped "
        "before 2.0.0 ever stopped), a manual rollback",
    )
    load = Load(machine, url, scratch / "stop-load")
    try:
        show(machine, [pyrelctl, "install", str(web["2.0.0"]), "--grace", "1"])
        show(machine, [pyrelctl, "install", str(web["3.0.0"]), "--grace", "1"], expect=3)
        show(machine, [pyrelctl, "rollback", "web", "--grace", "1"])
    finally:
        summary = load.stop()
    answered = ", ".join(f"{n} by {body}" for body, n in sorted(summary["bodies"].items()))
    print(f"{BOLD}requests answered: {answered}; failed: {len(summary['errors'])}{RESET}")
    for error in summary["errors"][:5]:
        print(f"  {error}")


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("demo: run as root (it boots a systemd container)")
    with tempfile.TemporaryDirectory(prefix="pyrelctl-demo-") as tmp:
        scratch = Path(tmp)
        step(
            "Building the Elixir app 'shop' with mix release: 1.0.0, 1.1.0, and 2.0.0 which "
            "crashes at start"
        )
        started = time.monotonic()
        artifacts = build_mix_app(scratch / "mix", ["1.0.0", "1.1.0", "2.0.0"], failing=["2.0.0"])
        for path in artifacts.values():
            print(f"  {path.name}  ({path.stat().st_size // 1024} KiB)")
        print(f"{DIM}built in {time.monotonic() - started:.1f} s{RESET}")

        step(
            "Booting a throwaway systemd in a container",
            "systemd-nspawn --volatile=yes: the host's /usr read-only, everything else in memory",
        )
        with Machine.boot(
            f"pyrelctl-demo-{os.getpid()}", [REPO, scratch], scratch / "nspawn.log"
        ) as machine:
            pyrelctl = str(PYRELCTL)
            show(machine, ["systemctl", "is-system-running"])

            step(
                "Install 1.0.0",
                "unpack into /opt/shop/releases/1.0.0, generate shop.service, "
                "switch /opt/shop/current, start, wait until it stays up",
            )
            show(machine, [pyrelctl, "install", str(artifacts["1.0.0"])])
            show(machine, ["readlink", "/opt/shop/current"])
            show(machine, ["systemctl", "status", "shop", "--no-pager", "--lines=0"])
            show(machine, ["journalctl", "-u", "shop", "--no-pager", "-o", "cat"])

            step("The generated unit: a plain systemd service, journal-wired and sandboxed")
            show(machine, [pyrelctl, "unit", "shop"])

            step("Upgrade to 1.1.0")
            show(machine, [pyrelctl, "install", str(artifacts["1.1.0"])])

            step(
                "Deploy 2.0.0, which crashes at start",
                "pyrelctl notices, marks it failed, puts 1.1.0 back and exits with 3",
            )
            show(machine, [pyrelctl, "install", str(artifacts["2.0.0"])], expect=3)
            show(machine, ["readlink", "/opt/shop/current"])
            show(machine, ["systemctl", "is-active", "shop"])

            step("Roll back by hand to the release before 1.1.0")
            show(machine, [pyrelctl, "rollback", "shop"])
            show(machine, [pyrelctl, "status"])
            show(machine, [pyrelctl, "releases", "shop"])
            show(machine, [pyrelctl, "history", "shop"])

            step(
                "Operate the release as the service runs it",
                "rpc into the live node, with the service's user, cookie and sandbox",
            )
            show(machine, [pyrelctl, "rpc", "shop", 'IO.puts("hello from #{node()}")'])
            show(machine, [pyrelctl, "version", "shop"])
            show(machine, [pyrelctl, "pid", "shop"])

            step(
                "Hardened by default",
                "systemd's own rating of the generated unit (lower is better)",
            )
            security = machine.run(["systemd-analyze", "security", "--no-pager", "shop"]).stdout
            print(next(line for line in security.splitlines() if "Overall exposure" in line))
            show(machine, [pyrelctl, "doctor", "shop"])

            zero_downtime(machine, pyrelctl, scratch)

            step("Stopping the container")
        print("done: the container is gone, and this host was not changed.")
        print("next: make test (the whole suite), and README.md for pyrelctl on a real host.")


if __name__ == "__main__":
    main()
