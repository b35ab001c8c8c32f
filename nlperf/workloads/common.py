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


# where a sender writes stamp.seq and stamp.user_send_ns, from a message's start
SEQ_TS_AT = STAMP_AT + wire.STAMP.offset("seq")
assert wire.STAMP.offset("user_send_ns") == wire.STAMP.offset("seq") + 8  # STAMP_SEQ_TS

# From this many messages on, a datagram is stamped, and from this many parts a coalesced
# reply recorded, by a few numpy calls on strided views rather than struct calls per message.
# Where the two cost the same under emulation (6.12, TCG, docs/python-driver.md "Batched
# throughput"): stamping ~25 µs per datagram against ~2.5 µs per message; recording ~31 µs
# per datagram against ~6 µs per part (at 32, both paths: 42 against 78 µs, 41 against 234).
STAMP_VECTOR_MIN = 12
PARTS_VECTOR_MIN = 4


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
        self._columns: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if size >= wire.STAMP.size and batch >= STAMP_VECTOR_MIN:
            # each message's nlmsg_seq, stamp.seq and stamp.user_send_ns, as three columns
            fields = np.frombuffer(self.buf, dtype=np.dtype({
                "names": ["nl_seq", "seq", "sent"],
                "formats": [np.uint32, np.uint64, np.uint64],
                "offsets": [SEQ_AT, SEQ_TS_AT, SEQ_TS_AT + 8], "itemsize": self.stride}))
            self._columns = (fields["nl_seq"], fields["seq"], fields["sent"])
            self._steps = np.arange(batch, dtype=np.uint64)
            self._numbers = np.empty(batch, dtype=np.uint64)

    def head(self, n: int) -> memoryview:
        """The first ``n`` messages, for a last datagram that carries fewer than ``batch``."""
        return self._view[: n * self.stride]

    def stamp(self, seq: int, t: int, nb: int) -> None:
        """Numbers the first ``nb`` messages ``seq``, ``seq + 1``, ... (nlmsg_seq takes the low
        32 bits, stamp.seq all 64) and gives them the send time ``t``."""
        if self._columns is not None and nb >= STAMP_VECTOR_MIN:
            nl_seq, seqs, sent = self._columns
            steps, numbers = self._steps, self._numbers
            if nb < self.batch:  # a last, shorter datagram
                nl_seq, seqs, sent = nl_seq[:nb], seqs[:nb], sent[:nb]
                steps, numbers = steps[:nb], numbers[:nb]
            np.add(steps, seq, out=numbers)
            seqs[...] = numbers
            np.copyto(nl_seq, numbers, casting="unsafe")  # the low 32 bits, as the mask below
            sent.fill(t)
            return
        buf = self.buf
        for off in self.offsets[:nb]:
            SEQ.pack_into(buf, off + SEQ_AT, seq & 0xFFFFFFFF)
            STAMP_SEQ_TS.pack_into(buf, off + SEQ_TS_AT, seq, t)
            seq += 1


LOST = -1  # the receive time of a ring slot that holds no reply to log


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

    def log_burst(self, recv_times: list[int], log: StampLog) -> None:
        """The burst's replies into the log, slot i with receive time ``recv_times[i]``, slots
        without a reply (LOST) left out; empties ``recv_times`` for the next burst."""
        if LOST in recv_times:
            keep = [i for i, t in enumerate(recv_times) if t != LOST]
            log.extend(self.stamps[keep], [recv_times[i] for i in keep])
        else:
            log.extend(self.stamps[:len(recv_times)], recv_times)
        recv_times.clear()


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


class PartsReader:
    """Records the parts of coalesced replies (wire.F_COALESCE) received into ``rbuf``.

    ``record`` reads a batch of equal timed parts closed by NLMSG_DONE — what a sender's batch
    of equal messages brings back — in a few numpy calls on strided views of ``rbuf``, made
    once per reply shape; anything else part by part (``record_parts_one_by_one``). Both leave
    exactly the same records and reservoir draws.
    """

    def __init__(self, rbuf: bytearray) -> None:
        self.rbuf = rbuf
        self._views: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, bytes]] = {}

    def record(self, n: int, t_recv: int, log: StampLog, raw_sent: array[int] | None) -> int:
        """Records the parts of the ``n`` received bytes, up to NLMSG_DONE, in ``log`` as single
        replies are recorded, each with the datagram's receive time; returns how many parts
        the bytes held. Parts are echo replies only (an error always comes alone): a timed
        part's stamp times are copied, a raw part's send time is found by its seq in
        ``raw_sent``."""
        rbuf = self.rbuf
        if raw_sent is None:
            length = LEN_TYPE.unpack_from(rbuf, 0)[0]
            stride = (length + 3) & ~3
            parts = (n - wire.NLMSG_HDRLEN) // stride
            if length >= STAMPED_MIN and parts >= PARTS_VECTOR_MIN:
                done_len, done_type = LEN_TYPE.unpack_from(rbuf, parts * stride)
                if done_type == wire.NLMSG_DONE and parts * stride + ((done_len + 3) & ~3) == n:
                    lengths, stamps, want = (self._views.get((length, parts))
                                             or self._view(length, parts))
                    if lengths.tobytes() == want:  # one call; (lengths == length).all() is 3
                        log.extend(stamps, t_recv)
                        return parts
        return record_parts_one_by_one(rbuf, n, t_recv, log, raw_sent)

    def _view(self, length: int, parts: int) -> tuple[np.ndarray, np.ndarray, bytes]:
        """The parts' nlmsg_len, their four stamp times (one int64 row each), and the bytes
        of the lengths when every part is ``length`` long."""
        stride = wire.pad4(length)
        lengths = np.ndarray((parts,), np.uint32, self.rbuf, 0, (stride,))
        views = (lengths,
                 np.ndarray((parts, 4), np.int64, self.rbuf, STAMP_TIMES.start, (stride, 8)),
                 np.full(parts, length, dtype=np.uint32).tobytes())
        self._views[(length, parts)] = views
        return views


def record_parts_one_by_one(rbuf: bytearray, n: int, t_recv: int, log: StampLog,
                             raw_sent: array[int] | None) -> int:
    """PartsReader.record for any datagram of parts, one part after the other."""
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
