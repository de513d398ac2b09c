"""Reading the journal through journalctl(1), the tool operators already trust."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from pyrelctl.run import run

#: PID 1's own messages (trusted fields, set by journald): systemd's lines
#: about a unit carry its INVOCATION_ID, which alone anyone may forge.
PID1_MATCHES = ("_PID=1", "_UID=0")


def journalctl_argv(
    unit: str,
    *,
    also: Sequence[str] = (),
    root: Path | None = None,
    follow: bool = False,
    lines: int | None = None,
    since: str | None = None,
    until: str | None = None,
    priority: str | None = None,
) -> list[str]:
    """The journalctl command line that ``pyrelctl logs`` runs.

    ``since``, ``until`` and ``priority`` are journalctl's own syntax
    (systemd.time(7), e.g. "-1h", "today", "2026-11-30 14:00"; "err" or
    "warning..err"), passed on as given: journalctl checks them and says
    what it cannot parse. ``also`` are more units, interleaved in time.
    """
    argv = ["journalctl", "--unit", unit, *(f"--unit={u}" for u in also), "--no-pager"]
    if root is not None:
        argv.append(f"--root={root}")
    if lines is not None:
        argv.append(f"--lines={lines}")
    if since is not None:
        argv.append(f"--since={since}")
    if until is not None:
        argv.append(f"--until={until}")
    if priority is not None:
        argv.append(f"--priority={priority}")
    if follow:
        argv.append("--follow")
    return argv


def invocation_lines(
    invocation_id: str,
    *,
    limit: int = 60,
    settle: float = 0.0,
    process: tuple[str, int] | None = None,
) -> list[str]:
    """The last ``limit`` journal lines of one invocation of a unit.

    Selected by invocation id, never by time: lines of an earlier run of the
    same unit (or of the release we rolled back to) cannot leak in. The
    service's own output carries ``_SYSTEMD_INVOCATION_ID``; systemd's
    messages about the unit ("Main process exited, ...") carry
    ``INVOCATION_ID`` instead, hence the ``+`` (OR) of both matches.

    Only trusted fields choose a line (systemd.journal-fields(7): those
    starting with ``_`` are set by journald, never by the client). Any local
    process may log ``INVOCATION_ID=`` and ``SYSLOG_IDENTIFIER=systemd`` on the
    native socket, and a unit's invocation id is world-readable
    (``/run/systemd/units/invocation:UNIT``): such a line would show up in
    another app's failure report as ``systemd[...]``, and its words would
    steer the overlap strategy (deploy/overlap.py, CANNOT_RUN_TWICE; security
    issue 26). So ``INVOCATION_ID`` counts only on PID 1's own messages,
    ``_PID=1 _UID=0``, which is how ``journalctl -u`` matches them too
    (systemd's logs-show.c, add_matches_for_unit).

    A process's last words may reach the journal late: journald reads a
    service's stdout stream apart from PID 1's messages, and before systemd
    256 ``journalctl --sync`` does not wait for streams (systemd issue 32539).
    When journald gets to a line after its process exited, it takes the
    invocation id from the unit (systemd 252 reads
    /run/systemd/units/invocation:UNIT), which by then may be the next start's.
    So ``process`` (unit, main pid) adds that process's lines whatever
    invocation they were filed under, and with ``settle`` > 0 the service's
    own lines are waited for up to that many seconds.
    """
    if not invocation_id:
        return []
    matches = [f"_SYSTEMD_INVOCATION_ID={invocation_id}"]
    if process is not None and process[1] > 0:
        matches += ["+", f"_SYSTEMD_UNIT={process[0]}", f"_PID={process[1]}"]
    deadline = time.monotonic() + settle
    while settle > 0 and not _has_lines(matches) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc = run(
        [
            "journalctl",
            "--no-pager",
            "--output=short-precise",
            f"--lines={limit}",
            *matches,
            "+",
            *PID1_MATCHES,
            f"INVOCATION_ID={invocation_id}",
        ],
        check=False,
    )
    return [line for line in proc.stdout.splitlines() if not line.startswith("-- ")]


def _has_lines(matches: Sequence[str]) -> bool:
    proc = run(
        ["journalctl", "--no-pager", "--quiet", "--output=cat", "--lines=1", *matches],
        check=False,
    )
    return bool(proc.stdout.strip())


#: journald's native protocol socket (systemd-journald.service(8)).
NATIVE_SOCKET = "/run/systemd/journal/socket"


def _field(name: str, value: str) -> bytes:
    # The binary form (name, newline, little-endian 64-bit length, value) takes
    # any value: no newline or byte of it can start a field of its own
    # (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/).
    data = value.encode(errors="replace")
    return name.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"


def send_lines(unit: str, identifier: str, lines: Sequence[str], *, priority: int = 6) -> bool:
    """Log ``lines`` (a release command's output that pyrelctl ran, such as a
    hook's) into the journal of ``unit``; whether journald took them.

    ``OBJECT_SYSTEMD_UNIT=`` is how a privileged process files a message about
    a unit: ``journalctl -u UNIT`` shows it when the sender's ``_UID`` is 0
    (systemd's logs-show.c, add_matches_for_unit), which journald sets, not
    the sender. Offline (no journald) nothing is logged.
    """
    import socket

    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError:
        return False
    with sock:
        for line in lines:
            datagram = b"".join(
                (
                    _field("MESSAGE", line),
                    _field("PRIORITY", str(priority)),
                    _field("SYSLOG_IDENTIFIER", identifier),
                    _field("OBJECT_SYSTEMD_UNIT", unit),
                )
            )
            try:
                sock.sendto(datagram, NATIVE_SOCKET)
            except OSError:
                return False
    return True
