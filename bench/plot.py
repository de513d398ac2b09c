"""The picture: latency over time through one upgrade and one failed deploy.

One panel per release and scenario (rows) and per way of deploying
(columns), from the first run's windows of bench.availability: each dot is
a request, at the moment it was due (seconds from the deploy command's
start), at the height of its latency (log scale), coloured by the version
that answered it; a failed request is a red cross along the top. The shaded
span is the command, from its start to its exit.

matplotlib comes with the bench's extra (``pip install -e '.[bench]'``),
never with pyrelctl itself; it is imported only when a picture is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.availability import Window

#: Failed requests are drawn at this height (seconds): above any latency kept.
FAILED_AT = 6.0
ORDER = ("no socket", "restart", "overlap", "capistrano")


def write(path: Path, panels: Mapping[tuple[str, str], Mapping[str, Window]], title: str) -> None:
    """Write the picture of ``panels`` ((release, strategy) -> scenario -> window)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    releases = [r for r in ("generic", "mix") if any(k[0] == r for k in panels)]
    scenarios = sorted({s for w in panels.values() for s in w}, reverse=True)  # upgrade first
    rows = [(r, s) for r in releases for s in scenarios]
    columns = [c for c in ORDER if any(k[1] == c for k in panels)]
    fig, axes = plt.subplots(
        len(rows),
        len(columns),
        figsize=(3.4 * len(columns), 2.5 * len(rows)),
        sharey=True,
        squeeze=False,
    )
    for r, (release, scenario) in enumerate(rows):
        for c, strategy in enumerate(columns):
            ax = axes[r][c]
            window = panels.get((release, strategy), {}).get(scenario)
            ax.set_yscale("log")
            ax.set_ylim(5e-4, FAILED_AT * 2)
            ax.grid(True, which="major", alpha=0.3)
            if r == 0:
                ax.set_title(strategy, fontsize=11)
            if c == 0:
                ax.set_ylabel(f"{release}: {scenario}\nlatency (s)", fontsize=8)
            if r == len(rows) - 1:
                ax.set_xlabel("s from the command's start", fontsize=8)
            if window is None:
                ax.text(0.5, 0.5, f"not run ({release})", ha="center", transform=ax.transAxes)
                continue
            _panel(ax, window)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax: object, window: Window) -> None:
    """One window: the requests' latencies by version, failures, the command's span."""
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    start = window.command_started
    by_version: dict[str, tuple[list[float], list[float]]] = {}
    failed: list[float] = []
    for s in window.samples:
        if s.latency is None:
            failed.append(s.due - start)
        else:
            xs, ys = by_version.setdefault(s.outcome, ([], []))
            xs.append(s.due - start)
            ys.append(max(s.latency, 6e-4))
    for version, (xs, ys) in sorted(by_version.items()):
        ax.scatter(xs, ys, s=3, label=version, alpha=0.7, linewidths=0)
    if failed:
        ax.scatter(
            failed,
            [FAILED_AT] * len(failed),
            s=12,
            marker="x",
            color="red",
            label=f"failed ({len(failed)})",
        )
    if not math.isnan(start):
        ax.axvspan(0, window.command_ended - start, color="grey", alpha=0.15, linewidth=0)
    ax.legend(fontsize=6, loc="center right", markerscale=2, framealpha=0.6)
