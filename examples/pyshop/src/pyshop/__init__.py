"""pyshop: a small inventory web service, the example of a pyrelctl Python release."""

from __future__ import annotations

import importlib.metadata

try:
    __version__ = importlib.metadata.version("pyshop")
except importlib.metadata.PackageNotFoundError:  # run from the source tree, not installed
    __version__ = "0+source"
