"""A scheduled job: the nightly report, run by ``pyshop-report.timer``.

Declared in pyproject.toml's ``[tool.pyrelctl.timers.report]``; each run is
``pyshop-report.service``, from the release that is current when it starts,
with the app's configuration and secrets (docs/deploys.md, "Processes and
timers"). The inventory lives in the web process, so this one only says
that it ran, and from which release.
"""

from __future__ import annotations

import logging

import pyrelctl_runtime

from pyshop import __version__

log = logging.getLogger("pyshop.report")


def main() -> None:
    pyrelctl_runtime.init()
    log.info("pyshop %s nightly report done", __version__)


if __name__ == "__main__":
    main()
