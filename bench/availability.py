"""Failed requests and latency under steady load, through each kind of deploy,
for each way of deploying (issues 7 and 19).

Apps serve the generic test release (behaviour "serve", HTTP health check,
pyrelctl's defaults otherwise), each on its own port, one per way:

* ``av`` binds its port itself: "no socket" (pyrelctl restarts it);
* ``avs`` gets it from systemd (``[socket] listen`` in its release.toml) and
  is deployed with ``--strategy restart``: "restart";
* ``avo`` likewise, with ``--strategy overlap``: "overlap", the new release
  starts beside the running one on the same socket and takes over once up;
* ``avc`` is installed once by pyrelctl (with a socket, restart), so that it
  runs under a unit pyrelctl generated, and from then on deployed by
  Capistrano over SSH (bench.capistrano): "capistrano";
* ``avs0`` and ``avo0`` are ``avs`` and ``avo`` installed with ``--grace 0``
  (upgrade and rollback only): how long the mechanism itself takes, beside
  Capistrano, which watches nothing after its restart.

:func:`measure_mix` runs the same windows for a real mix release (``mxn``,
``mxs``, ``mxo``: no socket, restart, overlap). In each run, for each app,
the load generator (bench.load) sends requests through these windows:

* steady: no deploy (the baseline of the latencies);
* upgrade: an install of the next version;
* failed deploy, exits at start: an install of a release that exits at
  start, which pyrelctl rolls back by itself (exit 3); Capistrano leaves it
  in place, so its next window is the operator's recovery,
  ``cap deploy:rollback`` back to the release before;
* failed deploy, health check fails (pyrelctl only): a release that is
  ready and serves, but whose health check answers 503 (generic:
  ``/unhealthy/VERSION``; mix: ``/health`` of a version built unhealthy),
  refused after ``--timeout 4``;
* manual rollback: ``pyrelctl rollback`` (``cap deploy:rollback``);
* configuration change (generic, pyrelctl only): ``pyrelctl config set``.

Each deploy window starts the load LEAD seconds before the command and
keeps it up TAIL seconds after the command exits. Every answer names the
version that gave it, so a failed deploy's window counts the requests its
failing release answered; right after each command one more request says
what serves. Issue 30's columns, per deploy window: the boots of the
release the command deployed (or tried to), counted from the journal
(bench.boots), and a few long-lived connections held open from before the
load starts to the window's end, each counting the times it was cut and
reconnected (bench.held).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import boots
from bench.held import HeldConnections
from bench.host import Host, Timed, log
from bench.load import LoadGenerator, Sample
from bench.memory import MemorySampler
from bench.probe import http_get
from bench.report import Availability, Comparison, LoadStats, Measure, Target

LEAD = 0.5
TAIL = 0.5
STEADY = 1.5
#: The failing health check's deploys are refused after this (pyrelctl --timeout).
SICK_TIMEOUT = 4.0
#: Issue 7: zero failed requests with socket activation, in every scenario.
ZERO_FAILED = Target(Measure.FAILURES, 0)
#: Issue 19, the overlap strategy: p99 through a deploy within 2x the steady
#: p99 of the same run, and no request answered by a release that failed.
P99_TWICE_STEADY = Target(Measure.P99_RATIO, 2.0)
NONE_BY_FAILING = Target(Measure.FAILING_ANSWERS, 0)
#: Issue 19: every strategy's upgrade and rollback no slower than Capistrano's.
NO_SLOWER = Target(Measure.RATIO, 1.0)
#: Issue 30, overlap: the new release boots once per deploy (today: beside the
#: old one, then again in APP.service), and each long-lived connection is
#: closed at most once (today: when APP.service stops, then APP@overlap).
ONE_BOOT = Target(Measure.BOOTS, 1)
HELD_CUT_ONCE = Target(Measure.HELD_CUTS, 1)

UPGRADE = "upgrade"
CRASH = "failed deploy, exits at start"
SICK = "failed deploy, health check fails"
RECOVERY = "deploy:rollback after it"  # Capistrano's, after its failed deploy
ROLLBACK = "manual rollback"
CONFIG = "configuration change"
SCENARIOS = (UPGRADE, CRASH, SICK, ROLLBACK, CONFIG)
FAILED_DEPLOYS = (CRASH, SICK)


@dataclass(frozen=True)
class App:
    name: str
    port: int
    socket: bool
    strategy: str  # "restart" or "overlap" (pyrelctl's), or "capistrano"
    release: str = "generic"
    #: ``install --grace`` at the first install (remembered for the app); None:
    #: pyrelctl's default.
    grace: float | None = None

    @property
    def variant(self) -> str:
        """What sets the app apart from the strategy's defaults, for the tables."""
        return "" if self.grace is None else f"--grace {self.grace:g}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def extra_toml(self, health_path: str = "") -> str:
        toml = f'[health]\nhttp = "{self.url}{health_path}"\n'
        if self.socket:
            toml += f'\n[socket]\nlisten = ["127.0.0.1:{self.port}"]\n'
        return toml

    def targets(self, scenario: str) -> tuple[Target, ...]:
        if not self.socket or self.strategy == "capistrano":
            return ()
        issue30 = (ONE_BOOT, HELD_CUT_ONCE) if self.strategy == "overlap" else ()
        if self.strategy == "overlap" and scenario in (UPGRADE, ROLLBACK):
            return (ZERO_FAILED, P99_TWICE_STEADY, *issue30)
        if self.strategy == "overlap" and scenario in FAILED_DEPLOYS:
            return (ZERO_FAILED, P99_TWICE_STEADY, NONE_BY_FAILING, *issue30)
        return (ZERO_FAILED, *issue30)


