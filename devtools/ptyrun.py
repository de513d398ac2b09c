"""Run a program with its stdout and stderr on a pseudo-terminal; keep every byte.

What a terminal receives is what the tests of issue 26 (2) look at: the
bytes, after the line discipline, that a person's terminal would obey. As a
script (run inside the test machine) it prints the program's exit status on
the first line and the bytes in hex on the second:

    python devtools/ptyrun.py PROGRAM ARGS...
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from collections.abc import Mapping, Sequence

#: What a hostile release prints: sets the window title, moves up and erases
#: pyrelctl's own line and forges another, writes the clipboard (xterm's
#: OSC 52), the 8-bit CSI, OSC and ST, a right-to-left override, DEL,
#: backspace, carriage return.
HOSTILE = (
    "\x1b]0;pwned\x07\x1b[1A\x1b[2Kshop 2.0.0 is up"
    "\x1b]52;c;cm0gLXJmIC8K\x07\x9b2J\x9d0;x\x9c\u202egnp.exe\x7f\b\r"
)
#: What a terminal acts on; none of it may arrive from a release.
FORBIDDEN = ("\x1b", "\x07", "\x9b", "\x9d", "\x9c", "\u202e", "\x7f", "\b")


def assert_harmless(out: bytes) -> str:
    """The terminal got none of HOSTILE's controls, and got them shown; the text."""
    text = out.decode("utf-8", "surrogateescape")
    found = [c for c in FORBIDDEN if c in text]
    assert not found, (found, out)
    # Raw 8-bit bytes that are no UTF-8 are C1 controls to a terminal too.
    assert "\udc9b" not in text and "\udc9d" not in text, out
    assert "\\x1b]0;pwned\\x07" in text, text
    return text


def on_pty(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 300.0,
) -> tuple[int, bytes]:
    """Run ``argv`` with stdin from /dev/null and stdout, stderr on one pty."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [os.fspath(a) for a in argv],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=dict(env) if env is not None else None,
    )
    os.close(slave)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise TimeoutError(f"{argv[0]} wrote nothing for {timeout} s")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed its end (Linux)
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    return proc.wait(timeout=timeout), bytes(out)


if __name__ == "__main__":
    code, written = on_pty(sys.argv[1:])
    print(code)
    print(written.hex())
