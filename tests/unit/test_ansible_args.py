"""The Ansible module's `pyrelctl install` arguments (pure: no Ansible run here;
tests/system/test_ansible.py runs the collection against real hosts)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

COLLECTIONS = Path(__file__).resolve().parents[2] / "packaging/ansible"


@pytest.fixture
def install_args() -> Any:
    # Imported by name: the collection is not a package of this project's (mypy
    # does not see it), it is what Ansible copies to the managed host.
    sys.path.insert(0, str(COLLECTIONS))
    try:
        module = importlib.import_module(
            "ansible_collections.pyrelctl.deploy.plugins.modules.pyrelctl_release"
        )
    finally:
        sys.path.remove(str(COLLECTIONS))
    return module.install_args


PARAMS: dict[str, Any] = {
    "app": None,
    "max_size": None,
    "start": True,
    "timeout": None,
    "grace": None,
    "keep": None,
    "health_http": None,
    "health_tcp": None,
    "health_command": None,
    "health_reset": False,
    "listen": None,
    "listen_reset": False,
    "allow": ["low-ports", "write:/srv/x"],
    "allow_reset": True,
    "allow_downgrade": True,
    "wait_lock": True,
}


def test_allowances_reach_the_install_and_its_check_mode_probe(install_args: Any) -> None:
    args = install_args(PARAMS, "/a.tar.gz")
    assert args == [
        "install",
        "/a.tar.gz",
        *("--allow", "low-ports", "--allow", "write:/srv/x"),
        "--allow-reset",
        "--allow-downgrade",
    ]
    # The probe's throw-away tree remembers nothing: it needs the allowances too.
    probe = install_args(PARAMS, "/a.tar.gz", probe=True)
    assert probe[:6] == ["install", "/a.tar.gz", "--allow", "low-ports", "--allow", "write:/srv/x"]


def test_the_strategy_reaches_the_install(install_args: Any) -> None:
    args = install_args(
        {
            **PARAMS,
            "allow": None,
            "allow_reset": False,
            "allow_downgrade": False,
            "strategy": "restart",
        },
        "/a.tar.gz",
    )
    assert args == ["install", "/a.tar.gz", "--strategy", "restart"]
