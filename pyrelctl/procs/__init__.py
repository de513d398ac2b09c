"""A release's other processes and its scheduled jobs (issue 32).

Beside its ``start`` command (the web process, ``APP.service``) a release may
declare long-running ``[processes.NAME]`` (``APP-NAME@1..N.service``) and
scheduled ``[timers.NAME]`` (``APP-NAME.timer`` running ``APP-NAME.service``).
This package owns what they are (``manifest``: the tables of release.toml and
``[tool.pyrelctl]``, checked), how a schedule is checked (``calendar``: the
host's own ``systemd-analyze``) and how they become unit files
(``units``: names, templates, the links that start them with the app, and
the check that no other unit holds their names). It may import
``pyrelctl.release``, ``pyrelctl.units``, ``durations``, ``names``,
``errors``, ``run`` and ``layout``; ``release`` imports ``manifest`` only
inside functions (it is imported by it), nothing else below the CLI imports
this package. The package itself imports nothing.
"""
