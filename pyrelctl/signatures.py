"""Release signatures with SSH keys (``ssh-keygen -Y sign`` / ``-Y verify``).

Operators already manage SSH keys; OpenSSH's signature format needs no
other tool. The build machine signs the artifact:

    ssh-keygen -Y sign -f ~/.ssh/release_key -n pyrelctl-release shop-1.0.0.tar.gz

which writes ``shop-1.0.0.tar.gz.sig``. A host trusts keys in an
allowed_signers file (ssh-keygen(1), "ALLOWED SIGNERS"):
``/etc/pyrelctl/APP/allowed_signers`` for one app, or
``/etc/pyrelctl/allowed_signers`` for every app. Once such a file exists,
every install of that app must carry a good signature; the namespace
``pyrelctl-release`` keeps a signature made for something else (a git
commit, a file for another tool) from passing as a release signature.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path
from typing import IO

from pyrelctl.errors import BadInput
from pyrelctl.layout import AppPaths, Layout

NAMESPACE = "pyrelctl-release"
#: The keys trusted for every app of the host (below the root).
HOST_SIGNERS = "etc/pyrelctl/allowed_signers"


def trusted_signers(app: AppPaths) -> Path | None:
    """The allowed_signers file that applies to ``app``, if the host has one."""
    for path in (app.etc / "allowed_signers", app.layout.root / HOST_SIGNERS):
        if path.is_file():
            return path
    return None


def default_signature(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".sig")


class Verification:
    """The signature check of one install, made on the bytes that get installed.

    The artifact is read once (openartifact.open_artifact): this object is its
    ``verify`` callback, called with those bytes before anything of them is
    parsed, so a file swapped on disk after the check (an inotify race) is
    never what gets unpacked, and a hostile archive costs nothing before its
    signature is checked. Which allowed_signers applies must be known before
    the artifact is read: the app's own, named by ``--app`` or by the
    artifact's file name, else the host's ``/etc/pyrelctl/allowed_signers``.
    :meth:`confirm` then checks, once the release is known, that this was the
    file its app requires.
    """

    def __init__(self, layout: Layout, app: str | None, artifact: Path, signature: Path | None):
        self.artifact = artifact
        self.explicit = signature is not None
        self.signature = signature or default_signature(artifact)
        self.signers = applicable_signers(layout, app, artifact)
        self.signer: str | None = None

    @property
    def needed(self) -> bool:
        """Whether the artifact's bytes must be verified as they are read."""
        return self.signers is not None

    def __call__(self, stream: IO[bytes]) -> None:
        assert self.signers is not None
        self.signer = _verify_stream(self.signers, self.artifact, self.signature, stream)

    def confirm(self, app: AppPaths, release_app: str) -> str | None:
        """The signer, once the release is known to belong to ``app`` (installed
        under that name; ``release_app`` is the name the release gives itself).

        Raises :class:`BadInput` when ``app`` requires a signature that was not
        checked against its own allowed_signers, when ``--signature`` was given
        and nothing requires one, and when a signed release is installed under
        another name than its own with a key not trusted for that name.
        """
        required = trusted_signers(app)
        if required is None:
            if self.explicit:
                raise BadInput(
                    f"--signature given, but this host trusts no key for {app.name}",
                    hint=f"list trusted keys in {app.etc / 'allowed_signers'} "
                    "(ssh-keygen(1) format)",
                )
            return None
        if self.signer is None and not self.signature.is_file():
            raise _unsigned(required, self.artifact, self.signature)
        if required != self.signers or self.signer is None:
            raise BadInput(
                f"{app.name} requires a release signed by a key in {required}, and the "
                "artifact must be checked against it before it is read",
                hint=f"name the app: pyrelctl install {self.artifact} --app {app.name}",
            )
        if app.name != release_app and required != app.etc / "allowed_signers":
            # A key trusted host-wide signed this release as `release_app`;
            # nothing says its signer meant it to run as another app.
            raise BadInput(
                f"{self.artifact.name} is signed as a release of {release_app}; installing it "
                f"as {app.name} needs a key trusted for {app.name} itself",
                hint=f"list the signer's key in {app.etc / 'allowed_signers'}",
            )
        return self.signer


