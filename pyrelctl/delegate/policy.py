"""What a granted user may ask for: the commands, and the options of each.

An allowlist: every option a command has that is not named here must be
left out (click's ``ParameterSource.DEFAULT``), so an option added to
``install`` later is refused for granted users until someone decides it is
not a host decision. The host decisions the issue names (``--allow``,
``--listen``, ``--env``/``--env-file``, ``--strategy``, ``--app``,
``--allow-downgrade``, the health checks, the watch window, ``--no-start``,
``rollback --config``) all fall under it, and ``config``, ``secret``,
``uninstall``, ``prune``, ``start``/``stop``/``restart`` and the consoles
are not delegable at all.

Pure logic: the root side (serve.py) hands in what was given on the command
line; nothing here reads the host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyrelctl.defaults import DEFAULT_KEEP, DEFAULT_MAX_BYTES
from pyrelctl.errors import BadInput


def _keep(value: Any) -> str | None:
    if isinstance(value, int) and value >= DEFAULT_KEEP:
        return None
    return f"at least {DEFAULT_KEEP} releases are kept for a granted user (the host's default)"


def _max_size(value: Any) -> str | None:
    if isinstance(value, int) and 0 < value <= DEFAULT_MAX_BYTES:
        return None
    return f"a granted user may lower the size limit, not raise it above {DEFAULT_MAX_BYTES}"


Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Rule:
    """One delegable command: whether it changes the host, and its allowed options."""

    changes: bool  # install, rollback: never answered by the caller's own rights
    allowed: Mapping[str, Check | None]  # parameter name -> extra check of its value


def _ok(_: Any) -> str | None:
    return None


RULES: Mapping[str, Rule] = {
    "install": Rule(
        changes=True,
        allowed={
            "artifact": None,
            "signature": None,
            "dry_run": None,  # the checks and the rendered units; changes nothing
            "timeout": None,
            "no_wait": None,
            "keep": _keep,
            "max_size": _max_size,
        },
    ),
    "rollback": Rule(
        changes=True,
        allowed={"app": None, "to_version": None, "timeout": None, "no_wait": None},
    ),
    "status": Rule(changes=False, allowed={"app": None}),
    "releases": Rule(changes=False, allowed={"app": None}),
    "history": Rule(changes=False, allowed={"app": None}),
    "logs": Rule(
        changes=False,
        allowed={
            "app": None,
            "follow": None,
            "lines": None,
            "since": None,
            "until": None,
            "priority": None,
            "process": None,  # one process or timer of the same app (issue 32)
        },
    ),
}

#: The commands an unprivileged ``pyrelctl`` forwards to the root helper.
DELEGABLE = frozenset(RULES)
#: Commands the issue names as root's alone: on a host with grants, a user
#: without root is told so (exit 2) instead of meeting a permission error.
ROOT_ONLY = frozenset(
    {"config", "secret", "uninstall", "prune", "grant", "revoke", "grants", "scale"}
)


def check(command: str, given: Mapping[str, Any], flags: Mapping[str, str]) -> None:
    """Refuse (:class:`BadInput`, exit 2) what a granted user may not ask for.

    ``given`` holds the parameters given on the command line (not left at
    their defaults), by name; ``flags`` names each parameter as the user
    wrote it (``--allow``), for the message.
    """
    rule = RULES.get(command)
    if rule is None:
        raise BadInput(
            f"`pyrelctl {command}` needs root; a grant allows only " + ", ".join(sorted(RULES)),
            hint="ask the host's administrator",
        )
    for name, value in sorted(given.items()):
        if name not in rule.allowed:
            flag = flags.get(name, name)
            raise BadInput(
                f"{flag} is the host's decision: a granted user may not give it",
                hint=f"ask the host's administrator (root runs pyrelctl {command} ... {flag})",
            )
        why = (rule.allowed[name] or _ok)(value)
        if why is not None:
            raise BadInput(f"{flags.get(name, name)} {value}: {why}")
