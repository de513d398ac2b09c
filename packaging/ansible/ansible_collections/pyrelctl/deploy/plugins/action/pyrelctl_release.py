# Copyright: pyrelctl developers
# MIT License (see https://opensource.org/licenses/MIT)
"""Controller side of pyrelctl_release: copy ``src`` (and ``src.sig``) to the host, then
run the module.

The tarball goes into the task's temporary directory on the host (removed
afterwards, also in check mode, where the module unpacks it into a
throw-away root to see what an install would change).
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

MODULE = "pyrelctl.deploy.pyrelctl_release"


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        if task_vars is None:
            task_vars = {}
        result = super().run(tmp, task_vars)
        del tmp  # no effect since Ansible 2.5

        args = self._task.args.copy()
        src = args.pop("src", None)
        try:
            if src is None:
                result.update(
                    self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
                )
                return result
            if args.get("artifact") is not None:
                raise AnsibleActionFail("parameters are mutually exclusive: src|artifact")
            try:
                source = self._find_needle("files", os.path.expanduser(src))
            except AnsibleError as e:
                raise AnsibleActionFail(to_text(e)) from e
            if os.path.isdir(source):
                raise AnsibleActionFail(
                    f"src {source} is a directory: give a release tarball, "
                    "or use artifact for a release directory on the host"
                )
            # The file keeps its name on the host: pyrelctl records it as the
            # release's artifact (`pyrelctl releases`).
            remote = self._connection._shell.join_path(
                self._connection._shell.tmpdir, os.path.basename(source)
            )
            self._transfer_file(source, remote)
            sent = [remote]
            if os.path.isfile(source + ".sig"):
                # Its ssh-keygen signature goes along, where pyrelctl looks for it
                # (ARTIFACT.sig): a host that trusts keys for the app needs it, and
                # a user deploying by grant (no become) installs signed releases only.
                self._transfer_file(source + ".sig", remote + ".sig")
                sent.append(remote + ".sig")
            self._fixup_perms2((self._connection._shell.tmpdir, *sent))
            args["artifact"] = remote
            result.update(
                self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
            )
            return result
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
