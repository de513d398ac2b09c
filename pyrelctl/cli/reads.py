"""Commands that read the host and change nothing: status, releases, history,
unit, logs, pid, version, doctor."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from pyrelctl.appconfig.generations import running_generation
from pyrelctl.cli.common import Ctx, echo, echo_exact, pass_ctx, size, state_json, table, when
from pyrelctl.completion import complete_app
from pyrelctl.deploy.watch import recorded as recorded_watch
from pyrelctl.errors import BadInput, ExitCode, HostError, PyrelctlError
from pyrelctl.layout import AppPaths, Mark
from pyrelctl.systemd import UnitState

STATUS_COLUMNS = (
    "APP", "CURRENT", "CONFIG", "STATE", "SINCE", "PID", "MEM", "RESTARTS", "ENABLED", "SOCKET",
)  # fmt: skip


@click.command()
@click.argument("app", required=False, shell_complete=complete_app)
@pass_ctx
def status(obj: Ctx, app: str | None) -> None:
    """Show the unit state and current release of APP (or of every app).

    MEM is the service's memory (its cgroup's, all processes); RESTARTS counts
    the restarts systemd made by itself (Restart=on-failure) since the last
    start by hand or by a deploy: a release that keeps crashing shows here.
    An app pyrelctl cannot read (its `current` moved by another tool) is
    listed with its problem, the others as usual, and the exit status is 1.

    For one APP, also a line per instance of its release's processes (the
    release its main process runs, from /proc/PID/cwd) and per timer (its
    last run, the job's result, its next run). With --root: the files only.
    """
    names = [obj.layout.app(app).require().name] if app else obj.layout.apps()
    docs: list[dict[str, Any]] = []
    problems: list[PyrelctlError] = []
    for name in names:
        paths = obj.layout.app(name)
        state = None if obj.layout.offline else obj.systemd.state(paths.service_name)
        socket = None
        if paths.socket_file.exists() and not obj.layout.offline:
            socket = obj.systemd.state(paths.socket_name)
        overlap = None  # a deploy is starting the next release beside this one
        if paths.next_link.is_symlink() and not obj.layout.offline:
            overlap = obj.systemd.state(paths.overlap_name)
        try:
            current = paths.current_version()
        except PyrelctlError as e:
            if app:
                raise
            problems.append(e)
            docs.append({"app": name, "current": None, "unit": paths.service_name,
                         "state": state_json(state), "problem": e.message})  # fmt: skip
            continue
        index = paths.read_index()  # once: mark, widenings and the watch are all in it
        entry = index.get(current, {}) if current else {}
        watching = recorded_watch(paths, index)
        docs.append(
            {
                "app": name,
                "current": current,
                "mark": Mark(entry.get("mark", Mark.NEW)) if current else None,
                "unit": paths.service_name,
                "state": state_json(state),
                "socket": _socket_json(socket),
                # What the release widens of the default sandbox (install --allow).
                "widened": list(entry.get("widened", [])),
                "config": running_generation(paths),
                "watch": watching.to_json() if watching else None,
                "overlap": state_json(overlap) if overlap else None,
            }
        )
        if app:  # one app: a line per process instance and per timer (procs/)
            from pyrelctl.procs.status import companions_status

            systemd = None if obj.layout.offline else obj.systemd
            instances, timers = companions_status(paths, systemd)
            docs[-1]["processes"] = [i.to_json() for i in instances]
            docs[-1]["timers"] = [t.to_json() for t in timers]

    def human() -> None:
        if not docs:
            echo("no apps installed")
            return
        rows = []
        for d in docs:
            s = d["state"]
            if "problem" in d:
                rows.append((d["app"], "?", *["-"] * (len(STATUS_COLUMNS) - 2)))
                continue
            rows.append(
                (
                    d["app"],
                    d["current"] or "-",
                    str(d["config"] or "-"),
                    f"{s['active_state']} ({s['sub_state']})" if s else "offline",
                    when(s["since"]) if s else "-",
                    str(s["main_pid"] or "-") if s else "-",
                    size(s["memory_bytes"]) if s else "-",
                    str(s["restarts"]) if s else "-",
                    s["enabled"] if s else "-",
                    _listening(d["socket"]),
                )
            )
        table(rows, STATUS_COLUMNS)
        for d in docs:
            if "problem" in d:
                echo(f"{d['app']}: {d['problem']}")
                continue
            if d["widened"]:
                echo(f"{d['app']}: sandbox widened ({', '.join(d['widened'])})")
            if d["overlap"]:
                o = d["overlap"]
                echo(
                    f"{d['app']}: a deploy is starting the next release beside it in "
                    f"{d['app']}@overlap.service ({o['active_state']}, pid {o['main_pid'] or '-'})"
                )
            if d["watch"]:
                w = d["watch"]
                echo(
                    f"{d['app']}: watching {w['version']} until {when(w['until'])} "
                    f"(more than {w['max_restarts']} restarts roll it back)"
                )
            _companions(d)

    obj.emit(docs[0] if app else {"apps": docs}, human)
    if problems:
        first = problems[0]
        raise HostError(
            f"{len(problems)} of {len(docs)} apps could not be read: {first.message}",
            hint=first.hint or "see: pyrelctl doctor",
        )


def _companions(doc: dict[str, Any]) -> None:
    """The lines of ``status APP`` for the release's process instances and timers."""
    if doc.get("processes"):
        echo()
        table(
            [
                (
                    p["unit"],
                    f"{p['active_state']} ({p['sub_state']})" if p["sub_state"] else "offline",
                    when(p["since"]),
                    str(p["main_pid"] or "-"),
                    str(p["restarts"]) if p["sub_state"] else "-",
                    p["release"] or "-",
                )
                for p in doc["processes"]
            ],
            ("PROCESS", "STATE", "SINCE", "PID", "RESTARTS", "RELEASE"),
        )
    if doc.get("timers"):
        echo()
        table(
            [
                (
                    t["unit"],
                    t["active_state"],
                    when(t["last"]),
                    _job_result(t),
                    when(t["next"]),
                )
                for t in doc["timers"]
            ],
            ("TIMER", "STATE", "LAST RUN", "RESULT", "NEXT RUN"),
        )


def _job_result(timer: dict[str, Any]) -> str:
    """A timer's RESULT column: its job's last run, or the run in progress."""
    if timer["job_state"] == "activating":
        return "running"
    if not timer["result"]:
        return "-"
    if timer["result"] == "success":
        return "success"
    return f"{timer['result']} (status {timer['exit_status']})"


def _socket_json(state: UnitState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "unit": state.name,
        "active_state": state.active_state,
        "sub_state": state.sub_state,
        "listen": list(state.listen),
    }


def _listening(socket: dict[str, Any] | None) -> str:
    """The SOCKET column: the addresses systemd holds, and its state unless listening."""
    if socket is None:
        return "-"
    addresses = ",".join(socket["listen"]) or socket["unit"]
    if socket["sub_state"] in ("listening", "running"):
        return addresses
    return f"{addresses} ({socket['active_state']})"


@click.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def releases(obj: Ctx, app: str) -> None:
    """List APP's releases: version, install time, size; marks current and failed ones."""
    paths = obj.layout.app(app).require()
    current = paths.current_version()
    index = paths.read_index()
    rows = []
    for version in paths.versions():
        facts = index.get(version, {})
        rows.append(
            {
                "version": version,
                "current": version == current,
                "mark": facts.get("mark", Mark.NEW),
                "installed_at": facts.get("installed_at"),
                "size": facts.get("size"),
                "artifact": facts.get("artifact"),
            }
        )
    config = running_generation(paths)

    def human() -> None:
        table(
            [
                (
                    "*" if r["current"] else " ",
                    r["version"],
                    when(r["installed_at"]),
                    size(r["size"]),
                    r["mark"],
                )
                for r in rows
            ],
            (" ", "VERSION", "INSTALLED", "SIZE", "MARK"),
        )
        if config is not None:
            echo(f"configuration generation {config} (pyrelctl config history {app})")

    obj.emit({"app": app, "current": current, "config": config, "releases": rows}, human)


@click.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def history(obj: Ctx, app: str) -> None:
    """Show every install, rollback and automatic rollback of APP, with its result."""
    records = obj.layout.app(app).require().history()
    obj.emit(
        {"app": app, "history": records},
        lambda: table(
            [
                (
                    when(r.get("time")),
                    r.get("action", "?"),
                    r.get("from") or "-",
                    r.get("to") or "-",
                    r.get("result", ""),
                    r.get("user", ""),
                )
                for r in records
            ],
            ("TIME", "ACTION", "FROM", "TO", "RESULT", "USER"),
        ),
    )


@click.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def unit(obj: Ctx, app: str) -> None:
    """Print APP's generated unit files (the web process's, its other processes'
    and its timers'), and the drop-ins that amend them."""
    from pyrelctl.procs.host import unit_files as procs_unit_files

    paths = obj.layout.app(app).require()
    files = [
        paths.service_file,
        *sorted(paths.dropin_dir.glob("*.conf")),
        paths.socket_file,
        *sorted(paths.layout.unit_dir.glob(f"{paths.socket_name}.d/*.conf")),
        *procs_unit_files(paths),  # the release's processes and timers, with drop-ins
    ]
    shown = [f for f in files if f.is_file()]
    if not shown:
        raise BadInput(
            f"{paths.service_file} does not exist", hint=f"install a release of {app} first"
        )
    docs = {str(f): f.read_text() for f in shown}

    def human() -> None:
        for name, text in docs.items():
            echo(f"# {name}")
            echo(text.rstrip("\n"), lines=True)
            echo()

    obj.emit({"app": app, "files": docs}, human)


@click.command()
@click.argument("app", shell_complete=complete_app)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "-n", "--lines", type=click.IntRange(min=0), metavar="N", help="Show the last N lines."
)
@click.option(
    "-S",
    "--since",
    metavar="TIME",
    help='Only lines from TIME on, as journalctl reads it: "-1h", "today", "2026-11-30 14:00".',
)
@click.option("-U", "--until", metavar="TIME", help="Only lines up to TIME.")
@click.option(
    "--process",
    "process",
    metavar="NAME",
    help="Only the lines of the release's process or timer NAME (web: the web process).",
)
@click.option(
    "-p",
    "--priority",
    metavar="PRIO",
    help='Only lines of priority PRIO or more urgent ("err", "warning"; "info..err": a range).',
)
@pass_ctx
def logs(
    obj: Ctx,
    app: str,
    follow: bool,
    lines: int | None,
    since: str | None,
    until: str | None,
    priority: str | None,
    process: str | None,
) -> None:
    """Show APP's journal (journalctl -u APP), and its processes' and timers'.

    Every release's output and systemd's own lines about the units, oldest
    first; with -f, new lines as they come. The processes and timers are
    those the current release declares (-u 'APP-worker@*.service', ...);
    --process NAME shows one of them.
    """
    paths = obj.layout.app(app).require()
    from pyrelctl import journal

    units = _log_units(paths, process)
    argv = journal.journalctl_argv(
        units[0],
        also=units[1:],
        root=obj.layout.root if obj.layout.offline else None,
        follow=follow,
        lines=lines,
        since=since,
        until=until,
        priority=priority,
    )
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError as e:
        raise PyrelctlError("journalctl not found", hint="install systemd's journalctl") from e


