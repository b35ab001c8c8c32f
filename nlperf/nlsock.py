"""Netlink sockets to the nlperf module: control requests, and per-socket kernel counters.

The workloads' hot loops use raw ``socket`` calls on preallocated buffers; this module holds
what is shared and not hot: opening and configuring lab sockets, request/ack exchanges for
control messages, and reading a socket's drop counter the way /proc/net/netlink shows it.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path

from nlperf import wire
from nlperf.errors import RunFailed

SO_RCVBUFFORCE = 33
SO_MEMINFO = 55  # include/uapi/asm-generic/socket.h: u32[SK_MEMINFO_VARS], rmem_alloc first
PROC_NETLINK = Path("/proc/net/netlink")
DRAIN_TIMEOUT = 60.0  # seconds a stats reset waits for the deferred queue to empty
DRAIN_POLL = 0.01


def open_socket(proto: int, *, rcvbuf: int | None = None, groups: tuple[int, ...] = (),
                no_enobufs: bool = False, broadcast_error: bool = False) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
    except OSError as e:
        if e.errno == errno.EPROTONOSUPPORT:
            raise RunFailed(f"netlink protocol {proto} is not served: the nlperf module is not "
                            "loaded", hint="nlperf kmod load --mode callback") from None
        raise RunFailed(f"cannot open a netlink socket: {e.strerror}") from None
    sock.bind((0, 0))
    if rcvbuf is not None:
        set_rcvbuf(sock, rcvbuf)
    for g in groups:
        sock.setsockopt(wire.SOL_NETLINK, wire.NETLINK_ADD_MEMBERSHIP, g)
    if no_enobufs:
        sock.setsockopt(wire.SOL_NETLINK, wire.NETLINK_NO_ENOBUFS, 1)
    if broadcast_error:
        sock.setsockopt(wire.SOL_NETLINK, wire.NETLINK_BROADCAST_ERROR, 1)
    return sock


def set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Asks for a receive queue of ``size`` bytes; returns what the kernel set (it doubles
    what it is given: headroom). SO_RCVBUFFORCE lets root exceed net.core.rmem_max, so
    scenarios mean what they say; without root rmem_max caps it (sk_drops will tell)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def rmem_alloc(sock: socket.socket) -> int:
    """Bytes the socket's receive queue holds now, as the kernel charges them (skb truesize,
    not payload): SK_MEMINFO_RMEM_ALLOC, what a full queue is measured against."""
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 9 * 4)
    return int.from_bytes(raw[:4], "little")


def socket_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def netlink_drops(inode: int, table: str | None = None) -> int | None:
    """The Drops column of /proc/net/netlink for the socket with this inode."""
    text = table if table is not None else PROC_NETLINK.read_text()
    lines = text.splitlines()
    if not lines:
        return None
    cols = lines[0].split()
    try:
        drops_i, inode_i = cols.index("Drops"), cols.index("Inode")
    except ValueError:
        return None
    for line in lines[1:]:
        f = line.split()
        if len(f) > max(drops_i, inode_i) and int(f[inode_i]) == inode:
            return int(f[drops_i])
    return None


class ModuleError(RunFailed):
    def __init__(self, msg_type: int, err: int) -> None:
        name = errno.errorcode.get(err, str(err))
        super().__init__(f"module refused message type {msg_type:#x}: {name} "
                         f"({os.strerror(err)})")
        self.errno = err


class Control:
    """Request/reply exchanges with the module on a socket of its own."""

    def __init__(self, proto: int = wire.PROTO_DEFAULT, timeout: float = 5.0) -> None:
        self.sock = open_socket(proto)
        self.sock.settimeout(timeout)
        self._seq = 0
        self._buf = bytearray(1 << 16)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Control:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, msg_type: int, payload: bytes = b"", *, ack: bool = False) -> bytes:
        """Send one message; return the data reply's payload, or b"" for an ack.

        An error reply raises ModuleError with the errno the module gave.
        """
        self._seq += 1
        flags = wire.NLM_F_REQUEST | (wire.NLM_F_ACK if ack else 0)
        self.sock.sendto(wire.nlmsg(msg_type, payload, flags=flags, seq=self._seq), (0, 0))
        while True:
            try:
                n = self.sock.recv_into(self._buf)
            except TimeoutError:
                raise RunFailed(f"no reply from the module to message type {msg_type:#x}")\
                    from None
            length, rtype, _flags, seq, _pid = wire.NLMSGHDR.unpack_from(self._buf)
            if seq != self._seq:
                continue  # a late reply to an earlier request
            if rtype == wire.NLMSG_ERROR:
                err = -wire.NLMSGERR.unpack_from(self._buf, wire.NLMSG_HDRLEN)[0]
                if err:
                    raise ModuleError(msg_type, err)
                return b""
            return bytes(self._buf[wire.NLMSG_HDRLEN:min(length, n)])

    def stats(self) -> wire.Stats:
        return wire.Stats.unpack(self.request(wire.MSG_STATS_GET))

    def wait_idle(self, timeout: float = DRAIN_TIMEOUT) -> wire.Stats:
        """Stats once no message is queued or being processed (the module holds no skb).

        Polls: each poll is one stats request, which the module serves at once and counts
        apart from the workload. RunFailed after ``timeout`` seconds, naming what is left.
        """
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            depth, held = st.fields["queue_depth"], st.fields["skbs_held"]
            if not depth and not held:
                return st
            if time.monotonic() >= deadline:
                raise RunFailed(f"the module's queue did not drain within {timeout:g} s "
                                f"({depth} messages queued, {held} skbs held)",
                                hint="module.work_ns/work_sleep_us × queue_len is the longest "
                                     "a full queue takes")
            time.sleep(DRAIN_POLL)

    def reset_stats(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Start a new counting period once the queue is empty.

        A reset served while warm-up messages are still queued would count their processing
        in the new period, so the queue is drained first.
        """
        self.wait_idle(drain_timeout)
        self.request(wire.MSG_STATS_RESET, ack=True)

    def gen_start(self, groups: list[int], size: int, count: int = 0, duration_ns: int = 0,
                  rate: int = 0, alloc: str = "kernel") -> None:
        req = wire.gen_request(wire.groups_mask(groups), size, count, duration_ns, rate, alloc)
        self.request(wire.MSG_GEN_START, req, ack=True)

    def gen_stop(self) -> None:
        self.request(wire.MSG_GEN_STOP, ack=True)
