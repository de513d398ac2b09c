#!/usr/bin/python
# Copyright: pyrelctl developers
# MIT License (see https://opensource.org/licenses/MIT)

from __future__ import annotations

DOCUMENTATION = r"""
module: pyrelctl_release
short_description: Install a release with pyrelctl and wait until it is up, or see it rolled back
description:
  - Runs C(pyrelctl install --json) on the managed host. pyrelctl unpacks the release into
    C(/opt/APP/releases/VERSION), renders C(APP.service), switches C(/opt/APP/current)
    atomically, restarts the service through systemd and waits until the new release is up
    (systemd's job, readiness, the health check, a grace period).
  - If the new release does not come up, pyrelctl restores the previous release by itself and
    this task fails with pyrelctl's failure report (exit 3), so that a play with C(serial) and
    C(max_fail_percentage=0) stops before the next host.
  - Idempotent. When the release's version is already current, its unit is unchanged and the
    service runs, nothing is done and the task reports C(changed=false).
  - O(src) is a release tarball on the controller, copied to a temporary directory on the
    host for the install and removed afterwards; O(artifact) is a release (tarball or
    directory) already on the host.
  - In check mode (and to learn the app before a run with O(config) or in diff mode) the
    release is checked with C(pyrelctl install --dry-run), which validates it as an install
    does (signature, archive, manifest, checksums, what the host allows) and renders its unit
    from the app's settings and the task's options, but unpacks nothing, builds no virtualenv
    and runs none of the release's code (a python release's pip and C(.pth) files run only
    when it is really installed). That is compared with the host's current release, service
    state and unit.
version_added: "0.1.0"
author:
  # No one GitHub account stands for the project (validate-modules wants one or !UNKNOWN).
  - pyrelctl developers (!UNKNOWN)
options:
  src:
    description:
      - A release tarball (C(.tar.gz), C(.tgz) or C(.tar)) on the controller.
      - Looked up like M(ansible.builtin.copy)'s O(ansible.builtin.copy#module:src) (relative
        paths in the role's or playbook's C(files/)).
      - Exactly one of O(src) and O(artifact) is required.
    type: path
  artifact:
    description:
      - A release already on the managed host, a tarball or a directory.
      - Exactly one of O(src) and O(artifact) is required.
    type: path
  app:
    description:
      - Install under this app name instead of the release's own name (C(pyrelctl install --app)).
    type: str
  start:
    description:
      - Restart the service and wait until the new release is up.
      - With V(false) the release is unpacked and made current, but the service keeps running
        the release it started from until its next restart (C(--no-start)).
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for systemd's job and for readiness (C(--timeout)). pyrelctl's default
        (60) when not given.
    type: float
  grace:
    description:
      - Seconds the new release must stay up after it is ready (C(--grace)); remembered by
        pyrelctl for the app.
    type: float
  keep:
    description:
      - Releases to keep; older ones are pruned after a good install (C(--keep)).
    type: int
  max_size:
    description:
      - Refuse a release that unpacks to more than this size, such as V(500M) or V(20G)
        (C(--max-size)).
    type: str
  health_http:
    description:
      - Ready when a GET of this URL answers 2xx (C(--health-http)); remembered for the app.
      - At most one of O(health_http), O(health_tcp), O(health_command).
    type: str
  health_tcp:
    description:
      - Ready when C(HOST:PORT) accepts a connection (C(--health-tcp)); remembered for the app.
    type: str
  health_command:
    description:
      - Ready when this command, run as the service's user, exits 0 (C(--health-command));
        remembered for the app.
    type: str
  health_reset:
    description:
      - Forget the remembered health check and use the release's own (C(--health-reset)).
    type: bool
    default: false
  listen:
    description:
      - Socket activation on these addresses, each C(PORT), C(IP:PORT), C([IPv6]:PORT) or an
        absolute unix socket path (C(--listen)). systemd holds the listener, so upgrades and
        rollbacks drop no connection. Remembered for the app; overrides the release's C([socket]).
    type: list
    elements: str
  listen_reset:
    description:
      - Forget the remembered O(listen) and use the release's own C([socket]), if any
        (C(--listen-reset)).
    type: bool
    default: false
  strategy:
    description:
      - How the new release replaces the running one (C(--strategy)). V(overlap) starts it
        beside the running release on the app's socket and stops the old one only once the new
        one is up; V(restart) restarts the service. Remembered for the app; default the
        release's C([service] strategy), else V(overlap) for apps with a socket.
    type: str
    choices: [overlap, restart]
  allow:
    description:
      - Sandbox widenings the host allows the release (C(--allow)), each V(low-ports),
        V(wx-memory) or C(write:/PATH). A release that asks for more is refused. Remembered
        for the app.
    type: list
    elements: str
  allow_reset:
    description:
      - Forget the remembered O(allow) values first (C(--allow-reset)).
    type: bool
    default: false
  allow_downgrade:
    description:
      - Install a signed release older than the current one (C(--allow-downgrade)).
    type: bool
    default: false
  config:
    description:
      - The app's whole configuration (C(pyrelctl config)), as a dict of environment variable
        names and values. When it differs from the host's, it is applied before the install as
        a verified configuration change (C(config import --replace)), undone by pyrelctl if the
        running release does not come up with it. Values are never logged, shown in a diff or
        passed on a command line (a root-only temporary file carries them). Omit it to leave
        the configuration as it is.
    type: dict
  wait_lock:
    description:
      - Wait when another pyrelctl operation holds the app's lock. With V(false) the task fails
        at once instead (C(--no-wait), pyrelctl's exit 5).
    type: bool
    default: true
  executable:
    description:
      - The pyrelctl command on the managed host. By default C(pyrelctl) is looked for in
        E(PATH), C(/usr/local/bin), C(/usr/bin) and C(/opt/pyrelctl-venv/bin).
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - ansible.builtin.action_common_attributes.actiongroups
attributes:
  check_mode:
    support: full
    details:
      - Checks the release and renders its unit with C(pyrelctl install --dry-run), which
        writes nothing and runs none of the release's code; the host's releases, units and
        services are not touched.
      - It cannot tell whether a python release's virtualenv builds or whether the release
        comes up.
  diff_mode:
    support: full
    details:
      - Shows the version C(/opt/APP/current) points to before and after, and the change of
        C(/etc/systemd/system/APP.service) (drop-ins, which pyrelctl never writes, are left out).
  platform:
    platforms: posix
  action:
    support: full
    details:
      - Copies O(src) from the controller to the host.
  async:
    support: none
  bypass_host_loop:
    support: none
  action_group:
    membership:
      - pyrelctl.deploy.pyrelctl
requirements:
  - pyrelctl on the managed host, run as root, or without become as a user that root
    granted the app (C(pyrelctl grant APP --user USER); signed releases only).
notes:
  - Installing a version that is already current does not redeploy; pyrelctl re-renders the
    unit and starts the service if it is not running.
  - A first install that fails has nothing to roll back to; pyrelctl stops the service and
    exits 1, and the task fails with RV(rolled_back=false).
  - The collection needs a pyrelctl on the host that has C(install --dry-run).
seealso:
  - module: pyrelctl.deploy.pyrelctl_rollback
  - module: pyrelctl.deploy.pyrelctl_facts
"""

