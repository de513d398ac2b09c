#!/usr/bin/env python3
"""Check an installed pyrelctl tree, as a package build just produced it.

    PYTHONPATH=SITE python3 -P packaging/smoke_test.py SITE

SITE is where the package put the ``pyrelctl`` module (for the .deb,
``debian/pyrelctl/usr/lib/python3/dist-packages``). Checks that the module,
its unit templates and the runtime's sources come from SITE (not from a
checkout), that the CLI starts, installs a small generic release offline
(``--root``) and renders its unit from the packaged template, and that shell
completion offers the installed app. Uses only what the package depends on.
Exits non-zero with the reason on the first failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CLI = "from pyrelctl.cli import main; main()"


def run_cli(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-P", "-c", CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"pyrelctl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"smoke test: {message}")


def main(site: Path) -> None:
    import pyrelctl
    from pyrelctl import units, wheels

    site = site.resolve()
    check(Path(pyrelctl.__file__).resolve().is_relative_to(site), f"pyrelctl not from {site}")
    templates = units._template_dirs()
    check(bool(templates), "no unit template directory found")
    check(all(d.resolve().is_relative_to(site) for d in templates), f"templates: {templates}")
    check(wheels.runtime_source().resolve().is_relative_to(site), "runtime sources not packaged")
    check(pyrelctl.__version__ in pyrelctl_version(), "--version does not print the version")

    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp, "hello-1.0")
        (release / "bin").mkdir(parents=True)
        (release / "release.toml").write_text(
            textwrap.dedent(
                """\
                [release]
                name = "hello"
                version = "1.0"
                kind = "generic"

                [commands]
                start = ["bin/hello", "start"]
                """
            )
        )
        launcher = release / "bin/hello"
        launcher.write_text("#!/bin/sh\nexec sleep infinity\n")
        launcher.chmod(0o755)
        root = Path(tmp, "root")
        run_cli("--root", str(root), "-q", "install", str(release))
        unit = run_cli("--root", str(root), "unit", "hello")
        check('ExecStart="/opt/hello/current/bin/hello" "start"' in unit, f"unit:\n{unit}")
        words = f"pyrelctl --root {root} status "
        offered = run_cli(
            env={"_PYRELCTL_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": "4"}
        )
        check("plain,hello" in offered.split(), f"completion offered {offered!r}")
    print(f"smoke test: pyrelctl {pyrelctl.__version__} from {site}: ok")


def pyrelctl_version() -> str:
    return run_cli("--version")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
