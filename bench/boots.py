"""Boots of a release during a deploy window, counted from the journal (issue 30).

Today's overlap strategy boots the new release twice: beside the running
one in ``APP@overlap.service``, then again in ``APP.service``
(docs/zero-downtime.md). For a BEAM that is two boots of about 2 s each
beside the serving node. The bench counts them rather than infers them.

What counts as one boot: one started invocation of ``APP.service`` or
``APP@overlap.service`` (journald's trusted ``_SYSTEMD_INVOCATION_ID``;
systemd gives every start, and every automatic restart, a new one) in which
the release's own code ran and said so: devtools' test releases, generic
and mix, print ``NAME VERSION started`` (or ``NAME VERSION crashing on
purpose``) once per start. An entry without an invocation ID counts by its
unit and PID instead. Only entries after a journal cursor taken before the
deploy command count, so the start of the release serving before it does
not.
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


def count_boots(entries: Iterable[Mapping[str, Any]], app: str, version: str) -> int:
    """How many distinct starts of ``app`` ``version`` the journal ``entries``
    (``journalctl -o json`` objects) show, in ``app``'s units (see the module)."""
    lines = {f"{app} {version} {what}" for what in BOOT_LINES}
    seen = set()
    for entry in entries:
        unit = entry.get("_SYSTEMD_UNIT")
        message = entry.get("MESSAGE")
        # journald writes a message that is not UTF-8 as a list of bytes: never a boot line.
        if unit not in units(app) or not isinstance(message, str):
            continue
        if message.strip() not in lines:
            continue
        invocation = entry.get("_SYSTEMD_INVOCATION_ID")
        if invocation:
            seen.add((unit, "invocation", invocation))
        else:
            seen.add((unit, "pid", entry.get("_PID")))
    return len(seen)


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
    matches = [f"_SYSTEMD_UNIT={unit}" for unit in units(app)]  # the same field: OR
    since = [f"--after-cursor={after}"] if after else []
    out = _journalctl("-o", "json", *since, *matches)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def boots_since(after: str, app: str, version: str) -> int:
    """Starts of ``app`` ``version`` in the journal since the cursor ``after``."""
    return count_boots(entries_after(after, app), app, version)
