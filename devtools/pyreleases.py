"""Hostile python releases, made from a good one, for the tests of installing them.

Each takes a tarball made by `pyrelctl build` and writes a copy whose
SHA256SUMS is right again (whoever can rewrite a tarball can rewrite its
sums; only a signature stops that), with a payload that records the uid it
ran as in a file named `pyrelctl-evil-<tag>` in each of `dirs` and in the
venv being built. A test then checks that no such file exists where the
build must not write, and that the one in the venv (if any) names an
unprivileged uid.

* `replace_pip`: the release's own pip wheel (`tools/pip-*.whl`) is a zip
  whose `pip/__main__.py` is the payload;
* `add_pth_wheel`: one more pinned wheel whose `evil.pth` is the payload
  (every interpreter started on the venv runs it, `-I` or not);
* `add_venv_python`: the release ships `venv/bin/python`, a symlink to a
  shell script of its own.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

MARKER = "pyrelctl-evil-"
EVIL_WHEEL = "wheelhouse/evil-1.0-py3-none-any.whl"


def marker_name(tag: str) -> str:
    return f"{MARKER}{tag}"


def python_payload(tag: str, dirs: Sequence[str]) -> str:
    """Python that writes its uid into `dirs` and sys.prefix (the venv), on one line."""
    targets = [*dirs]
    return (
        "import os, sys; "
        f"[(lambda p: (lambda f: (f.write(str(os.getuid())), f.close()))(open(p, 'w')))(p) "
        f"if os.access(os.path.dirname(p), os.W_OK) else None "
        f"for p in [os.path.join(d, {marker_name(tag)!r}) for d in {targets!r} + [sys.prefix]]]"
    )


def shell_payload(tag: str, dirs: Sequence[str]) -> str:
    lines = ["#!/bin/sh"]
    for d in [*dirs, '"$(dirname "$0")"']:
        lines.append(f"id -u > {d}/{marker_name(tag)} 2>/dev/null || true")
    lines.append('exec /usr/bin/python3 "$@"')
    return "\n".join(lines) + "\n"


Change = Callable[[str, bytes], bytes]


def _rewrite(
    src: Path,
    dest: Path,
    *,
    change: Change | None = None,
    add_files: dict[str, tuple[bytes, int]] | None = None,
    add_links: dict[str, str] | None = None,
) -> Path:
    """Copy a release tarball with files changed and added, SHA256SUMS made anew."""
    files: dict[str, bytes] = {}
    members: list[tarfile.TarInfo] = []
    with tarfile.open(src) as tin:
        for member in tin.getmembers():
            if member.isfile():
                data = tin.extractfile(member).read()  # type: ignore[union-attr]
                files[member.name] = change(member.name, data) if change else data
            members.append(member)
    for name, (data, mode) in (add_files or {}).items():
        info = tarfile.TarInfo(name)
        info.mode = mode
        members.append(info)
        files[name] = data
    for name, target in (add_links or {}).items():
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        members.append(info)
    files["SHA256SUMS"] = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in sorted(files.items())
        if name != "SHA256SUMS"
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tout:
        for member in members:
            if member.isfile():
                member.size = len(files[member.name])
                tout.addfile(member, io.BytesIO(files[member.name]))
            else:
                tout.addfile(member)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(gzip.compress(out.getvalue()))
    return dest


def _zip(entries: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, text in entries.items():
            z.writestr(name, text)
    return out.getvalue()


def replace_pip(src: Path, dest: Path, dirs: Sequence[str], tag: str = "pip") -> Path:
    """The release's pip wheel replaced by one whose `__main__` is the payload."""
    fake = _zip(
        {
            "pip/__init__.py": "",
            "pip/__main__.py": python_payload(tag, dirs) + "\nraise SystemExit(1)\n",
        }
    )

    def change(name: str, data: bytes) -> bytes:
        return fake if re.fullmatch(r"tools/pip-[^/]+\.whl", name) else data

    return _rewrite(src, dest, change=change)


def add_pth_wheel(src: Path, dest: Path, dirs: Sequence[str], tag: str = "pth") -> Path:
    """One more pinned wheel, `evil 1.0`, whose `evil.pth` is the payload."""
    wheel = _zip(
        {
            "evil.pth": python_payload(tag, dirs) + "\n",
            "evil-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
            "evil-1.0.dist-info/WHEEL": (
                "Wheel-Version: 1.0\nGenerator: devtools\nRoot-Is-Purelib: true\n"
                "Tag: py3-none-any\n"
            ),
            "evil-1.0.dist-info/RECORD": (
                "evil.pth,,\nevil-1.0.dist-info/METADATA,,\nevil-1.0.dist-info/WHEEL,,\n"
                "evil-1.0.dist-info/RECORD,,\n"
            ),
        }
    )

    def change(name: str, data: bytes) -> bytes:
        if name != "release.toml":
            return data
        text = data.decode()
        packages = re.search(r"^packages = \[", text, re.M)
        assert packages is not None, text
        return (text[: packages.end()] + '"evil==1.0", ' + text[packages.end() :]).encode()

    return _rewrite(src, dest, change=change, add_files={EVIL_WHEEL: (wheel, 0o644)})


def add_venv_python(src: Path, dest: Path, dirs: Sequence[str], tag: str = "venv") -> Path:
    """The release ships `venv/bin/python`: a symlink to a script of its own."""
    script = shell_payload(tag, dirs).encode()
    return _rewrite(
        src,
        dest,
        add_files={"evil.sh": (script, 0o755)},
        add_links={"venv/bin/python": "../../evil.sh"},
    )


def add_member(src: Path, dest: Path, name: str, *, link: str | None = None) -> Path:
    """A plain extra file (or a symlink to `link`) at `name`, sums kept right."""
    if link is not None:
        return _rewrite(src, dest, add_links={name: link})
    return _rewrite(src, dest, add_files={name: (b"#!/bin/sh\n", 0o755)})
