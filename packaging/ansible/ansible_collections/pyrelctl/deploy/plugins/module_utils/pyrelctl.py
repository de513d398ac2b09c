# Copyright: pyrelctl developers
# MIT License (see https://opensource.org/licenses/MIT)
"""Run the pyrelctl command on the managed host and read its ``--json`` output.

The modules of this collection never reimplement what pyrelctl does: they
call its command line (the contract in pyrelctl's DESIGN.md: commands, exit
codes, one JSON document on stdout with ``--json``) and translate the result
into Ansible's terms. This file runs on the managed host, with whatever
Python runs modules there (3.8 or later), so it uses no newer syntax.
"""

from __future__ import annotations

import json
import os

# pyrelctl's exit codes (DESIGN.md, "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ROLLED_BACK = 3
EXIT_ROLLBACK_FAILED = 4
EXIT_LOCKED = 5

# Where `pyrelctl` is looked for besides PATH: Ansible runs modules with a
# minimal PATH, and the README installs pyrelctl into a venv and links it.
SEARCH_DIRS = ["/usr/local/bin", "/usr/bin", "/opt/pyrelctl-venv/bin"]

COMMON_ARGS = dict(
    executable=dict(type="path"),
)


class PyrelctlError(Exception):
    """pyrelctl exited non-zero; carries what the module reports."""

    def __init__(self, rc, message, hint=None, document=None, stderr="", argv=None):
        super().__init__(message)
        self.rc = rc
        self.message = message
        self.hint = hint
        self.document = document
        self.stderr = stderr
        self.argv = argv or []

    @property
    def not_installed(self):
        """pyrelctl said the app (or release) is not installed (exit 2)."""
        return self.rc == EXIT_BAD_INPUT and "is not installed" in self.message


def _error_lines(stderr):
    """The ``error:`` and ``hint:`` lines pyrelctl printed on stderr, if any."""
    message = hint = None
    for line in stderr.splitlines():
        if line.startswith("error: "):
            message = line[len("error: ") :].strip()
        elif line.startswith("hint: "):
            hint = line[len("hint: ") :].strip()
    return message, hint


class Pyrelctl:
    """The ``pyrelctl`` executable on the managed host."""

    def __init__(self, module):
        self.module = module
        executable = module.params.get("executable")
        if executable:
            if not os.access(executable, os.X_OK):
                module.fail_json(
                    msg=f"pyrelctl executable {executable} is missing or not executable"
                )
            self.executable = executable
        else:
            self.executable = module.get_bin_path("pyrelctl", required=True, opt_dirs=SEARCH_DIRS)

    def run(self, *args, **kwargs):
        """Run ``pyrelctl [--root ROOT] --json ARGS``; return its JSON document.

        Raises :class:`PyrelctlError` on a non-zero exit, with the failure
        report when pyrelctl printed one (an install or rollback that failed
        prints it as the JSON document on stdout).
        """
        root = kwargs.pop("root", None)
        argv = [self.executable]
        if root is not None:
            argv += ["--root", root]
        argv += ["--json"] + [str(a) for a in args]
        # LANG: pyrelctl and the journal lines it reports are UTF-8.
        rc, out, err = self.module.run_command(
            argv, check_rc=False, environ_update={"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        )
        document = None
        if out.strip():
            try:
                document = json.loads(out)
            except ValueError:
                if rc == EXIT_OK:
                    self.module.fail_json(
                        msg="pyrelctl printed something that is not JSON",
                        cmd=argv,
                        stdout=out,
                        stderr=err,
                        rc=rc,
                    )
        if rc != EXIT_OK:
            message, hint = _error_lines(err)
            if message is None:
                lines = err.strip().splitlines()
                message = lines[-1] if lines else f"pyrelctl exited with status {rc}"
            raise PyrelctlError(rc, message, hint=hint, document=document, stderr=err, argv=argv)
        if document is None:
            self.module.fail_json(
                msg="pyrelctl printed no JSON document", cmd=argv, stderr=err, rc=rc
            )
        return document

    def releases(self, app):
        """``releases APP`` (versions, marks, current), or None if APP is not installed."""
        try:
            return self.run("releases", app)
        except PyrelctlError as e:
            if e.not_installed:
                return None
            self.fail(e)

    def status(self, app):
        """``status APP``: unit state and current release."""
        try:
            return self.run("status", app)
        except PyrelctlError as e:
            self.fail(e)

    def service_unit(self, app):
        """The text of APP's generated service file (``pyrelctl unit``), or None."""
        try:
            files = self.run("unit", app)["files"]
        except PyrelctlError as e:
            if e.rc == EXIT_BAD_INPUT:  # not installed, or no unit file (yet)
                return None
            self.fail(e)
        for path, text in files.items():
            if os.path.basename(path) == f"{app}.service":
                return text
        return None

    def fail(self, error, **result):
        """fail_json with what pyrelctl said, and its failure report if it printed one."""
        result.setdefault("changed", False)
        msg = error.message
        if error.hint:
            msg += "; " + error.hint
        result.update(msg=msg, rc=error.rc, hint=error.hint, stderr=error.stderr, cmd=error.argv)
        report = error.document
        if isinstance(report, dict):
            # The failure report (DESIGN.md "What an install does", step 5). Its
            # own "failed" (what failed, and how) is renamed: in a task result
            # `failed` is Ansible's boolean.
            result.update(
                app=report.get("app"),
                action=report.get("action"),
                failure=report.get("failed"),
                previous=report.get("previous"),
                restored=report.get("restored"),
                restore_failure=report.get("restore_failure"),
            )
            result["rolled_back"] = error.rc == EXIT_ROLLED_BACK
            # Something was unpacked, marked failed and (usually) restarted.
            result["changed"] = True
        self.module.fail_json(**result)


def is_running(status):
    """Whether ``status APP``'s unit state is active (running), as pyrelctl counts it."""
    state = (status or {}).get("state") or {}
    return state.get("active_state") == "active" and state.get("sub_state") in (
        "running",
        "listening",
    )


def previous_good(releases, current):
    """The release ``pyrelctl rollback APP`` goes back to, or None (mirrors pyrelctl).

    The newest release installed before the current one that is not marked
    failed; ``releases`` lists them oldest install first.
    """
    versions = [r["version"] for r in releases["releases"]]
    older = versions[: versions.index(current)] if current in versions else versions
    candidates = [
        r["version"]
        for r in releases["releases"]
        if r["version"] in older and r.get("mark") != "failed"
    ]
    return candidates[-1] if candidates else None


def version_diff(app, before, after):
    """A diff entry for the version ``/opt/APP/current`` points to."""
    return dict(
        before_header=f"/opt/{app}/current",
        after_header=f"/opt/{app}/current",
        before=f"releases/{before}\n" if before else "",
        after=f"releases/{after}\n" if after else "",
    )


def unit_diff(app, before, after):
    """A diff entry for APP's service file, or None when it does not change."""
    if (before or "") == (after or ""):
        return None
    path = f"/etc/systemd/system/{app}.service"
    return dict(before_header=path, after_header=path, before=before or "", after=after or "")
