"""A mix release's log levels as journal priorities.

Elixir's Logger writes plain lines to stdout (Elixir 1.14 through its
console backend, 1.15 and later through the ``logger_std_h`` handler it
installs as ``default``), and journald files a line with no ``<N>`` prefix
at the unit's default priority, info: ``journalctl -u APP -p err`` then
shows no error at all. journald reads a ``<N>`` at the start of each line
as that line's syslog priority (``SyslogLevelPrefix=``, on by default;
systemd.exec(5)), and OTP's ``logger`` levels are syslog's, by name.

pyrelctl cannot change a release, but the VM takes its ``logger``
configuration from its command line, which pyrelctl extends through
``ERL_ZFLAGS`` (erlexec appends its words, quotes honoured, to the VM's
arguments; erl(1)). :func:`vm_flags` gives:

* ``-kernel logger [...]``: one ``logger_std_h`` handler on stdout per
  level, each with ``logger_filters:level/2`` letting only its own level
  through and ``logger_formatter``'s template starting with that level's
  ``<N>``. Written as terms the kernel parses from the command line
  (``fun M:F/A`` included); no code is added to the release. The kernel
  has no way to compute a prefix from the level in one handler, hence
  eight. ``single_line``: a message's newlines become ``, `` so the whole
  event is one journal entry at its priority (journald splits a stream on
  newlines and would file the continuation lines at info), and
  ``max_size`` truncates at Elixir's own default (``:truncate``, 8192).
  Like Elixir's handler, they drop events of processes whose group leader
  is on another node (``remote_gl``: OTP logs those on that node, e.g. the
  code of ``bin/APP rpc``), and SASL's ``[otp, sasl]`` reports (progress,
  supervisor and crash reports), which Elixir logs only with
  ``handle_sasl_reports``.
* ``-kernel error_logger silent``: no kernel ``default`` handler and no
  ``simple`` one (lib/kernel/src/logger.erl, ``init_kernel_handlers``;
  with ``{handler, default, undefined}`` alone the bootstrap ``simple``
  handler stays and prints crash reports unprefixed).
* Elixir's own stdout output off, as the release's Elixir does it:
  Logger 1.15 and later: ``-logger default_handler false``
  (lib/logger/lib/logger/app.ex; not ``backends``, which 1.19 warns
  about); Logger 1.10 to 1.14: ``-logger console [{format, <<>>}]``, so the
  console backend writes nothing and other backends the app configured
  (files, error trackers) keep working.
* ``-systemd auto_formatter false``: the ``systemd`` hex package
  (erlang-systemd 0.6) would otherwise wrap every ``logger_std_h`` handler
  on the journal in its ``systemd_kmsg_formatter`` when it starts,
  doubling the prefix (src/systemd_app.erl). Harmless without it.

What it costs: lines are formatted by OTP's ``logger_formatter``, not by
Elixir's (``[error] message``, no time stamp, which the journal records
anyway). On Elixir 1.15 and later Logger's translator is a primary filter
(``Logger.Utils.translator/2``) and still turns OTP's reports into Elixir's
text; on 1.14 it belongs to Elixir's handler, and reports such as a
crashing GenServer's are printed in Erlang's terms. A release that logs to
the journal itself (the systemd package's ``systemd_journal_h``) or wants
its own format says ``[service] logger = "release"`` in its release.toml;
an operator can set ``ERL_ZFLAGS`` in ``/etc/pyrelctl/APP/env``
(``EnvironmentFile=`` overrides ``Environment=``).

Only the service and the overlap unit get these flags, not ``rpc``,
``eval``, ``remote`` or hooks: their output is read by a person or by
pyrelctl, where a ``<6>`` would be noise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

#: The variable pyrelctl's flags ride in. erlexec appends its words to the
#: VM's command line, after the release's vm.args and ``ERL_FLAGS``; where
#: two flags set one application parameter the first wins (OTP 25: ``-kernel
#: foo 1 -kernel foo 2`` gives 1), so a release's vm.args and an operator's
#: ``ERL_FLAGS`` win over these.
VARIABLE = "ERL_ZFLAGS"

#: OTP logger's levels in syslog's order: the index is the priority
#: (logger(3erl), "Log Level"; syslog(3)).
LEVELS = ("emergency", "alert", "critical", "error", "warning", "notice", "info", "debug")

#: Elixir's default ``:truncate`` (bytes), kept as the formatter's ``max_size``.
MAX_SIZE = 8192

#: The first Logger that installs a ``:logger`` handler of its own
#: (``:default``) instead of writing through its console backend.
LOGGER_HANDLER_SINCE = (1, 15)
#: The first Logger built on OTP's ``logger`` (older ones cannot be told).
LOGGER_ON_OTP_SINCE = (1, 10)

_LOGGER_DIR = re.compile(r"lib/logger-(\d+)\.(\d+)\.[^/]*(?:/|$)")


class LoggerMode(StrEnum):
    """Who sets up a mix release's logging (``[service] logger``)."""

    PYRELCTL = "pyrelctl"  # journal priorities through the flags below
    RELEASE = "release"  # as the release was built; pyrelctl adds nothing


