"""Developer tools for pyrelctl's system tests and demo (not shipped in the wheel).

- `devtools.machine`: boot a throwaway systemd in a container and run commands in it.
- `devtools.releases`: build real releases (an Elixir `mix release`, a generic one).
- `devtools.proc`: the one subprocess helper, its errors and deadline polling.
"""

from __future__ import annotations

from devtools.machine import Machine, MachineCommand, MachineError
from devtools.proc import CommandError, CommandTimeout, DevtoolsError, run, wait_until
from devtools.releases import (
    Behaviour,
    ReleaseBuildError,
    build_mix_app,
    make_generic_release,
)

__all__ = [
    "Behaviour",
    "CommandError",
    "CommandTimeout",
    "DevtoolsError",
    "Machine",
    "MachineCommand",
    "MachineError",
    "ReleaseBuildError",
    "build_mix_app",
    "make_generic_release",
    "run",
    "wait_until",
]
