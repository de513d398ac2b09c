"""The web application: an in-memory inventory behind a JSON API.

The state lives in this process only (STATS, INVENTORY): `pyrelctl rpc
pyshop 'STATS'` reads it from the running service, which nothing outside
the process could.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, jsonify, request

from pyshop import __version__

log = logging.getLogger("pyshop")

#: Counters of this process; exposed to rpc by the server.
STATS: dict[str, Any] = {"requests": 0, "started_at": time.time(), "version": __version__}
#: item name -> quantity.
INVENTORY: dict[str, int] = {}


def create_app() -> Flask:
    app = Flask("pyshop")

    @app.before_request
    def count() -> None:
        STATS["requests"] += 1

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok", version=__version__)

    @app.get("/items")
    def items() -> Any:
        return jsonify(INVENTORY)

    @app.post("/items/<name>")
    def add(name: str) -> Any:
        quantity = int(request.args.get("quantity", "1"))
        INVENTORY[name] = INVENTORY.get(name, 0) + quantity
        log.info("added %d %s (now %d)", quantity, name, INVENTORY[name])
        return jsonify({name: INVENTORY[name]})

    @app.delete("/items/<name>")
    def remove(name: str) -> Any:
        if name not in INVENTORY:
            log.error("cannot remove %s: no such item", name)
            return jsonify(error=f"no such item: {name}"), 404
        del INVENTORY[name]
        return "", 204

    return app
