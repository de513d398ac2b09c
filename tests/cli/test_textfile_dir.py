"""The metrics textfile through the CLI (issue 26, item 3): the names whose
directories root writes into are reserved, and a refused textfile directory
is one warning line, never a failed deploy (unit tests: tests/unit/test_textfile_dir.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.releases import make_generic_release
from tests.cli.conftest import run
from tests.cli.test_host_claims import refused, release
from tests.cli.test_host_claims import root as root  # a fixture, used by name

WARNING = "warning: metrics not written: "


@pytest.mark.parametrize("name", ["prometheus", "prometheus-node-exporter", "node-exporter"])
def test_the_node_exporters_names_are_reserved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path, name: str
) -> None:
    # A release named prometheus would own /var/lib/prometheus (StateDirectory=).
    refused(capsys, root, [release(tmp_path, name)], "reserved")
    refused(capsys, root, ["--app", name, release(tmp_path, "other")], "reserved")


def test_a_planted_link_is_one_warning_and_the_deploy_goes_on(
    hello_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    victim = hello_root / "etc/victim"
    victim.mkdir()
    (hello_root / "var/lib/prometheus").mkdir(parents=True)
    (hello_root / "var/lib/prometheus/node-exporter").symlink_to(victim)
    artifact = make_generic_release(tmp_path / "m", name="hello", version="2.0")
    result = run(capsys, "--root", hello_root, "install", artifact)
    assert result.code == 0, result.err
    warnings = [line for line in result.err_lines if line.startswith(WARNING)]
    assert len(warnings) == 1, result.err
    assert "node-exporter is a symlink or not a directory" in warnings[0]
    assert list(victim.iterdir()) == []
    for args in (("rollback", "hello"), ("config", "set", "hello", "A=1")):
        result = run(capsys, "--root", hello_root, *args)
        assert result.code == 0, result.err
        assert sum(line.startswith(WARNING) for line in result.err_lines) == 1, result.err
    assert list(victim.iterdir()) == []
    # Asked for by name, it is an error (exit 1), one line and a hint.
    result = run(capsys, "--root", hello_root, "metrics", "--write")
    assert result.code == 1
    assert result.err_lines[0].startswith("error: the metrics textfile directory is refused")
    assert result.err_lines[1].startswith("hint: ")
    assert list(victim.iterdir()) == []
