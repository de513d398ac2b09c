"""Writing unit files only when they change, without rendering them when they cannot have.

An upgrade usually leaves the units as they are (they run the release through
``current``), yet rendering them means importing jinja2 and compiling the
template: tens of milliseconds before the restart, on every deploy. So each
app keeps a memo (``var/lib/pyrelctl/APP/units.json``): per unit file, the
digest of the inputs it was rendered from and the digest of the text written.
When the inputs are the same and the file on disk is still that text, the
file is left alone without rendering. Any other case (no memo, new inputs,
a file edited by hand or deleted) renders and writes as before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pyrelctl.hostfiles import read_json, write_atomic, write_json
from pyrelctl.layout import AppPaths
from pyrelctl.units import UnitText

MEMO = "units.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_unit(app: AppPaths, path: Path, unit: UnitText) -> bool:
    """Make ``path`` hold the rendering of ``unit``; True if the file changed."""
    memo_file = app.state / MEMO
    memo = read_json(memo_file, hint=f"remove {memo_file}: it is only a cache")
    inputs = unit.digest()
    known = memo.get(path.name)
    if isinstance(known, dict) and known.get("inputs") == inputs:
        try:
            if _sha256(path.read_bytes()) == known.get("output"):
                return False
        except FileNotFoundError:
            pass
    text = unit.render().encode()
    changed = write_atomic(path, text)
    memo[path.name] = {"inputs": inputs, "output": _sha256(text)}
    app.state.mkdir(parents=True, exist_ok=True)
    write_json(memo_file, memo)
    return changed


def forget_unit(app: AppPaths, path: Path) -> None:
    """Drop the memo of a unit file that was removed."""
    memo_file = app.state / MEMO
    memo = read_json(memo_file, hint=f"remove {memo_file}: it is only a cache")
    if memo.pop(path.name, None) is not None:
        write_json(memo_file, memo)
