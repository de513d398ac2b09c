"""pyrelctl: deploy self-contained releases as systemd services.

The code is in layers. A module imports from its own layer and the layers
below it, never from one above, and no chain of imports leads back to where
it started; ``tests/test_layers.py`` holds the table that puts every module
(and bench/'s) in a layer, and fails on an import that points up, on a
cycle, and on a new module nobody placed. The layers, lowest first:

``core``
    The words every layer uses: errors with their exit codes (``errors``),
    app names and versions (``names``), defaults and durations, the one
    subprocess helper (``run``), terminal-safe text (``terminal``).
``release``
    What a release is and how it is read without trusting it: the artifact
    checks and the ``Artifact`` base (``archive``), its two kinds
    (``tarartifact`` with ``tarheaders``, ``dirartifact``) and the opener
    that chooses one (``openartifact``); checksums; the values of a release
    (``release``), release.toml and detection (``manifest``, the
    ``[python]`` table in ``pyspec``), its sockets (``sockets``), a mix
    release's logging flags (``mixlogger``), its processes and timers as
    declared (``procs.values``, ``procs.manifest``, ``procs.calendar``).
``host``
    Where things live on the host and how they change: the paths and the
    app lock (``layout``), atomic writes and state files that refuse a
    planted link (``hostfiles``), what an app name claims (``hostclaims``),
    the host's allowances, keys (``signatures``) and hooks (``notify``),
    an artifact fetched from a URL for an install (``download``),
    the mix cookie, the configuration generations (``appconfig.envfile``,
    ``appconfig.generations``), who may deploy an app without root and
    how the request travels (``delegate``: ``grants``, ``policy``,
    ``wire``, ``client``).
``systemd``
    Units rendered from a release (``units``, templates in ``units/``),
    written only when changed (``unitfiles``), the socket unit
    (``socketunit``), the systemd client, the one module that imports
    pystemd (``systemd``), transient units for commands and sandboxed
    steps (``transient``, ``sandboxrun``), the journal, the metrics, the
    units of processes and timers (``procs.units``, ``procs.host``), the
    units of the delegation socket (``delegate.setup``), and the steering
    of new connections within a socket's ``SO_REUSEPORT`` group (``steering``).
``build``
    Python releases: ``pyrelctl build`` (``build``, ``buildconfig``,
    ``buildlock``, ``buildsteps``, ``wheels``) and preparing one at install,
    its venv built offline in a sandbox (``pyrelease``).
``deploy``
    The steps of a deploy and what orchestrates them: the ``deploy``
    package (its docstring lists the steps and the module of each, among
    them the host's consent, ``deploy.admission``, and the release's hooks,
    ``deploy.hooks``), the app's settings directory and units
    (``appsetup``), ``uninstall``, and a
    configuration change applied as a deploy (``appconfig.apply``).
``operations``
    What the other commands do, on top of deploys: ``operate`` (start,
    stop, rpc, eval, remote...), ``doctor``, secrets (``appconfig.secrets``).
``cli``
    The click commands: parse, call one layer below, print (``cli``,
    ``cli.grants``, ``completion``, ``__main__``), and ``delegate.serve``,
    the root side of a granted user's command, which runs the same
    commands. No module below imports click.
``bench``
    The benchmarks (bench/), which drive the installed CLI in a container.

One install, from the command to systemd: ``pyrelctl install`` is
``cli/deploys.py``'s ``install``, which turns its options into
``InstallOptions`` (``deploy.options``) and calls the deployer that ``cli/common.py``'s ``Ctx``
builds over the host's ``Layout`` and systemd client (offline with
``--root``). The deployer opens the artifact once (``openartifact``),
detects the release (``manifest``), has the host admit it, unpacks it into
an ``.incomplete-`` directory and prepares it (``pyrelease`` for a python
release), renders and writes the units (``appsetup``, ``units``,
``unitfiles``), swaps ``current`` (``layout``, ``hostfiles``), restarts or
overlaps by strategy through ``systemd`` and waits for readiness
(``deploy.readiness``), then records the result or restores the previous
release; pyrelctl/deploy/__init__.py tells these steps in detail.
"""

__version__ = "0.1.0"
