"""[processes.NAME] and [timers.NAME] (issue 32): what a release declares, checked
before anything is written, the same in release.toml, a mix overlay and
[tool.pyrelctl]."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrelctl.buildconfig import read_config, render_manifest
from pyrelctl.errors import BadInput, ExitCode
from pyrelctl.manifest import parse_settings
from pyrelctl.procs import calendar
from pyrelctl.procs.manifest import MAX_INSTANCES, NAME_RE, toml_lines
from pyrelctl.procs.values import Process, Timer
from pyrelctl.pyrelease import _hooks
from pyrelctl.release import Kind, release_from_json, release_to_json
from tests.unit.test_release import SCRIPT, detect_files, mix_files

ISSUE_TOML = """
[processes.worker]
command = ["bin/shop", "eval", "Shop.Worker.run()"]
instances = 2

[timers.report]
command = ["bin/shop", "eval", "Shop.Reports.nightly()"]
on_calendar = "*-*-* 03:00:00"
"""


def generic_files(extra: str) -> dict[str, Any]:
    return {
        "release.toml": '[release]\nname = "shop"\nversion = "1.0"\n'
        '[commands]\nstart = ["bin/shop", "start"]\n' + extra,
        "bin/shop": (SCRIPT, 0o755),
    }


def parse_tables(doc: dict[str, Any]) -> tuple[tuple[Process, ...], tuple[Timer, ...]]:
    """The tables as release.toml's parser reads them (manifest.parse_settings)."""
    settings = parse_settings(doc)
    return settings.processes, settings.timers


def tables(text: str) -> tuple[tuple[Process, ...], tuple[Timer, ...]]:
    return parse_tables(tomllib.loads(text))


def refusal(text: str) -> str:
    with pytest.raises(BadInput) as info:
        tables(text)
    assert info.value.exit_code is ExitCode.BAD_INPUT
    assert "\n" not in info.value.message  # one line
    return info.value.message


# -- what the issue's example gives -------------------------------------------------


def test_the_issues_example_in_a_generic_release(tmp_path: Path) -> None:
    release = detect_files(tmp_path, generic_files(ISSUE_TOML))
    assert release.processes == (
        Process("worker", ("bin/shop", "eval", "Shop.Worker.run()"), instances=2),
    )
    assert release.timers == (
        Timer(
            "report",
            ("bin/shop", "eval", "Shop.Reports.nightly()"),
            on_calendar=("*-*-* 03:00:00",),
            persistent=True,
        ),
    )


def test_a_mix_release_declares_them_in_its_overlay(tmp_path: Path) -> None:
    # rel/overlays/release.toml lands at the release root: no [release] needed.
    release = detect_files(tmp_path, {**mix_files(), "release.toml": ISSUE_TOML}, "tar")
    assert release.kind is Kind.MIX
    assert [p.name for p in release.processes] == ["worker"]
    assert [t.name for t in release.timers] == ["report"]


def test_defaults_and_every_option() -> None:
    processes, timers = tables(
        """
        [processes.mail_worker]
        command = ["bin/shop", "mail"]
        [processes.clock]
        command = ["python3", "-m", "clock"]
        instances = 0
        stop_timeout = 120
        environment = { QUEUE = "mail", RATE = "100%" }
        [timers.tick]
        command = ["bin/shop", "tick"]
        every = "15m"
        randomized_delay = "30s"
        timeout = "10m"
        [timers.nightly]
        command = ["bin/shop", "nightly"]
        on_calendar = ["Mon..Fri 03:00", "Sat 12:00 Europe/Berlin"]
        persistent = false
        stop_timeout = 5
        """
    )
    assert [p.name for p in processes] == ["clock", "mail_worker"]  # sorted
    clock, mail = processes
    assert mail.instances == 1 and mail.stop_timeout is None and mail.environment == {}
    assert clock.instances == 0 and clock.stop_timeout == 120
    assert clock.environment == {"QUEUE": "mail", "RATE": "100%"}
    nightly, tick = timers
    assert tick.every == 900 and tick.randomized_delay == 30 and tick.timeout == 600
    assert tick.on_calendar == () and tick.persistent is False
    assert nightly.on_calendar == ("Mon..Fri 03:00", "Sat 12:00 Europe/Berlin")
    assert nightly.persistent is False and nightly.every == 0 and nightly.stop_timeout == 5


