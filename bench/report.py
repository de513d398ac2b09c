"""Figures, targets, and how they are printed (a table, or one JSON document).

Every figure is the median of its samples, and is shown with the baseline
measured in the same run and their ratio. Whether a target is met is
computed here from the figures; nothing is decided in advance.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Measure(StrEnum):
    """What a target limits."""

    RATIO = "ratio"  # the figure / its baseline
    SECONDS = "seconds"  # the figure itself
    FAILURES = "failures"  # failed requests, summed over all runs
    P99_RATIO = "p99 ratio"  # p99 through a deploy / the steady p99 of the same runs
    FAILING_ANSWERS = "failing answers"  # requests answered by the release that failed
    BOOTS = "boots"  # starts of the new release in a deploy window, the most of the runs
    HELD_CUTS = "held cuts"  # times one held connection was cut in a window, the most


@dataclass(frozen=True)
class Target:
    """An upper limit from issue 7, 19 or 30, on one figure."""

    measure: Measure
    limit: float

    def describe(self) -> str:
        if self.measure is Measure.RATIO:
            return f"<= {self.limit:g}x"
        if self.measure is Measure.SECONDS:
            return f"< {_duration(self.limit)}"
        if self.measure is Measure.P99_RATIO:
            return f"p99 <= {self.limit:g}x steady"
        if self.measure is Measure.FAILING_ANSWERS:
            return "0 by failing" if self.limit == 0 else f"<= {self.limit:g} by failing"
        if self.measure is Measure.BOOTS:
            return f"{self.limit:g} boot" if self.limit == 1 else f"<= {self.limit:g} boots"
        if self.measure is Measure.HELD_CUTS:
            return f"each held cut <= {self.limit:g}x"
        return "0 failed" if self.limit == 0 else f"<= {self.limit:g} failed"

    def met(self, value: float) -> bool:
        if self.measure is Measure.SECONDS:
            return value < self.limit
        return value <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {"measure": str(self.measure), "limit": self.limit, "text": self.describe()}


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else math.nan


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (0.99: the value 99 % of the values do not exceed)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def _ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else math.nan


def _met(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "NOT met")


@dataclass(frozen=True)
class Comparison:
    """A duration measured for pyrelctl and for its baseline, several times each."""

    section: str
    what: str
    baseline_what: str
    samples: tuple[float, ...]
    baseline_samples: tuple[float, ...]
    target: Target | None = None

    @property
    def value(self) -> float:
        return median(self.samples)

    @property
    def baseline(self) -> float:
        return median(self.baseline_samples)

    @property
    def ratio(self) -> float:
        return _ratio(self.value, self.baseline)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        measured = self.ratio if self.target.measure is Measure.RATIO else self.value
        return self.target.met(measured)

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "what": self.what,
            "baseline_what": self.baseline_what,
            "median_s": self.value,
            "baseline_median_s": self.baseline,
            "ratio": self.ratio,
            "target": self.target.to_json() if self.target else None,
            "met": self.met,
            "samples_s": list(self.samples),
            "baseline_samples_s": list(self.baseline_samples),
        }


@dataclass(frozen=True)
class ScaleRow:
    """One operation timed at growing host sizes; the first size is the baseline."""

    what: str
    sizes: tuple[str, ...]
    samples: tuple[tuple[float, ...], ...]  # per size
    target: Target | None = None  # on the figure at the last (full) size
    note: str = ""

    @property
    def values(self) -> list[float]:
        return [median(s) for s in self.samples]

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.values[-1])

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "note": self.note,
            "sizes": [
                {"size": size, "median_s": median(s), "samples_s": list(s)}
                for size, s in zip(self.sizes, self.samples, strict=True)
            ],
            "ratio_full_to_small": _ratio(self.values[-1], self.values[0]),
            "target": self.target.to_json() if self.target else None,
            "met": self.met,
        }


@dataclass(frozen=True)
class LoadStats:
    """What the load generator saw in one window of one run."""

    requests: int
    failed: int
    errors: dict[str, int]  # failed requests by cause
    answers: dict[str, int]  # requests answered, by the version that answered
    p50: float  # latency of the requests that succeeded, seconds
    p99: float
    max: float
    failing_version: str = ""  # the version a failed deploy tried to install
    serving_after: str = ""  # who answered right after the command exited
    command_s: float = math.nan  # the deploy command's wall time
    answered_s: float = math.nan  # from its start to the first answer of what it deploys
    memory_before_kib: int = 0  # Pss of the app's units when the command started
    memory_peak_kib: int = 0  # and the most while it ran (bench.memory)
    #: Starts of the release the command deployed (or tried to), from the journal
    #: (bench.boots); None: not counted (no deploy, or nothing served after it).
    boots: int | None = None
    #: Per long-lived connection held through the window, how many times it was
    #: cut (bench.held); empty: none held (the steady windows).
    held_cuts: tuple[int, ...] = ()

    @property
    def failing_answers(self) -> int:
        return self.answers.get(self.failing_version, 0) if self.failing_version else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "errors": self.errors,
            "answers": self.answers,
            "failing_version": self.failing_version or None,
            "failing_answers": self.failing_answers if self.failing_version else None,
            "serving_after": self.serving_after or None,
            "command_s": self.command_s,
            "answered_s": self.answered_s,
            "memory_before_kib": self.memory_before_kib or None,
            "memory_peak_kib": self.memory_peak_kib or None,
            "boots": self.boots,
            "held_cuts": list(self.held_cuts),
            "p50_s": self.p50,
            "p99_s": self.p99,
            "max_s": self.max,
        }


@dataclass(frozen=True)
class Availability:
    """One scenario under steady load, in several runs, against the same load with
    no deploy (steady) in the same runs."""

    scenario: str
    socket: bool
    runs: tuple[LoadStats, ...]
    steady: tuple[LoadStats, ...]
    targets: tuple[Target, ...] = ()
    skipped: str = ""  # why it could not be measured
    #: How the deploy replaces the release: "restart", "overlap" (pyrelctl's
    #: strategies) or the peer that deployed it ("capistrano").
    strategy: str = "restart"
    release: str = "generic"  # or "mix"
    variant: str = ""  # how the app differs from the strategy's defaults ("--grace 0")

    @property
    def label(self) -> str:
        """Who deployed how: "no socket", "restart", "overlap", "capistrano", and
        the variant if any ("overlap --grace 0")."""
        label = "no socket" if self.strategy == "restart" and not self.socket else self.strategy
        return f"{label} {self.variant}" if self.variant else label

    @property
    def failing_answers(self) -> int | None:
        """Requests answered by the release that failed (None: no release failed)."""
        if not any(r.failing_version for r in self.runs):
            return None
        return sum(r.failing_answers for r in self.runs)

    @property
    def p99_ratio(self) -> float:
        return _ratio(self.latency("p99"), self.steady_latency("p99"))

    def value(self, measure: Measure) -> float:
        if measure is Measure.FAILURES:
            return self.failed
        if measure is Measure.P99_RATIO:
            # No request answered at all is no latency: that cannot meet a limit.
            return self.p99_ratio if not math.isnan(self.p99_ratio) else math.inf
        if measure is Measure.FAILING_ANSWERS:
            return self.failing_answers or 0
        if measure is Measure.BOOTS:
            # A run whose boots were not counted, or none found, cannot meet "1 boot".
            counted = [r.boots for r in self.runs]
            if not counted or any(b is None or b < 1 for b in counted):
                return math.inf
            return max(b for b in counted if b is not None)
        if measure is Measure.HELD_CUTS:
            held = self.held_cuts
            return math.inf if held is None else held[0]
        raise ValueError(f"no {measure} for an availability row")

    def target_met(self, target: Target) -> bool:
        return not self.skipped and bool(self.runs) and target.met(self.value(target.measure))

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.runs)

    def latency(self, which: str) -> float:
        return median([getattr(r, which) for r in self.runs])

    @property
    def boots(self) -> tuple[int | None, ...]:
        """Starts of the deployed release in each run's window (bench.boots)."""
        return tuple(r.boots for r in self.runs)

    @property
    def held_cuts(self) -> tuple[int, int, int] | None:
        """Cuts of the held connections: (the most any one connection had in one
        window, all cuts of all runs, connections held in all runs); None: none held."""
        per_connection = [n for r in self.runs for n in r.held_cuts]
        if not per_connection:
            return None
        return max(per_connection), sum(per_connection), len(per_connection)

    def boots_text(self) -> str:
        counted = self.boots
        if not counted or all(b is None for b in counted):
            return "-"
        return ", ".join("?" if b is None else str(b) for b in counted)

    def held_text(self) -> str:
        held = self.held_cuts
        return "-" if held is None else f"{held[0]} / {held[1]} of {held[2]}"

    def memory(self) -> str:
        """The app's memory when the command started / its peak, medians of the runs."""
        before = median([r.memory_before_kib for r in self.runs if r.memory_peak_kib])
        peak = median([r.memory_peak_kib for r in self.runs if r.memory_peak_kib])
        if math.isnan(peak):
            return "-"
        return f"{before / 1024:.0f} / {peak / 1024:.0f} MiB"

    def steady_latency(self, which: str) -> float:
        return median([getattr(r, which) for r in self.steady])

    @property
    def met(self) -> bool | None:
        if not self.targets:
            return None
        return all(self.target_met(t) for t in self.targets)

    def serving_after(self) -> str:
        """What answered right after each run's command exited, counted."""
        seen: dict[str, int] = {}
        for r in self.runs:
            if r.serving_after:
                seen[r.serving_after] = seen.get(r.serving_after, 0) + 1
        return ", ".join(f"{what} x{n}" if n > 1 else what for what, n in seen.items())

    def to_json(self) -> dict[str, Any]:
        errors: dict[str, int] = {}
        for r in self.runs:
            for cause, n in r.errors.items():
                errors[cause] = errors.get(cause, 0) + n
        return {
            "scenario": self.scenario,
            "release": self.release,
            "strategy": self.label,
            "socket": self.socket,
            "skipped": self.skipped or None,
            "requests": self.requests,
            "failed": self.failed,
            "failing_answers": self.failing_answers,
            "serving_after": self.serving_after() or None,
            "memory_before_peak": self.memory(),
            "boots": list(self.boots),
            "held_cuts_max": None if self.held_cuts is None else self.held_cuts[0],
            "held_cuts_total": None if self.held_cuts is None else self.held_cuts[1],
            "held_connections": None if self.held_cuts is None else self.held_cuts[2],
            "errors": errors,
            "median_p50_s": self.latency("p50"),
            "median_p99_s": self.latency("p99"),
            "median_max_s": self.latency("max"),
            "steady_median_p50_s": self.steady_latency("p50"),
            "steady_median_p99_s": self.steady_latency("p99"),
            "p99_ratio": self.p99_ratio,
            "targets": [{**t.to_json(), "met": self.target_met(t)} for t in self.targets],
            "met": self.met,
            "runs": [r.to_json() for r in self.runs],
            "steady_runs": [r.to_json() for r in self.steady],
        }


