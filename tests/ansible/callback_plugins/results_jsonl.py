"""Ansible callback plugin of the tests: every task result, one JSON object a line.

ansible-core ships no JSON callback (that one lives in the ansible.posix
collection), and the tests assert on each host's result of each task. The
file is the one named by $PYRELCTL_ANSIBLE_RESULTS; the human output of the
default callback is left as it is, for failure messages.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: results_jsonl
type: aggregate
short_description: write every task result to $PYRELCTL_ANSIBLE_RESULTS as JSON lines
description:
  - For pyrelctl's tests.
author: pyrelctl developers
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]  # ansible-core ships no type information
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "results_jsonl"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, status: str, result: Any) -> None:
        path = os.environ.get("PYRELCTL_ANSIBLE_RESULTS")
        if not path:
            return
        record = {
            "host": result.host.get_name(),
            "task": result.task.get_name(),
            "status": status,
            "result": dict(result.result),
        }
        with open(path, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def v2_runner_on_ok(self, result: Any) -> None:
        self._write("ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._write("failed", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._write("skipped", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._write("unreachable", result)
