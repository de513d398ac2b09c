"""Install, status and prune as the host grows: 1 app x 1 release, N x 1, N x R.

The apps (``s00``, ``s01``, ...) all run one generic test release, ``sc``
(behaviour "ok": a process that stays up; no health check), installed under
each app's name with ``--app``. The host is built up in three steps and
measured after each:

1. ``s00`` installed and started (``--grace 0``, remembered for the app);
2. every other app installed and started the same way: N real, loaded,
   running units;
3. each app brought to R releases: R-2 installs with ``--no-start`` (fast:
   no restart, no wait), then one with start, so that the release that
   runs is again the current one.

Building is not timed, and runs pyrelctl in-process in two worker processes
(Host.pyrelctl_batches). What is timed, as whole processes:

* install: one app to a new version, with start, ``--keep R``: the steady
  state of a host keeping R releases, where each deploy prunes the oldest;
* status: ``pyrelctl status``, every app in one call;
* prune: ``pyrelctl prune APP --keep 5`` of one app (with R releases it
  removes R-5 of them; at R=1, none).
"""

from __future__ import annotations

from bench.host import Host, log
from bench.report import Measure, ScaleRow, Target

RELEASE = "sc"
PRUNE_KEEP = 5
#: Issue 7: status of 50 apps in one call in under 1 s.
STATUS_TARGET = Target(Measure.SECONDS, 1.0)
#: Worker processes building the host (this machine has 2 CPUs).
WORKERS = 2


class Scale:
    def __init__(self, host: Host, apps: int, releases: int, runs: int) -> None:
        self.host, self.runs, self.releases = host, runs, releases
        width = max(2, len(str(apps - 1)))
        self.apps = [f"s{i:0{width}d}" for i in range(apps)]
        self._next = 0
        self.samples: dict[str, list[tuple[float, ...]]] = {
            "install": [],
            "status": [],
            "prune": [],
        }
        self.sizes: list[str] = []

    def install_argv(self, app: str, *options: str) -> list[str]:
        """Install a new version of the ``sc`` release as ``app`` (versions only grow)."""
        self._next += 1
        version = f"1.0.{self._next}"
        artifact = self.host.release(RELEASE, version, behaviour="ok")
        return ["install", str(artifact), "--app", app, *options]

    def measure(self, apps: list[str], releases: int) -> None:
        """Time install, status and prune on a host of ``apps`` with ``releases`` each."""
        h, runs = self.host, self.runs
        label = f"{len(apps)}x{releases}"
        log(f"scale: measuring at {label}")
        self.sizes.append(label)
        status = [h.timed(h.pyrelctl_argv("status")).seconds for _ in range(runs)]
        install = [
            h.timed(
                h.pyrelctl_argv(*self.install_argv(apps[i % len(apps)], "--keep", str(releases)))
            ).seconds
            for i in range(runs)
        ]
        prune = [
            h.timed(
                h.pyrelctl_argv("prune", apps[(runs + i) % len(apps)], "--keep", str(PRUNE_KEEP))
            ).seconds
            for i in range(runs)
        ]
        for key, samples in (("install", install), ("status", status), ("prune", prune)):
            self.samples[key].append(tuple(samples))

    def run(self) -> list[ScaleRow]:
        h, apps, releases = self.host, self.apps, self.releases
        log("scale: 1 app, started")
        h.pyrelctl(*self.install_argv(apps[0], "--grace", "0", "--keep", "1"))
        self.measure(apps[:1], 1)
        if len(apps) > 1:
            log(f"scale: {len(apps)} apps, started")
            h.pyrelctl_batches(
                [[self.install_argv(a, "--grace", "0", "--keep", "1")] for a in apps[1:]],
                WORKERS,
            )
            self.measure(apps, 1)
        if releases > 1:
            log(f"scale: {len(apps)} apps x {releases} releases")
            keep = ["--keep", str(releases)]
            h.pyrelctl_batches(
                [
                    [
                        *(self.install_argv(a, "--no-start", *keep) for _ in range(releases - 2)),
                        self.install_argv(a, *keep),
                    ]
                    for a in apps
                ],
                WORKERS,
            )
            self.measure(apps, releases)
        sizes = tuple(self.sizes)
        return [
            ScaleRow(
                "install, with start (grace 0, --keep R)",
                sizes,
                tuple(self.samples["install"]),
            ),
            ScaleRow(
                "status, all apps in one call",
                sizes,
                tuple(self.samples["status"]),
                STATUS_TARGET,
            ),
            ScaleRow(
                f"prune APP --keep {PRUNE_KEEP}",
                sizes,
                tuple(self.samples["prune"]),
                note=f"removes R-{PRUNE_KEEP} releases when R > {PRUNE_KEEP}, none otherwise",
            ),
        ]


def measure(host: Host, runs: int, apps: int, releases: int) -> list[ScaleRow]:
    """Scale figures (see the module's docstring)."""
    return Scale(host, apps, releases, runs).run()