@dataclass
class Report:
    """Everything one run of ``python -m bench`` measured."""

    meta: dict[str, Any]
    comparisons: list[Comparison] = field(default_factory=list)
    scale: list[ScaleRow] = field(default_factory=list)
    availability: list[Availability] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # section -> what went wrong

    def targets(self) -> list[tuple[str, str, bool]]:
        """(figure, target, met) for every figure that has a target."""
        found = []
        for c in self.comparisons:
            if c.target is not None and c.met is not None:
                found.append((f"{c.section}: {c.what}", c.target.describe(), c.met))
        for s in self.scale:
            if s.target is not None and s.met is not None:
                found.append((f"scale: {s.what} at {s.sizes[-1]}", s.target.describe(), s.met))
        for a in self.availability:
            for t in a.targets:
                figure = f"availability: {a.scenario}, {a.release}, {a.label}"
                found.append((figure, t.describe(), a.target_met(t)))
        for section in self.errors:
            found.append((f"{section}: measurement failed", "runs", False))
        return found

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON-ready document (NaN, "not measured", becomes null)."""
        document = {
            **self.meta,
            "comparisons": [c.to_json() for c in self.comparisons],
            "scale": [s.to_json() for s in self.scale],
            "availability": [a.to_json() for a in self.availability],
            "targets": [{"figure": f, "target": t, "met": m} for f, t, m in self.targets()],
            "notes": self.notes,
            "errors": self.errors,
        }
        cleaned: dict[str, Any] = _without_nan(document)
        return cleaned

    def render(self) -> str:
        """The human table: one block per kind of figure, then the targets."""
        out: list[str] = []
        m = self.meta
        out.append(
            f"pyrelctl benchmarks, {m['date']}: medians of {m['runs']} runs "
            f"(ratio = figure / baseline of the same run)"
        )
        out.append(
            f"machine: {m['machine']['cpus']} CPUs, {m['machine']['memory']}, "
            f"kernel {m['machine']['kernel']}, {m['machine']['systemd']}"
        )
        if self.comparisons:
            out += ["", "Deploys and status (wall time)"]
            out += _columns(
                ("figure", "pyrelctl", "baseline", "baseline is", "ratio", "target", "met?"),
                [
                    (
                        f"{c.section}: {c.what}",
                        _duration(c.value),
                        _duration(c.baseline),
                        c.baseline_what,
                        f"{c.ratio:.2f}x",
                        c.target.describe() if c.target else "-",
                        _met(c.met),
                    )
                    for c in self.comparisons
                ],
            )
        if self.scale:
            sizes = self.scale[0].sizes
            out += ["", "Scale (apps x releases on one host; ratio = largest / smallest)"]
            out += _columns(
                ("operation", *sizes, "ratio", "target", "met?"),
                [
                    (
                        s.what,
                        *(_duration(v) for v in s.values),
                        f"{_ratio(s.values[-1], s.values[0]):.2f}x",
                        s.target.describe() if s.target else "-",
                        _met(s.met),
                    )
                    for s in self.scale
                ],
            )
        if self.availability:
            out += [
                "",
                "Availability under steady load (failed: all runs summed; latencies: medians "
                "of the runs' p50/p99/max; steady: same load, no deploy; boots: of the "
                "deployed release, each run; held cut: the most cuts of one long-lived "
                "connection in one window / all cuts, of N connections held)",
            ]
            out += _columns(
                (
                    "scenario",
                    "release",
                    "strategy",
                    "requests",
                    "failed",
                    "by failing",
                    "serving after",
                    "p50",
                    "p99",
                    "max",
                    "steady p50/p99",
                    "p99 ratio",
                    "boots",
                    "held cut max / total of",
                    "memory before / peak",
                    "failed by cause",
                    "target",
                    "met?",
                ),
                [_availability_row(a) for a in self.availability],
            )
        if self.notes:
            out += ["", *(f"note: {n}" for n in self.notes)]
        for section, error in self.errors.items():
            out += ["", f"ERROR in {section}: {error}"]
        targets = self.targets()
        if targets:
            out += ["", "Targets (issues 7, 19 and 30)"]
            out += _columns(("figure", "target", "met?"), [(f, t, _met(m)) for f, t, m in targets])
        return "\n".join(out)


def _without_nan(value: Any) -> Any:
    """``value`` with every NaN float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nan(v) for v in value]
    return value


