"""The error hierarchy, each class carrying the exit code of docs/DESIGN (shared/DESIGN.md).

Domain code raises these; only the CLI entry point turns them into
``error: ...`` / ``hint: ...`` lines and the process exit status.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses of the pyrelctl command (the contract in DESIGN.md)."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    ROLLED_BACK = 3
    ROLLBACK_FAILED = 4
    LOCKED = 5


class PyrelctlError(Exception):
    """Base of every error pyrelctl reports to the user."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInput(PyrelctlError):
    """Usage, artifact, manifest, name or checksum is wrong; nothing was changed."""

    exit_code = ExitCode.BAD_INPUT


class NotInstalled(BadInput):
    """The app, or the release version asked for, is not on this host."""


class HostError(PyrelctlError):
    """The host or systemd refused something."""

    exit_code = ExitCode.FAILED


class CommandFailed(HostError):
    """A subprocess exited with a non-zero status."""

    def __init__(
        self, argv: Sequence[str], status: int, stderr: str = "", *, hint: str | None = None
    ) -> None:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        detail = f": {last}" if last else ""
        super().__init__(f"{argv[0]} exited with status {status}{detail}", hint=hint)
        self.argv = list(argv)
        self.status = status
        self.stderr = stderr


class FetchFailed(HostError):
    """Fetching an artifact from a URL failed (no answer, a stall, a server
    error, a cut transfer): another try may work. A URL that names nothing
    acceptable is :class:`BadInput`."""


class SystemdError(HostError):
    """A call to systemd failed, or a unit did not reach the state asked for."""


class NotRunning(HostError):
    """The app's service is not running, and the command needs it to be."""


class NotRoot(HostError):
    """The command needs root (it runs units, or reads root-only settings)."""


class Locked(PyrelctlError):
    """Another pyrelctl operation holds the app's lock."""

    exit_code = ExitCode.LOCKED


class DeployFailed(PyrelctlError):
    """The new release did not come up.

    ``exit_code`` depends on what happened afterwards: 3 when the previous
    release was restored and runs, 4 when that failed too, 1 for a first
    install with nothing to restore. ``report`` is the structured failure
    report (also printed by ``--json``).
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: ExitCode,
        report: dict[str, object],
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.report = report
