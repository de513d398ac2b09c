"""A mix release's log levels as journal priorities: the VM flags, where they go,
and the release.toml switch (mixlogger.py; the system test is test_mix_logs.py)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pyrelctl import mixlogger
from pyrelctl.errors import BadInput
from pyrelctl.mixlogger import LEVELS, VARIABLE, LoggerMode, logger_version, vm_flags
from pyrelctl.release import Kind, Release, mix_commands, release_from_json, release_to_json
from pyrelctl.transient import transient_command
from pyrelctl.units import ServiceSpec, exec_settings, overlap_unit, render_service
from tests.unit.test_release import Files, detect_files, mix_files, refused
from tests.unit.test_units import directives, unquote


def mix_release(**kwargs: object) -> Release:
    return Release(
        name="shop",
        version="1.0.0",
        kind=Kind.MIX,
        commands=mix_commands("shop"),
        **kwargs,  # type: ignore[arg-type]
    )


def erlexec_words(flags: str) -> list[str]:
    """The words erlexec makes of an ``ERL_*FLAGS`` value (whitespace splits,
    single quotes group; none of pyrelctl's words needs more)."""
    return [a or b for a, b in re.findall(r"'([^']*)'|(\S+)", flags)]


def test_the_logger_version_is_read_from_the_release_lib_dir() -> None:
    assert logger_version(["bin/shop", "lib/logger-1.14.0/ebin/logger.app"]) == "1.14"
    assert logger_version(["lib/logger-1.18.4", "lib/logger-1.18.4/ebin/x.beam"]) == "1.18"
    assert logger_version(["lib/logger-1.19.0-rc.1/ebin/x.beam"]) == "1.19"
    assert logger_version(["lib/kernel-8.5.3/ebin/x.beam", "lib/loggerx-1.0.0/x"]) == ""
    # Two Loggers (an odd release): nothing can be said, nothing is set.
    assert logger_version(["lib/logger-1.14.0/x", "lib/logger-1.15.0/x"]) == ""


def test_one_handler_per_level_prefixed_with_its_syslog_priority() -> None:
    term = mixlogger.kernel_logger()
    assert term.count("{") == term.count("}") and term.count("[") == term.count("]")
    handlers = re.findall(r"\{handler,pyrelctl_(\w+),logger_std_h,", term)
    assert handlers == list(LEVELS)
    for priority, level in enumerate(LEVELS):
        block = term[term.index(f"pyrelctl_{level},") :].split("{handler,", 1)[0]
        assert f"{{stop,neq,{level}}}" in block  # only its own level passes
        assert f'template=>["<{priority}>[{level}] ",msg,"\\n"]' in block
        assert "single_line=>true" in block and "remote_gl" in block
    # syslog(3): err is 3, warning 4, info 6.
    assert (LEVELS.index("error"), LEVELS.index("warning"), LEVELS.index("info")) == (3, 4, 6)


@pytest.mark.parametrize(
    ("logger", "elixir_words"),
    [
        ("1.14", ["-logger", "console", "[{format,<<>>}]"]),
        ("1.10", ["-logger", "console", "[{format,<<>>}]"]),
        ("1.15", ["-logger", "default_handler", "false"]),
        ("1.18", ["-logger", "default_handler", "false"]),
    ],
)
def test_elixirs_own_stdout_output_is_turned_off_the_way_its_logger_takes(
    logger: str, elixir_words: list[str]
) -> None:
    words = erlexec_words(vm_flags(logger))
    assert words[0:3] == ["-kernel", "error_logger", "silent"]
    assert words[3:5] == ["-kernel", "logger"] and words[5] == mixlogger.kernel_logger()
    assert words[6:9] == elixir_words
    assert words[9:] == ["-systemd", "auto_formatter", "false"]
    # Elixir 1.19 warns at every start when :backends is set at all.
    assert "backends" not in vm_flags(logger)


@pytest.mark.parametrize("logger", ["", "1.9", "x.y", "1"])
def test_an_unknown_logger_gets_no_flags(logger: str) -> None:
    assert vm_flags(logger) == ""
    assert mixlogger.environment(LoggerMode.PYRELCTL, logger) == {}


def test_the_releases_own_erl_zflags_come_first_and_win() -> None:
    env = mixlogger.environment(LoggerMode.PYRELCTL, "1.14", "+S 1:1")
    assert env == {VARIABLE: f"+S 1:1 {vm_flags('1.14')}"}
    assert mixlogger.environment(LoggerMode.RELEASE, "1.14", "+S 1:1") == {}


def test_the_service_and_its_overlap_unit_get_the_flags_through_systemd_quoting() -> None:
    spec = ServiceSpec("shop", mix_release(elixir_logger="1.14"))
    for text in (
        render_service(spec),
        overlap_unit(
            spec, Path("/opt/shop/next"), runtime_directory="pyrelctl/x", starting_nice=10
        ).render(),
    ):
        values = [unquote(v) for v in directives(text)["Environment"] if VARIABLE in v]
        assert values == [f"{VARIABLE}={vm_flags('1.14')}"]


def test_commands_run_without_the_flags() -> None:
    release = mix_release(elixir_logger="1.18")
    assert not any(VARIABLE in value for _, value in exec_settings(ServiceSpec("shop", release)))
    command = transient_command(
        "shop",
        release,
        "eval",
        ["IO.puts(1)"],
        release_dir=Path("/opt/shop/releases/1.0.0"),
        environment_files=(),
        token="t",
    )
    assert not any(VARIABLE in word for word in command.argv)


@pytest.mark.parametrize(
    "release",
    [
        mix_release(elixir_logger="1.14", logger=LoggerMode.RELEASE),
        mix_release(),  # Logger unknown (e.g. indexed by an older pyrelctl)
        Release(name="g", version="1", kind=Kind.GENERIC, commands={"start": ("bin/g",)}),
    ],
)
def test_no_flags_when_the_release_keeps_its_logging_or_is_no_mix_release(
    release: Release,
) -> None:
    assert VARIABLE not in render_service(ServiceSpec(release.name, release))


def test_detection_reads_the_logger_and_the_switch(tmp_path: Path) -> None:
    files = {**mix_files(), "lib/logger-1.14.0/ebin/logger.app": "{}"}
    release = detect_files(tmp_path / "a", files, "tar")
    assert (release.elixir_logger, release.logger) == ("1.14", LoggerMode.PYRELCTL)
    own = {**files, "release.toml": '[service]\nlogger = "release"\n'}
    release = detect_files(tmp_path / "b", own)
    assert (release.elixir_logger, release.logger) == ("1.14", LoggerMode.RELEASE)
    assert release_from_json(release_to_json(release)) == release
    # An index entry written before these fields existed.
    new_fields = {"logger", "elixir_logger"}
    old = {k: v for k, v in release_to_json(release).items() if k not in new_fields}
    assert release_from_json(old) == dataclasses.replace(
        release, logger=LoggerMode.PYRELCTL, elixir_logger=""
    )


def test_the_switch_is_checked(tmp_path: Path) -> None:
    error = refused(tmp_path / "a", {**mix_files(), "release.toml": '[service]\nlogger = "no"\n'})
    assert 'service.logger must be "pyrelctl" or "release"' in error.message
    generic: Files = {
        "release.toml": (
            '[release]\nname = "g"\nversion = "1"\n[commands]\nstart = ["bin/g"]\n'
            '[service]\nlogger = "release"\n'
        ),
        "bin/g": (b"#!/bin/sh\n", 0o755),
    }
    with pytest.raises(BadInput, match="applies to mix releases only"):
        detect_files(tmp_path / "b", generic)
