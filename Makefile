# pyrelctl: two commands set everything up on a fresh Debian 12 machine (as root).
#   make demo   boots a throwaway systemd and walks through install, upgrade,
#               a failed deploy rolling back, and a manual rollback
#   make test   the whole suite: lint, types, unit, CLI and system tests
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Debian's interpreter, not a pyenv/conda one: the venv must work inside the
# test containers too, which share only the host's /usr (see docs/testing.md).
PYTHON ?= /usr/bin/python3
VENV ?= .venv
APT_PACKAGES := systemd-container libsystemd-dev pkg-config gcc python3-dev python3-venv elixir erlang-mochiweb
STAMP_APT := $(VENV)/.apt-ok
STAMP_VENV := $(VENV)/.venv-ok

.PHONY: help deps venv test test-fast lint demo clean

help:
	@echo "make demo   install what is needed, then show pyrelctl deploying in a throwaway systemd"
	@echo "make test   install what is needed, then run the whole test suite"
	@echo "make deb    build dist/pyrelctl_VERSION_all.deb (and lint it); make rpm: the RPM"

# apt only when something is missing, so repeated runs stay fast and offline.
$(STAMP_APT):
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	  | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "+ apt-get install $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

deps: $(STAMP_APT)

$(STAMP_VENV): $(STAMP_APT) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,ansible]'
	@touch $@

venv: $(STAMP_VENV)

lint: $(STAMP_VENV)
	$(VENV)/bin/ruff check pyrelctl devtools demo tests runtime examples bench packaging/ansible
	$(VENV)/bin/ruff format --check pyrelctl devtools demo tests runtime examples bench packaging/ansible
	$(VENV)/bin/mypy

# The suite runs on the interpreter an up-to-date host has: packaging/apt-current
# upgrades Debian's python3.X packages to the archive's point or security
# release when the machine's are behind (a security update changed tarfile).
# What the install-path tests (tests/system/test_install_paths.py) take from
# Debian, as a new user would: pipx. Checked at every run (dpkg-query only),
# installed with apt when missing, so an existing checkout gets it too. Also
# the programs the suite runs that a fresh Debian lacks (not Priority
# required/important; tests/unit/test_packaging.py checks): ssh-keygen (signed
# releases), curl (inside the test containers, which run the host's /usr),
# dpkg-checkbuilddeps (make deb's build dependencies); and what the Debian 13
# tier (tests/system/test_trixie.py) builds its root with: mmdebstrap, and the
# archive keys that sign trixie (Debian 12's keyring has them).
TEST_APT_PACKAGES := pipx python3-venv python3-pip openssh-client curl dpkg-dev \
  mmdebstrap debian-archive-keyring

.PHONY: test-deps
test-deps: $(STAMP_APT)
	@packaging/apt-ensure $(TEST_APT_PACKAGES)
	@packaging/apt-current $$($(PYTHON) -c 'import sys; print("python3.%d" % sys.version_info[1])')

# --durations: CI's log says where the suite's time goes (the ~30 minute budget).
test: $(STAMP_VENV) test-deps
	$(VENV)/bin/pytest --durations=25

# Everything but the system tests: seconds, for the edit-test loop.
test-fast: $(STAMP_VENV)
	$(VENV)/bin/pytest -m 'not system'

demo: $(STAMP_VENV)
	$(VENV)/bin/python -m demo

# ansible-test sanity on the Ansible collection (docs/ansible.md); `make test` runs it too.
.PHONY: ansible-sanity
ansible-sanity: $(STAMP_VENV)
	VENV=$(VENV) packaging/ansible/sanity

# -- packages (docs/packaging.md) ----------------------------------------------
# Debian's own tooling builds the .deb; rpmbuild (Debian's rpm package) proves
# the RPM spec. Build dependencies are installed with apt first, never assumed.
# build-essential: dpkg-checkbuilddeps counts it as an implicit build dependency
# (dpkg-checkbuilddeps(1), -I), and apt-ensure installs no recommends.
DEB_BUILD_DEPS := build-essential dpkg-dev debhelper dh-python pybuild-plugin-pyproject \
  python3-all python3-hatchling python3-click python3-jinja2 lintian
RPM_BUILD_DEPS := rpm python3-build python3-installer python3-hatchling python3-click \
  python3-jinja2
# Where the packages land, and a scratch directory to build in (the checkout
# stays clean: dpkg-buildpackage writes into its source tree and its parent).
DIST ?= dist
PKG_BUILD ?= build/pkg

.PHONY: deb deb-deps rpm rpm-deps

deb-deps:
	@packaging/apt-ensure $(DEB_BUILD_DEPS)

rpm-deps:
	@packaging/apt-ensure $(RPM_BUILD_DEPS)

# pyrelctl_VERSION_all.deb in $(DIST), then lintian (errors fail the build).
deb: deb-deps
	packaging/build-deb "$(PKG_BUILD)/deb" "$(DIST)"

# pyrelctl-VERSION-1.noarch.rpm in $(DIST), built from a source tarball of the checkout.
rpm: rpm-deps
	packaging/build-rpm "$(PKG_BUILD)/rpm" "$(DIST)"

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