def applicable_signers(layout: Layout, app: str | None, artifact: Path) -> Path | None:
    """The allowed_signers an install of ``artifact`` is checked against, known
    before it is read: ``app``'s (``--app``), else that of the app the file is
    named after, else the host's; None when none applies."""
    if app is not None:
        return trusted_signers(layout.app(app))
    host_wide = layout.root / HOST_SIGNERS
    return _by_file_name(layout, artifact) or (host_wide if host_wide.is_file() else None)


def _by_file_name(layout: Layout, artifact: Path) -> Path | None:
    """The allowed_signers of the app an artifact is named after (``NAME-VERSION.tar.gz``,
    as ``mix release`` and ``pyrelctl build`` name it), if that app has one.

    Only a guess of which file to check against before the artifact is read:
    :meth:`Verification.confirm` refuses the install if the release then
    turns out to belong to another app.
    """
    name = artifact.name.replace("_", "-")
    found = [
        path
        for path in (layout.root / "etc/pyrelctl").glob("*/allowed_signers")
        if name.startswith(path.parent.name + "-") and path.is_file()
    ]
    return max(found, key=lambda p: len(p.parent.name), default=None)


def _unsigned(signers: Path, artifact: Path, signature: Path) -> BadInput:
    return BadInput(
        f"this host requires a signed release ({signers} lists the trusted keys), "
        f"and {signature} does not exist",
        hint=f"sign it: ssh-keygen -Y sign -f KEY -n {NAMESPACE} {artifact.name}",
    )


def _verify_stream(signers: Path, artifact: Path, signature: Path, stream: IO[bytes]) -> str:
    """``ssh-keygen -Y verify`` of ``stream``'s bytes; the signer's principal."""
    if not signature.is_file():
        raise _unsigned(signers, artifact, signature)
    # Here, not at the top: most hosts trust no key, and subprocess and
    # logging would slow every install before its restart (bench/, issue 7).
    import tempfile

    from pyrelctl.run import run

    found = run(
        ["ssh-keygen", "-Y", "find-principals", "-s", signature, "-f", signers], check=False
    )
    principals = found.stdout.split()
    if found.returncode != 0 or not principals:
        raise BadInput(f"{signature}: not made by a key trusted in {signers}")
    with contextlib.ExitStack() as stack:
        try:
            stream.fileno()
            source = stream
        except (AttributeError, OSError):  # io.BytesIO: ssh-keygen needs a descriptor
            source = stack.enter_context(tempfile.TemporaryFile())
            shutil.copyfileobj(stream, source)
            source.seek(0)
        checked = run(
            [
                "ssh-keygen", "-Y", "verify", "-f", signers, "-I", principals[0],
                "-n", NAMESPACE, "-s", signature,
            ],
            stdin=source,
            check=False,
        )  # fmt: skip
    stream.seek(0)
    if checked.returncode != 0:
        last = (checked.stderr.strip().splitlines() or ["verification failed"])[-1]
        raise BadInput(f"{artifact.name}: bad signature ({last})")
    return principals[0]


Natural = tuple[tuple[int, int | str], ...]


def _natural(text: str) -> Natural:
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.findall(r"[0-9]+|[^0-9]+", text)
    )


def version_key(version: str) -> tuple[Natural, int, Natural]:
    """An order of release versions, for telling a downgrade: numbers compare as
    numbers (1.10 after 1.9), and a pre-release part after the first ``-`` or
    ``~`` (SemVer's ``1.0.0-rc.1``, Debian's ``1.0~rc1``) comes before the
    release itself."""
    match = re.fullmatch(r"([^-~]*)(?:([-~])(.*))?", version, re.DOTALL)
    assert match is not None  # every string matches
    base, sep, pre = match[1], match[2] or "", match[3] or ""
    return (_natural(base), 0 if sep else 1, _natural(pre))