EXAMPLES = r"""
- name: Install shop 1.4.0 from the controller; stop here if it rolls back
  pyrelctl.deploy.pyrelctl_release:
    src: dist/shop-1.4.0.tar.gz

- name: Install a release already on the host, with a health check and a short grace
  pyrelctl.deploy.pyrelctl_release:
    artifact: /var/cache/releases/shop-1.4.0.tar.gz
    health_http: http://127.0.0.1:4000/healthz
    grace: 2
    keep: 3

- name: Install with the host's configuration (applied and verified first; values not logged)
  pyrelctl.deploy.pyrelctl_release:
    src: dist/shop-1.4.0.tar.gz
    config:
      DATABASE_URL: "{{ vault_database_url }}"
      POOL_SIZE: "20"

- name: Roll a release across a group, one host at a time (see playbooks/rollout.yml)
  hosts: shop
  serial: 1
  max_fail_percentage: 0
  tasks:
    - name: Install; a deploy that rolled back fails the task and stops the rollout
      pyrelctl.deploy.pyrelctl_release:
        src: dist/shop-1.4.0.tar.gz
"""

RETURN = r"""
config_change:
  description: With O(config), the variable names it added, changed and removed (never values).
  returned: when O(config) is given
  type: dict
  sample: {"added": ["POOL_SIZE"], "changed": [], "removed": []}
app:
  description: The app the release was installed as.
  returned: success, or failure with a report
  type: str
  sample: shop
version:
  description: The release's version; after a successful run, the current one.
  returned: success
  type: str
  sample: 1.4.0
previous:
  description: The version that was current before.
  returned: success, or failure with a report
  type: str
  sample: 1.3.2
started:
  description: Whether the service was (re)started and verified up.
  returned: success
  type: bool
state:
  description: The unit's ActiveState after the install (empty in check mode or when not started).
  returned: success
  type: str
  sample: active
main_pid:
  description: The service's main PID after the install (0 when unknown).
  returned: success
  type: int
pruned:
  description: Releases removed by the prune after a good install.
  returned: success
  type: list
  elements: str
seconds:
  description: How long pyrelctl took.
  returned: success
  type: float
releases:
  description: The app's releases after the run, oldest install first (C(pyrelctl releases --json)).
  returned: success
  type: list
  elements: dict
  sample:
    - version: 1.3.2
      current: false
      mark: good
      installed_at: 1700000000.0
      size: 81920
      artifact: shop-1.3.2.tar.gz
    - version: 1.4.0
      current: true
      mark: good
      installed_at: 1700000500.0
      size: 81920
      artifact: shop-1.4.0.tar.gz
rolled_back:
  description:
    - V(true) when the new release failed and pyrelctl restored the previous one, which runs
      (pyrelctl's exit 3). V(false) when even that failed (exit 4) or when there was nothing to
      restore (exit 1).
  returned: failure with a report
  type: bool
failure:
  description:
    - What failed and how (the C(failed) part of pyrelctl's failure report, renamed because
      C(failed) is Ansible's own flag), with the journal lines of the failed start only.
  returned: failure with a report
  type: dict
  sample:
    version: 2.0.0
    reason: the service's main process exited
    job_result: done
    exit: exited with status 3
    invocation_id: 6c0f1b8e5d9e4a0c9c3f1e2d7b6a5c4d
    journal: ["shop 2.0.0 crashing on purpose"]
    hook_output: []
restored:
  description: The release that runs again after the failure, with its PID; null when none.
  returned: failure with a report
  type: dict
  sample: {version: 1.4.0, main_pid: 4211}
restore_failure:
  description: Why restoring the previous release failed too (pyrelctl's exit 4).
  returned: failure, when restoring failed
  type: dict
rc:
  description: pyrelctl's exit status.
  returned: failure
  type: int
  sample: 3
hint:
  description: pyrelctl's hint for the failure.
  returned: failure
  type: str
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pyrelctl.deploy.plugins.module_utils.pyrelctl import (
    COMMON_ARGS,
    Pyrelctl,
    PyrelctlError,
    is_running,
    unit_diff,
    version_diff,
)


def install_args(params, artifact, probe=False):
    """The ``pyrelctl install`` arguments for the module's parameters."""
    args = ["install", artifact]
    if params["app"]:
        args += ["--app", params["app"]]
    if params["max_size"]:
        args += ["--max-size", params["max_size"]]
    for allowance in params["allow"] or ():
        args += ["--allow", allowance]
    if probe:
        # Every option that shapes the unit or can refuse the release: the
        # dry run renders the unit with them, as the install will.
        args.append("--dry-run")
    elif not params["start"]:
        args.append("--no-start")
    for name in ("timeout", "grace", "keep"):
        if params[name] is not None:
            args += [f"--{name}", str(params[name])]
    for kind in ("http", "tcp", "command"):
        if params["health_" + kind]:
            args += ["--health-" + kind, params["health_" + kind]]
    if params["health_reset"]:
        args.append("--health-reset")
    for address in params["listen"] or ():
        args += ["--listen", address]
    if params["listen_reset"]:
        args.append("--listen-reset")
    if params.get("strategy"):
        args += ["--strategy", params["strategy"]]
    if params["allow_reset"]:
        args.append("--allow-reset")
    if params["allow_downgrade"]:
        args.append("--allow-downgrade")
    if not params["wait_lock"]:
        args.append("--no-wait")
    return args


