"""A stop that never lands in a BEAM's boot window.

A booting BEAM drops SIGTERM. erts turns the signal into a message to the
process registered as ``erl_signal_server`` and drops it while there is none
(``signal_notify_requested`` in erts/emulator/sys/unix/sys.c); the kernel
application registers that process as a child of ``kernel_sup`` and adds
``erl_signal_handler`` (SIGTERM: ``init:stop()``) once ``kernel_sup`` runs
(lib/kernel/src/kernel.erl), and a release in embedded mode first loads all
its modules. A stop in that window waits for ``TimeoutStopSec=`` and ends in
SIGKILL. Seen in the test container with the Bandit fixture (OTP 25): a
SIGTERM up to 0.5 s after the start was lost, one at 0.8 s stopped the node
in 1.1 s.

So while systemd stops a unit whose main process is a BEAM, pyrelctl sends
it SIGTERM again every :data:`EVERY` seconds: once the signal server runs,
one lands. A BEAM that is stopping already takes another ``init:stop()`` in
its stride (seen: three SIGTERMs 0.2 s apart, a clean exit 0 after 1.1 s, as
with one). The signal goes through a pidfd (pidfd_open(2)), so it never
reaches a later process with the same PID, such as the release a restart
starts. Only a BEAM, for which a repeated SIGTERM was seen to be harmless:
other servers may take a second one as "quit now", dropping requests in
flight.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

#: Seconds between two SIGTERMs to a BEAM that systemd stops.
EVERY = 0.25
#: How long after the stop began they are sent: a boot window is far
#: shorter; after it, the first SIGTERM was heard, or systemd's timeout acts.
FOR = 15.0

#: The VM's process name (/proc/PID/comm): the release's start script execs it.
BEAM = "beam.smp"


class TermResender:
    """Sends SIGTERM again to one process while it is a BEAM and alive; call
    :meth:`tick` as often as convenient, :meth:`close` at the end."""

    def __init__(self, pid: int, *, proc: Path = Path("/proc")) -> None:
        self.pid = pid
        self._comm = proc / str(pid) / "comm"
        self._fd: int | None = os.pidfd_open(pid)
        self._started = time.monotonic()
        self._last = self._started  # systemd sends the first one itself
        self.sent = 0

    @classmethod
    def for_pid(cls, pid: int) -> TermResender | None:
        """One for ``pid`` if it runs a BEAM now (or is about to: a start
        script that execs one), else None."""
        if pid <= 0:
            return None
        try:
            return cls(pid)
        except OSError:
            return None  # gone, or no pidfd_open (Linux < 5.3)

    def tick(self) -> None:
        if self._fd is None:
            return
        now = time.monotonic()
        if now - self._started > FOR:
            self.close()
            return
        if now - self._last < EVERY:
            return
        self._last = now
        try:
            comm = self._comm.read_text().strip()
        except OSError:
            comm = ""
        if comm != BEAM:
            return  # still its start script (SIGTERM ends that), or gone
        try:
            signal.pidfd_send_signal(self._fd, signal.SIGTERM)
            self.sent += 1
        except ProcessLookupError:
            self.close()  # it exited: the stop goes on without it
        except OSError:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
