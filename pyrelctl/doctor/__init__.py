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

import dataclasses
from collections.abc import Sequence

from pyrelctl.doctor.app import AppChecks
from pyrelctl.doctor.epmd import EpmdChecks
from pyrelctl.doctor.findings import Finding, Report, Severity, report_lines
from pyrelctl.doctor.host import MIN_SYSTEMD, SYSTEMD_FEATURES, HostChecks, parse_systemd_version
from pyrelctl.errors import PyrelctlError
from pyrelctl.layout import AppPaths
from pyrelctl.release import Kind

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


class Doctor(HostChecks, AppChecks, EpmdChecks):
    """Runs the checks: the host's first (they connect to systemd), then each app's."""

    def run(self, apps: Sequence[str] | None = None) -> Report:
        """Check the host, then ``apps`` (default: every installed app)."""
        names = list(apps) if apps is not None else self.layout.apps()
        paths = [self.layout.app(name).require() for name in names]
        findings: list[Finding] = []
        findings.extend(self._host(paths))
        mix = {app.name for app in paths if self._is_mix(app)}
        epmd = list(self._epmd()) if mix else []
        findings.extend(epmd)
        broken = [f for f in epmd if f.severity is Severity.PROBLEM and "epmd_close" in f.message]
        for app in paths:
            for finding in self._app(app):
                # A mix release that is down because epmd.service is: starting
                # it again fails again; the fix is the port mapper's.
                if (
                    broken
                    and app.name in mix
                    and finding.check == "unit-state"
                    and finding.severity in (Severity.PROBLEM, Severity.WARNING)
                ):
                    finding = dataclasses.replace(
                        finding,
                        message=f"{finding.message} (see the epmd problem above)",
                        fix=broken[0].fix,
                    )
                findings.append(finding)
        return Report(tuple(findings))

    def _is_mix(self, app: AppPaths) -> bool:
        try:
            current = app.current_version()
        except PyrelctlError:
            return False
        release = self._release(app, current) if current is not None else None
        return release is not None and release.kind is Kind.MIX
