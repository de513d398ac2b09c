"""Durations as operators write them: ``90``, ``90s``, ``10m``, ``1h``, ``1h30m``."""

from __future__ import annotations

import re

from pyrelctl.errors import BadInput

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)?", re.ASCII)
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, None: 1.0}
#: The longest watch window: a day (a release still crashing later is an incident).
MAX_SECONDS = 86400.0


def parse_duration(text: object, what: str) -> float:
    """Seconds of ``text`` (a number of seconds, or parts like ``1h30m``)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str) and text.strip():
        seconds, pos, value = 0.0, 0, text.strip()
        while pos < len(value):
            match = _PART.match(value, pos)
            if match is None or (match[2] is None and match.end() != len(value)):
                raise BadInput(f"{what} {text!r} is not a duration", hint="e.g. 90s, 10m, 1h")
            seconds += float(match[1]) * _UNITS[match[2]]
            pos = match.end()
    else:
        raise BadInput(f"{what} {text!r} is not a duration", hint="e.g. 90s, 10m, 1h")
    if not 0 <= seconds <= MAX_SECONDS:
        raise BadInput(f"{what} must be between 0 and 24h, not {text!r}")
    return seconds
