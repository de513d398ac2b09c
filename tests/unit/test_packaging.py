"""The packaging files agree with the project: versions, dependencies, shipped paths.

Building the packages themselves is in tests/system/test_deb.py (it needs apt).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from pyrelctl import __version__

REPO = Path(__file__).resolve().parents[2]


def _pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _gendocs() -> ModuleType:
    # Loaded by path: a top-level `packaging` would be PyPA's library.
    spec = importlib.util.spec_from_file_location("gendocs", REPO / "packaging/gendocs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requirements() -> dict[str, str]:
    """pyproject's runtime dependencies: name -> minimum version."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    found = {}
    for requirement in project["dependencies"]:
        name, _, minimum = requirement.partition(">=")
        found[name.strip().lower()] = minimum.strip()
    return found


def test_one_version_everywhere() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    assert project["version"] == __version__
    changelog = (REPO / "debian/changelog").read_text().splitlines()[0]
    assert changelog.startswith(f"pyrelctl ({__version__}) "), changelog
    spec = (REPO / "packaging/rpm/pyrelctl.spec").read_text()
    assert re.search(rf"^Version:\s+{re.escape(__version__)}$", spec, re.MULTILINE)
    assert f"- {__version__}-1\n" in spec  # its %changelog entry


def test_debian_depends_on_debians_packages_of_every_requirement() -> None:
    control = (REPO / "debian/control").read_text()
    binary = control[control.index("Package: pyrelctl") :]
    for name, minimum in _requirements().items():
        assert f"python3-{name} (>= {minimum})" in binary, name


def test_rpm_requires_every_requirement() -> None:
    spec = (REPO / "packaging/rpm/pyrelctl.spec").read_text()
    for name, minimum in _requirements().items():
        assert f"Requires:       python3dist({name}) >= {minimum}" in spec, name


def _makefile_list(variable: str) -> list[str]:
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{variable} :=(.*)$", makefile, re.MULTILINE)
    assert match is not None, variable
    return match[1].split()


@pytest.mark.skipif(
    shutil.which("dpkg-checkbuilddeps") is None or shutil.which("apt-cache") is None,
    reason="needs dpkg-dev and apt",
)
def test_make_deb_installs_every_build_dependency(tmp_path: Path) -> None:
    """Issue 28: on a host with nothing but what `make deb-deps` installs (the
    Makefile's DEB_BUILD_DEPS, apt-get --no-install-recommends), debian/control's
    build dependencies are met. dpkg-checkbuilddeps is asked against a dpkg
    database holding those packages alone, as apt would install them today; it
    also counts the implicit build-essential:native (dpkg-checkbuilddeps(1), -I),
    which a fresh host lacks."""
    packages = _makefile_list("DEB_BUILD_DEPS")
    shown = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        pytest.skip(f"apt does not know them all (apt-get update first): {shown.stderr}")
    stanzas = ["Status: install ok installed\n" + s for s in shown.stdout.strip().split("\n\n")]
    assert len(stanzas) == len(packages), shown.stdout
    (tmp_path / "status").write_text("\n\n".join(stanzas) + "\n")
    proc = subprocess.run(
        ["dpkg-checkbuilddeps", f"--admindir={tmp_path}", REPO / "debian/control"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_debian_installs_what_gendocs_writes() -> None:
    gendocs = _gendocs()
    install = (REPO / "debian/pyrelctl.install").read_text().splitlines()
    sources = [line.split()[0] for line in install]
    assert sorted(sources) == sorted(
        f"debian/generated/completions/{name}" for name in gendocs.COMPLETION_FILES.values()
    )
    # Where each shell looks for a command's completion on Debian.
    assert dict(line.split() for line in install) == {
        "debian/generated/completions/bash/pyrelctl": "usr/share/bash-completion/completions",
        "debian/generated/completions/zsh/_pyrelctl": "usr/share/zsh/vendor-completions",
        "debian/generated/completions/fish/pyrelctl.fish": "usr/share/fish/vendor_completions.d",
    }
    manpages = (REPO / "debian/pyrelctl.manpages").read_text().split()
    assert manpages == ["debian/generated/man/pyrelctl.1"]


def test_the_wheel_ships_the_unit_templates_and_the_runtime() -> None:
    hatch = _pyproject()["tool"]
    assert isinstance(hatch, dict)
    force = hatch["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert {"units": "pyrelctl/units", "runtime": "pyrelctl/_runtime"}.items() <= force.items()
    assert (REPO / "units/app.service.j2").is_file()
