"""Deploys without root, by grant (issue 31).

Root lets a user or a group deploy one app's signed releases
(``pyrelctl grant``). The unprivileged ``pyrelctl`` then hands its command,
its open artifact and its stdout/stderr to a short-lived root helper over a
local socket that systemd activates (``pyrelctl-delegate.socket``,
``Accept=yes``); the helper identifies the caller by the kernel's
``SO_PEERCRED``, checks the grant and the command's options, and runs the
command through the same CLI code a root shell runs.

What lives here: the grants files (:mod:`.grants`), the options a granted
user may give (:mod:`.policy`), the wire format between the two sides
(:mod:`.wire`), the caller's side (:mod:`.client`), the root side
(:mod:`.serve`) and the helper's units (:mod:`.setup`). It imports the
layout, errors and, on the root side only, the CLI's entry point; the CLI
imports it only when a command is forwarded or a grant is changed.
"""
