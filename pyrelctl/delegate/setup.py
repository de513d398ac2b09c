"""The helper's units: written, enabled and started by ``pyrelctl grant``.

``pyrelctl-delegate.socket`` and ``pyrelctl-delegate@.service`` are rendered
from ``units/`` like an app's units, with the interpreter pyrelctl runs
under (``python3 -I -m pyrelctl.delegate.serve``): a .deb, a venv and a
pipx install each run their own copy, and no other. When the host's last
grant is revoked, the socket is stopped and disabled: no user can reach a
root helper on a host that grants nothing.
"""

from __future__ import annotations

import sys

from pyrelctl import __version__
from pyrelctl.delegate import wire
from pyrelctl.errors import SystemdError
from pyrelctl.hostfiles import ensure_dir, write_atomic
from pyrelctl.layout import Layout
from pyrelctl.systemd import Systemd
from pyrelctl.units import UnitText

SOCKET = "pyrelctl-delegate.socket"
SERVICE = "pyrelctl-delegate@.service"


def unit_texts() -> dict[str, str]:
    """File name -> text of the helper's two units."""
    common = {"pyrelctl_version": __version__}
    return {
        SOCKET: UnitText(
            "pyrelctl-delegate.socket.j2", {**common, "path": wire.SOCKET_PATH}
        ).render(),
        SERVICE: UnitText(
            "pyrelctl-delegate@.service.j2",
            {**common, "exec_start": [sys.executable, "-I", "-m", "pyrelctl.delegate.serve"]},
        ).render(),
    }


def install(layout: Layout, systemd: Systemd) -> bool:
    """Write the units (if changed) and, on a running host, enable and start the socket."""
    ensure_dir(layout.unit_dir)
    changed = False
    for name, text in unit_texts().items():
        changed |= write_atomic(layout.unit_dir / name, text.encode())
    if layout.offline:
        return changed
    if changed:
        systemd.reload()
    systemd.enable(SOCKET)
    result = systemd.start(SOCKET)
    if not result.ok:
        raise SystemdError(
            f"{SOCKET} did not start: {result.result}", hint=f"see: journalctl -u {SOCKET}"
        )
    return changed


def remove(layout: Layout, systemd: Systemd) -> None:
    """Stop and disable the socket, and remove the units (the last grant is gone)."""
    if not layout.offline:
        systemd.stop(SOCKET)
        systemd.disable(SOCKET)
    for name in (SOCKET, SERVICE):
        (layout.unit_dir / name).unlink(missing_ok=True)
    if not layout.offline:
        systemd.reload()