# -- refused, with one line saying what ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # names: they become unit names, a directory and a journal identifier
        ('[processes.Worker]\ncommand = ["x"]', "invalid name 'Worker'"),
        ('[processes."a@b"]\ncommand = ["x"]', "invalid name 'a@b'"),
        ('[processes."a.b"]\ncommand = ["x"]', "invalid name 'a.b'"),
        ('[processes."wörker"]\ncommand = ["x"]', "invalid name"),
        ('[processes."-w"]\ncommand = ["x"]', "invalid name"),
        (f'[processes.{"w" * 32}]\ncommand = ["x"]', "invalid name"),
        ('[timers.""]\ncommand = ["x"]\nevery = "1h"', "invalid name ''"),
        ('[processes.web]\ncommand = ["x"]', "'web' is not a process name here"),
        ('[processes.release]\ncommand = ["x"]', "'release' is not a process name here"),
        (
            '[processes.job]\ncommand = ["x"]\n[timers.job]\ncommand = ["x"]\nevery = "1h"',
            "'job' is both a process and a timer",
        ),
        # tables and keys
        ('processes = ["worker"]', "[processes] must be a table of named tables"),
        ("[processes]\nworker = 1", "processes.worker must be a table"),
        ("[processes.w]\ninstances = 1", "[processes.w] has no command"),
        ('[processes.w]\ncommand = ["x"]\nrestart = "always"', "unknown key processes.w.restart"),
        ('[timers.t]\ncommand = ["x"]\nevery = "1h"\nuser = "root"', "unknown key timers.t.user"),
        # commands: the rules of [commands] start
        ('[processes.w]\ncommand = "bin/x"', "processes.w.command must be a non-empty list"),
        ("[processes.w]\ncommand = []", "processes.w.command must be a non-empty list"),
        ('[processes.w]\ncommand = ["+sh", "-c", "id"]', "begins with '+'"),
        ('[timers.t]\ncommand = ["!x"]\nevery = "1h"', "begins with '!'"),
        ('[processes.w]\ncommand = ["x", "a\\nExecStartPre=/bin/evil"]', "control character"),
        # instances: bounded
        ('[processes.w]\ncommand = ["x"]\ninstances = -1', "instances must be a whole number"),
        (
            f'[processes.w]\ncommand = ["x"]\ninstances = {MAX_INSTANCES + 1}',
            "0 to 64",
        ),
        ('[processes.w]\ncommand = ["x"]\ninstances = true', "instances must be a whole number"),
        ('[processes.w]\ncommand = ["x"]\ninstances = "2"', "instances must be a whole number"),
        ('[processes.w]\ncommand = ["x"]\ninstances = 1.5', "instances must be a whole number"),
        ('[processes.w]\ncommand = ["x"]\nstop_timeout = 0', "stop_timeout must be whole seconds"),
        ('[processes.w]\ncommand = ["x"]\nenvironment = { "A-B" = "1" }', "'A-B' is not valid"),
        ('[processes.w]\ncommand = ["x"]\nenvironment = { A = 1 }', "environment.A must be"),
        ('[processes.w]\ncommand = ["x"]\nenvironment = { A = "a\\nb" }', "control character"),
        # schedules
        ('[timers.t]\ncommand = ["x"]', "needs exactly one of on_calendar and every"),
        (
            '[timers.t]\ncommand = ["x"]\nevery = "1h"\non_calendar = "daily"',
            "needs exactly one of on_calendar and every",
        ),
        ('[timers.t]\ncommand = ["x"]\non_calendar = "garbage"', "not a calendar expression"),
        ('[timers.t]\ncommand = ["x"]\non_calendar = "daily%n"', "not a calendar expression"),
        ('[timers.t]\ncommand = ["x"]\non_calendar = "daily\\nx"', "not a calendar expression"),
        ('[timers.t]\ncommand = ["x"]\non_calendar = "--help"', "not a calendar expression"),
        ('[timers.t]\ncommand = ["x"]\non_calendar = "2020-01-01"', "never elapses"),
        ('[timers.t]\ncommand = ["x"]\non_calendar = "*-02-30"', "never elapses"),
        ('[timers.t]\ncommand = ["x"]\non_calendar = []', "on_calendar must be"),
        ('[timers.t]\ncommand = ["x"]\non_calendar = 3', "on_calendar must be"),
        ('[timers.t]\ncommand = ["x"]\nevery = "30s"', "every must be at least 1m"),
        ('[timers.t]\ncommand = ["x"]\nevery = 0', "every must be at least 1m"),
        ('[timers.t]\ncommand = ["x"]\nevery = "soon"', "is not a duration"),
        ('[timers.t]\ncommand = ["x"]\nevery = "25h"', "between 0 and 24h"),
        ('[timers.t]\ncommand = ["x"]\nevery = "1h"\npersistent = true', "on_calendar only"),
        ('[timers.t]\ncommand = ["x"]\non_calendar = "daily"\npersistent = 1', "true or false"),
        ('[timers.t]\ncommand = ["x"]\nevery = "1h"\ntimeout = 0', "timeout must be more than 0"),
        (
            '[timers.t]\ncommand = ["x"]\nevery = "1h"\nrandomized_delay = "2d"',
            "randomized_delay '2d' is not a duration",
        ),
    ],
)
def test_refused(text: str, expected: str) -> None:
    assert expected in refusal(text)


