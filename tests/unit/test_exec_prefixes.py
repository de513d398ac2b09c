"""No argv pyrelctl hands systemd can carry an Exec*= prefix (issue 15, finding 1).

systemd strips ``@ - : + ! !!`` (and ``|`` from v254) from the start of a
command's first word even when the word is quoted (systemd.service(5),
"Command lines"): ``ExecStart="+sh"`` runs ``sh`` as root, outside the
sandbox. tests/system/test_security.py shows that in a real systemd.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrelctl.errors import BadInput, HostError
from pyrelctl.manifest import EXEC_PREFIXES, check_description
from pyrelctl.release import Kind, Release
from pyrelctl.sandboxrun import step_unit_argv
from pyrelctl.units import ServiceSpec, exec_line, render_service


@given(st.sampled_from(sorted(EXEC_PREFIXES)), st.text(max_size=20), st.lists(st.text()))
def test_exec_line_refuses_a_prefixed_program(prefix: str, rest: str, args: list[str]) -> None:
    with pytest.raises(BadInput, match="reads as a flag"):
        exec_line([prefix + rest, *args])


@given(st.text(min_size=1).filter(lambda w: w[0] not in EXEC_PREFIXES))
def test_exec_line_keeps_other_programs(program: str) -> None:
    try:
        line = exec_line([program])
    except BadInput as e:
        assert "control character" in e.message  # refused for another reason
        return
    # The first character systemd sees is the opening quote, then the program's own.
    assert line.startswith('"') and line[1:2] not in EXEC_PREFIXES


@pytest.mark.parametrize("program", ["+sh", "!sh", "!!sh", "@sh", "-sh", ":sh", "|sh"])
def test_a_release_built_by_hand_cannot_render_a_prefix(program: str) -> None:
    """Even a Release that skipped the manifest's checks (an old index entry)
    never becomes a unit with a prefixed ExecStart=."""
    release = Release(
        name="app", version="1", kind=Kind.GENERIC, commands={"start": (program, "-c", "id")}
    )
    with pytest.raises(BadInput, match="reads as a flag"):
        render_service(ServiceSpec(app="app", release=release))


def test_release_relative_programs_render_absolute() -> None:
    release = Release(name="app", version="1", kind=Kind.GENERIC, commands={"start": ("bin/+x",)})
    assert 'ExecStart="/opt/app/current/bin/+x"' in render_service(
        ServiceSpec(app="app", release=release)
    )


@pytest.mark.parametrize("text", ["ends in \\", "ends in \\  ", "two\nlines", "tab\there"])
def test_description_that_would_swallow_the_next_line(text: str) -> None:
    with pytest.raises(BadInput):
        check_description(text)


@pytest.mark.parametrize("program", ["+/bin/sh", "!sh", "@/usr/bin/env", "-pip", "python3"])
def test_a_build_step_runs_only_an_absolute_program(program: str) -> None:
    """Every sandboxed python step (install's and build's) goes through
    step_unit_argv, which refuses a program that is not an absolute path:
    the first character of an absolute path is never a prefix flag."""
    with pytest.raises(HostError, match=r"build step pip: .* is not an absolute path"):
        step_unit_argv("pip", "u.service", "d", [], [program, "install"])
    argv = step_unit_argv("pip", "u.service", "d", [], ["/usr/bin/python3", "-m", "pip"])
    assert argv[-3:] == ["/usr/bin/python3", "-m", "pip"]
