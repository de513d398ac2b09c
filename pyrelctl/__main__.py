"""``python -m pyrelctl``: the same program as the ``pyrelctl`` command (the watch
unit starts it so, with the interpreter pyrelctl runs on)."""

from pyrelctl.cli import run

run()
