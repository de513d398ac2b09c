"""``on_calendar`` checked by systemd's own parser: ``systemd-analyze calendar``.

Why the host's tool and not a parser of pyrelctl's: an ``OnCalendar=`` value
means what the host's PID 1 makes of it (src/shared/calendarspec.c), and that
grammar is large (weekday ranges, ``~`` for the last days of a month,
repetitions ``/``, keywords such as ``quarterly``, time zones since systemd
235) and changes between versions. A copy in Python would accept what some
host refuses (the timer then never loads: "Timer unit lacks value setting")
or refuse what it accepts. ``systemd-analyze calendar`` runs that very parser
without a running systemd (also under ``--root``, and in an image build), in
about 20 ms. It also says when an expression parses but never elapses
(``2020-01-01``, ``*-02-30``): refused as well, since such a timer never runs.

Before the expression reaches the tool or a unit file it must pass
:data:`ALLOWED`: the characters of systemd.time(7)'s calendar syntax and of
time zone names, no ``%`` (a specifier in a unit file), quotes, backslashes,
``;`` or control characters. So the value written is the value checked.

A machine without ``systemd-analyze`` (``pyrelctl build`` on a developer's
laptop) checks the characters only; the host checks the rest at install,
where detection reads the manifest again.
"""

from __future__ import annotations

import logging
import os
import re
import shutil

from pyrelctl.errors import BadInput
from pyrelctl.run import run

log = logging.getLogger(__name__)

#: Digits, letters (weekdays, keywords, zone names), the separators of
#: systemd.time(7) (``-:.,/~*`` and blanks) and ``_+`` of zone names
#: (``America/Port_of_Spain``, ``Etc/GMT+5``).
ALLOWED = re.compile(r"[A-Za-z0-9 *.,:/~_+-]{1,200}", re.ASCII)
#: Where Debian and Fedora install it (the ``systemd`` package).
TOOL = "systemd-analyze"


def _tool() -> str | None:
    return shutil.which(TOOL, path=os.environ.get("PATH", "") + ":/usr/bin:/bin")


def check_calendar(spec: str, what: str) -> str:
    """Return ``spec`` if systemd accepts it as an ``OnCalendar=`` value that elapses."""
    if not ALLOWED.fullmatch(spec) or not spec.strip():
        raise BadInput(
            f"{what} {spec!r} is not a calendar expression",
            hint='e.g. "*-*-* 03:00:00", "Mon..Fri 09:00", "hourly" (systemd.time(7))',
        )
    tool = _tool()
    if tool is None:
        log.debug("%s not found: %s checked for its characters only", TOOL, what)
        return spec
    # "--": the expression is never read as an option. C locale: the output
    # parsed below is the untranslated one.
    proc = run(
        [tool, "calendar", "--", spec],
        check=False,
        timeout=10,
        env={**os.environ, "LC_ALL": "C", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    )
    if proc.returncode != 0:
        raise BadInput(
            f"{what} {spec!r} is not a calendar expression systemd accepts",
            hint='e.g. "*-*-* 03:00:00", "Mon..Fri 09:00", "hourly" (systemd.time(7); '
            f"try: systemd-analyze calendar {spec!r})",
        )
    if re.search(r"^\s*Next elapse: never\s*$", proc.stdout, re.MULTILINE):
        raise BadInput(
            f"{what} {spec!r} never elapses",
            hint=f"systemd finds no future time it matches (systemd-analyze calendar {spec!r})",
        )
    return spec
