"""Python log levels as journal priorities.

journald reads a ``<N>`` prefix on each line a service writes to stdout or
stderr as that line's syslog priority (``SyslogLevelPrefix=``, on by
default; systemd.exec(5)), so ``journalctl -u APP -p err`` shows errors
only. Every line of a multi-line record (a traceback) gets the prefix:
journald splits the stream on newlines and would file the continuation
lines at the default priority, info.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

#: syslog(3) priorities.
EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)


def priority(levelno: int) -> int:
    """The syslog priority of a Python log level (custom levels fall in between)."""
    if levelno >= logging.CRITICAL:
        return CRIT
    if levelno >= logging.ERROR:
        return ERR
    if levelno >= logging.WARNING:
        return WARNING
    if levelno > logging.INFO:
        return NOTICE
    if levelno >= logging.INFO:
        return INFO
    return DEBUG


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr) is connected to the journal.

    systemd sets ``JOURNAL_STREAM=DEV:INODE`` for the stream it connected
    (systemd.exec(5)); a redirected or inherited stderr does not match it.
    """
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class JournalFormatter(logging.Formatter):
    """Prefix every line of a record with its ``<N>`` syslog priority.

    With ``prefix=None`` the prefix is written only when stderr is the
    journal, so the same code logs readable lines in a terminal.
    """

    def __init__(
        self,
        fmt: str | None = "%(name)s: %(message)s",
        datefmt: str | None = None,
        *,
        prefix: bool | None = None,
    ) -> None:
        super().__init__(fmt, datefmt)
        self.prefix = stderr_is_journal() if prefix is None else prefix

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.prefix:
            return text
        tag = f"<{priority(record.levelno)}>"
        return "\n".join(tag + line for line in text.split("\n"))


def configure_logging(level: int = logging.INFO, *, fmt: str = "%(name)s: %(message)s") -> None:
    """Route the root logger to stderr through :class:`JournalFormatter`.

    No time stamp in the format: the journal records one for every line.
    Handlers other code installed on the root logger are replaced.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def dict_config(level: str = "INFO", loggers: tuple[str, ...] = ()) -> dict[str, object]:
    """A :func:`logging.config.dictConfig` dict doing the same for the root and
    ``loggers`` (e.g. gunicorn's ``gunicorn.error``, which do not propagate)."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "journal",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"journal": {"()": JournalFormatter}},
        "handlers": {"journal": handler},
        "root": {"level": level, "handlers": ["journal"]},
        "loggers": {
            name: {"level": level, "handlers": ["journal"], "propagate": False} for name in loggers
        },
    }