PLAIN = App("av", 18111, socket=False, strategy="restart")
SOCKET = App("avs", 18112, socket=True, strategy="restart")
OVERLAP = App("avo", 18113, socket=True, strategy="overlap")
CAPISTRANO = App("avc", 18114, socket=True, strategy="capistrano")
#: The same strategies with no grace period, upgrade and rollback only: the
#: time of the mechanism itself beside Capistrano's, which watches nothing
#: after its restart. pyrelctl still waits for READY=1 and the health check.
SOCKET_NO_GRACE = App("avs0", 18115, socket=True, strategy="restart", grace=0.0)
OVERLAP_NO_GRACE = App("avo0", 18116, socket=True, strategy="overlap", grace=0.0)


@dataclass(frozen=True)
class Window:
    """One window's load, with the deploy command's timings in it."""

    stats: LoadStats
    samples: tuple[Sample, ...]
    command_started: float = float("nan")  # time.monotonic()
    command_ended: float = float("nan")


def serving(port: int, timeout: float = 2.0) -> str:
    """Who answers 127.0.0.1:PORT now: the version, or ``nothing (CAUSE)``."""
    try:
        body = http_get(port, timeout=timeout)
    except TimeoutError:
        return "nothing (timeout)"
    except OSError as e:
        return f"nothing ({type(e).__name__})"
    return body.split()[-1]


def _which(after: str, before: str, failing: str) -> str:
    """What served after a command, said against what served before it: "the same",
    "another" (the new release, or the one rolled back to), "the failing one", or
    "nothing (CAUSE)"."""
    if after.startswith("nothing"):
        return after
    if failing and after == failing:
        return "the failing one"
    return "the same" if after == before else "another"


def first_answer(samples: Sequence[Sample], version: str, after: float) -> float:
    """When ``version`` first answered a request sent after ``after``, or NaN."""
    answers = [
        s.due + s.latency
        for s in samples
        if s.latency is not None and s.outcome == version and s.due >= after
    ]
    return min(answers, default=float("nan"))


