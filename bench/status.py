"""``pyrelctl status APP`` against ``systemctl status APP``.

Both are timed as whole processes (start to exit, as a user at a prompt
waits for them), :data:`SAMPLES_PER_RUN` times per run, alternating, after
one untimed call of each so that both find their files in the page cache,
as on a host in use. A second row
splits pyrelctl's time: the interpreter's start against the import of
pyrelctl's CLI, which shows how much of the figure is Python loading code.
A third shows what the program's quick exit saves (``cli.run``, which ends
with ``os._exit``): the same status through ``cli.main`` alone, which
leaves the process to the interpreter's full teardown.
"""

from __future__ import annotations

from bench.host import PYTHON, Host, log
from bench.report import Comparison, Measure, Target

APP = "st"
#: Issue 7: `pyrelctl status` under 150 ms median on this machine.
STATUS_TARGET = Target(Measure.SECONDS, 0.150)
#: Samples per run: a status call takes a tenth of a second, and on a shared
#: VM a median of five such calls moved by a fifth from one bench run to the
#: next; four times as many cost a few seconds and steady it.
SAMPLES_PER_RUN = 4


def measure(host: Host, runs: int) -> list[Comparison]:
    log("status: installing st")
    host.pyrelctl("install", host.release(APP, "1.0.0", behaviour="ok"), "--grace", "0")
    ours = host.pyrelctl_argv("status", APP)
    systemctl = ["systemctl", "status", "--no-pager", APP]
    imports = [str(PYTHON), "-c", "import pyrelctl.cli"]
    bare = [str(PYTHON), "-c", "pass"]
    teardown = [
        str(PYTHON),
        "-c",
        f"import sys; sys.argv = ['pyrelctl', 'status', {APP!r}]; "
        "from pyrelctl.cli import main; main()",
    ]
    for argv in (ours, systemctl, imports, bare, teardown):
        host.run(argv)
    samples: dict[str, list[float]] = {
        "ours": [],
        "systemctl": [],
        "imports": [],
        "bare": [],
        "teardown": [],
    }
    for i in range(runs * SAMPLES_PER_RUN):
        order = [
            ("ours", ours),
            ("systemctl", systemctl),
            ("imports", imports),
            ("bare", bare),
            ("teardown", teardown),
        ]
        for key, argv in order if i % 2 == 0 else reversed(order):
            samples[key].append(host.timed(argv).seconds)
    return [
        Comparison(
            "status",
            f"pyrelctl status {APP}",
            f"systemctl status {APP}",
            tuple(samples["ours"]),
            tuple(samples["systemctl"]),
            STATUS_TARGET,
        ),
        Comparison(
            "status",
            "of which: python -c 'import pyrelctl.cli'",
            "python -c pass",
            tuple(samples["imports"]),
            tuple(samples["bare"]),
        ),
        Comparison(
            "status",
            f"pyrelctl status {APP}",
            "the same through cli.main, with the interpreter's teardown",
            tuple(samples["ours"]),
            tuple(samples["teardown"]),
        ),
    ]