def probe(module, cli, artifact):
    """What an install would do: the release's app, version and service unit.

    ``pyrelctl install --dry-run`` runs every check of an install that can
    refuse the artifact and renders its units from the app's settings and
    the task's options, as the install would write them; it unpacks nothing,
    builds no venv, runs none of the release's code (its pip, its ``.pth``
    files), takes no lock and writes nothing.
    """
    try:
        outcome = cli.run(*install_args(module.params, artifact, probe=True))
    except PyrelctlError as e:
        cli.fail(e)
    app = outcome["app"]
    unit = outcome["units"].get(f"/etc/systemd/system/{app}.service")
    return app, outcome["version"], unit


def check(module, cli, artifact):
    """Check mode: what an install would change, from the probe and the host's state."""
    app, version, unit_after = probe(module, cli, artifact)
    change = None
    if module.params["config"] is not None:
        change = apply_config(module, cli, app, module.params["config"])  # check mode: reads
    releases = cli.releases(app)
    current = releases["current"] if releases else None
    unit_before = cli.service_unit(app) if releases else None
    running = is_running(cli.status(app)) if releases else False
    if current == version:
        changed = unit_before != unit_after or (module.params["start"] and not running)
    else:
        changed = True
    result = dict(
        changed=changed,
        app=app,
        version=version,
        previous=current,
        started=False,
        state="",
        main_pid=0,
        pruned=[],
        seconds=0.0,
        releases=releases["releases"] if releases else [],
    )
    if change is not None:
        result["config_change"] = change
        if any(change.values()):
            result["changed"] = changed = True
    if module._diff:
        result["diff"] = diffs(app, current, version, unit_before, unit_after)
        if change is not None and any(change.values()):
            result["diff"].append(config_diff(app, change))
    if not changed:
        result["msg"] = f"{app} {version} is already current and running"
    elif current == version:
        result["msg"] = (
            f"{app} {version} is current; its unit would be rewritten or the service started"
        )
    else:
        result["msg"] = f"would install {app} {version} (current: {current or 'none'})"
    module.exit_json(**result)