class AppUnderLoad:
    """The windows of one app, run after run, deployed by pyrelctl."""

    scenarios: tuple[str, ...] = SCENARIOS

    def __init__(self, host: Host, app: App, scenarios: tuple[str, ...] = ()) -> None:
        self.host, self.app = host, app
        if scenarios:
            self.scenarios = scenarios
        self.windows: dict[str, list[Window]] = {"steady": [], **{s: [] for s in self.scenarios}}

    # -- artifacts and the first install ------------------------------------

    def artifact(self, version: str, behaviour: str = "serve", health_path: str = "") -> str:
        return str(
            self.host.release(
                self.app.name,
                version,
                behaviour=behaviour,
                port=self.app.port,
                extra_toml=self.app.extra_toml(health_path),
            )
        )

    def first_install_args(self) -> list[str]:
        """Remembered at the first install: the strategy (an app with a socket), the grace."""
        grace = [] if self.app.grace is None else ["--grace", f"{self.app.grace:g}"]
        if not self.app.socket:
            return grace
        strategy = "restart" if self.app.strategy == "capistrano" else self.app.strategy
        return ["--strategy", strategy, *grace]

    def setup(self) -> str:
        """Install the first release; return why the app cannot be measured, or ''."""
        if self.app.socket and not self.host.has_strategy_option():
            return "this pyrelctl has no install --strategy"
        result = self.host.pyrelctl(
            "install", self.artifact("1.0.0"), *self.first_install_args(), check=False
        )
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

    # -- the deploys ----------------------------------------------------------

    def upgrade(self, i: int) -> Timed:
        return self.host.timed(self.host.pyrelctl_argv("install", self.artifact(f"1.0.{i}")))

    def crash(self, i: int) -> Timed:
        return self._refused(
            self.host.pyrelctl_argv("install", self.artifact(self.crash_version(i), "crash"))
        )

    def sick(self, i: int) -> Timed:
        version = self.sick_version(i)
        argv = self.host.pyrelctl_argv(
            "install",
            # devtools' serve release answers 503 on /unhealthy/ITS-VERSION alone.
            self.artifact(version, "serve", health_path=f"unhealthy/{version}"),
            "--timeout",
            f"{SICK_TIMEOUT:g}",
        )
        return self._refused(argv)

    def _refused(self, argv: list[str]) -> Timed:
        timed = self.host.timed(argv, check=False)
        if timed.result.returncode != 3:
            raise RuntimeError(
                f"the failed deploy of {self.app.name} exited {timed.result.returncode}, "
                f"not 3: {timed.result.stderr.strip()}"
            )
        return timed

    def rollback(self, i: int) -> Timed:
        return self.host.timed(self.host.pyrelctl_argv("rollback", self.app.name))

    def config_change(self, i: int) -> Timed:
        return self.host.timed(
            self.host.pyrelctl_argv("config", "set", self.app.name, f"BENCH_RUN={i}")
        )

    def after_failed_deploy(self) -> None:
        """What must happen, outside the windows, once a failed deploy's window ended."""

    @staticmethod
    def crash_version(i: int) -> str:
        return f"1.0.{i}-broken"

    @staticmethod
    def sick_version(i: int) -> str:
        return f"1.0.{i}-sick"

    # -- the windows ------------------------------------------------------------

    def _window(self, command: Callable[[], Timed] | None, failing: str = "") -> Window:
        """Run ``command`` under load (or, for None, hold the load for STEADY seconds)."""
        if command is None:
            with LoadGenerator(self.app.port, expect=f"{self.app.name} ") as load:
                time.sleep(STEADY)  # a fixed window of load, not a wait for a condition
            return Window(load.stats(), tuple(load.samples))
        after = ""
        # Taken before the window: the boots of the window's release come after it.
        journal = boots.cursor()
        with (
            HeldConnections(self.app.port, expect=f"{self.app.name} ") as held,
            LoadGenerator(self.app.port, expect=f"{self.app.name} ") as load,
        ):
            # Fixed windows of load, not waits for a condition: sleeping is the point.
            time.sleep(LEAD)
            with MemorySampler(self.app.name) as memory:
                timed = command()
            # Asked within the tail, so that the window is as long for every app.
            after = serving(self.app.port, timeout=TAIL)
            time.sleep(max(0.0, TAIL - (time.monotonic() - timed.ended)))
        samples = tuple(load.samples)
        stats = load.stats()
        # The release the command deployed, or the one it tried to.
        deployed = failing or ("" if after.startswith("nothing") else after)
        booted: int | None = None
        if deployed:
            booted, where = boots.boots_since(journal, self.app.name, deployed)
            log(f"{self.app.name} {deployed}: {booted} boots ({where or 'no line'})")
        answered = first_answer(samples, after, timed.started) - timed.started
        before = [  # answered before the command started
            x.outcome
            for x in samples
            if x.latency is not None and x.due + x.latency < timed.started
        ]
        stats = replace(
            stats,
            failing_version=failing,
            serving_after=_which(after, before[-1] if before else "", failing),
            command_s=timed.seconds,
            memory_before_kib=memory.before_kib,
            memory_peak_kib=memory.peak_kib,
            # A failed deploy deploys nothing: no "answered" there.
            answered_s=float("nan") if failing else answered,
            boots=booted,
            held_cuts=held.stats().cuts,
        )
        return Window(stats, samples, timed.started, timed.ended)

    def commands(self) -> dict[str, Callable[[int], Timed]]:
        """The command of each scenario, for run ``i``."""
        return {
            UPGRADE: self.upgrade,
            CRASH: self.crash,
            SICK: self.sick,
            ROLLBACK: self.rollback,
            CONFIG: self.config_change,
        }

    def run(self, i: int) -> None:
        """Run ``i`` (from 1): steady, then each scenario of this app."""
        self.windows["steady"].append(self._window(None))
        commands = self.commands()
        for scenario in self.scenarios:
            failing = {CRASH: self.crash_version(i), SICK: self.sick_version(i)}.get(scenario, "")
            command = functools.partial(commands[scenario], i)
            self.windows[scenario].append(self._window(command, failing=failing))
            if scenario in FAILED_DEPLOYS:
                self.after_failed_deploy()

    # -- figures ----------------------------------------------------------------

    def figures(self) -> list[Availability]:
        steady = tuple(w.stats for w in self.windows["steady"])
        return [
            Availability(
                scenario,
                self.app.socket,
                tuple(w.stats for w in self.windows[scenario]),
                steady,
                self.app.targets(scenario),
                strategy=self.app.strategy,
                release=self.app.release,
                variant=self.app.variant,
            )
            for scenario in self.scenarios
        ]

    def skipped(self, reason: str) -> list[Availability]:
        return [
            Availability(
                s,
                self.app.socket,
                (),
                (),
                self.app.targets(s),
                skipped=reason,
                strategy=self.app.strategy,
                release=self.app.release,
                variant=self.app.variant,
            )
            for s in self.scenarios
        ]

    @property
    def label(self) -> str:
        return self.skipped("")[0].label

    def plotted(self) -> dict[str, Window]:
        """The first run's upgrade and failed deploy (exits at start), for the picture
        (none for a variant: the picture has one column per strategy)."""
        if self.app.variant:
            return {}
        return {s: self.windows[s][0] for s in (UPGRADE, CRASH) if self.windows.get(s)}

    def stop(self) -> None:
        """Stop what the app needs besides pyrelctl: nothing here (a peer's own
        tooling, such as Capistrano's sshd, for a peer)."""