def logger_version(paths: Iterable[str]) -> str:
    """``MAJOR.MINOR`` of the Elixir Logger among a release's member ``paths``
    (``lib/logger-1.14.0/...``), or "" when there is none or several."""
    found = {f"{m[1]}.{m[2]}" for m in map(_LOGGER_DIR.match, paths) if m}
    return found.pop() if len(found) == 1 else ""


def _version(text: str) -> tuple[int, int] | None:
    major, dot, minor = text.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        return None
    return int(major), int(minor)


def _handler(priority: int, level: str) -> str:
    """One ``logger_std_h`` handler for ``level`` alone, its lines prefixed
    ``<priority>``. The template is Elixir's ``[$level] $message`` without
    metadata: ``logger_formatter`` prints a binary value (Phoenix's
    ``request_id``) as ``<<"...">>``."""
    return (
        f"{{handler,pyrelctl_{level},logger_std_h,#{{"
        "filter_default=>log,filters=>["
        "{remote_gl,{fun logger_filters:remote_gl/2,stop}},"
        "{sasl,{fun logger_filters:domain/2,{stop,sub,[otp,sasl]}}},"
        f"{{level,{{fun logger_filters:level/2,{{stop,neq,{level}}}}}}}],"
        f'formatter=>{{logger_formatter,#{{template=>["<{priority}>[{level}] ",msg,"\\n"],'
        f"single_line=>true,max_size=>{MAX_SIZE}}}}}}}}}"
    )


def kernel_logger() -> str:
    """The value of ``-kernel logger``: one handler per level."""
    return "[" + ",".join(_handler(priority, level) for priority, level in enumerate(LEVELS)) + "]"


def vm_flags(logger: str) -> str:
    """The VM flags for a release whose Elixir Logger is ``logger``
    (``MAJOR.MINOR``, see :func:`logger_version`), as erlexec splits them;
    "" when that Logger cannot be told (nothing is changed then)."""
    version = _version(logger)
    if version is None or version < LOGGER_ON_OTP_SINCE:
        return ""
    if version >= LOGGER_HANDLER_SINCE:
        elixir = "-logger default_handler false"
    else:
        elixir = "-logger console '[{format,<<>>}]'"
    return (
        f"-kernel error_logger silent -kernel logger '{kernel_logger()}' "
        f"{elixir} -systemd auto_formatter false"
    )


def environment(mode: LoggerMode, logger: str, own: str | None = None) -> dict[str, str]:
    """What the service's ``Environment=`` gets for a mix release: ``{}``
    unless pyrelctl sets up its logging. ``own`` is the release's own
    ``ERL_ZFLAGS`` (release.toml ``[environment]``), put first so that its
    words win where both set the same parameter (see :data:`VARIABLE`)."""
    if mode is not LoggerMode.PYRELCTL:
        return {}
    flags = vm_flags(logger)
    if not flags:
        return {}
    return {VARIABLE: f"{own} {flags}" if own else flags}
