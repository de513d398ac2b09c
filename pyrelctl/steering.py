"""Steering a ``SO_REUSEPORT`` group's new connections to one listener.

Each release gets a listening socket of its own on the app's address, all in
one ``SO_REUSEPORT`` group (``ReusePort=`` in their socket units). Without
more, the kernel spreads new connections over the group by a hash of the
4-tuple, so an unverified release would take its share. A classic BPF
program attached to the group (``SO_ATTACH_REUSEPORT_CBPF``, socket(7))
picks the listener instead: it returns an *index* into the group, and the
kernel queues the connection there. What the kernel does with that index
(net/core/sock_reuseport.c; measured in docs/zero-downtime.md, "Second
generation"):

* the index is the listener's place in the order the group's sockets called
  listen(2): the first is 0, a listener that joins goes last;
* when a listener leaves (closed, or shut down), the last one takes its
  place: with ``[A, B, C]``, closing ``A`` gives ``[C, B]``;
* an index beyond the group (``index >= number of listeners``) is no error:
  the connection is spread by hash over *every* listener, the unverified one
  too. So a program must never return an index that may not exist.

A program is attached through any one socket of the group and applies to the
whole group. Attaching another replaces it in one step (the kernel swaps the
pointer under RCU: every connection sees either program), which is how the
target switches. It stays attached after the socket used to attach it is
closed, as long as the group has a listener.

The verification of a new release needs connections that reach it and only
it, through the app's own address: :func:`program` takes a :class:`Probe`,
the source address and port a health probe connects from, and sends that
one connection to the new listener while every other goes to the serving
one. The program reads the SYN's IP and TCP headers (``SKF_NET_OFF``,
Documentation/networking/filter.rst): IPv4 with or without IP options (it
reads the header length), IPv6 only when TCP follows the fixed header
directly (no extension headers, which a client on the host does not send).
:class:`Group` attaches a program through a listener that PID 1 holds.

This module builds, encodes and attaches the programs; it never decides
which release is verified. Unix sockets have no ``SO_REUSEPORT`` group: see
the docs for what they get instead.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyrelctl.errors import HostError

# include/uapi/asm-generic/socket.h (x86, arm64, riscv and the other
# asm-generic architectures; alpha, mips, parisc and sparc number them
# differently and are not supported here).
SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68

# include/uapi/linux/filter.h and bpf_common.h
_LD, _LDX, _ALU, _JMP, _RET = 0x00, 0x01, 0x04, 0x05, 0x06
_W, _H, _B = 0x00, 0x08, 0x10
_ABS, _IND, _MSH = 0x20, 0x40, 0xA0
_RSH, _JEQ, _K = 0x70, 0x10, 0x00
#: Offsets from here on address the packet's network (IP) header.
SKF_NET_OFF = -0x100000
#: BPF_MAXINSNS: the longest classic program the kernel takes.
MAX_INSNS = 4096
#: pidfd_getfd(2): 438 in the unified syscall table every architecture uses since Linux 5.6.
SYS_PIDFD_GETFD = 438


class SteeringError(HostError):
    """The kernel refused a steering program, or a group listener could not be found."""


@dataclass(frozen=True)
class Insn:
    """One classic BPF instruction (``struct sock_filter``)."""

    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0

    def pack(self) -> bytes:
        return struct.pack("=HBBI", self.code, self.jt, self.jf, self.k & 0xFFFFFFFF)


@dataclass(frozen=True)
class Probe:
    """The source of a probe connection: the address and port its socket is bound to."""

    host: str
    port: int

    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        ip = ipaddress.ip_address(self.host)
        # A v4 client of a dual-stack v6 listener sends IPv4 packets: match those.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip


def _check_index(name: str, index: int) -> None:
    if not 0 <= index < 0x10000:
        raise ValueError(f"{name} index {index} is not a listener index")


def program(
    serving: int, *, probe: Probe | None = None, probe_to: int | None = None
) -> tuple[Insn, ...]:
    """The program that queues every new connection on listener ``serving``;
    with ``probe``, the connection from that source goes to ``probe_to``."""
    _check_index("serving", serving)
    if probe is None:
        return (Insn(_RET | _K, k=serving),)
    if probe_to is None:
        raise ValueError("a probe needs the index of the listener it goes to")
    _check_index("probe", probe_to)
    if not 0 < probe.port < 0x10000:
        raise ValueError(f"probe port {probe.port} is not a port")
    ip = probe.address()
    # [checks..., ret probe_to, ret serving]: built backwards from the two
    # exits, so that each check knows how far "ret serving" is (classic BPF
    # jumps forward only, by an 8-bit offset). A check that fails jumps
    # there; the connection that passes every check falls into "ret probe_to".
    out: list[Insn] = [Insn(_RET | _K, k=probe_to), Insn(_RET | _K, k=serving)]

    def check(k: int) -> None:  # if A != k: ret serving
        out.insert(0, Insn(_JMP | _JEQ | _K, jt=0, jf=len(out) - 1, k=k))

    def prepend(insn: Insn) -> None:
        out.insert(0, insn)

    if ip.version == 4:
        check(probe.port)
        prepend(Insn(_LD | _H | _IND, k=SKF_NET_OFF))  # A = TCP source port at X
        prepend(Insn(_LDX | _B | _MSH, k=SKF_NET_OFF))  # X = 4 * IHL
        check(int(ip))
        prepend(Insn(_LD | _W | _ABS, k=SKF_NET_OFF + 12))  # IPv4 source address
        version = 4
    else:
        check(probe.port)
        prepend(Insn(_LD | _H | _ABS, k=SKF_NET_OFF + 40))  # TCP source port
        for offset, word in reversed(list(enumerate(struct.unpack("!4I", ip.packed)))):
            check(word)
            prepend(Insn(_LD | _W | _ABS, k=SKF_NET_OFF + 8 + 4 * offset))
        check(socket.IPPROTO_TCP)
        prepend(Insn(_LD | _B | _ABS, k=SKF_NET_OFF + 6))  # next header
        version = 6
    check(version)
    prepend(Insn(_ALU | _RSH | _K, k=4))
    prepend(Insn(_LD | _B | _ABS, k=SKF_NET_OFF))  # the IP version nibble
    return tuple(out)


def _fileno(sock: socket.socket | int) -> int:
    return sock if isinstance(sock, int) else sock.fileno()


def attach(sock: socket.socket | int, insns: Sequence[Insn]) -> None:
    """Attach ``insns`` to the ``SO_REUSEPORT`` group of the listening socket
    ``sock``, replacing the group's program in one step."""
    if not 0 < len(insns) <= MAX_INSNS:
        raise ValueError(f"a classic BPF program has 1 to {MAX_INSNS} instructions")
    code = b"".join(insn.pack() for insn in insns)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; },
    # native layout; the kernel copies the instructions during the call.
    fprog = struct.pack("@HP", len(insns), ctypes.addressof(buf))
    target = socket.socket(fileno=os.dup(_fileno(sock)))
    try:
        target.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as e:
        raise SteeringError(
            f"the kernel refused the steering program: {e.strerror}",
            hint="the socket must listen with SO_REUSEPORT (ReusePort=yes)",
        ) from e
    finally:
        target.close()  # our duplicate only: the listener stays open


