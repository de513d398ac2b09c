"""Deploy facts as Prometheus metrics: ``pyrelctl metrics`` and node_exporter's textfile.

What an operator who was paged wants on a dashboard: which release each app
runs, when it was last deployed and whether that worked, how many deploys
and automatic rollbacks it has had (counted from its history), and how its
service is doing now (up, restarts since the deploy, memory).

The text is the Prometheus exposition format (text 0.0.4, what
node_exporter's textfile collector reads): ``# HELP``/``# TYPE`` per
family, no sample timestamps (the collector refuses them). After each
deploy, rollback and configuration change pyrelctl rewrites
``/var/lib/prometheus/node-exporter/pyrelctl.prom`` atomically, when that
directory exists (Debian's prometheus-node-exporter reads it); another
path can be set in ``/etc/pyrelctl/metrics.toml`` (``textfile = "..."``).
"""

from __future__ import annotations

import os
import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pyrelctl.appconfig.generations import running_generation
from pyrelctl.errors import BadInput
from pyrelctl.hostfiles import write_atomic_at
from pyrelctl.layout import Layout
from pyrelctl.systemd import Systemd, UnitState
from pyrelctl.textdir import open_textfile_dir

#: Where Debian's prometheus-node-exporter looks (its --collector.textfile.directory).
DEFAULT_TEXTFILE = "var/lib/prometheus/node-exporter/pyrelctl.prom"
SETTINGS = "etc/pyrelctl/metrics.toml"
#: History actions that are deploys of something.
DEPLOY_ACTIONS = (
    "install", "rollback", "auto-rollback", "auto-rollback (watch)", "config", "config-rollback",
)  # fmt: skip
#: Actions pyrelctl took by itself.
AUTO_ROLLBACKS = ("auto-rollback", "auto-rollback (watch)", "config-rollback")


def _label(value: str) -> str:
    """A label value, escaped as the exposition format requires."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass
class Family:
    name: str
    kind: str  # gauge, counter, info-as-gauge
    help: str
    samples: list[tuple[dict[str, str], float]]

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            number = repr(float(value)) if value != int(value) else str(int(value))
            out.append(f"{self.name}{{{text}}} {number}")
        return out


def _result_of(record: dict[str, object]) -> str:
    """ok, failed, or staged (made current for the next start: `--no-start`,
    a configuration change of a stopped app, one set with a deploy)."""
    result = str(record.get("result", ""))
    if result.startswith("failed"):
        return "failed"
    if result.startswith(("ok", "switched")):
        return "ok"
    return "staged"


def collect(layout: Layout, systemd: Systemd | None) -> list[Family]:
    """Every metric family for the apps of ``layout`` (``systemd``: None offline)."""
    info = Family("pyrelctl_release_info", "gauge", "The release an app runs (always 1).", [])
    config = Family(
        "pyrelctl_config_generation", "gauge", "The app's configuration generation.", []
    )
    last_time = Family(
        "pyrelctl_last_deploy_timestamp_seconds",
        "gauge",
        "When the app's last deploy, rollback or configuration change ended.",
        [],
    )
    last_ok = Family(
        "pyrelctl_last_deploy_success", "gauge", "1 if the app's last deploy worked, else 0.", []
    )
    deploys = Family(
        "pyrelctl_deploys_total",
        "counter",
        "Deploys, rollbacks and configuration changes of the app, by action and result.",
        [],
    )
    rollbacks = Family(
        "pyrelctl_auto_rollbacks_total",
        "counter",
        "Times pyrelctl restored a previous release or configuration by itself.",
        [],
    )
    up = Family("pyrelctl_service_up", "gauge", "1 if the app's service is running.", [])
    restarts = Family(
        "pyrelctl_service_restarts",
        "gauge",
        "Restarts systemd made by itself since the last start by hand or deploy (NRestarts).",
        [],
    )
    memory = Family("pyrelctl_service_memory_bytes", "gauge", "Memory of the service's cgroup.", [])
    for name in layout.apps():
        app = layout.app(name)
        labels = {"app": name}
        current = app.current_version()
        if current is not None:
            release = app.read_index().get(current, {}).get("release", {})
            info.samples.append(
                ({**labels, "version": current, "kind": str(release.get("kind", ""))}, 1)
            )
        generation = running_generation(app)
        if generation is not None:
            config.samples.append((labels, generation))
        records = [r for r in app.history() if r.get("action") in DEPLOY_ACTIONS]
        counts = Counter((str(r["action"]), _result_of(r)) for r in records)
        for (action, result), count in sorted(counts.items()):
            deploys.samples.append(({**labels, "action": action, "result": result}, count))
        rollbacks.samples.append(
            (labels, sum(1 for r in records if r.get("action") in AUTO_ROLLBACKS))
        )
        finished = [r for r in records if r.get("action") not in AUTO_ROLLBACKS]
        if finished:
            last = finished[-1]
            last_time.samples.append((labels, float(str(last.get("time", 0)))))
            last_ok.samples.append((labels, 1 if _result_of(last) in ("ok", "staged") else 0))
        if systemd is not None:
            state = systemd.state(app.service_name)
            _service(labels, state, up, restarts, memory)
    return [info, config, last_time, last_ok, deploys, rollbacks, up, restarts, memory]


def _service(
    labels: dict[str, str], state: UnitState, up: Family, restarts: Family, memory: Family
) -> None:
    up.samples.append((labels, 1 if state.running else 0))
    restarts.samples.append((labels, state.n_restarts))
    if state.memory_bytes is not None:
        memory.samples.append((labels, state.memory_bytes))


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        lines += family.lines()
    return "\n".join(lines) + "\n"


def textfile_path(layout: Layout) -> Path:
    """Where deploys write the metrics: the configured path, else Debian's."""
    settings = layout.root / SETTINGS
    if settings.is_file():
        try:
            doc = tomllib.loads(settings.read_text())
        except tomllib.TOMLDecodeError as e:
            raise BadInput(f"{settings}: not valid TOML ({e})") from e
        path = doc.get("textfile")
        if path is not None:
            if (
                not isinstance(path, str)
                or not path.startswith("/")
                or not path.isprintable()
                or ".." in PurePosixPath(path).parts
                or PurePosixPath(path).name in ("", "/")
            ):
                raise BadInput(
                    f"{settings}: textfile must be an absolute path to a file, "
                    "without '..' or control characters"
                )
            return layout.root / path.lstrip("/")
    return layout.root / DEFAULT_TEXTFILE


def write_textfile(layout: Layout, systemd: Systemd | None) -> Path | None:
    """Rewrite the textfile, atomically (the collector never reads half a file).

    None when its directory does not exist (nobody would read it). Raises
    :class:`HostError` when the directory is not one root may write into
    (textdir.open_textfile_dir); deploys turn that into a warning.
    """
    path = textfile_path(layout)
    dir_fd = open_textfile_dir(layout.root, path.parent)
    if dir_fd is None:
        return None
    try:
        write_atomic_at(dir_fd, path.name, render(collect(layout, systemd)).encode(), 0o644)
    finally:
        os.close(dir_fd)
    return path