def _log_units(paths: AppPaths, process: str | None) -> list[str]:
    """The units ``logs`` reads (procs.host.log_units), of the current release."""
    from pyrelctl.deploy.settings import release_of
    from pyrelctl.procs.host import log_units

    current = paths.current_version()
    return log_units(paths, release_of(paths, current) if current else None, process)


@click.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def pid(obj: Ctx, app: str) -> None:
    """Print the PID of APP's main process (systemd's MainPID); exit 1 if it is not running."""
    main_pid = obj.operator().pid(app)
    obj.emit({"app": app, "pid": main_pid}, lambda: echo(str(main_pid)))


@click.command()
@click.argument("app", shell_complete=complete_app)
@pass_ctx
def version(obj: Ctx, app: str) -> None:
    """Print the version of the release APP runs; if it is stopped, the current one.

    The running release is read from the main process itself (its working
    directory is the release it started from), so after `install --no-start`
    this still names the old release until the service restarts. stderr (and
    --json) says where the answer came from.
    """
    found = obj.operator().version(app)

    def human() -> None:
        echo(found.version)
        if found.source == "process":
            where = f"running (pid {found.main_pid})"
        else:
            where = f"current release; {found.detail}" if found.detail else "current release"
        if found.current is not None and found.current != found.version:
            where += f"; current is {found.current} (runs after a restart)"
        obj.say(f"{app} {found.version}: {where}")

    obj.emit(found.to_json(), human)


