"""Any value pyrelctl writes into a unit file reaches systemd unchanged, or is refused.

Property-based, against systemd's own parser: each generated argv and
environment value is encoded by pyrelctl.units, written into a unit file,
loaded with daemon-reload, and read back over D-Bus (busctl --json).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.machine import Machine
from pyrelctl.errors import BadInput
from pyrelctl.units import environment_line, exec_line

UNIT = "enc-test.service"
OBJECT = "/org/freedesktop/systemd1/unit/enc_2dtest_2eservice"

# Mostly the characters that matter to systemd's syntax, some of anything.
tricky = st.sampled_from([*list(" \"\\'$%;{}\n\t=:@#"), "${HOME}", "%n", "\\n", "é", "\u2028"])
words = st.lists(st.one_of(tricky, st.characters()), max_size=12).map("".join)


def _prop(machine: Machine, name: str) -> object:
    out = machine.run(
        [
            "busctl",
            "--json=short",
            "get-property",
            "org.freedesktop.systemd1",
            OBJECT,
            "org.freedesktop.systemd1.Service",
            name,
        ]
    ).stdout
    return json.loads(out)["data"]


#: A program that writes the argv and $V it was started with, as JSON.
DUMP = [
    "/usr/bin/python3",
    "-c",
    "import json, os, sys; json.dump({'argv': sys.argv[1:], 'V': os.environ.get('V')}, "
    "open('/run/enc-test.json', 'w'))",
]


def run_and_read(machine: Machine) -> dict[str, object]:
    machine.run(["rm", "-f", "/run/enc-test.json"])
    machine.systemctl("start", UNIT)  # oneshot: returns when the program has run
    result: dict[str, object] = json.loads(machine.run(["cat", "/run/enc-test.json"]).stdout)
    return result


def load(machine: Machine, text: str) -> None:
    machine.run(["sh", "-c", f"cat > /etc/systemd/system/{UNIT}"], input=text)
    machine.systemctl("daemon-reload")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=st.lists(words, min_size=1, max_size=4), value=words)
def test_values_round_trip_through_systemd(machine: Machine, argv: list[str], value: str) -> None:
    try:
        line = exec_line([*DUMP, *argv])
        env = environment_line({"V": value})
    except BadInput as e:
        # Refused only for what a unit file cannot carry.
        assert "control character" in e.message
        assert any(ord(c) < 0x20 or ord(c) == 0x7F for c in "".join(argv) + value)
        return
    load(
        machine,
        f"[Service]\nType=oneshot\nExecStart={line}\nEnvironment={env}\n",
    )
    got = run_and_read(machine)
    assert got["argv"] == argv  # what the process really received
    assert got["V"] == value


def test_injection_attempts_stay_inside_their_value(machine: Machine) -> None:
    hostile = ["a\nExecStartPre=/bin/evil"]  # refused: raw newline
    try:
        exec_line(hostile)
        raise AssertionError("a raw newline was accepted")
    except BadInput:
        pass
    argv = [";", "/bin/evil", "$SHELL", "%n", '"x"', "\\", "${HOME}"]
    load(machine, f"[Service]\nType=oneshot\nExecStart={exec_line([*DUMP, *argv])}\n")
    commands = _prop(machine, "ExecStart")
    assert isinstance(commands, list) and len(commands) == 1  # ";" did not split it
    assert run_and_read(machine)["argv"] == argv
