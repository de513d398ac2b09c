#!/usr/bin/python
# Copyright: pyrelctl developers
# MIT License (see https://opensource.org/licenses/MIT)

from __future__ import annotations

DOCUMENTATION = r"""
module: pyrelctl_rollback
short_description: Make an earlier release of an app current again with pyrelctl
description:
  - Runs C(pyrelctl rollback --json APP) on the managed host. pyrelctl switches
    C(/opt/APP/current) back to an earlier release, restarts the service and verifies it like an
    install; if the release it goes back to does not come up, it restores the one it came from
    and the task fails with the failure report.
  - Without O(to), pyrelctl goes back to the newest good release installed before the current
    one (releases marked failed are never chosen). That is not idempotent by itself; give
    O(from_version) (roll back only hosts that run that version) or O(to) (a version; no change
    where it is already current) to make the task safe to repeat across a group.
  - This is the way to roll back the hosts a stopped rollout had already upgraded, see
    C(playbooks/rollback.yml) in this collection.
version_added: "0.1.0"
author:
  # No one GitHub account stands for the project (validate-modules wants one or !UNKNOWN).
  - pyrelctl developers (!UNKNOWN)
options:
  app:
    description:
      - The app to roll back.
    type: str
    required: true
  to:
    description:
      - The installed release to go back to. No change where it is already current.
      - A release that failed when it was installed is refused (install its artifact again to
        retry it).
    type: str
  from_version:
    description:
      - Roll back only where this version is current; elsewhere report no change.
      - The version of a rollout that was stopped, so that only the hosts it reached go back.
    type: str
  timeout:
    description:
      - Seconds to wait for systemd's job and for readiness (C(--timeout)).
    type: float
  grace:
    description:
      - Seconds the release must stay up after it is ready (C(--grace)).
    type: float
  wait_lock:
    description:
      - Wait when another pyrelctl operation holds the app's lock; with V(false) fail at once
        (C(--no-wait)).
    type: bool
    default: true
  executable:
    description:
      - The pyrelctl command on the managed host. By default C(pyrelctl) is looked for in
        E(PATH), C(/usr/local/bin), C(/usr/bin) and C(/opt/pyrelctl-venv/bin).
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
attributes:
  check_mode:
    support: full
    details:
      - Works out the release pyrelctl would go back to from C(pyrelctl releases --json), the
        way pyrelctl chooses it.
  diff_mode:
    support: partial
    details:
      - Shows the version C(/opt/APP/current) points to before and after. Outside check mode it
        also shows the change of C(/etc/systemd/system/APP.service); in check mode the unit the
        earlier release would render is not shown (pyrelctl renders it only when it switches).
  platform:
    platforms: posix
  action_group:
    membership:
      - pyrelctl.deploy.pyrelctl
requirements:
  - pyrelctl on the managed host, run as root, or without become as a user that root
    granted the app (C(pyrelctl grant APP --user USER); signed releases only).
seealso:
  - module: pyrelctl.deploy.pyrelctl_release
  - module: pyrelctl.deploy.pyrelctl_facts
"""

EXAMPLES = r"""
- name: Roll back the hosts a stopped rollout of 1.4.0 reached; the others report ok
  pyrelctl.deploy.pyrelctl_rollback:
    app: shop
    from_version: 1.4.0

- name: Make 1.3.2 current everywhere (no change where it already is)
  pyrelctl.deploy.pyrelctl_rollback:
    app: shop
    to: 1.3.2

- name: Back to the previous good release (not idempotent; every run goes one further back)
  pyrelctl.deploy.pyrelctl_rollback:
    app: shop
"""

