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

from pathlib import Path

from pyrelctl.errors import BadInput
from pyrelctl.layout import AppPaths

NAMESPACE = "pyrelctl-release"


def trusted_signers(app: AppPaths) -> Path | None:
    """The allowed_signers file that applies to ``app``, if the host has one."""
    for path in (app.etc / "allowed_signers", app.etc.parent / "allowed_signers"):
        if path.is_file():
            return path
    return None


def default_signature(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".sig")


def verify(app: AppPaths, artifact: Path, signature: Path | None) -> str | None:
    """Check ``artifact``'s signature when the host requires one (or one was given).

    Returns the signer's principal, or ``None`` when no signature applies.
    Raises :class:`BadInput` for a missing, unusable or bad signature.
    """
    signers = trusted_signers(app)
    if signers is None:
        if signature is not None:
            raise BadInput(
                f"--signature given, but this host trusts no key for {app.name}",
                hint=f"list trusted keys in {app.etc / 'allowed_signers'} (ssh-keygen(1) format)",
            )
        return None
    signature = signature or default_signature(artifact)
    if not signature.is_file():
        raise BadInput(
            f"{app.name} requires a signed release ({signers} lists the trusted keys), "
            f"and {signature} does not exist",
            hint=f"sign it: ssh-keygen -Y sign -f KEY -n {NAMESPACE} {artifact.name}",
        )
    if not artifact.is_file():
        raise BadInput(f"{app.name} requires a signed release: sign a tarball, not a directory")
    # Here, not at the top: most hosts trust no key, and subprocess and
    # logging would slow every install before its restart (bench/, issue 7).
    from pyrelctl.run import run

    found = run(
        ["ssh-keygen", "-Y", "find-principals", "-s", signature, "-f", signers], check=False
    )
    principals = found.stdout.split()
    if found.returncode != 0 or not principals:
        raise BadInput(f"{signature}: not made by a key trusted in {signers}")
    checked = run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            signers,
            "-I",
            principals[0],
            "-n",
            NAMESPACE,
            "-s",
            signature,
        ],
        stdin=artifact,
        check=False,
    )
    if checked.returncode != 0:
        last = (checked.stderr.strip().splitlines() or ["verification failed"])[-1]
        raise BadInput(f"{artifact.name}: bad signature ({last})")
    return principals[0]
