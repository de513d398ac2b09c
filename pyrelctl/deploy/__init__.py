"""Deploys: how a new release replaces the running one, and how it proves it is up.

This package owns the deploy orchestration (``deployer``: install, switch,
verify, roll back, prune), the strategies by which a release replaces the
running one (restart, overlap), what "up" means (``readiness``, ``health``),
which release a rollback returns to (``retention``) and the watch after a
deploy (``watch``). It may import pyrelctl's lower layers (release, layout,
units, systemd, hooks, appsetup, admission); nothing below it imports it,
except under ``TYPE_CHECKING``. The package itself imports nothing, so that
reading one module (``status`` reads ``watch``) costs only that module.
"""