RETURN = r"""
app:
  description: The app.
  returned: always
  type: str
  sample: shop
version:
  description: The current release after the task (the one rolled back to, when changed).
  returned: success
  type: str
  sample: 1.3.2
previous:
  description: The release that was current before.
  returned: success, or failure with a report
  type: str
  sample: 1.4.0
started:
  description: Whether the service was restarted and verified up.
  returned: success
  type: bool
main_pid:
  description: The service's main PID after the rollback (0 when unknown).
  returned: success
  type: int
releases:
  description:
    - The app's releases after the task, oldest install first (C(pyrelctl releases --json)).
  returned: success
  type: list
  elements: dict
rolled_back:
  description: V(true) when the release rolled back to failed and the one it came from runs again.
  returned: failure with a report
  type: bool
failure:
  description: What failed and how (the C(failed) part of pyrelctl's failure report).
  returned: failure with a report
  type: dict
restored:
  description: The release that runs after the failure, with its PID; null when none.
  returned: failure with a report
  type: dict
rc:
  description: pyrelctl's exit status.
  returned: failure
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pyrelctl.deploy.plugins.module_utils.pyrelctl import (
    COMMON_ARGS,
    Pyrelctl,
    PyrelctlError,
    previous_good,
    unit_diff,
    version_diff,
)


def unchanged(module, app, releases, msg):
    module.exit_json(
        changed=False,
        app=app,
        version=releases["current"],
        previous=releases["current"],
        started=False,
        main_pid=0,
        releases=releases["releases"],
        msg=msg,
    )


def target_of(module, app, releases):
    """The release pyrelctl would go back to (check mode), or fail as pyrelctl would."""
    to = module.params["to"]
    if to is None:
        target = previous_good(releases, releases["current"])
        if target is None:
            module.fail_json(msg=f"{app} has no earlier good release to roll back to", app=app)
        return target
    marks = dict((r["version"], r.get("mark")) for r in releases["releases"])
    if to not in marks:
        module.fail_json(msg=f"release {to} of {app} is not installed", app=app)
    if marks[to] == "failed":
        module.fail_json(
            msg=f"{app} {to} failed when it was installed; rollback never chooses a failed release",
            app=app,
        )
    return to


def main():
    argument_spec = dict(
        app=dict(type="str", required=True),
        to=dict(type="str"),
        from_version=dict(type="str"),
        timeout=dict(type="float"),
        grace=dict(type="float"),
        wait_lock=dict(type="bool", default=True),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    app = params["app"]

    cli = Pyrelctl(module)
    releases = cli.releases(app)
    if releases is None:
        module.fail_json(msg=f"app {app!r} is not installed", app=app)
    current = releases["current"]
    if params["from_version"] is not None and current != params["from_version"]:
        unchanged(
            module,
            app,
            releases,
            f"{app} runs {current}, not {params['from_version']}: nothing to roll back",
        )
    if params["to"] is not None and current == params["to"]:
        unchanged(module, app, releases, f"{app} {current} is already current")

    if module.check_mode:
        target = target_of(module, app, releases)
        result = dict(
            changed=True,
            app=app,
            version=target,
            previous=current,
            started=False,
            main_pid=0,
            releases=releases["releases"],
            msg=f"would roll {app} back from {current} to {target}",
        )
        if module._diff:
            result["diff"] = [version_diff(app, current, target)]
        module.exit_json(**result)

    unit_before = cli.service_unit(app) if module._diff else None
    args = ["rollback", app]
    if params["to"] is not None:
        args += ["--to", params["to"]]
    for name in ("timeout", "grace"):
        if params[name] is not None:
            args += [f"--{name}", str(params[name])]
    if not params["wait_lock"]:
        args.append("--no-wait")
    try:
        outcome = cli.run(*args)
    except PyrelctlError as e:
        cli.fail(e)

    result = dict(outcome)
    result.pop("action", None)
    result["releases"] = cli.releases(app)["releases"]
    result["msg"] = f"{app} rolled back from {outcome['previous']} to {outcome['version']}"
    if module._diff:
        entries = [version_diff(app, outcome["previous"], outcome["version"])]
        unit = unit_diff(app, unit_before, cli.service_unit(app))
        if unit is not None:
            entries.append(unit)
        result["diff"] = entries
    module.exit_json(**result)


if __name__ == "__main__":
    main()
