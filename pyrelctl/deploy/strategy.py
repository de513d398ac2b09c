"""How a new release replaces the running one: restart it, or overlap them.

* ``restart``: ``current`` moves and the service restarts. The old release
  stops before the new one starts; with ``[socket]`` no connection is
  refused meanwhile, but clients wait for the new release to come up.
* ``overlap``: the new release first starts beside the running one, on the
  same listening sockets, and must prove itself there; only then does it
  take over ``APP.service`` (deploy/overlap.py). A failed release is
  stopped before the old one ever stopped.

The host's choice (``install --strategy``, remembered) wins over the
release's (``[service] strategy``); without either, apps with a socket
overlap and others restart. :func:`overlap_blocker` says why a deploy that
should overlap cannot, so that it restarts instead, with that reason.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pyrelctl.release import HealthKind, Release, health_from_json
from pyrelctl.socketunit import effective_socket

#: Key of the host's choice in the app's settings.json.
SETTING = "strategy"


class Strategy(StrEnum):
    RESTART = "restart"
    OVERLAP = "overlap"


def chosen(settings: dict[str, Any], release: Release) -> Strategy:
    """The strategy asked for: the host's, else the release's, else the default."""
    asked = settings.get(SETTING) or release.strategy
    if asked:
        return Strategy(asked)
    return Strategy.OVERLAP if effective_socket(settings, release) is not None else Strategy.RESTART


def overlap_blocker(settings: dict[str, Any], release: Release, health_url: str) -> str | None:
    """Why ``release`` cannot start beside the running one, or None.

    Two releases share a port only through a socket systemd holds: a
    release that binds its port itself would find it taken. A health check
    must be sent to the new release alone, which owner.py does for
    ``http://`` and ``tcp`` checks (and commands run in its own context).
    """
    if effective_socket(settings, release) is None:
        return "it binds its port itself (no [socket]): two releases cannot share it"
    if health_url and not health_url.startswith("http://"):
        return f"its health check {health_url} cannot be sent to one release alone"
    return None


def health_url(settings: dict[str, Any], release: Release) -> str:
    """The http health check's URL (the host's check, else the release's), or ""."""
    data = settings.get("health")
    check = health_from_json(data) if data else release.health
    return check.http if check is not None and check.kind is HealthKind.HTTP else ""
