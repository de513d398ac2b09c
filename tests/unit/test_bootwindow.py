"""bootwindow.TermResender: SIGTERM again, only to a BEAM, only while it lives."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrelctl import bootwindow
from pyrelctl.bootwindow import TermResender


def _sleeper(tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    """`sleep 30` under the process name ``name`` (/proc/PID/comm)."""
    program = tmp_path / name
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy(sleep, program)
    # With SIGTERM's default action even where the test runner ignores it
    # (an ignored disposition is inherited through exec).
    return subprocess.Popen(
        [str(program), "30"], preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)
    )


@pytest.fixture
def at_once(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(bootwindow, "EVERY", 0.0)
    yield


def test_a_beam_gets_sigterm_again(tmp_path: Path, at_once: None) -> None:
    beam = _sleeper(tmp_path, "beam.smp")
    resender = TermResender.for_pid(beam.pid)
    assert resender is not None
    resender.tick()
    assert beam.wait(timeout=10) == -15  # killed by SIGTERM
    assert resender.sent == 1
    resender.tick()  # gone: no error, nothing sent
    assert resender.sent == 1
    resender.close()


def test_another_program_is_left_to_systemds_own_sigterm(tmp_path: Path, at_once: None) -> None:
    other = _sleeper(tmp_path, "gunicorn")
    try:
        resender = TermResender.for_pid(other.pid)
        assert resender is not None
        resender.tick()
        assert resender.sent == 0
        assert other.poll() is None
        resender.close()
    finally:
        other.kill()
        other.wait()


def test_nothing_to_resend_without_a_process() -> None:
    assert TermResender.for_pid(0) is None
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert TermResender.for_pid(gone.pid) is None
