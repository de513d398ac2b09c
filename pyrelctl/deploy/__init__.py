"""Deploys: how a new release replaces the running one, and how it proves it is up.

Follow one ``pyrelctl install`` from ``cli/deploys.py``: the command builds
a :class:`~pyrelctl.deploy.deployer.Deployer` over the host's facilities
and calls ``install``, which takes the release through these steps, each in
a module of its own:

=====================  ======================================================
step                   module (what it does)
=====================  ======================================================
admit                  ``admission``: the host agrees to run the release as
                       the app (names, sockets, sandbox allowances, signed
                       downgrades); refused before the first write
unpack and prepare     ``unpack``: into an ``.incomplete-`` directory, the
                       python venv built, renamed into place when on disk;
                       ``recovery`` removes what an interrupted run left
render                 ``pyrelctl.appsetup`` (``host.setup``): the app's
                       settings directory, its units, their enablement
switch by strategy     ``switch``: pre_switch hook, units, ``current``; the
                       strategy (``strategy``) restarts the service or starts
                       the release beside the running one first (``overlap``)
verify                 ``verify``: restart through systemd and wait until the
                       release is up (``readiness``, ``health``, ``owner``);
                       hooks and command checks run as the service (``hooks``)
publish or restore     ``switch`` marks a good release and records it, its
                       watch window starts (``watch``); ``publish``: metrics
                       and notifications; ``restore``: mark the release
                       failed, bring the previous one back, raise exit 3 or 4
=====================  ======================================================

Every step receives the host's facilities from below as one small value,
:class:`~pyrelctl.deploy.host.Host` (``host``: the layout, the systemd
client, the operator's output ``say``, whether the host is online, the app
setup), plus the few values it needs: the app's paths, the release, the
readiness it must reach. What a deploy runs with is computed once by
``settings`` (the installed release's description, the app's remembered
settings updated by the command, the readiness) from ``options`` (what the
command asked, what it answers); ``retention`` says which releases stay and
which one a rollback returns to. ``preview`` (``install --dry-run``) runs
the admit step and renders the units, changing nothing.

The orchestrators sit on top and only call steps: ``deployer`` (install,
rollback, prune, start/stop/restart, uninstall: the CLI's entry),
``watchrun`` (the watch unit's work: the automatic rollback) and
``pyrelctl.appconfig.apply`` (a configuration change). A rollback, the
watch's rollback and a configuration change go through the same ``switch``,
``verify``, ``restore`` and ``publish`` steps as an install. No step imports
an orchestrator, not even for typing. Within the package imports point one
way: from the orchestrators to the steps; from a step to the steps it is
made of (``switch`` uses ``verify``, ``restore``, ``overlap``, ``watch``;
``restore`` uses ``verify``; ``verify`` and ``publish`` use ``hooks``); and
from the steps to ``settings``, ``host``, ``options`` and the values
(``readiness``, ``health``, ``owner``, ``strategy``, ``retention``).

The package may import pyrelctl's lower layers (release, layout, units,
appsetup, systemd, appconfig's generations); nothing below it imports it.
The package itself imports nothing, so that reading one module (``status``
reads ``watch``) costs only that module.
"""
