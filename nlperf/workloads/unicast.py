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
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from nlperf import wire
from nlperf.nlsock import netlink_drops, open_socket, socket_inode
from nlperf.samples import StampLog
from nlperf.workloads.procstat import ctx_switches, delta

# nlmsg_seq (u32) at 8; stamp.seq and stamp.user_send_ns (u64 each) at 16 + 8
_SEQ = struct.Struct("=I")
_STAMP_SEQ_TS = struct.Struct("=QQ")
_TS = struct.Struct("=q")
_STAMP_TIMES = slice(wire.NLMSG_HDRLEN + 16, wire.NLMSG_HDRLEN + 48)  # user_send..kern_send
_ERRNO = struct.Struct("=i")

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
    errnos: dict[str, int] = field(default_factory=dict)
    elapsed_ns: int = 0
    records: np.ndarray | None = None
    max_backlog: int = 0
    achieved_rate: float | None = None
    ctx: dict[str, int] = field(default_factory=dict)
    sk_drops: int | None = None


class Datagram:
    """``batch`` copies of one message, laid out once; only seq and send time change."""

    def __init__(self, msg_type: int, size: int, batch: int) -> None:
        self.length = wire.NLMSG_HDRLEN + size
        self.stride = wire.pad4(self.length)
        self.batch = batch
        self.buf = bytearray(self.stride * batch)
        self.offsets = [i * self.stride for i in range(batch)]
        for off in self.offsets:
            wire.NLMSGHDR.pack_into(self.buf, off, self.length, msg_type, wire.NLM_F_REQUEST, 0, 0)
            if size >= wire.STAMP.size:
                wire.STAMP.pack_into(self.buf, off + wire.NLMSG_HDRLEN, wire.WIRE_VERSION,
                                     wire.STAMP.size, 0, 0, 0, 0, 0, 0, 0)


