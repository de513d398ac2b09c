"""An app's run-time configuration, kept by the host apart from its immutable releases.

A release is built once; what differs per host reaches it at run time:
secrets (``secrets``: root-only files handed over with ``LoadCredential=``)
and environment variables (``pyrelctl config``: generations of a root-only
environment file that PID 1 reads with ``EnvironmentFile=``). Everything
here lives below ``/etc/pyrelctl/APP/`` and never in a D-Bus property.

``envfile`` and ``generations`` keep the configuration: they import only
the host layout (``pyrelctl.layout``), errors and names, and the deploy
steps read them (a deploy runs with the current generation). ``apply`` (a
configuration change, verified as a deploy) and ``secrets`` apply a change
through the deploy steps (``pyrelctl.deploy``: ``host``, ``settings``,
``verify``, ``publish``), never through its orchestrator; nothing below
``pyrelctl.cli`` imports those two.
"""
