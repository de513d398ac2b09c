"""The packaging files agree with the project: versions, dependencies, shipped paths.

Building the packages themselves is in tests/system/test_deb.py (it needs apt).
"""

from __future__ import annotations

import importlib.util
import os
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


def test_packages_recommend_ssh_keygen_for_signed_releases() -> None:
    """Signed releases are verified with ssh-keygen (pyrelctl/signatures.py),
    which a minimal Debian or Fedora host lacks: both packages pull it in by
    default, and a host that deploys only unsigned releases may leave it out."""
    control = (REPO / "debian/control").read_text()
    binary = control[control.index("Package: pyrelctl") :]
    assert re.search(r"^Recommends:.*\bopenssh-client\b", binary, re.MULTILINE)
    spec = (REPO / "packaging/rpm/pyrelctl.spec").read_text()
    assert re.search(r"^Recommends:\s+openssh-clients$", spec, re.MULTILINE)


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


#: A program the suite runs: tests/ and devtools/ calling run([...]), Popen([...]) etc.
_RUNS_RE = re.compile(r'\b(?:run|Popen|check_output|check_call)\(\s*[\[(]\s*"([\w./+-]+)"')
#: Programs the suite runs that come from elsewhere than a package a Makefile list names.
_ELSEWHERE = {
    "git": "the checkout is a git clone (devtools/newhost.py copies its files)",
    "make": "`make test` runs the suite",
    "pyrelctl": "the program under test",
    "rpm": "test_deb's `make rpm` installs it (RPM_BUILD_DEPS)",
    "/usr/bin/pyrelctl": "the .deb's program, installed inside a test container",
    "update-ca-certificates": "run inside the Debian 13 root, which devtools/rootfs.py "
    "builds with ca-certificates",
}
#: Packages of the programs above that a package of the Makefile's lists depends on.
_PULLED_IN = {
    "python3-minimal": "python3-venv (APT_PACKAGES)",
    "man-db": "lintian (DEB_BUILD_DEPS)",
    "erlang-base": "elixir (APT_PACKAGES)",
}
#: systemd's PATH: the test containers run the host's /usr, not the caller's PATH.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg")
def test_the_suite_installs_every_program_it_runs() -> None:
    """Issue 28: the suite ran ssh-keygen and curl, which a fresh Debian 12 lacks and
    nothing installed. Every program the tests and devtools run is in an Essential,
    required or important package, or in one `make` installs (APT_PACKAGES,
    TEST_APT_PACKAGES, DEB_BUILD_DEPS, RPM_BUILD_DEPS)."""
    programs: dict[str, set[str]] = {}
    for top in ("tests", "devtools"):
        for path in (REPO / top).rglob("*.py"):
            for match in _RUNS_RE.finditer(path.read_text()):
                programs.setdefault(match[1], set()).add(str(path.relative_to(REPO)))
    assert "ssh-keygen" in programs and "systemctl" in programs  # the scan finds them
    listed = {
        p
        for variable in ("APT_PACKAGES", "TEST_APT_PACKAGES", "DEB_BUILD_DEPS", "RPM_BUILD_DEPS")
        for p in _makefile_list(variable)
    }
    found: dict[str, str] = {}
    unaccounted = []
    for program, users in sorted(programs.items()):
        if program in _ELSEWHERE or (program.startswith("/") and not program.startswith("/usr")):
            continue  # ... or a path inside a container (/opt/APP/current/bin/...)
        where = shutil.which(program, path=_SYSTEM_PATH)
        if where is None:
            unaccounted.append(f"{program} (not installed; run by {sorted(users)})")
        else:
            found[program] = where
    # Which package owns each: the link's own first (python3 -> python3.11 is
    # python3-minimal's), then as merged /usr's dpkg may know it (/bin/X).
    candidates = {
        program: [where, where.removeprefix("/usr"), os.path.realpath(where)]
        for program, where in found.items()
    }
    owners: dict[str, str] = {}
    search = subprocess.run(
        ["dpkg", "-S", *{c for paths in candidates.values() for c in paths}],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in search.stdout.splitlines():
        owner, _, owned = line.partition(": ")
        if not line.startswith("diversion "):
            owners.setdefault(owned, owner.split(",")[0].split(":")[0])
    packages = {
        program: next((owners[p] for p in paths if p in owners), "")
        for program, paths in candidates.items()
    }
    fields: dict[str, set[str]] = {}
    query = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Essential} ${Priority}\n", *set(packages.values())],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in query.stdout.splitlines():
        package, *rest = line.split()
        fields[package] = set(rest)
    for program, package in sorted(packages.items()):
        if (
            package in listed
            or package in _PULLED_IN
            or {"yes", "required", "important"} & fields.get(package, set())
        ):
            continue
        unaccounted.append(
            f"{program} ({package or 'no package'}; run by {sorted(programs[program])})"
        )
    assert not unaccounted, "\n".join(unaccounted)
