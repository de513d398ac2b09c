"""Commands that change what runs: install, rollback, start, stop, restart,
scale, prune, uninstall."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pyrelctl.cli.common import (
    ByteSize,
    Ctx,
    echo,
    grace_option,
    health_options,
    health_override,
    no_wait_option,
    pass_ctx,
    state_json,
    timeout_option,
)
from pyrelctl.completion import complete_app, complete_rollback_target
from pyrelctl.defaults import DEFAULT_FETCH_TIMEOUT, DEFAULT_KEEP, DEFAULT_MAX_BYTES
from pyrelctl.errors import BadInput

if TYPE_CHECKING:
    from pyrelctl.deploy.options import InstallOptions


@click.command()
@click.argument("artifact", type=click.Path())
@click.option(
    "--app",
    "app_name",
    metavar="NAME",
    help="Install under this app name instead of the release's own name.",
)
@click.option(
    "--no-start",
    is_flag=True,
    help="Unpack, render units and switch `current`, but do not restart.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check ARTIFACT and render its units as an install would, and change nothing: "
    "no unpacking, no venv built, none of the release's code run, no lock taken "
    "(--json prints the units).",
)
@timeout_option
@grace_option
@health_options
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=DEFAULT_KEEP,
    show_default=True,
    metavar="N",
    help="Releases to keep; older ones are pruned after a good install.",
)
@click.option(
    "--max-size",
    type=ByteSize(),
    default=DEFAULT_MAX_BYTES,
    show_default="8G",
    metavar="SIZE",
    help="Refuse a release that unpacks to more than SIZE (e.g. 500M, 20G).",
)
@click.option(
    "--signature",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="The artifact's ssh-keygen signature (default ARTIFACT.sig; a URL for a URL); "
    "required once /etc/pyrelctl/[APP/]allowed_signers exists.",
)
@click.option(
    "--insecure-unsigned",
    is_flag=True,
    help="Install a URL without a signature: only for an app this host trusts no key for.",
)
@click.option(
    "--allow-http",
    is_flag=True,
    help="Accept an http:// URL (https only by default): anyone on the way can read the "
    "release, and change it unless it is signed.",
)
@click.option(
    "--fetch-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_FETCH_TIMEOUT,
    show_default=True,
    metavar="S",
    help="Seconds a URL's server may take to answer, or stay silent mid-transfer.",
)
@click.option(
    "--listen",
    "listen",
    multiple=True,
    metavar="ADDR",
    help="Socket activation on ADDR (PORT, IP:PORT, [IPv6]:PORT or /path; repeatable): "
    "systemd holds the listener so restarts drop no connection. Remembered for the app; "
    "overrides the release's [socket] listen.",
)
@click.option(
    "--listen-reset",
    is_flag=True,
    help="Forget the remembered --listen: use the release's own [socket], if any.",
)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="WHAT",
    help="Let the release widen its sandbox: low-ports (a port below 1024), wx-memory "
    "(MemoryDenyWriteExecute= off) or write:/PATH (ReadWritePaths= at or below PATH); "
    "repeatable, remembered for the app. A release asking for more is refused.",
)
@click.option(
    "--allow-reset",
    is_flag=True,
    help="Forget the remembered --allow values first.",
)
@click.option(
    "--allow-downgrade",
    is_flag=True,
    help="Install a signed release older than the current one (a rollback needs no flag).",
)
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set a variable of the app's configuration with this deploy (repeatable; KEY=- "
    "reads the value from stdin): a new configuration generation, undone if the deploy "
    "fails. See `pyrelctl config`.",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    metavar="FILE",
    help="Set the variables of a dotenv FILE with this deploy, as --env does.",
)
@click.option(
    "--watch",
    "watch_window",
    metavar="DURATION",
    help="After the deploy, watch the release for DURATION (90s, 10m, 1h; 0: off) and roll "
    "back by itself if systemd has to restart it more than --watch-restarts times or it "
    "fails. Remembered for the app; default: the release's [service] watch, else off.",
)
@click.option(
    "--watch-restarts",
    type=click.IntRange(min=0),
    metavar="N",
    help="Restarts in the watch window that roll the release back (default 2); remembered.",
)
@click.option(
    "--strategy",
    type=click.Choice(["overlap", "restart"]),
    help="How the new release replaces the running one: overlap (it starts beside the "
    "running release on the app's socket and takes over once up; a failed one is stopped "
    "before the old one ever stopped) or restart. Remembered for the app; default: the "
    "release's [service] strategy, else overlap for apps with a socket.",
)
@no_wait_option
@pass_ctx
def install(
    obj: Ctx,
    artifact: str,
    app_name: str | None,
    no_start: bool,
    dry_run: bool,
    timeout: float,
    grace: float | None,
    health_http: str | None,
    health_tcp: str | None,
    health_command: str | None,
    health_reset: bool,
    keep: int,
    max_size: int,
    signature: str | None,
    insecure_unsigned: bool,
    allow_http: bool,
    fetch_timeout: float,
    listen: tuple[str, ...],
    listen_reset: bool,
    allow: tuple[str, ...],
    allow_reset: bool,
    allow_downgrade: bool,
    env: tuple[str, ...],
    env_file: Path | None,
    watch_window: str | None,
    watch_restarts: int | None,
    strategy: str | None,
    no_wait: bool,
) -> None:
    """Install ARTIFACT (a release directory, .tar.gz, .tgz or .tar, or an https:// URL
    of one) and make it current.

    The new release must come up and stay up for --grace seconds: started
    beside the running one first (--strategy overlap, the default with a
    socket), or by restarting the service. Otherwise it is marked failed,
    the previous release is restored (or, overlapping, was never stopped)
    and pyrelctl exits with 3 (4 if the previous release fails too, 1 when
    there was no previous release).

    A URL is fetched with its signature (URL.sig) and installed as a file,
    the signature checked before anything is read: see docs/deploys.md.
    """
    if listen and listen_reset:
        raise BadInput("give either --listen or --listen-reset, not both")
    from pyrelctl.allowances import parse_allowance
    from pyrelctl.deploy.options import InstallOptions
    from pyrelctl.durations import parse_duration
    from pyrelctl.sockets import make_socket

    variables: dict[str, str] = {}
    if env_file is not None or env:
        from pyrelctl.appconfig import envfile
        from pyrelctl.cli.config import parse_assignments

        if env_file is not None:
            variables.update(envfile.parse(env_file.read_text(), source=str(env_file)))
        variables.update(envfile.check(parse_assignments(env)))
    opts = InstallOptions(
        app=app_name,
        start=not no_start,
        timeout=timeout,
        grace=grace,
        keep=keep,
        wait_lock=not no_wait,
        max_bytes=max_size,
        health=health_override(health_http, health_tcp, health_command),
        reset_health=health_reset,
        listen=make_socket(listen).listen if listen else (),
        reset_listen=listen_reset,
        signature=None if signature is None else Path(signature),
        allow=tuple(parse_allowance(a) for a in allow),
        reset_allow=allow_reset,
        allow_downgrade=allow_downgrade,
        env=variables or None,
        watch=None if watch_window is None else parse_duration(watch_window, "--watch"),
        watch_restarts=watch_restarts,
        strategy=strategy,
    )
    if "://" in artifact:  # only then are urllib and ssl imported (bench/: start-up)
        from pyrelctl import download

        if download.is_url(artifact):
            fetch = download.PullOptions(
                max_bytes=max_size,
                timeout=fetch_timeout,
                app=app_name,
                signature=signature,
                allow_http=allow_http,
                insecure_unsigned=insecure_unsigned,
            )
            with download.pull(obj.layout, artifact, fetch, obj.say) as pulled:
                opts = replace(opts, signature=pulled.signature)
                _install(obj, pulled.artifact, opts, dry_run)
            return
    if insecure_unsigned or allow_http:
        raise BadInput("--insecure-unsigned and --allow-http are for a URL")
    _install(obj, Path(artifact), opts, dry_run)


def _install(obj: Ctx, artifact: Path, opts: InstallOptions, dry_run: bool) -> None:
    if dry_run:
        _dry_run(obj, artifact, opts)
        return
    outcome = obj.deployer().install(artifact, opts)

    def human() -> None:
        if outcome.started:
            echo(
                f"{outcome.app} {outcome.version} installed and running "
                f"(pid {outcome.main_pid}, {outcome.seconds:.1f} s)"
            )
        elif outcome.changed:
            echo(f"{outcome.app} {outcome.version} installed (not started)")
        else:
            echo(f"{outcome.app} {outcome.version} is already current; nothing changed")

    obj.emit(outcome.to_json(), human)


def _dry_run(obj: Ctx, artifact: Path, opts: InstallOptions) -> None:
    """install --dry-run: say what an install would do (deploy/preview.py)."""
    from pyrelctl.deploy.preview import preview

    seen = preview(obj.deployer().host, artifact, opts)

    def human() -> None:
        if seen.previous == seen.version:
            echo(f"{seen.app} {seen.version} is already current")
        else:
            echo(f"would install {seen.app} {seen.version} (current: {seen.previous or 'none'})")
        for path in seen.units:
            how = "would change" if path in seen.unit_changes else "unchanged"
            echo(f"  {path}: {how}")
        for path in sorted(set(seen.unit_changes) - set(seen.units)):
            echo(f"  {path}: would be removed")

    obj.emit(seen.to_json(), human)


@click.command()
@click.argument("app", shell_complete=complete_app)
@click.option(
    "--to",
    "to_version",
    metavar="VERSION",
    shell_complete=complete_rollback_target,
    help="The release to go back to (default: the previous good one).",
)
@click.option(
    "--config",
    "config_only",
    is_flag=True,
    help="Go back to the previous configuration generation instead (--to GEN picks one); "
    "the release stays.",
)
@timeout_option
@grace_option
@no_wait_option
@pass_ctx
def rollback(
    obj: Ctx,
    app: str,
    to_version: str | None,
    config_only: bool,
    timeout: float,
    grace: float | None,
    no_wait: bool,
) -> None:
    """Make an earlier release of APP current again and restart it.

    Without --to, the newest good release installed before the current one.
    Releases that failed to come up are never chosen. The configuration
    (`pyrelctl config`) stays as it is: it belongs to the host, not to a
    release; `rollback --config` goes back one configuration generation.
    """
    if config_only:
        from pyrelctl.cli.config import rollback_config

        if to_version is not None and not to_version.isdigit():
            raise BadInput("with --config, --to takes a generation number")
        to = int(to_version) if to_version is not None else None
        rollback_config(obj, app, to, timeout, no_wait)
        return
    outcome = obj.deployer().rollback(
        app, to=to_version, timeout=timeout, grace=grace, wait_lock=not no_wait
    )
    obj.emit(
        outcome.to_json(),
        lambda: echo(
            f"{outcome.app} rolled back from {outcome.previous} to {outcome.version}"
            + (f" (pid {outcome.main_pid})" if outcome.started else " (not started)")
        ),
    )


def _control(verb: str) -> click.Command:
    @timeout_option
    @no_wait_option
    @click.argument("app", shell_complete=complete_app)
    @pass_ctx
    def command(obj: Ctx, app: str, timeout: float, no_wait: bool) -> None:
        state = obj.deployer().control(app, verb, timeout=timeout, wait_lock=not no_wait)
        obj.emit(
            {"app": app, "state": state_json(state)},
            lambda: echo(
                f"{app}: {state.active_state} ({state.sub_state})"
                + (f", pid {state.main_pid}" if state.main_pid else "")
            ),
        )

    command.__doc__ = (
        f"{verb.capitalize()} APP's service through systemd and wait for the job."
        if verb == "stop"
        else f"{verb.capitalize()} APP's service through systemd and wait until it is up "
        "(the start job, the health check, the grace period), as an install does."
    )
    return click.command(verb)(command)


start = _control("start")
stop = _control("stop")
restart = _control("restart")


@click.command()
@click.argument("app", shell_complete=complete_app)
@click.argument("counts", nargs=-1, required=True, metavar="NAME=N...")
@timeout_option
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    metavar="S",
    help="Seconds each new instance must stay up (default: the app's grace, as a deploy's).",
)
@no_wait_option
@pass_ctx
def scale(
    obj: Ctx, app: str, counts: tuple[str, ...], timeout: float, grace: float | None, no_wait: bool
) -> None:
    """Run N instances of APP's process NAME on this host (0 to 64), remembered for
    later releases that declare NAME (`{"scale": {...}}` in its settings.json).

    New instances start and must stay up for the grace period, as in a
    deploy; surplus ones stop (their stop_timeout); nothing else restarts.
    If a new instance fails, the old count comes back and pyrelctl exits
    with 3. With --root, or while APP is stopped, only the settings and the
    links in APP.service.wants/ change: the instances start with APP.
    """
    from pyrelctl.deploy.host import Host
    from pyrelctl.deploy.scale import Scaler, parse_counts

    wanted = parse_counts(counts)
    host = Host(obj.layout, obj.systemd, obj.say)
    outcome = Scaler(host).scale(app, wanted, timeout=timeout, grace=grace, wait_lock=not no_wait)

    def human() -> None:
        for note in outcome.notes:
            obj.say(note)
        counts_now = ", ".join(f"{n}={c}" for n, c in sorted(outcome.counts.items()))
        if not outcome.changed:
            echo(f"{app} {outcome.version}: {counts_now}; nothing changed")
            return
        if outcome.applied:
            done = [f"{len(outcome.started)} started"] if outcome.started else []
            done += [f"{len(outcome.stopped)} stopped"] if outcome.stopped else []
            echo(f"{app} {outcome.version}: {counts_now} ({', '.join(done) or 'links only'})")
        else:
            echo(f"{app} {outcome.version}: {counts_now} (written; they start with {app})")

    obj.emit(outcome.to_json(), human)


@click.command()
@click.argument("app", shell_complete=complete_app)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=DEFAULT_KEEP,
    show_default=True,
    metavar="N",
    help="Good releases to keep.",
)
@no_wait_option
@pass_ctx
def prune(obj: Ctx, app: str, keep: int, no_wait: bool) -> None:
    """Remove old releases of APP, keeping N; never the current or last good one.

    Releases that failed to come up do not count towards N and go first.
    """
    pruned = obj.deployer().prune(app, keep=keep, wait_lock=not no_wait)
    obj.emit(
        {"app": app, "pruned": list(pruned)},
        lambda: echo(f"removed {', '.join(pruned)}" if pruned else "nothing to prune"),
    )


@click.command()
@click.argument("app", shell_complete=complete_app)
@click.option(
    "--purge",
    is_flag=True,
    help="Also delete settings, secrets, state (/var/lib/APP), logs and history.",
)
@no_wait_option
@pass_ctx
def uninstall(obj: Ctx, app: str, purge: bool, no_wait: bool) -> None:
    """Stop APP, disable and remove its unit and releases.

    Settings under /etc/pyrelctl/APP, the service's state and pyrelctl's
    history stay unless --purge is given; drop-ins too.
    """
    removed = obj.deployer().uninstall(app, purge=purge, wait_lock=not no_wait)
    obj.emit(
        {"app": app, "removed": removed},
        lambda: echo(
            f"uninstalled {app}"
            + ("" if purge else f" (kept /etc/pyrelctl/{app} and state; --purge removes them)")
        ),
    )


@click.command("_watch", hidden=True)
@click.argument("app")
@click.option("--version", "version", required=True)
@click.option("--until", type=float, required=True)
@click.option("--max-restarts", type=int, required=True)
@click.option("--previous", default=None)
@pass_ctx
def watch_command(
    obj: Ctx, app: str, version: str, until: float, max_restarts: int, previous: str | None
) -> None:
    """The watch window's own process, run by its transient unit (see install --watch)."""
    from pyrelctl.deploy import watchrun

    result = watchrun.run(obj.deployer().host, app, version, until, max_restarts, previous)
    echo(f"{app} {version}: watch {result}")


@click.command("_job-failed", hidden=True)
@click.argument("instance")
@pass_ctx
def job_failed_command(obj: Ctx, instance: str) -> None:
    """Tell the host's hooks that a scheduled job failed: run by
    pyrelctl-job-failed@JOB.service, its OnFailure= (procs/failed.py)."""
    import os

    from pyrelctl.procs import failed

    failed.report(
        obj.layout, obj.systemd, instance, obj.say, os.environ.get("MONITOR_INVOCATION_ID")
    )
