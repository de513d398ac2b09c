#!/usr/bin/python
# Copyright: pyrelctl developers
# MIT License (see https://opensource.org/licenses/MIT)

from __future__ import annotations

DOCUMENTATION = r"""
module: pyrelctl_facts
short_description: Facts about the apps pyrelctl manages on a host and their releases
description:
  - Reads C(pyrelctl status --json) and C(pyrelctl releases --json APP) on the managed host and
    sets C(ansible_facts.pyrelctl), keyed by app name; changes nothing.
version_added: "0.1.0"
author:
  # No one GitHub account stands for the project (validate-modules wants one or !UNKNOWN).
  - pyrelctl developers (!UNKNOWN)
options:
  apps:
    description:
      - The apps to describe. By default every app pyrelctl manages on the host.
      - An app that is not installed is listed with C(installed=false).
    type: list
    elements: str
  executable:
    description:
      - The pyrelctl command on the managed host. By default C(pyrelctl) is looked for in
        E(PATH), C(/usr/local/bin), C(/usr/bin) and C(/opt/pyrelctl-venv/bin).
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
  - ansible.builtin.action_common_attributes.actiongroups
attributes:
  check_mode:
    support: full
    details:
      - Reads only.
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: posix
  action_group:
    membership:
      - pyrelctl.deploy.pyrelctl
requirements:
  - pyrelctl on the managed host, run as root.
seealso:
  - module: pyrelctl.deploy.pyrelctl_release
  - module: pyrelctl.deploy.pyrelctl_rollback
"""

EXAMPLES = r"""
- name: Read what pyrelctl runs here
  pyrelctl.deploy.pyrelctl_facts:
    apps: [shop]

- name: Show it
  ansible.builtin.debug:
    msg: >-
      shop {{ ansible_facts.pyrelctl.apps.shop.current }}
      is {{ ansible_facts.pyrelctl.apps.shop.state.active_state }}
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to the host's ansible_facts.
  returned: always
  type: complex
  contains:
    pyrelctl:
      description: What pyrelctl manages on the host.
      returned: always
      type: complex
      contains:
        apps:
          description:
            - One entry per app, keyed by name, with C(installed), C(current) (the version
              C(/opt/APP/current) points to), C(mark) (C(good), C(failed) or C(new)), C(unit),
              C(state) (the unit's C(active_state), C(sub_state), C(main_pid), C(enabled), C(since))
              and C(releases) (oldest install first; each with C(version), C(current), C(mark),
              C(installed_at), C(size), C(artifact)).
          returned: always
          type: dict
          sample:
            shop:
              installed: true
              current: 1.4.0
              mark: good
              unit: shop.service
              state: {active_state: active, sub_state: running, main_pid: 4211, enabled: enabled}
              releases:
                - {version: 1.3.2, current: false, mark: good}
                - {version: 1.4.0, current: true, mark: good}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pyrelctl.deploy.plugins.module_utils.pyrelctl import (
    COMMON_ARGS,
    Pyrelctl,
    PyrelctlError,
)


def main():
    argument_spec = dict(apps=dict(type="list", elements="str"))
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    cli = Pyrelctl(module)

    names = module.params["apps"]
    if names is None:
        try:
            names = [doc["app"] for doc in cli.run("status")["apps"]]
        except PyrelctlError as e:
            cli.fail(e)

    apps = {}
    for name in names:
        releases = cli.releases(name)
        if releases is None:
            apps[name] = dict(
                installed=False, current=None, mark=None, unit=None, state=None, releases=[]
            )
            continue
        status = cli.status(name)
        apps[name] = dict(
            installed=True,
            current=releases["current"],
            mark=status.get("mark"),
            unit=status.get("unit"),
            state=status.get("state"),
            releases=releases["releases"],
        )
    module.exit_json(changed=False, ansible_facts=dict(pyrelctl=dict(apps=apps)))


if __name__ == "__main__":
    main()