def dotenv(variables):
    """The variables as a dotenv file pyrelctl reads back exactly (appconfig/envfile.py)."""
    lines = ["# written by the pyrelctl_release module"]
    for name in sorted(variables):
        value = str(variables[name])
        for char in ("\\", '"', "$", "`"):
            value = value.replace(char, "\\" + char)
        lines.append(f'{name}="{value}"')
    return "\n".join(lines) + "\n"


def config_change(current, wanted):
    """Names added, changed and removed (never the values)."""
    return {
        "added": sorted(set(wanted) - set(current)),
        "changed": sorted(k for k in set(wanted) & set(current) if current[k] != wanted[k]),
        "removed": sorted(set(current) - set(wanted)),
    }


def current_config(cli, app):
    try:
        return cli.run("config", "list", app, "--show-values")["variables"]
    except PyrelctlError as e:
        cli.fail(e)


def config_diff(app, change):
    """A diff of the configuration that names keys only."""
    before, after = [], []
    for name in change["removed"]:
        before.append(f"{name}=<hidden>")
    for name in change["changed"]:
        before.append(f"{name}=<hidden>")
        after.append(f"{name}=<changed>")
    for name in change["added"]:
        after.append(f"{name}=<hidden>")
    return {
        "before_header": f"{app} configuration",
        "after_header": f"{app} configuration",
        "before": "".join(line + "\n" for line in before),
        "after": "".join(line + "\n" for line in after),
    }


