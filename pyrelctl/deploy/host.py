"""The host's facilities, one small value every deploy step receives.

A step needs the host layout (paths under ``--root``), the systemd client,
somewhere to say what it does, and to know whether the host is online (a
running systemd to call) or offline (``--root``: files only). It gets them
as one :class:`Host`, built once by the command, instead of reaching into
the orchestrator for them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from pyrelctl.appsetup import AppSetup
from pyrelctl.archive import Progress
from pyrelctl.layout import Layout
from pyrelctl.systemd import Systemd

Say = Callable[[str], None]


def quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Host:
    """What every deploy step works with.

    ``systemd`` is never called when ``layout.offline`` (``--root``).
    ``say`` receives progress lines for the operator; ``progress`` (if any)
    the files unpacked so far.
    """

    layout: Layout
    systemd: Systemd
    say: Say = quiet
    progress: Progress | None = None

    @property
    def online(self) -> bool:
        return not self.layout.offline

    @functools.cached_property
    def setup(self) -> AppSetup:
        """The app's settings directory and units (appsetup.py), on this host."""
        return AppSetup(self.layout, self.systemd, self.say)