def test_too_many_entries_are_refused() -> None:
    text = "".join(f'[processes.p{i}]\ncommand = ["x"]\n' for i in range(33))
    assert "at most 32" in refusal(text)


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("bin/missing", "runs 'bin/missing', which is not in the release"),
        ("/usr/bin/python3", "outside the release"),
        ("../other/bin/x", "outside the release"),
        ("bin/", "which is not in the release"),  # a directory
    ],
)
def test_programs_are_checked_against_the_release(
    tmp_path: Path, program: str, expected: str
) -> None:
    files = generic_files(f'[timers.t]\ncommand = ["{program}"]\nevery = "1h"\n')
    with pytest.raises(BadInput) as info:
        detect_files(tmp_path, files)
    assert "timers.t.command" in info.value.message and expected in info.value.message


# -- schedules, by systemd's own parser ------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    ["*-*-* 03:00:00", "daily", "hourly", "Mon..Fri 9:00", "*:0/15", "*-*~1", "Sun *-*-* 1:00 UTC"],
)
def test_calendar_expressions_systemd_accepts(spec: str) -> None:
    assert calendar.check_calendar(spec, "t") == spec


def test_without_systemd_analyze_only_the_characters_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pyrelctl build on a machine without systemd: the host checks the rest.
    monkeypatch.setattr(calendar, "_tool", lambda: None)
    assert calendar.check_calendar("garbage", "t") == "garbage"
    with pytest.raises(BadInput):
        calendar.check_calendar("daily%n", "t")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from([*' *-:./~,_+%;"\\\n$', "Mon", "03", "UTC", "é"]), max_size=8).map(
        "".join
    )
)
def test_an_accepted_schedule_is_one_systemd_reads_as_written(spec: str) -> None:
    try:
        calendar.check_calendar(spec, "t")
    except BadInput:
        return
    # Nothing a unit file or a command line would read otherwise.
    assert calendar.ALLOWED.fullmatch(spec)
    assert not set(spec) & set('%;"\\\n$')


@given(st.one_of(st.from_regex(NAME_RE, fullmatch=True), st.text(max_size=40)))
def test_an_accepted_name_is_unit_name_safe(name: str) -> None:
    try:
        parse_tables({"processes": {name: {"command": ["x"]}}})
    except BadInput:
        return
    assert NAME_RE.fullmatch(name) and name not in ("web", "release")
    # systemd's unit name characters (systemd.unit(5)), and neither "@" nor ".".
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in name)


# -- carried through [tool.pyrelctl], the release.toml a build writes, the index -----


def test_tool_pyrelctl_tables_reach_the_built_release_toml() -> None:
    tool = {
        "start": ["gunicorn", "site.wsgi"],
        "processes": {
            "worker": {
                "command": ["celery", "-A", "site", "worker"],
                "instances": 3,
                "environment": {"C_FORCE_ROOT": "0"},
            }
        },
        "timers": {
            "cleanup": {"command": ["python", "-m", "site.cleanup"], "every": "1h30m"},
            "report": {
                "command": ["python", "-m", "site.report"],
                "on_calendar": "daily",
                "timeout": "2h",
                "randomized_delay": "90s",
            },
        },
    }
    config = read_config({"tool": {"pyrelctl": tool}})
    text = render_manifest(
        name="site",
        version="1.0",
        description="",
        python="3.11",
        config=config,
        packages=["site==1.0"],
        pip="tools/pip-24.0-py3-none-any.whl",
    )
    processes, timers = parse_tables(tomllib.loads(text))
    assert processes == config.settings.processes and timers == config.settings.timers
    assert processes[0].command == ("celery", "-A", "site", "worker")
    assert timers[0].every == 5400 and timers[1].timeout == 7200


def test_tool_pyrelctl_refuses_like_release_toml() -> None:
    with pytest.raises(BadInput) as info:
        read_config({"tool": {"pyrelctl": {"start": "site", "timers": {"t": {"command": ["x"]}}}}})
    assert info.value.message.startswith("pyproject.toml: [tool.pyrelctl]: timers.t needs")


def test_toml_lines_read_back_as_given() -> None:
    processes, timers = tables(ISSUE_TOML + '[timers.tick]\ncommand = ["x"]\nevery = "90.5s"\n')
    assert tables("\n".join(toml_lines(processes, timers))) == (processes, timers)


def test_the_release_index_keeps_them(tmp_path: Path) -> None:
    release = detect_files(tmp_path, generic_files(ISSUE_TOML))
    data = json.loads(json.dumps(release_to_json(release)))
    assert release_from_json(data) == release


def test_a_python_release_checks_their_programs_in_its_venv(tmp_path: Path) -> None:
    # pyrelease.prepare checks that the venv installs each program of _hooks().
    (tmp_path / "release.toml").write_text(
        '[hooks]\npre_switch = ["python", "-m", "x"]\n'
        '[processes.worker]\ncommand = ["celery", "worker"]\n'
        '[timers.t]\ncommand = ["bin/site", "eval", "1"]\nevery = "1h"\n'
    )
    assert _hooks(tmp_path) == [
        ("hooks.pre_switch", ["python", "-m", "x"]),
        ("processes.worker.command", ["celery", "worker"]),
        ("timers.t.command", ["bin/site", "eval", "1"]),
    ]
