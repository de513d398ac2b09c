"""The tarball `mix release` writes installs as it is (issue 27, finding 2).

Mix's tar step (make_tar and copy_overlays in Elixir's
lib/mix/lib/mix/tasks/release.ex, 1.14 to today) archives `bin/` as a
directory, again as an overlay directory, and each file of
`rel/overlays/bin/` once more: every Phoenix app from `mix phx.gen.release`
(`bin/server`, `bin/migrate`) has duplicate members. Built here with
Debian's Elixir, offline, and installed with `--root` (no systemd).
"""

from __future__ import annotations

import collections
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.cli.conftest import run

pytestmark = pytest.mark.skipif(shutil.which("mix") is None, reason="needs Debian's elixir")

SERVER = b'#!/bin/sh\nset -eu\ncd -P -- "$(dirname -- "$0")"\nPHX_SERVER=true exec ./shop start\n'
MIGRATE = b'#!/bin/sh\nset -eu\ncd -P -- "$(dirname -- "$0")"\nexec ./shop eval \'IO.puts(:ok)\'\n'


@pytest.fixture(scope="module")
def phoenix_like_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """shop 1.0.0 built by `mix release` with steps [:assemble, :tar] and
    `rel/overlays/bin/server` and `bin/migrate`, as phx.gen.release writes."""
    from devtools.releases import build_mix_app

    workdir = tmp_path_factory.mktemp("mix")  # MIX_HOME and HEX_HOME below it
    built = build_mix_app(
        workdir, ["1.0.0"], name="shop", overlays={"bin/server": SERVER, "bin/migrate": MIGRATE}
    )
    return built["1.0.0"]


def test_mix_really_lists_overlay_files_more_than_once(phoenix_like_tarball: Path) -> None:
    # `tar tzf | sort | uniq -d`: what the refusal was about.
    with tarfile.open(phoenix_like_tarball) as tar:
        names = collections.Counter(m.name.rstrip("/") for m in tar.getmembers())
    repeated = {name for name, n in names.items() if n > 1}
    assert {"bin/server", "bin/migrate"} <= repeated, sorted(repeated)


def test_a_mix_tarball_with_overlays_in_bin_installs(
    phoenix_like_tarball: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    result = run(capsys, "--root", root, "install", phoenix_like_tarball, "--no-start")
    assert result.code == 0, result
    release = root / "opt" / "shop" / "releases" / "1.0.0"
    assert (release / "bin" / "server").read_bytes() == SERVER
    assert (release / "bin" / "migrate").read_bytes() == MIGRATE
    assert (release / "bin" / "server").stat().st_mode & 0o777 == 0o755
    assert (release / "bin" / "shop").is_file()


def test_a_differing_copy_in_a_mix_tarball_is_refused(
    phoenix_like_tarball: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same tarball with its last copy of bin/server changed (same size):
    # the one case the duplicate check exists for.
    forged = tmp_path / "shop-1.0.0.tar.gz"
    with tarfile.open(phoenix_like_tarball) as src, tarfile.open(forged, "w:gz") as dst:
        members = src.getmembers()
        last = max(i for i, m in enumerate(members) if m.name == "bin/server")
        for i, member in enumerate(members):
            data = src.extractfile(member) if member.isreg() else None
            if i == last:
                evil = SERVER.replace(b"start", b"evil!")
                dst.addfile(member, io.BytesIO(evil))
            else:
                dst.addfile(member, data)
    root = tmp_path / "root"
    result = run(capsys, "--root", root, "install", forged, "--no-start")
    assert result.code == 2, result
    assert result.err_lines[0] == (
        "error: archive member 'bin/server' appears more than once, with different content"
    )
    assert not root.exists()