def _availability_row(a: Availability) -> tuple[str, ...]:
    target = ", ".join(t.describe() for t in a.targets) or "-"
    if a.skipped:
        # The reason goes where the causes of failures would.
        return (a.scenario, a.release, a.label, *("-",) * 12, a.skipped, target, _met(a.met))
    causes: dict[str, int] = {}
    for run in a.runs:
        for cause, n in run.errors.items():
            causes[cause] = causes.get(cause, 0) + n
    share = f" ({100 * a.failed / a.requests:.1f} %)" if a.requests and a.failed else ""
    failing = a.failing_answers
    return (
        a.scenario,
        a.release,
        a.label,
        str(a.requests),
        f"{a.failed}{share}",
        "-" if failing is None else str(failing),
        a.serving_after() or "-",
        _duration(a.latency("p50")),
        _duration(a.latency("p99")),
        _duration(a.latency("max")),
        f"{_duration(a.steady_latency('p50'))} / {_duration(a.steady_latency('p99'))}",
        f"{a.p99_ratio:.1f}x",
        a.boots_text(),
        a.held_text(),
        a.memory(),
        ", ".join(f"{cause} {n}" for cause, n in sorted(causes.items())) or "-",
        target,
        _met(a.met),
    )


def _columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart (the table reads the same piped or not)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