@dataclass
class Measured:
    """What the availability measurements found."""

    rows: list[Availability] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    #: (release, who deployed how) -> scenario -> window: the picture's panels.
    plotted: dict[tuple[str, str], dict[str, Window]] = field(default_factory=dict)


def run_apps(host: Host, apps: Sequence[AppUnderLoad], runs: int, what: str) -> Measured:
    """Set up ``apps``, run their windows ``runs`` times, in a rotating order."""
    skipped: dict[str, str] = {}
    for app in apps:
        log(f"{what}: installing {app.app.name}")
        reason = app.setup()
        if reason:
            log(f"{what}: {app.app.name} skipped: {reason}")
            skipped[app.app.name] = reason
    measured = [a for a in apps if a.app.name not in skipped]
    for i in range(1, runs + 1):
        log(f"{what}: run {i}/{runs}")
        if measured:
            shift = i % len(measured)
            for app in measured[shift:] + measured[:shift]:
                app.run(i)
    found = Measured()
    for app in apps:
        if app.app.name in skipped:
            found.rows += app.skipped(skipped[app.app.name])
        else:
            found.rows += app.figures()
            if panels := app.plotted():
                found.plotted[(app.app.release, app.label)] = panels
    return found


def peer_comparisons(apps: Sequence[AppUnderLoad], peer: AppUnderLoad) -> list[Comparison]:
    """Wall times of each strategy's upgrade and rollback against Capistrano's, from
    the same windows: to the command's exit (the target), and to the first answer
    of the version it deployed."""
    found = []
    for scenario, verb, peer_verb in (
        (UPGRADE, "install", "cap deploy"),
        (ROLLBACK, "rollback", "cap deploy:rollback"),
    ):
        theirs = peer.windows[scenario]
        for app in apps:
            ours = app.windows[scenario]
            if not ours or not theirs:
                continue
            found += [
                Comparison(
                    "peer",
                    f"{verb} -> exit ({app.label})",
                    f"{peer_verb} -> exit",
                    tuple(w.stats.command_s for w in ours),
                    tuple(w.stats.command_s for w in theirs),
                    NO_SLOWER,
                ),
                Comparison(
                    "peer",
                    f"{verb} -> its version answers ({app.label})",
                    f"{peer_verb} -> its version answers",
                    tuple(w.stats.answered_s for w in ours),
                    tuple(w.stats.answered_s for w in theirs),
                ),
            ]
    return found


