"""The node_exporter textfile directory, opened so that nobody else chooses where root writes.

pyrelctl (root) rewrites ``pyrelctl.prom`` there after every deploy of any
app. The directory is not pyrelctl's, and on Debian its parent is not even
root's: prometheus-node-exporter's postinst makes a system user
``prometheus`` and chowns ``/var/lib/prometheus`` to it (the package ships
``/var/lib/prometheus/node-exporter`` root-owned, 0755). Before this module
(security issue 26) a release named ``prometheus`` owned
``/var/lib/prometheus`` through ``StateDirectory=``, made ``node-exporter`` a
link to ``/etc/victim``, and root wrote its file there.

So the directory is opened one component at a time from the root, each with
``openat(O_DIRECTORY | O_NOFOLLOW)``: a link (or a file) anywhere on the way
is refused, not followed, and a component swapped meanwhile cannot redirect
a path that is never looked up again; the file is then written relative to
that descriptor (hostfiles.write_atomic_at). Every directory on the way must be

* owned by root (or the caller, for ``--root DIR`` run by a user), or by the
  node exporter's system user ``prometheus``: it may only make the path end
  in a directory of its own, and then the file lands there and nowhere else;
* writable by nobody else (no group or other write bit), as sshd's
  StrictModes asks of a home directory;
* not in ``/var/lib/private`` (or the log and cache twins), where systemd
  keeps every ``DynamicUser=`` service's directories (systemd.exec(5)): their
  owners are recycled dynamic users.

App names that claim these directories are reserved (hostclaims.RESERVED).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pyrelctl.errors import HostError
from pyrelctl.hostclaims import DYNAMIC_UIDS, account_ids

#: The system user Debian's prometheus-node-exporter runs as and gives
#: /var/lib/prometheus to (its postinst: adduser --system ... prometheus).
EXPORTER_USER = "prometheus"
#: The shared parents of DynamicUser= services' directories (systemd.exec(5)).
PRIVATE_PARENTS = (
    ("var", "lib", "private"),
    ("var", "log", "private"),
    ("var", "cache", "private"),
)
#: Debian's system users have uids below 1000 (Debian policy 9.2.2, adduser.conf LAST_SYSTEM_UID).
SYSTEM_UIDS = range(1, 1000)


def trusted_owners(root: Path) -> frozenset[int]:
    """Who may own a directory on the way: root, the caller, the node exporter's user."""
    owners = {0, os.geteuid()}
    for kind, ident in account_ids(root, EXPORTER_USER):
        if kind == "user" and ident in SYSTEM_UIDS and ident not in DYNAMIC_UIDS:
            owners.add(ident)
    return frozenset(owners)


def _refused(path: Path, why: str) -> HostError:
    return HostError(
        f"the metrics textfile directory is refused: {path} {why}",
        hint="give /etc/pyrelctl/metrics.toml a textfile in a root-owned directory "
        '(textfile = "/path/pyrelctl.prom"), and find out who made this one',
    )


def open_textfile_dir(root: Path, directory: Path) -> int | None:
    """An ``O_DIRECTORY`` descriptor of ``directory`` (a path below ``root``), opened
    without following links; None when it does not exist (nobody reads a textfile
    there). Raises :class:`HostError` when a component is refused (module docstring).
    The caller closes the descriptor."""
    parts = directory.relative_to(root).parts
    if any(parts[: len(private)] == private for private in PRIVATE_PARENTS):
        raise _refused(directory, "is where systemd keeps DynamicUser= services' directories")
    owners = trusted_owners(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    where = root
    try:
        for part in parts:
            where = where / part
            try:
                child = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except FileNotFoundError:
                return None
            except OSError as e:
                # ELOOP: a symlink (open(2), O_NOFOLLOW); ENOTDIR: a file, FIFO, device.
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refused(where, "is a symlink or not a directory") from e
                raise
            os.close(fd)
            fd = child
            st = os.fstat(fd)
            if not stat.S_ISDIR(st.st_mode):  # cannot be, with O_DIRECTORY; cheap to say
                raise _refused(where, "is not a directory")
            if st.st_uid not in owners:
                raise _refused(where, f"is owned by uid {st.st_uid}, not by root")
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise _refused(where, f"is writable by others (mode {st.st_mode & 0o7777:o})")
    except BaseException:
        os.close(fd)
        raise
    return fd
