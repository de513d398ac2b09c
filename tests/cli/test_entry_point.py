"""The `pyrelctl` program as a process: cli.run(), which ends with os._exit.

run() skips the interpreter's teardown, so what that teardown would have
done must still happen: exit status, buffered output, atexit handlers.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pyrelctl(*args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    """`pyrelctl ARGS` through cli.run() in a new interpreter, after running ``code``."""
    program = f"import sys; {code}\nsys.argv = ['pyrelctl', *sys.argv[1:]]\n"
    program += "from pyrelctl.cli import run; run()"
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_the_console_script_is_run() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"pyrelctl": "pyrelctl.cli:run"}


def test_exit_status_and_output_are_those_of_main(tmp_path: Path) -> None:
    ok = pyrelctl("--root", str(tmp_path), "status")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "no apps installed\n", "")
    bad = pyrelctl("--root", str(tmp_path), "status", "no_such_app!")
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("error: ") and bad.stdout == ""
    missing = pyrelctl("--root", str(tmp_path), "status", "nosuchapp")
    assert missing.returncode == 2 and "is not installed" in missing.stderr


def test_buffered_output_is_all_written(tmp_path: Path) -> None:
    # Piped, stdout is block-buffered: what --help prints sits in the buffer
    # until the flush that os._exit alone would skip.
    proc = pyrelctl("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage: pyrelctl") and "uninstall" in proc.stdout
    assert proc.stdout.endswith("\n")


def test_atexit_handlers_still_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"import atexit, pathlib; atexit.register(pathlib.Path({str(marker)!r}).touch)"
    proc = pyrelctl("--version", code=code)
    assert proc.returncode == 0 and marker.exists(), proc.stderr


def test_a_reader_that_goes_away_gets_no_traceback() -> None:
    program = "from pyrelctl.cli import run; import sys; sys.argv = ['pyrelctl', '--help']; run()"
    reader = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # like `pyrelctl --help | head -0`
    err = reader.stderr.read().decode()
    # click's main() answers EPIPE with a quiet exit 1, as it did before run().
    assert reader.wait(timeout=60) == 1
    assert err == "", err