def apply_config(module, cli, app, wanted):
    """Make the app's configuration ``wanted``; return the change (names only)."""
    wanted = {str(k): str(v) for k, v in wanted.items()}
    change = config_change(current_config(cli, app), wanted)
    if not any(change.values()) or module.check_mode:
        return change
    fd, path = tempfile.mkstemp(prefix="pyrelctl-config-", suffix=".env", dir=module.tmpdir)
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp: 0600
            f.write(dotenv(wanted))
        cli.run("config", "import", app, path, "--replace")
    except PyrelctlError as e:
        cli.fail(e, config_change=change)
    finally:
        os.unlink(path)
    return change


def diffs(app, before_version, after_version, unit_before, unit_after):
    entries = []
    if before_version != after_version:
        entries.append(version_diff(app, before_version, after_version))
    unit = unit_diff(app, unit_before, unit_after)
    if unit is not None:
        entries.append(unit)
    return entries


def main():
    argument_spec = dict(
        src=dict(type="path"),
        artifact=dict(type="path"),
        app=dict(type="str"),
        start=dict(type="bool", default=True),
        timeout=dict(type="float"),
        grace=dict(type="float"),
        keep=dict(type="int"),
        max_size=dict(type="str"),
        health_http=dict(type="str"),
        health_tcp=dict(type="str"),
        health_command=dict(type="str"),
        health_reset=dict(type="bool", default=False),
        listen=dict(type="list", elements="str"),
        listen_reset=dict(type="bool", default=False),
        strategy=dict(type="str", choices=["overlap", "restart"]),
        allow=dict(type="list", elements="str"),
        allow_reset=dict(type="bool", default=False),
        allow_downgrade=dict(type="bool", default=False),
        config=dict(type="dict", no_log=True),
        wait_lock=dict(type="bool", default=True),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[
            ("src", "artifact"),
            ("health_http", "health_tcp", "health_command"),
            ("listen", "listen_reset"),
        ],
        required_one_of=[("src", "artifact")],
        supports_check_mode=True,
    )
    if module.params["src"]:
        # The action plugin of the same name copies src to the host and
        # passes its path as `artifact`; getting `src` here means it did not run.
        module.fail_json(
            msg="src is handled by the pyrelctl_release action plugin; "
            "use artifact for a path on the host"
        )
    artifact = module.params["artifact"]
    if not os.path.exists(artifact):
        module.fail_json(msg=f"artifact {artifact} does not exist on the host")

    cli = Pyrelctl(module)
    if module.check_mode:
        check(module, cli, artifact)

    app = module.params["app"]
    unit_before = current_before = None
    if module._diff or module.params["config"] is not None:
        app, _version, _unit = probe(module, cli, artifact)
        releases = cli.releases(app)
        current_before = releases["current"] if releases else None
        unit_before = cli.service_unit(app) if releases else None
    change = None
    if module.params["config"] is not None:
        # Before the install: verified with the release that runs (or staged for
        # the first one), so a new release starts with the configuration it is meant for.
        change = apply_config(module, cli, app, module.params["config"])

    try:
        outcome = cli.run(*install_args(module.params, artifact))
    except PyrelctlError as e:
        cli.fail(e)

    app = outcome["app"]
    releases = cli.releases(app)
    result = dict(outcome)
    result["releases"] = releases["releases"] if releases else []
    result.pop("action", None)
    config_changed = change is not None and any(change.values())
    if change is not None:
        result["config_change"] = change
        result["changed"] = outcome["changed"] or config_changed
    if module._diff:
        unit_after = cli.service_unit(app)
        result["diff"] = diffs(app, current_before, outcome["version"], unit_before, unit_after)
        if config_changed:
            result["diff"].append(config_diff(app, change))
    if config_changed and not outcome["changed"]:
        result["msg"] = f"{app} {outcome['version']}: configuration changed and applied"
        module.exit_json(**result)
    if not outcome["changed"]:
        result["msg"] = f"{app} {outcome['version']} is already current and running"
    else:
        how = f"and running (pid {outcome['main_pid']})" if outcome["started"] else "(not started)"
        result["msg"] = f"{app} {outcome['version']} installed {how}"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
