"""What ``pyrelctl doctor`` reports: findings, their severity, the human report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pyrelctl.terminal import visible

#: Offending paths named per finding; the rest are counted.
MAX_LISTED = 5


class Severity(StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    PROBLEM = "problem"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Finding:
    """The result of one check on the host or on one app."""

    check: str  # a stable identifier, e.g. "etc-permissions"
    subject: str  # "host" or the app's name
    severity: Severity
    message: str
    fix: str | None = None  # a shell command line
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["details"] = list(self.details)
        return data


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.PROBLEM]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "problems": len(self.problems),
            "warnings": len(self.warnings),
            "findings": [f.to_json() for f in self.findings],
        }


_COLOURS = {
    Severity.OK: "\033[32m",
    Severity.INFO: "\033[36m",
    Severity.WARNING: "\033[33m",
    Severity.PROBLEM: "\033[1;31m",
    Severity.SKIPPED: "\033[2m",
}


def report_lines(report: Report, *, quiet: bool = False, colour: bool = False) -> list[str]:
    """The human report: findings grouped by subject, each problem with its fix.

    ``quiet`` leaves out what is fine (ok, info, skipped); ``colour`` adds ANSI
    colours (the CLI decides: a terminal, and no NO_COLOR).
    """
    lines: list[str] = []
    subject = None
    for finding in report.findings:
        if quiet and finding.severity not in (Severity.PROBLEM, Severity.WARNING):
            continue
        if finding.subject != subject:
            subject = finding.subject
            lines.append(visible(subject))
        label = "PROBLEM" if finding.severity is Severity.PROBLEM else finding.severity.value
        padded = f"{label:<8}"
        if colour:
            padded = f"{_COLOURS[finding.severity]}{padded}\033[0m"
        # What doctor found may quote a release's file names: shown, not obeyed.
        lines.append(f"  {padded} {finding.check}: {visible(finding.message)}")
        lines.extend(f"           | {visible(detail)}" for detail in finding.details)
        if finding.fix and finding.severity in (Severity.PROBLEM, Severity.WARNING):
            lines.append(f"           fix: {visible(finding.fix)}")
    problems, warnings = len(report.problems), len(report.warnings)
    if problems or warnings:
        lines.append(
            f"{problems} problem{'s' * (problems != 1)}, {warnings} warning{'s' * (warnings != 1)}"
        )
    else:
        lines.append("no problems found")
    return lines