def measure(host: Host, runs: int, peer: AppUnderLoad) -> Measured:
    """Availability figures of the generic release, ``peer`` beside pyrelctl.

    The caller chooses the peer (bench.capistrano's CapistranoUnderLoad on
    the app :data:`CAPISTRANO`): this module knows no peer's tooling.
    """
    ours = [AppUnderLoad(host, app) for app in (PLAIN, SOCKET, OVERLAP)]
    ours += [
        AppUnderLoad(host, app, scenarios=(UPGRADE, ROLLBACK))
        for app in (SOCKET_NO_GRACE, OVERLAP_NO_GRACE)
    ]
    try:
        found = run_apps(host, [*ours, peer], runs, "availability")
    finally:
        peer.stop()
    found.comparisons = peer_comparisons(ours, peer)
    return found


# -- the mix release --------------------------------------------------------------

MIX_PLAIN = App("mxn", 18131, socket=False, strategy="restart", release="mix")
MIX_SOCKET = App("mxs", 18132, socket=True, strategy="restart", release="mix")
MIX_OVERLAP = App("mxo", 18133, socket=True, strategy="overlap", release="mix")


class MixUnderLoad(AppUnderLoad):
    """The windows of a mix app (devtools.releases.build_mix_app, built in the run):
    an upgrade, a release that exits at start, a release that is ready and
    serves but fails its health check (``/health``, built unhealthy), a rollback."""

    scenarios = (UPGRADE, CRASH, SICK, ROLLBACK)

    def __init__(self, host: Host, app: App, tarballs: dict[str, Path]) -> None:
        super().__init__(host, app)
        self.tarballs = tarballs

    def artifact(self, version: str, behaviour: str = "serve", health_path: str = "") -> str:
        return str(self.tarballs[version])  # built crashing or not: see mix_versions

    def first_install_args(self) -> list[str]:
        # /health: what a version built unhealthy fails (the others answer 200).
        args = ["--app", self.app.name, "--health-http", f"{self.app.url}health"]
        if self.app.socket:
            args += ["--listen", f"127.0.0.1:{self.app.port}", *super().first_install_args()]
        return args


def mix_versions(runs: int) -> tuple[list[str], list[str], list[str]]:
    """Every version a mix app needs for ``runs`` runs, those that crash, and
    those that fail their health check."""
    good = [f"1.0.{i}" for i in range(runs + 1)]
    broken = [MixUnderLoad.crash_version(i) for i in range(1, runs + 1)]
    sick = [MixUnderLoad.sick_version(i) for i in range(1, runs + 1)]
    return good + broken + sick, broken, sick


def measure_mix(host: Host, runs: int) -> Measured:
    """Availability figures of a real mix release (see the module's docstring)."""
    from devtools.releases import build_mix_app

    versions, broken, sick = mix_versions(runs)
    apps: list[AppUnderLoad] = []
    for app in (MIX_PLAIN, MIX_SOCKET, MIX_OVERLAP):
        log(f"mix availability: building {app.name}, {len(versions)} versions, with mix release")
        tarballs = build_mix_app(
            host.scratch / "mix-availability" / app.name,
            versions,
            name=app.name,
            failing=broken,
            unhealthy=sick,
            http_port=app.port,
        )
        apps.append(MixUnderLoad(host, app, tarballs))
    found = run_apps(host, apps, runs, "mix availability")
    # Three idle BEAMs would still be running through the measurements after this one.
    for under_load in apps:
        host.pyrelctl("uninstall", "--purge", under_load.app.name, check=False)
    return found
