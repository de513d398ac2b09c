"""Boots of a release during a deploy window, counted from the journal (issue 30).

Today's overlap strategy boots the new release twice: beside the running
one in ``APP@overlap.service``, then again in ``APP.service``
(docs/zero-downtime.md). For a BEAM that is two boots of about 2 s each
beside the serving node. The bench counts them rather than infers them.

What counts as one boot: one process of the app's units (``APP.service``,
``APP@overlap.service``) in which the release's own code ran and said so:
devtools' test releases, generic and mix, print ``NAME VERSION started``
(or ``NAME VERSION crashing on purpose``) once per start, from their main
process (the launcher execs the server; the BEAM prints it), so every start
and every automatic restart is one new PID. The PID rather than the
invocation ID: journald may file a line it reads after its process exited
under the unit's next invocation (pyrelctl/journal.py). The lines are
found by the release's journal identifier (both units set
``SyslogIdentifier=APP``) or by the units' trusted ``_SYSTEMD_UNIT``, in
every entry after a journal cursor taken before the deploy command (see
:func:`entries_after`), so the start of the release serving before it does
not count.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

#: What devtools' test releases print once per start (NAME VERSION WHAT).
BOOT_LINES = ("started", "crashing on purpose")


def units(app: str) -> tuple[str, ...]:
    """The units a release of ``app`` runs in: the service, and the overlap instance."""
    return (f"{app}.service", f"{app}@overlap.service")


def boot_entries(
    entries: Iterable[Mapping[str, Any]], app: str, version: str
) -> list[Mapping[str, Any]]:
    """The journal ``entries`` (``journalctl -o json`` objects) in which
    ``app`` ``version`` said it started, in ``app``'s units (see the module)."""
    lines = {f"{app} {version} {what}" for what in BOOT_LINES}
    found = []
    for entry in entries:
        ours = entry.get("_SYSTEMD_UNIT") in units(app) or entry.get("SYSLOG_IDENTIFIER") == app
        message = entry.get("MESSAGE")
        # journald writes a message that is not UTF-8 as a list of bytes: never a boot line.
        if ours and isinstance(message, str) and message.strip() in lines:
            found.append(entry)
    return found


def count_boots(entries: Iterable[Mapping[str, Any]], app: str, version: str) -> int:
    """How many distinct starts of ``app`` ``version`` the journal ``entries`` show."""
    return len({entry.get("_PID") for entry in boot_entries(entries, app, version)})


def describe(entries: Iterable[Mapping[str, Any]]) -> str:
    """Where each boot line was filed, for the bench's log."""
    return "; ".join(
        f"{e.get('_SYSTEMD_UNIT', '?')} pid {e.get('_PID', '?')} "
        f"invocation {str(e.get('_SYSTEMD_INVOCATION_ID', '?'))[:8]}"
        for e in entries
    )


def _journalctl(*args: str) -> str:
    return subprocess.run(
        ["journalctl", "--no-pager", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def cursor() -> str:
    """The cursor of the journal's last entry now ('' for an empty journal)."""
    for line in _journalctl("-n", "1", "-o", "json").splitlines():
        return str(json.loads(line).get("__CURSOR", ""))
    return ""


def entries_after(after: str, app: str) -> list[dict[str, Any]]:
    """The journal entries of ``app``'s units after the cursor ``after``."""
    # What journald has received but not written yet would be missed without this.
    subprocess.run(["journalctl", "--sync"], capture_output=True, check=False, timeout=30)
    # Every entry, filtered here: with field matches (_SYSTEMD_UNIT=,
    # SYSLOG_IDENTIFIER=) beside --after-cursor, journalctl 252 returned no
    # line of APP@overlap.service in the bench, while these same entries,
    # read unfiltered, carry both fields. A window's journal is small.
    since = [f"--after-cursor={after}"] if after else []
    out = _journalctl("-o", "json", *since)
    found = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [
        e
        for e in found
        if e.get("_SYSTEMD_UNIT") in units(app) or e.get("SYSLOG_IDENTIFIER") == app
    ]


def boots_since(after: str, app: str, version: str) -> tuple[int, str]:
    """Starts of ``app`` ``version`` in the journal since the cursor ``after``,
    and where their lines were filed (:func:`describe`)."""
    entries = entries_after(after, app)
    return count_boots(entries, app, version), describe(boot_entries(entries, app, version))
