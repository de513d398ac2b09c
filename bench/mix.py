"""Upgrade and rollback of a real ``mix release``: pyrelctl against floor.sh.

The generic release of :mod:`bench.deploys` starts in about a tenth of a
second, so a fixed start-up cost weighs on its ratio as much as it can.
This measures the same two operations on the artifact pyrelctl was built
for: an Elixir app assembled by ``mix release`` during the run
(devtools.releases, OTP and Elixir from Debian), which boots a BEAM and
answers ``NAME VERSION`` over HTTP on its port.

* ``mxa`` is deployed by pyrelctl with its defaults and an HTTP health
  check (``--health-http`` at its first install, remembered);
* ``mxf`` is installed once by pyrelctl, so that it runs under the same
  generated unit, and from then on deployed by ``bench/floor.sh``.

Each run upgrades both to version ``i`` and rolls them back, in an order that
alternates, timed as in :mod:`bench.deploys`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.deploys import RATIO_TARGET, App, Deploys, release_version
from bench.host import Host, log
from bench.report import Comparison
from devtools.releases import build_mix_app

PYRELCTL_APP = App("mxa", 18121)
FLOOR_APP = App("mxf", 18122)


class MixDeploys(Deploys):
    """Upgrades and rollbacks of the two mix apps, run after run."""

    def __init__(self, host: Host, runs: int) -> None:
        super().__init__(host)
        self.runs = runs
        self.tarballs: dict[str, dict[str, Path]] = {}

    def artifact(self, app: App, i: int) -> Path:
        return self.tarballs[app.name][release_version(i)]

    def setup(self) -> None:
        versions = [release_version(i) for i in range(self.runs + 1)]
        for app in (PYRELCTL_APP, FLOOR_APP):
            log(f"mix: building {app.name} {versions[0]}..{versions[-1]} with mix release")
            self.tarballs[app.name] = build_mix_app(
                self.host.scratch / "mix" / app.name, versions, name=app.name, http_port=app.port
            )
        self.host.pyrelctl(
            "install", self.artifact(PYRELCTL_APP, 0), "--health-http", PYRELCTL_APP.url
        )
        self.host.pyrelctl("install", self.artifact(FLOOR_APP, 0))

    def steps(self, i: int) -> list[Callable[[], None]]:
        return [
            lambda: self._floor(FLOOR_APP, i, "floor"),
            lambda: self._pyrelctl(PYRELCTL_APP, i, "default"),
        ]

    def comparisons(self, grace: float) -> list[Comparison]:
        s = self.samples
        found = []
        for op, verb in (("upgrade", "install"), ("rollback", "rollback")):
            found += [
                Comparison(
                    op,
                    f"{verb} -> answers (mix release)",
                    "floor.sh -> answers",
                    tuple(s[(op, "default", "answered")]),
                    tuple(s[(op, "floor", "answered")]),
                    RATIO_TARGET,
                ),
                Comparison(
                    op,
                    f"{verb} -> restart begins (mix release)",
                    "floor.sh -> restart begins",
                    tuple(s[(op, "default", "restarted")]),
                    tuple(s[(op, "floor", "restarted")]),
                ),
            ]
        return found


def measure(host: Host, runs: int) -> list[Comparison]:
    """Upgrade and rollback of a mix release (see the module's docstring)."""
    deploys = MixDeploys(host, runs)
    deploys.setup()
    for i in range(1, runs + 1):
        log(f"mix: run {i}/{runs}")
        deploys.run(i)
    # Two idle BEAMs would still be running through the measurements after this one.
    for app in (PYRELCTL_APP, FLOOR_APP):
        host.pyrelctl("uninstall", "--purge", app.name)
    return deploys.comparisons(grace=0.0)
