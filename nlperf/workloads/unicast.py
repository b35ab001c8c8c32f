"""Unicast senders: closed loop (a window of messages in flight) and open loop (paced).

Each sender is its own process with its own socket. The hot loops use a preallocated datagram
and receive buffer, ``struct.Struct.pack_into`` and ``recv_into``, and record timestamps by
slice copy into a StampLog: no per-message allocation, no logging.

A timed echo's reply carries the sender's send time and the module's three kernel stamps, so
one round trip splits into user→kernel, queueing, processing and kernel→user components.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from array import array
from dataclasses import dataclass, field

import numpy as np

from nlperf import wire
from nlperf.nlsock import netlink_drops, open_socket, rmem_alloc, set_rcvbuf, socket_inode
from nlperf.samples import StampLog
from nlperf.workloads.common import (
    ERRNO,
    ERRNO_AT,
    FLAGS_AT,
    LOG_RECORD,
    LOG_RECV_AT,
    LOST,
    SEQ,
    SEQ_AT,
    SEQ_TS_AT,
    STAMP_SEQ_TS,
    STAMP_TIMES,
    STAMPED_MIN,
    TS,
    TYPE_AT,
    Budget,
    Datagram,
    PartsReader,
    ReplyRing,
    kernel_timeout,
    socket_wait,
)
from nlperf.workloads.procstat import ctx_switches, delta

# ping-pong messages between two loggings of their replies and reads of the deadline
BURST = 256

KIND_TYPES = {"timed": wire.MSG_TIMED_ECHO, "raw": wire.MSG_ECHO, "sink": wire.MSG_SINK}


@dataclass
class SenderConfig:
    proto: int = wire.PROTO_DEFAULT
    kind: str = "timed"
    message_size: int = 64
    pattern: str = "closed"
    window: int = 1
    rate: float | None = None
    batch: int = 1
    coalesce: bool = False  # ask for the batch's replies in one datagram (open loop only)
    count: int | None = None
    duration: float | None = None
    reply_timeout_ms: int = 1000
    capacity: int = 1 << 20


@dataclass
class SenderResult:
    sent: int = 0
    received: int = 0
    errors: int = 0
    timeouts: int = 0
    enobufs: int = 0
    foreign: int = 0  # messages from a sender other than the kernel (port id != 0), ignored
    errnos: dict[str, int] = field(default_factory=dict)
    elapsed_ns: int = 0
    records: np.ndarray | None = None
    max_backlog: int = 0
    achieved_rate: float | None = None
    ctx: dict[str, int] = field(default_factory=dict)
    sk_drops: int | None = None
    reply_truesize: int | None = None
    rcvbuf: int | None = None

    def note_overrun(self, e: OSError) -> None:
        """A receive error: ENOBUFS means replies overran our queue (the lost ones are
        counted when their timeout expires); anything else is re-raised."""
        if e.errno != errno.ENOBUFS:
            raise e
        self.enobufs += 1


class Sender:
    def __init__(self, cfg: SenderConfig) -> None:
        self.cfg = cfg
        if cfg.kind == "timed" and cfg.message_size < wire.STAMP.size:
            raise ValueError(f"timed echoes need message_size >= {wire.STAMP.size}")
        if cfg.coalesce and cfg.pattern != "open":  # the closed loops read one reply a recv
            raise ValueError("coalesced replies are read by the open loop only")
        self.sock = open_socket(cfg.proto)
        self.sock.settimeout(cfg.reply_timeout_ms / 1000)
        flags = wire.NLM_F_REQUEST | (wire.F_COALESCE if cfg.coalesce else 0)
        self.dgram = Datagram(KIND_TYPES[cfg.kind], cfg.message_size, cfg.batch, flags)
        self.rbuf = bytearray(max(1 << 16, self.dgram.stride + 64))
        self.seq = 0
        self.log = StampLog(cfg.capacity)
        self._nolog = StampLog(1)
        self.reply_truesize: int | None = None
        self.rcvbuf: int | None = None
        self._size_receive_buffer()

    def _size_receive_buffer(self) -> None:
        """Room for a whole window of replies, so a deep window cannot overrun its own queue.

        The kernel charges each queued reply its skb truesize (~1 KiB for a 64-byte echo), not
        its payload: a window of 256 overran the default 208 KiB and lost half its replies.
        One echo measures the charge; the queue is then forced to window x that (the kernel
        doubles what it is given: headroom). Open loop drains after every send: left alone.
        """
        cfg = self.cfg
        if cfg.pattern == "open" or cfg.kind == "sink" or cfg.window <= 1:
            return
        truesize = self._one_reply_truesize()
        if truesize is None:
            return
        need = cfg.window * truesize
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if self.rcvbuf < need:
            self.rcvbuf = set_rcvbuf(self.sock, need)
        self.reply_truesize = truesize

    def _one_reply_truesize(self) -> int | None:
        """Send one message, and read what its queued reply costs before taking it."""
        self._stamp_batch(time.monotonic_ns(), 1)
        self.sock.send(self.dgram.head(1))
        ready, _, _ = select.select([self.sock], [], [], self.cfg.reply_timeout_ms / 1000)
        if not ready:
            return None
        charged = rmem_alloc(self.sock)
        self.sock.recv_into(self.rbuf)
        return charged or None

    def close(self) -> None:
        self.sock.close()

    def run(self, count: int | None, duration: float | None, record: bool = True) -> SenderResult:
        before_ctx = ctx_switches()
        inode = socket_inode(self.sock)
        drops_before = netlink_drops(inode)
        log = self.log if record else self._nolog
        log.reset()
        if self.cfg.pattern == "open":
            res = self._open_loop(count, duration, log)
        else:
            with kernel_timeout(self.sock, self.cfg.reply_timeout_ms):
                if self.cfg.kind != "sink" and self.cfg.batch == 1 and self.cfg.window == 1:
                    res = self._ping_pong(count, duration, log)
                else:
                    res = self._closed_loop(count, duration, log)
        res.ctx = delta(ctx_switches(), before_ctx)
        drops_after = netlink_drops(inode)
        if drops_before is not None and drops_after is not None:
            res.sk_drops = drops_after - drops_before
        res.reply_truesize, res.rcvbuf = self.reply_truesize, self.rcvbuf
        if record:
            res.records = log.array()
        return res

    def _stamp_batch(self, t: int, nb: int) -> None:
        self.dgram.stamp(self.seq, t, nb)
        self.seq += nb

    def _note_raw_send(self, raw_sent: array[int], t: int, nb: int) -> None:
        # raw echoes carry no stamp: the reply's nlmsg_seq finds the send time
        for seq in range(self.seq - nb, self.seq):
            raw_sent[(seq & 0xFFFFFFFF) % len(raw_sent)] = t

    def _on_reply(self, n: int, t_recv: int, log: StampLog, res: SenderResult,
                  raw_sent: array[int] | None) -> None:
        rbuf = self.rbuf
        if n < wire.NLMSG_HDRLEN:
            res.errors += 1
            return
        rtype = rbuf[TYPE_AT] | (rbuf[TYPE_AT + 1] << 8)
        if rtype == wire.NLMSG_ERROR:
            err = -ERRNO.unpack_from(rbuf, ERRNO_AT)[0]
            name = errno.errorcode.get(err, str(err))
            res.errnos[name] = res.errnos.get(name, 0) + 1
            res.errors += 1
            return
        res.received += 1
        off = log.slot()
        if off is None:
            return
        if raw_sent is None:
            log.buf[off:off + LOG_RECV_AT] = rbuf[STAMP_TIMES]
        else:
            seq = SEQ.unpack_from(rbuf, SEQ_AT)[0]
            TS.pack_into(log.buf, off, raw_sent[seq % len(raw_sent)])
        TS.pack_into(log.buf, off + LOG_RECV_AT, t_recv)

    def _ping_pong(self, count: int | None, duration: float | None,
                   log: StampLog) -> SenderResult:
        """One echo in flight: the headline latency loop, as lean as CPython allows.

        Under emulation every bytecode and call counts (docs/python-driver.md has the
        profile). Per message: two clock reads (just before the send, just after the reply),
        one pack_into, send, recvfrom_into (its port id tells a foreign message) straight into
        the message's slot of a ring, and a list append of the receive time. Every BURST
        messages the burst goes into the log in a few numpy calls (StampLog.extend) and the
        deadline is read. The socket is blocking with a kernel-side timeout (run() sets it: a
        Python timeout would poll before every call). The nlmsg_seq field is left alone (the
        stamp carries the sequence). A reply of another length than the echo's (an error
        reply: the module's are capped at 36 bytes) takes the general path at once.
        A raw echo comes back as it was sent: its stamp holds the send time and zeros where a
        timed echo's kernel stamps are (a raw record's round trip is all that is read).
        """
        res = SenderResult()
        sock, buf = self.sock, self.dgram.buf
        send, recvfrom_into = sock.send, sock.recvfrom_into
        mono = time.monotonic_ns
        pack_stamp, stamp_off = STAMP_SEQ_TS.pack_into, SEQ_TS_AT
        ring = ReplyRing(self.dgram.length, BURST)
        views, reply_len = ring.views, ring.reply_len
        recv_times: list[int] = []  # per slot of the burst: the reply's receive time, or LOST
        append = recv_times.append
        seq = first = self.seq
        budget = Budget.begin(count, duration)
        start, expired = budget.start, budget.expired
        end = first + budget.limit
        timeouts = 0
        while seq < end and not expired():
            for view in views[:min(BURST, end - seq)]:
                pack_stamp(buf, stamp_off, seq, mono())
                send(buf)
                seq += 1
                try:
                    n, (sender, _) = recvfrom_into(view)
                    while sender:  # only the kernel (port id 0) answers for the lab
                        res.foreign += 1
                        n, (sender, _) = recvfrom_into(view)
                except BlockingIOError:  # SO_RCVTIMEO expired: the reply is late or lost
                    timeouts += 1
                    append(LOST)
                    continue
                except OSError as e:
                    res.note_overrun(e)
                    timeouts += 1  # the one reply in flight is gone
                    append(LOST)
                    continue
                append(mono())
                if n != reply_len:
                    self._odd_reply(view, n, recv_times, log, res)
            ring.log_burst(recv_times, log)
        self.seq = seq
        res.sent = seq - first
        res.timeouts = timeouts
        # every message ends as exactly one of: a timeout, an error reply, a reply received
        res.received = res.sent - timeouts - res.errors
        res.elapsed_ns = mono() - start
        res.max_backlog = 1
        return res

    def _odd_reply(self, view: memoryview, n: int, recv_times: list[int], log: StampLog,
                   res: SenderResult) -> None:
        """A ping-pong reply that is not the echo's length: the general path accounts for it
        (and logs it, if it is a stamped echo after all); its slot is not logged again."""
        self.rbuf[:n] = view[:n]
        self._on_reply(n, recv_times[-1], log, res, None)
        recv_times[-1] = LOST

    def _closed_loop(self, count: int | None, duration: float | None,
                     log: StampLog) -> SenderResult:
        """Keep ``window`` messages in flight; the hot path is inlined into local names.

        Each Python-level call or attribute lookup costs a measurable slice of a round trip
        under emulation, so the timed-echo path records a reply with one slice copy and one
        pack_into, and only errors and raw echoes take the general _on_reply path.
        """
        cfg, res = self.cfg, SenderResult()
        sock, buf, rbuf = self.sock, self.dgram.buf, self.rbuf
        batch = cfg.batch
        window = max(cfg.window, batch)
        expect_reply = cfg.kind != "sink"
        timed = cfg.kind == "timed"
        raw_sent = array("q", bytes(8 * (window * 2 + batch))) if cfg.kind == "raw" else None
        mono = time.monotonic_ns
        send, recvfrom_into = sock.send, sock.recvfrom_into
        stamp, pack_ts = self.dgram.stamp, TS.pack_into
        type_at, err_lo = TYPE_AT, wire.NLMSG_ERROR
        reply_min, record, recv_at = STAMPED_MIN, LOG_RECORD, LOG_RECV_AT
        times = STAMP_TIMES
        log_buf, capacity, kept = log.buf, log.capacity, log.count
        budget = Budget.begin(count, duration)
        start, limit, deadline = budget.start, budget.limit, budget.deadline
        sent = in_flight = 0
        seq = self.seq
        while True:
            nb = min(batch, limit - sent)  # the last datagram may carry fewer messages
            # budget.more(sent) inlined: limit is in nb, then the deadline
            if (nb > 0 and (in_flight + nb <= window or not expect_reply)
                    and (deadline is None or mono() < deadline)):
                t = mono()
                stamp(seq, t, nb)
                seq += nb
                self.seq = seq
                if raw_sent is not None:
                    self._note_raw_send(raw_sent, t, nb)
                try:
                    send(buf if nb == batch else self.dgram.head(nb))
                except OSError as e:
                    res.errors += nb
                    name = errno.errorcode.get(e.errno or 0, "EIO")
                    res.errnos[name] = res.errnos.get(name, 0) + nb
                    continue
                sent += nb
                if expect_reply:
                    in_flight += nb
                continue
            if in_flight == 0:
                break
            try:
                n, (sender, _) = recvfrom_into(rbuf)
            except BlockingIOError:  # SO_RCVTIMEO expired (run() set it)
                # replies the kernel dropped (receive queue full): count them, never hang
                res.timeouts += in_flight
                in_flight = 0
                continue
            except OSError as e:
                res.note_overrun(e)
                continue
            t = mono()
            if sender:  # only the kernel (port id 0) answers for the lab
                res.foreign += 1
                continue
            in_flight -= 1
            if timed and n >= reply_min and rbuf[type_at] != err_lo:
                res.received += 1
                if kept < capacity:
                    off = kept * record
                    log_buf[off:off + recv_at] = rbuf[times]
                    pack_ts(log_buf, off + recv_at, t)
                    kept += 1
                    continue
                log.count = kept
                slot = log.slot()
                kept = log.count
                if slot is not None:
                    log_buf[slot:slot + recv_at] = rbuf[times]
                    pack_ts(log_buf, slot + recv_at, t)
                continue
            log.count = kept
            self._on_reply(n, t, log, res, raw_sent)
            kept = log.count
        log.count = kept
        res.sent = sent
        res.elapsed_ns = mono() - start
        res.max_backlog = window
        return res

    def _open_loop(self, count: int | None, duration: float | None,
                   log: StampLog) -> SenderResult:
        """Send on a fixed schedule; between sends, take every reply already queued.

        Replies are drained after each send, so a sender running behind its schedule does not
        starve its own receive queue into overrunning. With ``coalesce`` one receive takes a
        datagram's replies at once.
        """
        cfg, res = self.cfg, SenderResult()
        sock, dgram, rbuf = self.sock, self.dgram, self.rbuf
        assert cfg.rate is not None
        interval = int(cfg.batch * 1e9 / cfg.rate)
        expect_reply = cfg.kind != "sink"
        raw_sent = array("q", bytes(8 << 16)) if cfg.kind == "raw" else None
        # bound once: under emulation each attribute read and call per datagram shows
        mono, stamp, record = time.monotonic_ns, dgram.stamp, PartsReader(rbuf).record
        send, recvfrom_into, batch, full = sock.send, sock.recvfrom_into, cfg.batch, dgram.buf
        budget = Budget.begin(count, duration)
        limit, deadline = budget.limit, budget.deadline
        start = next_send = last_reply = budget.start
        sent = in_flight = max_backlog = 0
        timeout_ns = cfg.reply_timeout_ms * 1_000_000
        sock.setblocking(False)
        try:
            while True:
                now = mono()
                sending = sent < limit and (deadline is None or now < deadline)
                if sending and now >= next_send:
                    nb = min(batch, limit - sent)
                    stamp(self.seq, now, nb)
                    self.seq += nb
                    if raw_sent is not None:
                        self._note_raw_send(raw_sent, now, nb)
                    try:
                        send(full if nb == batch else dgram.head(nb))
                        sent += nb
                        if expect_reply:
                            in_flight += nb
                            if in_flight > max_backlog:
                                max_backlog = in_flight
                    except BlockingIOError:
                        pass  # the send slot is lost: the achieved rate shows it
                    next_send += interval
                got = 0
                while in_flight:
                    try:
                        n, (sender, _) = recvfrom_into(rbuf)
                    except BlockingIOError:
                        break
                    except OSError as e:
                        res.note_overrun(e)
                        continue
                    if sender:  # only the kernel (port id 0) answers for the lab
                        res.foreign += 1
                        continue
                    got += 1
                    last_reply = mono()
                    if n > FLAGS_AT and rbuf[FLAGS_AT] & wire.NLM_F_MULTI:  # coalesced replies
                        parts = record(n, last_reply, log, raw_sent)
                        res.received += parts
                        in_flight -= parts
                        continue
                    self._on_reply(n, last_reply, log, res, raw_sent)
                    in_flight -= 1
                if sending:
                    if not got and next_send - mono() > 200_000:
                        socket_wait(sock, (next_send - mono()) / 1e9)
                    continue
                if in_flight == 0 or mono() - last_reply > timeout_ns:
                    res.timeouts += in_flight
                    break
                socket_wait(sock, 0.001)
        finally:
            sock.settimeout(cfg.reply_timeout_ms / 1000)
            res.sent, res.max_backlog = sent, max_backlog
        res.elapsed_ns = mono() - start
        res.achieved_rate = res.sent / (res.elapsed_ns / 1e9) if res.elapsed_ns else 0.0
        return res
