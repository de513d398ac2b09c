"""The memory of an app's releases while a deploy runs: one or two at once.

During an overlap deploy the new release runs beside the old one
(``APP@overlap.service`` beside ``APP.service``). A :class:`MemorySampler`
reads, every INTERVAL seconds, which processes are in those units' cgroups
and sums their proportional set size (Pss, ``/proc/PID/smaps_rollup``,
proc(5)): shared pages (the interpreter, the BEAM's code) count once across
the releases, as the host pays them. The container's systemd has no memory
controller of its own (a cgroup v1 host delegates only the unified
hierarchy), so ``MemoryCurrent=`` is not there to read.
"""

from __future__ import annotations

import threading
from pathlib import Path

INTERVAL = 0.05
CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))


def _unit_cgroups(app: str) -> list[Path]:
    """The cgroups of ``APP.service`` and of its instances (``APP@overlap``)."""
    for root in CGROUP_ROOTS:
        system = root / "system.slice"
        if system.is_dir():
            return [system / f"{app}.service", *system.glob(f"system-*.slice/{app}@*.service")]
    return []


def _pss_kib(pid: str) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0  # exited meanwhile
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def app_memory_kib(app: str) -> int:
    """The Pss of every process of the app's units now, in KiB."""
    total = 0
    for cgroup in _unit_cgroups(app):
        try:
            pids = (cgroup / "cgroup.procs").read_text().split()
        except OSError:
            continue  # the unit stopped meanwhile
        total += sum(_pss_kib(pid) for pid in pids)
    return total


class MemorySampler:
    """Inside a ``with`` block: the app's memory at the start and its peak."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.before_kib = 0
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"memory-{app}", daemon=True)

    def __enter__(self) -> MemorySampler:
        self.before_kib = self.peak_kib = app_memory_kib(self.app)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.peak_kib = max(self.peak_kib, app_memory_kib(self.app))
