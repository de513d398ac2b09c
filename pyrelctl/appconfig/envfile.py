"""Environment variables as the host gives them to an app: checked, written, read back.

The file is read by PID 1 (``EnvironmentFile=``, systemd.exec(5)), so the
format is systemd's, not a shell's: ``KEY=VALUE`` lines, ``#`` comments,
values in double quotes where a backslash escapes ``"``, ``\\``, ``$`` and a
backquote, and nothing is expanded (src/basic/env-file.c, parse_env_file_internal).
Every value is written double-quoted with exactly those escapes; the system
tests read the values back from the running process.

Refused, before anything is written: names that are not variable names,
names that systemd, pyrelctl or a mix release set themselves (a value there
would break readiness, sockets, credentials or ``rpc``), and values no
environment file can carry (a newline, a NUL, other control characters),
nor any other character Python's :meth:`str.splitlines` ends a line at
(U+2028 LINE SEPARATOR: such a value was once stored, and pyrelctl could
not read its own file back, issue 26).

Lines are split where systemd splits them, at ``\n`` and ``\r`` (NEWLINE in
env-file.c), never by ``splitlines``: a file pyrelctl wrote reads back
whatever its values hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pyrelctl.errors import BadInput

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)

#: Set by systemd for the service (systemd.exec(5), "Environment Variables in
#: Spawned Processes"), by pyrelctl's unit, or by a mix release's own script
#: for the node pyrelctl's rpc reaches; a host value would be ignored or break it.
RESERVED = frozenset(
    {
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "CREDENTIALS_DIRECTORY",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
        "MAINPID",
        "MANAGERPID",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
        "RUNTIME_DIRECTORY",
        "STATE_DIRECTORY",
        "LOGS_DIRECTORY",
        "CACHE_DIRECTORY",
        "CONFIGURATION_DIRECTORY",
        "SERVICE_RESULT",
        "EXIT_CODE",
        "EXIT_STATUS",
        "USER",
        "LOGNAME",
        "RELEASE_COOKIE",
        "RELEASE_NODE",
        "RELEASE_DISTRIBUTION",
        "RELEASE_TMP",
        "RELEASE_ROOT",
        "RELEASE_NAME",
        "RELEASE_VSN",
    }
)
RESERVED_PREFIXES = ("PYRELCTL_", "MONITOR_", "TRIGGER_")


def check_name(name: str) -> str:
    """A variable name the host may set for an app."""
    if not NAME_RE.fullmatch(name):
        raise BadInput(
            f"invalid variable name {name!r}",
            hint="a letter or '_', then letters, digits or '_' (at most 128)",
        )
    if name in RESERVED or name.startswith(RESERVED_PREFIXES):
        raise BadInput(
            f"{name} is set by systemd, pyrelctl or the release itself; it cannot be configured",
            hint="see docs/operate.md, 'Configuration', for the names that are taken",
        )
    return name


#: Where str.splitlines() ends a line (the Python docs' table of line
#: boundaries): none of them may be in a value.
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _refused(c: str) -> bool:
    n = ord(c)
    # C0 controls but tab, DEL, the C1 controls (0x85 among them), and the
    # line and paragraph separators.
    return (n < 0x20 and c != "\t") or 0x7F <= n <= 0x9F or c in LINE_BREAKS


def check_value(name: str, value: str) -> str:
    """A value an environment file can carry: one line, no control characters but tab."""
    bad = next((c for c in value if _refused(c)), None)
    if bad is not None:
        what = "line break" if bad in "\u2028\u2029" else "control character"
        raise BadInput(
            f"the value of {name} contains the {what} {bad!r} (U+{ord(bad):04X}), which an "
            "environment file cannot carry",
            hint="put multi-line values (keys, certificates) in a secret: pyrelctl secret set",
        )
    return value


def check(
    variables: Mapping[str, str], *, unchanged: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``variables``, every name and value checked; a value the same as in
    ``unchanged`` (the current generation) is kept as it was stored."""
    kept = unchanged or {}
    return {
        check_name(k): v if k in kept and kept[k] == v else check_value(k, v)
        for k, v in variables.items()
    }


_ESCAPED = re.compile(r'(["\\$`])')


def render(variables: Mapping[str, str], header: str = "") -> bytes:
    """The environment file for ``variables`` (sorted by name)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name in sorted(variables):
        escaped = _ESCAPED.sub(r"\\\1", variables[name])
        lines.append(f'{name}="{escaped}"')
    return ("\n".join(lines) + "\n").encode()


#: systemd's line ends in an environment file (NEWLINE, src/basic/env-file.c).
_LINE_END = re.compile(r"\r\n|[\n\r]")
#: What surrounds a line's NAME=VALUE: blanks, not str.strip()'s whitespace
#: (which holds U+2028 and U+0085: a value ending so would lose them unseen).
_BLANKS = " \t"


def parse(text: str, *, source: str, stored: bool = False) -> dict[str, str]:
    """Variables of a dotenv file (``pyrelctl config import``) or of a file we wrote.

    Accepts what dotenv files hold and systemd reads alike: blank lines, ``#``
    comments, an optional ``export``, ``KEY=value``, ``KEY="value"`` (with the
    escapes above) and ``KEY='value'`` (literal). Multi-line values and
    variable references are refused, not guessed at. ``stored``: a file
    pyrelctl wrote (a generation), whose values are read as systemd reads
    them, even one an older pyrelctl let through and :func:`check_value`
    refuses now.
    """
    variables: dict[str, str] = {}
    for number, raw in enumerate(_LINE_END.split(text), 1):
        line = raw.strip(_BLANKS)
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        if line.startswith("export "):
            line = line.removeprefix("export ").lstrip(_BLANKS)
        name, sep, value = line.partition("=")
        name = name.strip(_BLANKS)
        if not sep:
            raise BadInput(f"{where}: not NAME=VALUE")
        value = value.strip(_BLANKS)
        if value[:1] == '"':
            value = _double_quoted(value, where)
        elif value[:1] == "'":
            if len(value) < 2 or not value.endswith("'") or "'" in value[1:-1]:
                raise BadInput(f"{where}: unterminated single-quoted value")
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip(_BLANKS)
            if any(c in value for c in "\"'\\$`"):
                raise BadInput(
                    f"{where}: quote a value with quotes, backslashes, $ or backquotes",
                    hint='e.g. NAME="a \\"b\\" c" (nothing is expanded)',
                )
        variables[check_name(name)] = value if stored else check_value(name, value)
    return variables


def _double_quoted(value: str, where: str) -> str:
    out: list[str] = []
    i = 1
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append(nxt if nxt in '"\\$`' else "\\" + nxt)
            i += 2
            continue
        if c == '"':
            if value[i + 1 :].strip(_BLANKS):
                raise BadInput(f"{where}: text after the closing quote")
            return "".join(out)
        out.append(c)
        i += 1
    raise BadInput(f"{where}: unterminated double-quoted value (values are one line)")


def diff(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, list[str]]:
    """Which names a change adds, changes and removes (never the values)."""
    return {
        "added": sorted(set(new) - set(old)),
        "changed": sorted(k for k in set(new) & set(old) if new[k] != old[k]),
        "removed": sorted(set(old) - set(new)),
    }


def describe(change: Mapping[str, Iterable[str]]) -> str:
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("+", change.get("added", ())),
            ("~", change.get("changed", ())),
            ("-", change.get("removed", ())),
        )
        if names
    ]
    return " ".join(parts) or "no change"