class Sender:
    def __init__(self, cfg: SenderConfig) -> None:
        self.cfg = cfg
        if cfg.kind == "timed" and cfg.message_size < wire.STAMP.size:
            raise ValueError(f"timed echoes need message_size >= {wire.STAMP.size}")
        self.sock = open_socket(cfg.proto)
        self.sock.settimeout(cfg.reply_timeout_ms / 1000)
        self.dgram = Datagram(KIND_TYPES[cfg.kind], cfg.message_size, cfg.batch)
        self.rbuf = bytearray(max(1 << 16, self.dgram.stride + 64))
        self.seq = 0
        self.log = StampLog(cfg.capacity)
        self._nolog = StampLog(1)

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
            res = self._closed_loop(count, duration, log)
        res.ctx = delta(ctx_switches(), before_ctx)
        drops_after = netlink_drops(inode)
        if drops_before is not None and drops_after is not None:
            res.sk_drops = drops_after - drops_before
        if record:
            res.records = log.array()
        return res

    def _stamp_batch(self, t: int) -> None:
        buf, seq = self.dgram.buf, self.seq
        for off in self.dgram.offsets:
            _SEQ.pack_into(buf, off + 8, seq & 0xFFFFFFFF)
            _STAMP_SEQ_TS.pack_into(buf, off + wire.NLMSG_HDRLEN + 8, seq, t)
            seq += 1
        self.seq = seq

    def _note_raw_send(self, raw_sent: np.ndarray, t: int) -> None:
        # raw echoes carry no stamp: the reply's nlmsg_seq finds the send time
        for seq in range(self.seq - self.cfg.batch, self.seq):
            raw_sent[(seq & 0xFFFFFFFF) % len(raw_sent)] = t

    def _on_reply(self, n: int, t_recv: int, log: StampLog, res: SenderResult,
                  raw_sent: np.ndarray | None) -> None:
        rbuf = self.rbuf
        if n < wire.NLMSG_HDRLEN:
            res.errors += 1
            return
        rtype = rbuf[4] | (rbuf[5] << 8)
        if rtype == wire.NLMSG_ERROR:
            err = -_ERRNO.unpack_from(rbuf, wire.NLMSG_HDRLEN)[0]
            name = errno.errorcode.get(err, str(err))
            res.errnos[name] = res.errnos.get(name, 0) + 1
            res.errors += 1
            return
        res.received += 1
        off = log.slot()
        if off is None:
            return
        if raw_sent is None:
            log.buf[off:off + 32] = rbuf[_STAMP_TIMES]
        else:
            seq = _SEQ.unpack_from(rbuf, 8)[0]
            _TS.pack_into(log.buf, off, int(raw_sent[seq % len(raw_sent)]))
        _TS.pack_into(log.buf, off + 32, t_recv)

    def _closed_loop(self, count: int | None, duration: float | None,
                     log: StampLog) -> SenderResult:
        cfg, res = self.cfg, SenderResult()
        sock, dgram, rbuf = self.sock, self.dgram, self.rbuf
        batch = cfg.batch
        window = max(cfg.window, batch)
        expect_reply = cfg.kind != "sink"
        raw_sent = np.zeros(window * 2 + batch, dtype=np.int64) if cfg.kind == "raw" else None
        mono = time.monotonic_ns
        start = mono()
        deadline = start + int(duration * 1e9) if duration else None
        limit = count if count is not None else 1 << 62
        in_flight = 0
        send, recv_into = sock.send, sock.recv_into
        while True:
            sending = res.sent < limit and (deadline is None or mono() < deadline)
            if sending and (in_flight + batch <= window or not expect_reply):
                t = mono()
                self._stamp_batch(t)
                if raw_sent is not None:
                    self._note_raw_send(raw_sent, t)
                try:
                    send(dgram.buf)
                except OSError as e:
                    res.errors += batch
                    name = errno.errorcode.get(e.errno or 0, "EIO")
                    res.errnos[name] = res.errnos.get(name, 0) + batch
                    continue
                res.sent += batch
                if expect_reply:
                    in_flight += batch
                continue
            if in_flight == 0:
                break
            try:
                n = recv_into(rbuf)
            except TimeoutError:
                # replies the kernel dropped (receive queue full): count them, never hang
                res.timeouts += in_flight
                in_flight = 0
                continue
            self._on_reply(n, mono(), log, res, raw_sent)
            in_flight -= 1
        res.elapsed_ns = mono() - start
        res.max_backlog = window
        return res

    def _open_loop(self, count: int | None, duration: float | None,
                   log: StampLog) -> SenderResult:
        cfg, res = self.cfg, SenderResult()
        sock, dgram, rbuf = self.sock, self.dgram, self.rbuf
        assert cfg.rate is not None
        interval = int(cfg.batch * 1e9 / cfg.rate)
        expect_reply = cfg.kind != "sink"
        raw_sent = np.zeros(1 << 16, dtype=np.int64) if cfg.kind == "raw" else None
        mono = time.monotonic_ns
        start = mono()
        deadline = start + int(duration * 1e9) if duration else None
        limit = count if count is not None else 1 << 62
        next_send = start
        in_flight = 0
        last_reply = start
        timeout_ns = cfg.reply_timeout_ms * 1_000_000
        sock.setblocking(False)
        try:
            while True:
                now = mono()
                sending = res.sent < limit and (deadline is None or now < deadline)
                if sending and now >= next_send:
                    self._stamp_batch(now)
                    if raw_sent is not None:
                        self._note_raw_send(raw_sent, now)
                    try:
                        sock.send(dgram.buf)
                        res.sent += cfg.batch
                        if expect_reply:
                            in_flight += cfg.batch
                            res.max_backlog = max(res.max_backlog, in_flight)
                    except BlockingIOError:
                        pass  # the send slot is lost: achieved rate will show it
                    next_send += interval
                    continue
                if not sending and (in_flight == 0 or now - last_reply > timeout_ns):
                    res.timeouts += in_flight
                    break
                try:
                    n = sock.recv_into(rbuf)
                except BlockingIOError:
                    if sending:
                        wait = (next_send - mono()) / 1e9
                        if wait > 0.0002:
                            socket_wait(sock, wait)
                    else:
                        socket_wait(sock, 0.001)
                    continue
                last_reply = mono()
                self._on_reply(n, last_reply, log, res, raw_sent)
                in_flight -= 1
        finally:
            sock.setblocking(True)
            sock.settimeout(cfg.reply_timeout_ms / 1000)
        res.elapsed_ns = mono() - start
        res.achieved_rate = res.sent / (res.elapsed_ns / 1e9) if res.elapsed_ns else 0.0
        return res


def socket_wait(sock: socket.socket, timeout: float) -> None:
    select.select([sock], [], [], timeout)