def detach(sock: socket.socket | int) -> None:
    """Remove the group's program: connections are spread by hash again."""
    target = socket.socket(fileno=os.dup(_fileno(sock)))
    try:
        target.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
    except FileNotFoundError:
        pass  # no program was attached
    finally:
        target.close()


def probe_socket(host: str) -> tuple[socket.socket, Probe]:
    """A TCP socket bound to ``host`` and a free port, to connect a probe from,
    with the :class:`Probe` that names it. The caller closes it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
    except OSError:
        sock.close()
        raise
    return sock, Probe(host=host, port=sock.getsockname()[1])


# -- net.ipv4.tcp_migrate_req ------------------------------------------------

#: Per network namespace (a new one starts at 0 whatever the host's is).
MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def migration_enabled(setting: Path = MIGRATE_REQ) -> bool:
    """Whether connections queued on a closing listener of a group move to
    another listener of it (Linux 5.14, Documentation/networking/ip-sysctl.rst)
    instead of being reset. False where the kernel has no such setting."""
    try:
        return setting.read_text().strip() == "1"
    except FileNotFoundError:
        return False


def set_migration(on: bool, setting: Path = MIGRATE_REQ) -> None:
    """Turn migration on or off in this network namespace (root only)."""
    try:
        setting.write_text("1\n" if on else "0\n")
    except OSError as e:
        raise SteeringError(
            f"cannot set net.ipv4.tcp_migrate_req: {e.strerror}",
            hint="Linux 5.14 or later, as root, in the app's network namespace",
        ) from e


# -- finding a listener of the group to attach through ----------------------


def _hex_address(family: int, host: str, port: int) -> str:
    """An address as ``/proc/net/tcp{,6}`` prints it (native-order 32-bit words)."""
    packed = socket.inet_pton(family, host)
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def listening_inodes(host: str, port: int, *, proc: Path = Path("/proc")) -> list[int]:
    """The inodes of every socket listening on ``host:port`` in this network
    namespace, in table order: one per member of a ``SO_REUSEPORT`` group.
    (The table's order is the hash chain's, not the group's index.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    local = _hex_address(family, host, port)
    table = proc / "net" / ("tcp6" if family == socket.AF_INET6 else "tcp")
    found = []
    with open(table, encoding="ascii") as lines:
        next(lines, None)
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[1] == local and fields[3] == "0A":  # TCP_LISTEN
                found.append(int(fields[9]))
    return found


def fd_of_inode(pid: int, inodes: Iterable[int], *, proc: Path = Path("/proc")) -> int | None:
    """The number of a descriptor of process ``pid`` open on one of ``inodes``."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    fd_dir = proc / str(pid) / "fd"
    for name in sorted(os.listdir(fd_dir), key=int):
        try:
            if os.readlink(fd_dir / name) in wanted:
                return int(name)
        except OSError:
            continue  # closed meanwhile
    return None


def take_fd(pid: int, fd: int) -> socket.socket:
    """A duplicate of descriptor ``fd`` of process ``pid`` (pidfd_getfd(2), Linux
    5.6; needs ptrace access to it: root for PID 1). The process keeps its own."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        ours = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if ours < 0:
            err = ctypes.get_errno()
            raise SteeringError(f"cannot take descriptor {fd} of process {pid}: {os.strerror(err)}")
    finally:
        os.close(pidfd)
    return socket.socket(fileno=ours)


def group_member(pid: int, inodes: Iterable[int], *, proc: Path = Path("/proc")) -> socket.socket:
    """A duplicate of one of ``inodes`` (listeners of one group) that process
    ``pid`` holds: with PID 1, a socket unit's listener, to attach a program through."""
    fd = fd_of_inode(pid, inodes, proc=proc)
    if fd is None:
        raise SteeringError(f"process {pid} holds none of the listeners {sorted(inodes)}")
    return take_fd(pid, fd)


@dataclass(frozen=True)
class Group:
    """The ``SO_REUSEPORT`` group listening on ``host:port`` in this network
    namespace, reached through the copy of a listener that process ``pid``
    holds (PID 1 for socket units)."""

    host: str
    port: int
    pid: int = 1

    def size(self) -> int:
        """How many listeners the group has now."""
        return len(listening_inodes(self.host, self.port))

    def steer(
        self, serving: int, *, probe: Probe | None = None, probe_to: int | None = None
    ) -> None:
        """Send every new connection to listener ``serving`` (and ``probe``'s to
        ``probe_to``). Refuses an index the group does not have now: the kernel
        would spread the connections over every listener instead."""
        insns = program(serving, probe=probe, probe_to=probe_to)
        inodes = listening_inodes(self.host, self.port)
        highest = max(serving, probe_to if probe_to is not None else 0)
        if highest >= len(inodes):
            raise SteeringError(
                f"{self.host}:{self.port} has {len(inodes)} listener(s), no index {highest}"
            )
        sock = group_member(self.pid, inodes)
        try:
            attach(sock, insns)
        finally:
            sock.close()
