"""A stand-in for a lab socket and the module's timed echo, to test the senders' loops without a VM.

The fake answers a timed echo inside send(), as the module does in callback mode, filling the
three kernel stamps from a fake monotonic clock that every clock read, send and receive moves
forward by a known amount: a record's stamps are then exact numbers. It can lose a reply,
answer with an error, report an overrun (ENOBUFS) and hold a message from another port; a
receive with nothing queued fails the way the real socket's mode would (a Python timeout:
TimeoutError; blocking with SO_RCVTIMEO: BlockingIOError; blocking without: the test hangs,
so AssertionError).
"""

from __future__ import annotations

import errno
import socket
from collections import deque
from dataclasses import dataclass, field

from nlperf import wire
from nlperf.workloads.common import TIMEVAL

CLOCK_READ_NS = 10  # what one time.monotonic_ns() call moves the fake clock
SEND_NS = 1_000  # a send, the kernel's work inside it included
RECV_NS = 100_000  # a receive
KERN_RECV_AT, PROC_START_AT, KERN_SEND_AT = 100, 200, 300  # kernel stamps, ns into the send


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        self.now += CLOCK_READ_NS
        return self.now


@dataclass
class FakeKernelSocket:
    clock: FakeClock
    lose: set[int] = field(default_factory=set)  # stamp seqs whose reply never comes
    error_for: dict[int, int] = field(default_factory=dict)  # stamp seq -> errno replied
    overrun_for: set[int] = field(default_factory=set)  # reply dropped, ENOBUFS reported
    receives: list[tuple[float | None, bytes]] = field(default_factory=list)  # modes seen
    sends: int = 0

    def __post_init__(self) -> None:
        self.queue: deque[tuple[bytes, int]] = deque()
        self.timeout: float | None = None
        self.rcvtimeo = TIMEVAL.pack(0, 0)
        self.pending_error = 0
        self._fd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # a real inode

    # --- what the senders call ------------------------------------------------------------
    def settimeout(self, t: float | None) -> None:
        self.timeout = t

    def gettimeout(self) -> float | None:
        return self.timeout

    def setsockopt(self, level: int, opt: int, value: int | bytes) -> None:
        if (level, opt) == (socket.SOL_SOCKET, socket.SO_RCVTIMEO):
            assert isinstance(value, bytes)
            self.rcvtimeo = value

    def getsockopt(self, level: int, opt: int, size: int = 0) -> int:
        return 212992

    def fileno(self) -> int:
        return self._fd.fileno()

    def close(self) -> None:
        self._fd.close()

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self.sends += 1
        sent = bytes(data)
        at = self.clock.now
        self.clock.now += SEND_NS
        off = 0
        while off < len(sent):
            length, msg_type = wire.NLMSGHDR.unpack_from(sent, off)[:2]
            self._answer(bytearray(sent[off:off + length]), msg_type, at)
            off += wire.pad4(length)
        return len(sent)

    def recvfrom_into(self, buf: bytearray | memoryview, nbytes: int = 0,
                      flags: int = 0) -> tuple[int, tuple[int, int]]:
        self.receives.append((self.timeout, self.rcvtimeo))
        self.clock.now += RECV_NS
        if self.pending_error:
            err, self.pending_error = self.pending_error, 0
            raise OSError(err, "No buffer space available")
        if not self.queue:
            if self.timeout is not None:
                raise TimeoutError("timed out")
            if self.rcvtimeo != TIMEVAL.pack(0, 0):
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            raise AssertionError("a blocking receive with nothing queued would hang")
        data, port = self.queue.popleft()
        buf[:len(data)] = data
        return len(data), (port, 0)

    def recv_into(self, buf: bytearray | memoryview, nbytes: int = 0, flags: int = 0) -> int:
        return self.recvfrom_into(buf, nbytes, flags)[0]

    # --- the fake module ------------------------------------------------------------------
    def forge(self, data: bytes, port: int) -> None:
        """A message from another socket (port id != 0), queued now."""
        self.queue.append((data, port))

    def _answer(self, msg: bytearray, msg_type: int, at: int) -> None:
        seq = wire.STAMP.unpack_from(msg, wire.NLMSG_HDRLEN)[4]
        if seq in self.lose:
            return
        if seq in self.overrun_for:
            self.pending_error = errno.ENOBUFS
            return
        if seq in self.error_for:
            err = wire.NLMSGERR.pack(-self.error_for[seq], *wire.NLMSGHDR.unpack_from(msg))
            self.queue.append((wire.nlmsg(wire.NLMSG_ERROR, err), 0))
            return
        if msg_type == wire.MSG_TIMED_ECHO:
            base = wire.NLMSG_HDRLEN
            for name, delta in (("kern_recv_ns", KERN_RECV_AT), ("proc_start_ns", PROC_START_AT),
                                ("kern_send_ns", KERN_SEND_AT)):
                wire.STAMP.struct_of(name).pack_into(msg, base + wire.STAMP.offset(name),
                                                     at + delta)
        self.queue.append((bytes(msg), 0))
