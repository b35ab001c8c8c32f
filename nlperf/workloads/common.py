"""What the unicast and multicast workloads share: where things sit in a message, the
preallocated datagram they send, and when a sender stops.

The offsets are module-level constants derived once from the struct tables in nlperf.wire, so
the hot loops read named values (bound to locals there) instead of literal numbers, at no cost.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from nlperf import wire
from nlperf.samples import StampLog

# --- a message as it sits in a buffer: struct nlmsghdr, then the payload ----------------------
TYPE_AT = wire.NLMSGHDR.offset("nlmsg_type")  # buf[TYPE_AT]: the type's low byte (x86)
FLAGS_AT = wire.NLMSGHDR.offset("nlmsg_flags")  # buf[FLAGS_AT]: the flags' low byte (x86)
LEN_TYPE = wire.NLMSGHDR.struct_of("nlmsg_len", "nlmsg_type")
SEQ_AT = wire.NLMSGHDR.offset("nlmsg_seq")
SEQ = wire.NLMSGHDR.struct_of("nlmsg_seq")
PAYLOAD_AT = wire.NLMSG_HDRLEN
ERRNO_AT = PAYLOAD_AT + wire.NLMSGERR.offset("error")  # in an NLMSG_ERROR reply
ERRNO = wire.NLMSGERR.struct_of("error")
ERROR_MIN = ERRNO_AT + ERRNO.size  # an NLMSG_ERROR reply long enough to hold its errno

# Timed echoes and multicast data start with the stamp (a relay request has its own header
# first).
STAMP_AT = PAYLOAD_AT
STAMP_FLAGS = wire.STAMP.struct_of("flags")
STAMP_FLAGS_GROUP_SEQ = wire.STAMP.struct_of("flags", "seq")
STAMP_SEQ_TS = wire.STAMP.struct_of("seq", "user_send_ns")  # what a sender fills per message
STAMPED_MIN = wire.NLMSG_HDRLEN + wire.STAMP.size  # a message that carries a whole stamp

# The four stamp times, user send to kernel send: a StampLog record is these 32 bytes copied
# as they are, then the user receive time (TS).
STAMP_TIMES = wire.STAMP.span("user_send_ns", "kern_send_ns", base=STAMP_AT)
TS = struct.Struct("=q")
assert STAMP_TIMES.start % 8 == 0 and STAMP_TIMES.stop - STAMP_TIMES.start == 32  # 4 int64
LOG_RECV_AT = STAMP_TIMES.stop - STAMP_TIMES.start  # in a record: after the four stamp times
LOG_RECORD = StampLog.RECORD

NO_LIMIT = 1 << 62


@dataclass(frozen=True)
class Budget:
    """When a sender stops: after ``limit`` messages or at ``deadline`` (monotonic ns), whichever
    comes first; a scenario sets one of count or duration.

    ``more()`` is the rule. The hottest loops copy ``limit`` and ``deadline`` into locals and
    test them inline (a method call per message is measurable under emulation), or call
    ``expired()`` only every so many messages.
    """

    start: int
    limit: int
    deadline: int | None

    @classmethod
    def begin(cls, count: int | None, duration: float | None) -> Budget:
        """Starts the clock now."""
        start = time.monotonic_ns()
        return cls(start, count if count is not None else NO_LIMIT,
                   start + int(duration * 1e9) if duration else None)

    def expired(self, now: int | None = None) -> bool:
        """Past the deadline (``now`` or the clock, read only when there is a deadline)."""
        if self.deadline is None:
            return False
        return (time.monotonic_ns() if now is None else now) >= self.deadline

    def more(self, sent: int, now: int | None = None) -> bool:
        """Whether a sender that has sent ``sent`` messages may send another."""
        return sent < self.limit and not self.expired(now)


class Datagram:
    """``batch`` copies of one message, laid out once; only seq and send time change."""

    def __init__(self, msg_type: int, size: int, batch: int,
                 flags: int = wire.NLM_F_REQUEST) -> None:
        self.length = wire.NLMSG_HDRLEN + size
        self.stride = wire.pad4(self.length)
        self.batch = batch
        self.buf = bytearray(self.stride * batch)
        self.offsets = [i * self.stride for i in range(batch)]
        self._view = memoryview(self.buf)
        for off in self.offsets:
            wire.NLMSGHDR.pack_into(self.buf, off, self.length, msg_type, flags, 0, 0)
            if size >= wire.STAMP.size:
                wire.STAMP.pack_into(self.buf, off + STAMP_AT, wire.WIRE_VERSION,
                                     wire.STAMP.size, 0, 0, 0, 0, 0, 0, 0)

    def head(self, n: int) -> memoryview:
        """The first ``n`` messages, for a last datagram that carries fewer than ``batch``."""
        return self._view[: n * self.stride]


class ReplyRing:
    """Receive slots for a burst of timed-echo replies, so the ping-pong loop receives each
    reply where it stays until the burst is logged: no copy per message. ``stamps`` views the
    four stamp times (user send to kernel send) of every slot as int64 rows, for
    StampLog.extend. A slot holds one reply and 8 bytes more, so a longer datagram shows as
    a length other than the reply's."""

    def __init__(self, reply_len: int, slots: int) -> None:
        self.reply_len = reply_len
        self.stride = (reply_len + 8 + 7) & ~7
        self.buf = bytearray(self.stride * slots)
        whole = memoryview(self.buf)
        self.views = [whole[i * self.stride:i * self.stride + reply_len + 8]
                      for i in range(slots)]
        rows = np.frombuffer(self.buf, dtype=np.int64).reshape(slots, self.stride // 8)
        self.stamps = rows[:, STAMP_TIMES.start // 8:STAMP_TIMES.stop // 8]


def socket_wait(sock: socket.socket, timeout: float) -> None:
    select.select([sock], [], [], timeout)


TIMEVAL = struct.Struct("@ll")  # struct timeval: SO_RCVTIMEO's argument (x86-64: two longs)


@contextmanager
def kernel_timeout(sock: socket.socket, timeout_ms: int) -> Iterator[None]:
    """Make ``sock`` blocking, its receive timing out in the kernel (SO_RCVTIMEO), meanwhile.

    A Python socket with a timeout polls before every send and receive and reads the clock
    twice for the deadline: two syscalls and two clock reads per round trip more than the C
    client makes (~half the Python driver's excess over C under TCG, docs/python-driver.md). A
    blocking socket with SO_RCVTIMEO waits exactly as long in the kernel alone; an expired
    wait raises BlockingIOError (EAGAIN), not TimeoutError. Sends to the kernel never block.
    The socket's Python timeout is restored on the way out.
    """
    saved = sock.gettimeout()
    sec, ms = divmod(max(timeout_ms, 1), 1000)  # 0 would mean "wait forever"
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, TIMEVAL.pack(sec, ms * 1000))
    try:
        yield
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, TIMEVAL.pack(0, 0))
        sock.settimeout(saved)
