"""Defaults that the CLI shows in --help: here, in a module that imports nothing,
so that a read-only command (status) does not load the deploy stack to print them."""

from __future__ import annotations

#: Releases kept after a good install (``--keep``).
DEFAULT_KEEP = 5
#: Largest unpacked release accepted (``--max-size``).
DEFAULT_MAX_BYTES = 8 * 1024**3
#: Seconds to wait for systemd's job and for readiness (``--timeout``).
DEFAULT_TIMEOUT = 60.0
#: Seconds a started release must stay up (``--grace``).
DEFAULT_GRACE = 3.0
#: Seconds a URL's server may take to answer or stay silent (``--fetch-timeout``).
DEFAULT_FETCH_TIMEOUT = 30.0