@click.command()
@click.argument("app", required=False, shell_complete=complete_app)
@pass_ctx
def doctor(obj: Ctx, app: str | None) -> int:
    """Check this host and APP (default: every app); print each problem and its fix.

    The host: systemd's version and the features pyrelctl relies on, D-Bus,
    the ownership and modes of /opt, /etc/pyrelctl (0700) and pyrelctl's
    state, free space for the next release. Each app: its current release
    (complete, root-owned, matching its SHA256SUMS), the unit file against
    what pyrelctl renders now, drop-ins (listed), settings and secrets
    (root-only), and the unit's state in systemd. Under --root only the
    files are checked. Changes nothing; exits 1 when it found a problem.
    """
    from pyrelctl.doctor import Doctor, report_lines

    report = Doctor(obj.layout, lambda: obj.systemd).run([app] if app else None)
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

    def human() -> None:
        for line in report_lines(report, quiet=obj.verbosity < 0, colour=colour):
            echo_exact(line)  # made visible by report_lines, with its own colours

    obj.emit(report.to_json(), human)
    return int(ExitCode.FAILED) if report.problems else 0


@click.command()
@click.option(
    "--write",
    is_flag=True,
    help="Also rewrite the node_exporter textfile (/var/lib/prometheus/node-exporter/"
    "pyrelctl.prom, when that directory exists; see docs/operate.md).",
)
@pass_ctx
def metrics(obj: Ctx, write: bool) -> None:
    """Print every app's deploy facts as Prometheus metrics (text exposition format).

    Per app: the release it runs (pyrelctl_release_info), its configuration
    generation, when its last deploy ended and whether it worked, deploys and
    automatic rollbacks counted from its history, and its service: up,
    restarts systemd made since the deploy, memory. Deploys rewrite the
    textfile by themselves.
    """
    from pyrelctl import metrics as prom

    systemd = None if obj.layout.offline else obj.systemd
    text = prom.render(prom.collect(obj.layout, systemd))
    if write:
        written = prom.write_textfile(obj.layout, systemd)
        obj.say(f"wrote {written}" if written else "no textfile directory here; nothing written")
    echo(text, nl=False, lines=True)
