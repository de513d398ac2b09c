"""`pyrelctl metrics` and the node_exporter textfile, parsed by prometheus_client's own
parser (issue 20). Offline here; tests/system/test_metrics.py reads a real systemd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.releases import make_generic_release
from tests.cli.conftest import run


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        f.name: [(dict(s.labels), s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def test_metrics_parse_and_count_the_history(
    hello_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for version in ("2.0", "3.0"):
        artifact = make_generic_release(tmp_path / "m", name="hello", version=version)
        assert run(capsys, "--root", hello_root, "install", artifact).code == 0
    assert run(capsys, "--root", hello_root, "rollback", "hello").code == 0
    assert run(capsys, "--root", hello_root, "config", "set", "hello", "A=1").code == 0
    result = run(capsys, "--root", hello_root, "metrics")
    assert result.code == 0, result.err
    got = families(result.out)
    assert got["pyrelctl_release_info"] == [
        ({"app": "hello", "version": "2.0", "kind": "generic"}, 1)
    ]
    deploys = {(s["action"], s["result"]): v for s, v in got["pyrelctl_deploys"]
               if "action" in s}  # fmt: skip
    # Offline nothing starts: installs are "switched, not started".
    assert deploys == {("install", "ok"): 3, ("rollback", "ok"): 1, ("config", "staged"): 1}
    assert got["pyrelctl_config_generation"] == [({"app": "hello"}, 1)]
    assert got["pyrelctl_auto_rollbacks"] == [({"app": "hello"}, 0)]
    (last,) = got["pyrelctl_last_deploy_timestamp_seconds"]
    history = json.loads(run(capsys, "--root", hello_root, "--json", "history", "hello").out)
    assert last[1] == pytest.approx(history["history"][-1]["time"])


def test_deploys_rewrite_the_textfile_when_a_collector_reads_one(
    hello_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    textfile = hello_root / "var/lib/prometheus/node-exporter/pyrelctl.prom"
    artifact = make_generic_release(tmp_path / "m", name="hello", version="2.0")
    assert run(capsys, "--root", hello_root, "install", artifact).code == 0
    assert not textfile.parent.exists()  # no collector here: nothing written
    textfile.parent.mkdir(parents=True)
    again = make_generic_release(tmp_path / "m", name="hello", version="3.0")
    assert run(capsys, "--root", hello_root, "install", again).code == 0
    text = textfile.read_text()
    assert 'version="3.0"' in text
    assert all(not line or line.startswith("#") or len(line.split()) == 2
               for line in text.splitlines()), "no sample timestamps"  # fmt: skip
    assert families(text)["pyrelctl_release_info"][0][0]["version"] == "3.0"
    # A refused install writes nothing, the textfile included.
    before = textfile.stat().st_mtime_ns
    assert run(capsys, "--root", hello_root, "install", tmp_path / "missing.tar.gz").code == 2
    assert textfile.stat().st_mtime_ns == before


def test_the_textfile_path_is_configurable(
    hello_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (hello_root / "etc/pyrelctl/metrics.toml").write_text('textfile = "/srv/metrics/p.prom"\n')
    (hello_root / "srv/metrics").mkdir(parents=True)
    assert run(capsys, "--root", hello_root, "metrics", "--write").code == 0
    assert "pyrelctl_release_info" in (hello_root / "srv/metrics/p.prom").read_text()
