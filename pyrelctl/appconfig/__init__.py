"""An app's run-time configuration, kept by the host apart from its immutable releases.

A release is built once; what differs per host reaches it at run time:
secrets (``secrets``: root-only files handed over with ``LoadCredential=``)
and environment variables (``pyrelctl config``: generations of a root-only
environment file that PID 1 reads with ``EnvironmentFile=``). Everything
here lives below ``/etc/pyrelctl/APP/`` and never in a D-Bus property.

Modules here may import the host layout (``pyrelctl.layout``), errors and
names, and the deploy orchestration to apply a change (``pyrelctl.deploy``);
nothing below ``pyrelctl.cli`` imports them back.
"""
