"""Stand-in for the get-pip.py script ansible-test downloads before a sanity test.

ansible-test makes each sanity test's virtualenv without pip, then runs
``get-pip-VERSION.py`` fetched from ci-files.testing.ansible.com, or a copy
cached as ``~/.ansible/test/cache/get_pip_VERSION.py``. That host is not
reachable from the machines this project is built on (only PyPI is), so
packaging/ansible/sanity caches this file under that name instead: it
installs the pip that Python itself bundles (ensurepip; Debian's
python3-venv), then lets that pip install what ansible-test asked for
(``pip==VERSION``, from PyPI) with the same options.
"""

from __future__ import annotations

import subprocess
import sys

# get-pip.py's own options; ensurepip installs no setuptools or wheel anyway.
OWN_OPTIONS = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    pip_args = [a for a in sys.argv[1:] if a not in OWN_OPTIONS]
    subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True)
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", *pip_args], check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
