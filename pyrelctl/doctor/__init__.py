"""``pyrelctl doctor``: what is wrong with this host or app, and the command that fixes it.

Each check yields :class:`Finding` values: ``ok``, ``info`` (worth knowing,
such as drop-ins), ``warning`` (not broken yet), ``problem`` (pyrelctl or
the service will fail, or a secret is exposed) or ``skipped`` (could not be
checked here). A problem carries a ``fix``: one shell command line, with
``--root`` where the check ran under one, that an operator can paste.

Checks that need the running systemd (its version, D-Bus, the unit's state)
run only on the host itself; under ``--root`` the file checks run alone.
Nothing here changes the host.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyrelctl.doctor.app import AppChecks
from pyrelctl.doctor.findings import Finding, Report, Severity, report_lines
from pyrelctl.doctor.host import MIN_SYSTEMD, SYSTEMD_FEATURES, HostChecks, parse_systemd_version

__all__ = [
    "MIN_SYSTEMD",
    "SYSTEMD_FEATURES",
    "Doctor",
    "Finding",
    "Report",
    "Severity",
    "parse_systemd_version",
    "report_lines",
]


class Doctor(HostChecks, AppChecks):
    """Runs the checks: the host's first (they connect to systemd), then each app's."""

    def run(self, apps: Sequence[str] | None = None) -> Report:
        """Check the host, then ``apps`` (default: every installed app)."""
        names = list(apps) if apps is not None else self.layout.apps()
        paths = [self.layout.app(name).require() for name in names]
        findings: list[Finding] = []
        findings.extend(self._host(paths))
        for app in paths:
            findings.extend(self._app(app))
        return Report(tuple(findings))
