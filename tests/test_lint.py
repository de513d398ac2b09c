"""The code style and typing checks run as part of the suite (STYLE.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHECKED = ["pyrelctl", "devtools", "demo", "tests", "runtime", "examples", "bench"]
# The packaging scripts (not packaging/ as a whole: it holds other tools' trees).
CHECKED += ["packaging/gendocs.py", "packaging/smoke_test.py"]
# The Ansible collection and its tools (docs/ansible.md).
CHECKED += ["packaging/ansible"]


@pytest.mark.parametrize(
    "argv",
    [
        [str(BIN / "ruff"), "check", *CHECKED],
        [str(BIN / "ruff"), "format", "--check", *CHECKED],
        [str(BIN / "mypy")],  # files and strictness from pyproject.toml
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_clean(argv: list[str]) -> None:
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