def record_parts(rbuf: bytearray, n: int, t_recv: int, log: StampLog,
                 raw_sent: array[int] | None) -> int:
    """Records the parts of one received coalesced reply (wire.F_COALESCE), up to its
    NLMSG_DONE, in ``log`` as single replies are recorded, each with the datagram's receive
    time; returns how many parts the ``n`` bytes held. Parts are echo replies only (an error
    always comes alone): a timed part's stamp times are copied, a raw part's send time is found
    by its seq in ``raw_sent``."""
    at = parts = 0
    times_from, times_to, done = STAMP_TIMES.start, STAMP_TIMES.stop, wire.NLMSG_DONE
    unpack_head, pack_ts, buf = LEN_TYPE.unpack_from, TS.pack_into, log.buf
    kept, capacity, record = log.count, log.capacity, LOG_RECORD
    while at + wire.NLMSG_HDRLEN <= n:
        length, rtype = unpack_head(rbuf, at)
        if rtype == done or length < wire.NLMSG_HDRLEN:
            break
        parts += 1
        if kept < capacity:  # log.slot() inlined while the log has room
            off: int | None = kept * record
            kept += 1
        else:
            log.count = kept
            off = log.slot()
            kept = log.count
        if off is not None:
            if raw_sent is None:
                buf[off:off + LOG_RECV_AT] = rbuf[at + times_from:at + times_to]
            else:
                seq = SEQ.unpack_from(rbuf, at + SEQ_AT)[0]
                pack_ts(buf, off, raw_sent[seq % len(raw_sent)])
            pack_ts(buf, off + LOG_RECV_AT, t_recv)
        at += (length + 3) & ~3
    log.count = kept
    return parts
