"""The watch window's decisions and durations (pure; the real one: tests/system/test_watch.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from pyrelctl.deploy.deployer import Deployer
from pyrelctl.deploy.options import InstallOptions
from pyrelctl.deploy.watch import loop
from pyrelctl.durations import parse_duration
from pyrelctl.errors import BadInput
from pyrelctl.layout import Layout
from pyrelctl.systemd import OfflineSystemd, UnitState


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), (45, 45)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "--watch") == seconds


@pytest.mark.parametrize("text", ["", "ten", "10x", "1m10x", "-5", "25h", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(BadInput):
        parse_duration(text, "--watch")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def app(tmp_path: Path) -> object:
    deployer = Deployer(Layout(tmp_path / "root"), OfflineSystemd())
    deployer.layout.root.mkdir()
    artifact = make_generic_release(tmp_path / "a", name="w", version="1")
    deployer.install(artifact, InstallOptions())
    return deployer.layout.app("w")


def run_loop(
    app: object,
    states: list[UnitState],
    until: float = 20.0,
    companions: list[list[UnitState]] | None = None,
) -> tuple[str, list[str]]:
    clock = Clock()
    rolled: list[str] = []
    seen = iter(states)
    last = states[-1]
    looks = iter(companions or [[]])
    last_look = (companions or [[]])[-1]
    result = loop(
        app,  # type: ignore[arg-type]  # an AppPaths
        "1",
        until,
        2,
        state=lambda: next(seen, last),
        companions=lambda: next(looks, last_look),
        rollback=rolled.append,
        say=lambda _line: None,
        clock=clock,
        sleep=clock.sleep,
    )
    return result, rolled


def running(restarts: int = 0, active: str = "active") -> UnitState:
    return UnitState("w.service", active_state=active, sub_state="running", n_restarts=restarts)


def test_a_release_that_stays_up_is_left_alone(app: object) -> None:
    assert run_loop(app, [running()]) == ("ok", [])


def test_more_restarts_than_allowed_roll_back(app: object) -> None:
    result, rolled = run_loop(app, [running(0), running(1), running(2), running(3)])
    assert result == "rolled back" and rolled == ["systemd restarted it 3 times"]


def test_two_restarts_are_allowed(app: object) -> None:
    assert run_loop(app, [running(1), running(2)]) == ("ok", [])


def test_a_failed_unit_rolls_back(app: object) -> None:
    result, rolled = run_loop(app, [running(), running(active="failed")])
    assert result == "rolled back" and rolled[0].startswith("the service failed")


def worker(restarts: int = 0, active: str = "active", instance: int = 1) -> UnitState:
    return UnitState(
        f"w-worker@{instance}.service",
        active_state=active,
        sub_state="running",
        n_restarts=restarts,
    )


def test_an_instance_restarted_too_often_rolls_back_the_release(app: object) -> None:
    looks = [[worker(0), worker(0, instance=2)], [worker(1), worker(3, instance=2)]]
    result, rolled = run_loop(app, [running()], companions=looks)
    assert result == "rolled back"
    assert rolled == ["systemd restarted w-worker@2.service 3 times"]


def test_a_failed_instance_rolls_back_the_release(app: object) -> None:
    result, rolled = run_loop(app, [running()], companions=[[worker(active="failed")]])
    assert result == "rolled back" and rolled[0].startswith("w-worker@1.service failed")


def test_instances_within_the_threshold_are_left_alone(app: object) -> None:
    looks = [[worker(2), worker(1, instance=2)]]
    assert run_loop(app, [running()], companions=looks) == ("ok", [])
