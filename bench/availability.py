"""Failed requests and latency under steady load, through three kinds of deploy.

Two apps serve the generic test release (behaviour "serve", HTTP health
check, pyrelctl's defaults otherwise): ``av`` binds its port itself, ``avs``
gets it from systemd (``[socket] listen = [...]`` in its release.toml, so
pyrelctl generates ``avs.socket``). In each run, for each app, the load
generator (bench.load) sends requests through four windows:

* steady: no deploy (the baseline of the latencies);
* upgrade: ``pyrelctl install`` of the next version;
* failed deploy: ``pyrelctl install`` of a release that exits at start,
  which pyrelctl rolls back by itself (exit 3);
* manual rollback: ``pyrelctl rollback``.

Each deploy window starts the load LEAD seconds before the command and
keeps it up TAIL seconds after the command exits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.host import Host, log
from bench.load import LoadGenerator
from bench.report import Availability, LoadStats, Measure, Target

LEAD = 0.5
TAIL = 0.5
STEADY = 1.5
#: Issue 7: zero failed requests with socket activation, in every scenario.
ZERO_FAILED = Target(Measure.FAILURES, 0)

SCENARIOS = (
    "upgrade",
    "failed deploy, auto rollback",
    "manual rollback",
    # Issue 18: `pyrelctl config set` restarts and verifies as a deploy does.
    "configuration change",
)


@dataclass(frozen=True)
class App:
    name: str
    port: int
    socket: bool

    @property
    def extra_toml(self) -> str:
        toml = f'[health]\nhttp = "http://127.0.0.1:{self.port}/"\n'
        if self.socket:
            toml += f'\n[socket]\nlisten = ["127.0.0.1:{self.port}"]\n'
        return toml


PLAIN = App("av", 18111, socket=False)
SOCKET = App("avs", 18112, socket=True)


def _under_load(app: App, action: Callable[[], None] | None) -> LoadStats:
    """Run ``action`` under load (or, for None, hold the load for STEADY seconds)."""
    with LoadGenerator(app.port, expect=f"{app.name} ") as load:
        # Fixed windows of load, not waits for a condition: sleeping is the point.
        if action is None:
            time.sleep(STEADY)
        else:
            time.sleep(LEAD)
            action()
            time.sleep(TAIL)
    return load.stats()


class AppUnderLoad:
    """The windows of one app, run after run."""

    def __init__(self, host: Host, app: App) -> None:
        self.host, self.app = host, app
        self.windows: dict[str, list[LoadStats]] = {"steady": [], **{s: [] for s in SCENARIOS}}

    def artifact(self, version: str, behaviour: str = "serve") -> str:
        return str(
            self.host.release(
                self.app.name,
                version,
                behaviour=behaviour,
                port=self.app.port,
                extra_toml=self.app.extra_toml,
            )
        )

    def setup(self) -> str:
        """Install the first release; return why the app cannot be measured, or ''."""
        result = self.host.pyrelctl("install", self.artifact("1.0.0"), check=False)
        if result.returncode != 0:
            error = result.stderr.strip().splitlines()[:1] or ["(no message)"]
            if self.app.socket:
                return f"pyrelctl refused [socket]: {error[0]}"
            raise RuntimeError(f"installing {self.app.name} 1.0.0: {result.stderr.strip()}")
        if self.app.socket:
            state = self.host.run(
                ["systemctl", "is-active", f"{self.app.name}.socket"], check=False
            )
            if state.stdout.strip() != "active":
                return f"no active {self.app.name}.socket after install ({state.stdout.strip()})"
        return ""

    def run(self, i: int) -> None:
        """Run ``i`` (from 1): steady, then up to version ``i``, a broken one, and back."""
        h, name = self.host, self.app.name

        def upgrade() -> None:
            h.pyrelctl("install", self.artifact(f"1.0.{i}"))

        def failed_deploy() -> None:
            broken = h.pyrelctl("install", self.artifact(f"1.0.{i}-broken", "crash"), check=False)
            if broken.returncode != 3:
                raise RuntimeError(
                    f"the failed deploy of {name} exited {broken.returncode}, not 3: "
                    f"{broken.stderr.strip()}"
                )

        def rollback() -> None:
            h.pyrelctl("rollback", name)

        def config_change() -> None:
            h.pyrelctl("config", "set", name, f"BENCH_RUN={i}")

        actions: dict[str, Callable[[], None] | None] = {
            "steady": None,
            "upgrade": upgrade,
            "failed deploy, auto rollback": failed_deploy,
            "manual rollback": rollback,
            "configuration change": config_change,
        }
        for window, action in actions.items():
            self.windows[window].append(_under_load(self.app, action))

    def figures(self) -> list[Availability]:
        return [
            Availability(
                scenario,
                self.app.socket,
                tuple(self.windows[scenario]),
                tuple(self.windows["steady"]),
                ZERO_FAILED if self.app.socket else None,
            )
            for scenario in SCENARIOS
        ]


def measure(host: Host, runs: int) -> list[Availability]:
    """Availability figures (see the module's docstring)."""
    apps = [AppUnderLoad(host, PLAIN), AppUnderLoad(host, SOCKET)]
    skipped: dict[str, str] = {}
    for app in apps:
        log(f"availability: installing {app.app.name}")
        reason = app.setup()
        if reason:
            log(f"availability: {app.app.name} skipped: {reason}")
            skipped[app.app.name] = reason
    measured = [a for a in apps if a.app.name not in skipped]
    for i in range(1, runs + 1):
        log(f"availability: run {i}/{runs}")
        for app in measured[i % len(measured) :] + measured[: i % len(measured)]:
            app.run(i)
    figures: list[Availability] = []
    for app in apps:
        if app.app.name in skipped:
            figures += [
                Availability(s, app.app.socket, (), (), ZERO_FAILED, skipped=skipped[app.app.name])
                for s in SCENARIOS
            ]
        else:
            figures += app.figures()
    return figures
