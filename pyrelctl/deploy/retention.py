"""Which releases a rollback goes to and a prune removes: pure decisions on an app's marks.

Both read the release index once and change nothing; the orchestrator acts
on the answer under the app's lock (:func:`prune` removes what the plan says).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pyrelctl.errors import BadInput, NotInstalled
from pyrelctl.hostfiles import remove_tree
from pyrelctl.layout import AppPaths, Mark


def _marks(app: AppPaths, versions: list[str]) -> dict[str, Mark]:
    index = app.read_index()
    return {v: Mark(index.get(v, {}).get("mark", Mark.NEW)) for v in versions}


def rollback_target(app: AppPaths, current: str | None, to: str | None) -> str:
    """``to`` if it may be rolled back to, else the newest good release older than ``current``.

    A release that failed when it was installed is never chosen.
    """
    versions = app.versions()  # oldest first
    marks = _marks(app, versions)
    if to is not None:
        if to not in versions:
            raise NotInstalled(
                f"release {to} of {app.name} is not installed",
                hint=f"see the installed releases: pyrelctl releases {app.name}",
            )
        if to == current:
            raise BadInput(f"{to} is already the current release of {app.name}")
        if marks[to] is Mark.FAILED:
            raise BadInput(
                f"{app.name} {to} failed when it was installed; rollback never "
                "chooses a failed release",
                hint="install its artifact again to retry it",
            )
        return to
    older = versions[: versions.index(current)] if current in versions else versions
    candidates = [v for v in older if marks[v] is not Mark.FAILED]
    if not candidates:
        raise BadInput(
            f"{app.name} has no earlier good release to roll back to",
            hint=f"see the installed releases: pyrelctl releases {app.name}",
        )
    return candidates[-1]


def prune_plan(app: AppPaths, keep: int) -> tuple[str, ...]:
    """The releases beyond ``keep`` to remove, oldest first; never the current or the
    last good one.

    Failed releases do not count towards ``keep`` (Capistrano #1907: keeping
    N by date can delete good releases while keeping failed ones) and go first.
    """
    if keep <= 0:
        return ()
    versions = app.versions()  # oldest first
    current = app.current_version()
    marks = _marks(app, versions)
    good = [v for v in versions if marks[v] is Mark.GOOD]
    protected = {current, good[-1] if good else None}
    survivors = [v for v in reversed(versions) if marks[v] is not Mark.FAILED][:keep]
    return tuple(v for v in versions if v not in protected and v not in survivors)


def prune(
    app: AppPaths,
    keep: int,
    say: Callable[[str], None],
    in_use: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """Remove the releases :func:`prune_plan` gives up; return their versions.

    A release that a process of the app still runs stays, and ``say`` tells
    why: a job that started before later deploys finishes on its release
    (its binaries, its files) instead of losing them under it. ``in_use``:
    version -> what runs it; by default read from the running host
    (procs.host.releases_in_use), nothing offline.
    """
    doomed = prune_plan(app, keep)
    if doomed and in_use is None:
        from pyrelctl.procs.host import releases_in_use

        in_use = {} if app.layout.offline else releases_in_use(app)
    removed = []
    for version in doomed:
        if in_use and version in in_use:
            say(f"keeping {app.name} {version}: {in_use[version]} still runs it")
            continue
        say(f"pruning {app.name} {version}")
        remove_tree(app.release(version))
        app.forget(version)
        removed.append(version)
    return tuple(removed)
