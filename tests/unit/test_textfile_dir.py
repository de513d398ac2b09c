"""Root writes the metrics textfile only into a directory nobody else chose (issue 26, item 3).

A release named ``prometheus`` owned /var/lib/prometheus (StateDirectory=),
made ``node-exporter`` a link to /etc/victim, and root wrote pyrelctl.prom
there. pyrelctl/textdir.py opens the directory component by component without
following links; hostfiles.write_atomic_at writes relative to that descriptor.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from pyrelctl import metrics
from pyrelctl.errors import BadInput, HostError
from pyrelctl.hostfiles import write_atomic, write_atomic_at
from pyrelctl.layout import Layout
from pyrelctl.textdir import open_textfile_dir

NOBODY = 65534
TEXTDIR = ("var", "lib", "prometheus", "node-exporter")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "/".join(TEXTDIR)).mkdir(parents=True)
    (root / "etc/victim").mkdir(parents=True)
    return root


def textfile(root: Path) -> Path:
    return root.joinpath(*TEXTDIR, "pyrelctl.prom")


def write(root: Path) -> Path | None:
    return metrics.write_textfile(Layout(root), None)


def test_the_textfile_is_written_into_a_root_owned_directory(root: Path) -> None:
    assert write(root) == textfile(root)
    assert textfile(root).read_text().startswith("# HELP pyrelctl_release_info")
    assert oct(textfile(root).stat().st_mode & 0o7777) == oct(0o644)
    assert sorted(p.name for p in textfile(root).parent.iterdir()) == ["pyrelctl.prom"]


def test_no_directory_no_textfile(tmp_path: Path) -> None:
    (tmp_path / "var/lib").mkdir(parents=True)
    assert write(tmp_path) is None
    assert not (tmp_path / "var/lib/prometheus").exists()


@pytest.mark.parametrize("depth", range(1, len(TEXTDIR) + 1))
def test_a_link_at_any_component_is_refused_not_followed(root: Path, depth: int) -> None:
    # Replace the component at `depth` by a link to a copy of the rest of the
    # path below /etc/victim: following it would write there.
    component = root.joinpath(*TEXTDIR[:depth])
    rest = TEXTDIR[depth:]
    target = root / "etc/victim"
    (target.joinpath(*rest)).mkdir(parents=True, exist_ok=True)
    os.rename(component, root / f"moved-{depth}")
    component.symlink_to(target)
    with pytest.raises(HostError, match="is a symlink or not a directory"):
        write(root)
    assert [p for p in target.rglob("*") if p.is_file()] == []


def test_a_file_on_the_way_is_refused(root: Path) -> None:
    node = root.joinpath(*TEXTDIR)
    node.rmdir()
    node.write_text("")
    with pytest.raises(HostError, match="not a directory"):
        write(root)


@pytest.mark.parametrize("depth", range(1, len(TEXTDIR) + 1))
def test_a_directory_owned_by_another_user_is_refused(root: Path, depth: int) -> None:
    os.chown(root.joinpath(*TEXTDIR[:depth]), NOBODY, NOBODY)
    with pytest.raises(HostError, match=f"owned by uid {NOBODY}"):
        write(root)
    assert not textfile(root).exists()


def test_the_node_exporters_own_user_may_own_the_directories(root: Path) -> None:
    # Debian's prometheus-node-exporter postinst: adduser --system prometheus,
    # chown prometheus:prometheus /var/lib/prometheus.
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "prometheus:x:107:113:Prometheus daemon:/var/lib/prometheus:/usr/sbin/nologin\n"
    )
    os.chown(root / "var/lib/prometheus", 107, 113)
    assert write(root) == textfile(root)
    # Not a dynamic user of that name (nss-systemd), nor a login user's uid.
    (root / "etc/passwd").write_text("prometheus:x:61200:61200::/:/usr/sbin/nologin\n")
    os.chown(root / "var/lib/prometheus", 61200, 61200)
    with pytest.raises(HostError, match="owned by uid 61200"):
        write(root)


def test_a_directory_others_may_write_is_refused(root: Path) -> None:
    root.joinpath(*TEXTDIR[:3]).chmod(0o775)
    with pytest.raises(HostError, match="writable by others"):
        write(root)


@pytest.mark.parametrize("parent", ["var/lib/private", "var/cache/private", "var/log/private"])
def test_dynamic_users_directories_are_refused(root: Path, parent: str) -> None:
    (root / parent / "x").mkdir(parents=True)
    with pytest.raises(HostError, match="DynamicUser="):
        open_textfile_dir(root, root / parent / "x")
    (root / "etc/pyrelctl").mkdir()
    (root / "etc/pyrelctl/metrics.toml").write_text(f'textfile = "/{parent}/x/p.prom"\n')
    with pytest.raises(HostError, match="DynamicUser="):
        write(root)


def test_a_link_at_the_file_itself_is_replaced_not_written_through(root: Path) -> None:
    victim = root / "etc/victim/file"
    victim.write_text("precious\n")
    textfile(root).symlink_to(victim)
    write(root)
    assert victim.read_text() == "precious\n"
    assert not textfile(root).is_symlink()


@pytest.mark.parametrize("at", [False, True], ids=["write_atomic", "write_atomic_at"])
def test_a_huge_planted_file_is_never_read(root: Path, at: bool) -> None:
    path = textfile(root)

    def put(data: bytes) -> bool:
        if not at:
            return write_atomic(path, data, 0o644)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return write_atomic_at(dir_fd, path.name, data, 0o644)
        finally:
            os.close(dir_fd)

    with path.open("wb") as f:
        f.truncate(256 << 20)  # sparse: costs no disk, but reading it whole costs 256 MiB
    path.chmod(0o644)
    tracemalloc.start()
    try:
        assert put(b"x 1\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"read {peak} bytes of the planted file"
    assert path.read_bytes() == b"x 1\n"
    # Same content and size: left alone (its mtime too); same size, other bytes: rewritten.
    before = path.stat().st_mtime_ns
    assert not put(b"x 1\n")
    assert path.stat().st_mtime_ns == before
    assert put(b"x 2\n")
    assert path.read_bytes() == b"x 2\n"
    # Another hard link to the file: replaced, never compared (nor written through).
    os.link(path, root / "etc/victim/linked")
    assert put(b"x 2\n")
    assert (root / "etc/victim/linked").read_bytes() == b"x 2\n"
    assert path.stat().st_nlink == 1


def test_a_configured_path_is_checked_too(root: Path) -> None:
    (root / "etc/pyrelctl").mkdir()
    settings = root / "etc/pyrelctl/metrics.toml"
    (root / "srv").symlink_to(root / "etc/victim")
    settings.write_text('textfile = "/srv/p.prom"\n')
    with pytest.raises(HostError, match="symlink"):
        write(root)
    assert list((root / "etc/victim").iterdir()) == []


@pytest.mark.parametrize(
    "value", ['"/srv/../etc/p.prom"', '"/srv/a\\nb.prom"', '"/"', '"rel.prom"']
)
def test_a_configured_path_must_be_plain(root: Path, value: str) -> None:
    (root / "etc/pyrelctl").mkdir()
    (root / "etc/pyrelctl/metrics.toml").write_text(f"textfile = {value}\n")
    with pytest.raises(BadInput, match="textfile must be an absolute path"):
        write(root)
