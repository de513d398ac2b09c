"""``install --dry-run``: what an install of an artifact would do, changing nothing.

It runs every check of an install that can refuse the artifact (the
signature, archive members, manifest, SHA256SUMS, the app name, what the
host allows: the install's steps before the first write, admission.py), then renders the
units as the install would write them, from the app's remembered settings
and this command's options, and compares them with the files on disk.

It runs none of the release's code: a python release's venv is not built
(pyrelease.prepare runs the release's pip and the ``.pth`` files of its
wheels), nothing is unpacked, no hook runs, no lock is taken and nothing is
written, so it is safe for a check that must not change the host (the
Ansible module's check mode). What it cannot tell: whether the venv builds
and the release comes up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrelctl import checksums, signatures
from pyrelctl.archive import Artifact
from pyrelctl.deploy import admission
from pyrelctl.deploy.settings import settings_for
from pyrelctl.manifest import detect
from pyrelctl.names import app_name_from_release
from pyrelctl.openartifact import open_artifact
from pyrelctl.release import Kind
from pyrelctl.socketunit import effective_socket
from pyrelctl.units import socket_unit

if TYPE_CHECKING:
    from pyrelctl.deploy.host import Host
    from pyrelctl.deploy.options import InstallOptions


@dataclass(frozen=True)
class Preview:
    """What ``install`` would do, as ``install --dry-run --json`` prints it."""

    app: str
    version: str
    kind: str
    previous: str | None
    #: unit file path (on the host, without --root) -> the text the install would write
    units: dict[str, str] = field(default_factory=dict)
    #: the unit files whose text would change (or appear, or go)
    unit_changes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.previous != self.version or bool(self.unit_changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "action": "install",
            "dry_run": True,
            "version": self.version,
            "kind": self.kind,
            "previous": self.previous,
            "changed": self.changed,
            "units": self.units,
            "unit_changes": list(self.unit_changes),
        }


def _check_interpreter(artifact: Artifact) -> None:
    """A python release needs the host's pythonX.Y (the install's first host check)."""
    import tomllib

    from pyrelctl import pyrelease, pyspec

    doc = tomllib.loads(artifact.read("release.toml").decode())
    pyrelease.find_interpreter(pyspec.parse_spec(doc.get("python")))


def preview(host: Host, artifact_path: Path, opts: InstallOptions) -> Preview:
    """Check ``artifact_path`` as an install does (deployer.py) and render its units."""
    layout = host.layout
    verification = signatures.Verification(layout, opts.app, artifact_path, opts.signature)
    with open_artifact(
        artifact_path,
        max_bytes=opts.max_bytes,
        verify=verification if verification.needed else None,
    ) as artifact:
        release = detect(artifact)
        checksums.verify_artifact(artifact, required=release.kind is Kind.PYTHON)
        if release.kind is Kind.PYTHON:
            _check_interpreter(artifact)
        own_name = app_name_from_release(release.name)
        app = layout.app(opts.app if opts.app is not None else own_name)
        signer = verification.confirm(app, own_name)
        settings = settings_for(app, opts)
        admission.check_host(host, app, release, settings)
        previous = app.current_version()
        if signer is not None and not opts.allow_downgrade:
            admission.refuse_downgrade(app, release, previous)

    def on_host(path: Path) -> str:
        return str(Path("/", path.relative_to(layout.root)))

    rendered = {app.service_file: host.setup.render(app, release, settings)}
    socket = effective_socket(settings, release)
    if socket is not None:
        rendered[app.socket_file] = socket_unit(app.name, socket).render()
    changes = [on_host(p) for p, text in rendered.items() if _text(p) != text]
    if socket is None and app.socket_file.exists():
        changes.append(on_host(app.socket_file))  # the install removes it
    return Preview(
        app=app.name,
        version=release.version,
        kind=str(release.kind),
        previous=previous,
        units={on_host(p): text for p, text in rendered.items()},
        unit_changes=tuple(changes),
    )


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
