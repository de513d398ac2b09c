"""Text pyrelctl did not write, made safe to show on root's terminal.

A release's hook output, the last line of its ``[health] command`` or
``on_failure`` hook, a failure reason ``history`` replays long after the
deploy, journal lines, an artifact's file or member names: each may hold
what a terminal obeys rather than shows. ECMA-48 control functions
(ESC/CSI/OSC, their 8-bit C1 forms 0x9b and 0x9d, BEL, backspace, CR) set
the window title, move the cursor up and erase pyrelctl's own line, forge
another ("shop 2.0.0 is up"), or write the clipboard (xterm's OSC 52);
bidi controls show text in another order than it has (CVE-2021-42574).

:func:`visible` renders every character :meth:`str.isprintable` refuses
(exactly those ``repr()`` escapes: C0 and C1 controls, DEL, format
characters such as the bidi controls and zero-width ones, line and
paragraph separators, unassigned code points) as its escape, ``\\x1b``,
``\\u202e``; a byte kept by the surrogateescape error handler (PEP 383) is
shown as the byte it was, ``\\x9b``. Letters of every script, spaces and
tabs stay as they are. :func:`bounded` also cuts a line to a length a
person can read. The CLI prints every line for people through them
(``pyrelctl.cli.common.echo``); ``--json`` keeps the exact text, which
JSON escapes.
"""

from __future__ import annotations

#: The longest ``error:`` or ``hint:`` line, in characters: whatever an
#: artifact holds (a 32 MiB member name), the line stays readable.
ERROR_LINE_LIMIT = 300
#: The longest other line for people on stderr (progress, a failed hook's
#: output, journal lines): the whole text is in the journal.
LINE_LIMIT = 2000


def _escape(c: str) -> str:
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:  # surrogateescape's stand-in for the byte n - 0xDC00
        return f"\\x{n - 0xDC00:02x}"
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def visible(text: str, *, newlines: bool = False) -> str:
    """``text`` with every character a terminal would act on, or hide, shown as its escape.

    Tabs stay; so do newlines when ``newlines`` (a block of lines, each made
    visible), else a newline is ``\\x0a`` too: one line stays one line.
    """
    if text.isprintable():  # nearly always: nothing to do
        return text
    return "".join(
        c if c.isprintable() or c == "\t" or (newlines and c == "\n") else _escape(c) for c in text
    )


def bounded(text: str, limit: int) -> str:
    """``text`` made :func:`visible`, cut to at most ``limit`` characters plus a note
    of its length (in characters of the original) when it is longer."""
    if len(text) <= limit and text.isprintable():
        return text
    pieces: list[str] = []
    length = 0
    # Character by character, never more than limit of them: a 32 MiB line
    # is not escaped whole to be thrown away, and no escape is cut in two.
    for c in text[:limit]:
        piece = c if c.isprintable() or c == "\t" else _escape(c)
        if length + len(piece) > limit:
            break
        pieces.append(piece)
        length += len(piece)
    else:
        if len(text) <= limit:
            return "".join(pieces)
    return f"{''.join(pieces)}... ({len(text)} characters in all)"
