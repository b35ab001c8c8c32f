"""Multicast receivers, and the relay sender that asks the module to multicast for it.

A receiver joins its groups, optionally consumes slowly (a sleep per message) with a small
receive buffer, and counts what arrived, the sequence gaps per group, the ENOBUFS errors the
socket reported and its own drop counter from /proc/net/netlink. It stops once every group it
listens to has sent its end marker, or when nothing arrived for the drain timeout after the
source finished (an end marker can be dropped like any other message).
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event

import numpy as np

from nlperf import wire
from nlperf.nlsock import netlink_drops, open_socket, socket_inode
from nlperf.samples import StampLog
from nlperf.workloads.common import (
    ERRNO,
    ERRNO_AT,
    ERROR_MIN,
    LOG_RECORD,
    LOG_RECV_AT,
    PAYLOAD_AT,
    STAMP_AT,
    STAMP_FLAGS,
    STAMP_FLAGS_GROUP_SEQ,
    STAMP_SEQ_TS,
    STAMP_TIMES,
    STAMPED_MIN,
    TS,
    TYPE_AT,
    Budget,
    Datagram,
    socket_wait,
)
from nlperf.workloads.procstat import ctx_switches, delta

_FLAGS_GROUP_SEQ_AT = STAMP_AT + wire.STAMP.offset("flags")
# Which send a logged stamp belongs to: the stamp's head up to seq (16 bytes) is copied as it is
# into a log parallel to the StampLog, slot for slot, so reservoir replacement keeps them paired.
_SEND_ID = wire.STAMP.span("version", "seq", base=STAMP_AT)
_SEND_ID_SIZE = _SEND_ID.stop - _SEND_ID.start
_SEND_ID_DTYPE = np.dtype([(m.name, "=" + m.fmt) for m in wire.STAMP.members
                           if _SEND_ID.start <= STAMP_AT + m.offset < _SEND_ID.stop])
# in a relay request the stamp follows struct nlperf_relay_req
_RELAY_STAMP_AT = PAYLOAD_AT + wire.RELAY_REQ.size


@dataclass
class ReceiverConfig:
    id: str
    groups: tuple[int, ...]
    proto: int = wire.PROTO_DEFAULT
    rcvbuf: int | None = None
    delay_us: int = 0
    no_enobufs: bool = False
    broadcast_error: bool = False
    drain_timeout_ms: int = 2000
    capacity: int = 1 << 20


@dataclass
class ReceiverResult:
    id: str
    groups: list[int]
    received: int = 0
    received_by_group: dict[int, int] = field(default_factory=dict)
    enobufs: int = 0
    seq_gaps: int = 0
    foreign: int = 0  # messages from a sender other than the kernel (port id != 0), ignored
    ends: int = 0
    sk_drops: int | None = None
    inode: int = 0
    records: np.ndarray | None = None
    ctx: dict[str, int] = field(default_factory=dict)
    # (group, seq) of each row of records: which kernel send each stamp came from
    send_ids: np.ndarray | None = None


class Receiver:
    def __init__(self, cfg: ReceiverConfig) -> None:
        self.cfg = cfg
        self.sock = open_socket(cfg.proto, rcvbuf=cfg.rcvbuf, groups=cfg.groups,
                                no_enobufs=cfg.no_enobufs, broadcast_error=cfg.broadcast_error)
        self.inode = socket_inode(self.sock)
        self.buf = bytearray(1 << 17)
        self.log = StampLog(cfg.capacity)
        # np.empty, like the StampLog: pages are touched only as records arrive
        self._ids = np.empty(cfg.capacity * _SEND_ID_SIZE, dtype=np.uint8)
        self._ctx0: dict[str, int] = {}
        self._drops0: int | None = None

    def close(self) -> None:
        self.sock.close()

    def drain_stale(self) -> None:
        """Discard what arrived before measuring (e.g. warm-up traffic)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv_into(self.buf)
        except (BlockingIOError, OSError):
            pass
        finally:
            self.sock.setblocking(True)

    def start_window(self) -> None:
        """Snapshot the counters that are reported as deltas; call before the source starts."""
        self._ctx0 = ctx_switches()
        self._drops0 = netlink_drops(self.inode)

    def run(self, source_done: Event, expect_groups: tuple[int, ...]) -> ReceiverResult:
        cfg = self.cfg
        res = ReceiverResult(id=cfg.id, groups=list(cfg.groups), inode=self.inode)
        waiting_end = set(expect_groups) & set(cfg.groups)
        next_seq: dict[int, int] = {}
        log = self.log
        log.reset()
        ctx0, drops0 = self._ctx0, self._drops0
        sock, buf, mono = self.sock, self.buf, time.monotonic_ns
        recvfrom_into = sock.recvfrom_into
        type_at, data_type, stamped_min = TYPE_AT, wire.MSG_MCAST_DATA, STAMPED_MIN
        unpack_fgs, fgs_at = STAMP_FLAGS_GROUP_SEQ.unpack_from, _FLAGS_GROUP_SEQ_AT
        times, recv_at, pack_ts = STAMP_TIMES, LOG_RECV_AT, TS.pack_into
        ids, send_id, record, id_size = memoryview(self._ids), _SEND_ID, LOG_RECORD, _SEND_ID_SIZE
        sock.settimeout(0.05)
        delay = cfg.delay_us / 1e6
        drain_ns = cfg.drain_timeout_ms * 1_000_000
        last = mono()
        while waiting_end:
            try:
                n, (sender, _) = recvfrom_into(buf)
            except TimeoutError:
                if source_done.is_set() and mono() - last > drain_ns:
                    break
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    res.enobufs += 1  # the kernel dropped messages for this socket
                    continue
                raise
            last = t = mono()
            if sender:  # only the kernel (port id 0) speaks for the lab
                res.foreign += 1
                continue
            if n < stamped_min or buf[type_at] != data_type:
                continue
            flags, group, seq = unpack_fgs(buf, fgs_at)
            res.received += 1
            res.received_by_group[group] = res.received_by_group.get(group, 0) + 1
            expected = next_seq.get(group, 0)
            if seq > expected:
                res.seq_gaps += seq - expected
            next_seq[group] = seq + 1
            if flags & wire.STAMP_F_END:
                res.ends += 1
                waiting_end.discard(group)
            else:
                off = log.slot()
                if off is not None:
                    log.buf[off:off + recv_at] = buf[times]
                    pack_ts(log.buf, off + recv_at, t)
                    at = off // record * id_size
                    ids[at:at + id_size] = buf[send_id]
            if delay:
                time.sleep(delay)
        drops1 = netlink_drops(self.inode)
        if drops0 is not None and drops1 is not None:
            res.sk_drops = drops1 - drops0
        res.ctx = delta(ctx_switches(), ctx0)
        res.records = log.array()
        heads = np.frombuffer(self._ids, dtype=_SEND_ID_DTYPE, count=len(res.records))
        res.send_ids = np.column_stack([heads["group"].astype(np.int64),
                                        heads["seq"].astype(np.int64)])
        return res


@dataclass
class RelayResult:
    sent: int = 0
    errors: int = 0
    errnos: dict[str, int] = field(default_factory=dict)
    elapsed_ns: int = 0
    ctx: dict[str, int] = field(default_factory=dict)


class RelaySender:
    """Sends relay requests: the module multicasts each one from its processing context."""

    def __init__(self, proto: int, groups: list[int], size: int) -> None:
        self.sock = open_socket(proto)
        self.mask = wire.groups_mask(groups)
        payload = size + wire.RELAY_REQ.size
        self.dgram = Datagram(wire.MSG_RELAY, payload, 1)
        off = PAYLOAD_AT
        # the relay header comes first, then the stamp the module multicasts
        self.dgram.buf[off:off + payload] = wire.relay_payload(
            self.mask, 0, 0, pad=size - wire.STAMP.size)
        self.rbuf = bytearray(1 << 12)

    def close(self) -> None:
        self.sock.close()

    def _collect_errors(self, res: RelayResult) -> None:
        while True:
            try:
                n = self.sock.recv_into(self.rbuf, 0, 0x40)  # MSG_DONTWAIT
            except BlockingIOError:
                return
            if n >= ERROR_MIN and self.rbuf[TYPE_AT] == wire.NLMSG_ERROR:
                err = -ERRNO.unpack_from(self.rbuf, ERRNO_AT)[0]
                if err:
                    name = errno.errorcode.get(err, str(err))
                    res.errnos[name] = res.errnos.get(name, 0) + 1
                    res.errors += 1

    def run(self, count: int | None, duration: float | None, rate: float) -> RelayResult:
        res = RelayResult()
        ctx0 = ctx_switches()
        buf, send = self.dgram.buf, self.sock.send
        pack_seq_ts = STAMP_SEQ_TS.pack_into
        seq_off = _RELAY_STAMP_AT + wire.STAMP.offset("seq")
        mono = time.monotonic_ns
        budget = Budget.begin(count, duration)
        start = next_send = budget.start
        limit, deadline = budget.limit, budget.deadline
        interval = int(1e9 / rate) if rate else 0
        seq = 0
        while seq < limit and (deadline is None or mono() < deadline):  # budget.more(seq)
            if interval:
                wait = next_send - mono()
                if wait > 0:
                    socket_wait(self.sock, wait / 1e9)
                next_send += interval
            pack_seq_ts(buf, seq_off, seq, mono())
            send(buf)
            seq += 1
            if seq & 63 == 0:
                self._collect_errors(res)
        # the end marker: receivers stop once they see it on each of their groups
        flags_off = _RELAY_STAMP_AT + wire.STAMP.offset("flags")
        STAMP_FLAGS.pack_into(buf, flags_off, wire.STAMP_F_END)
        pack_seq_ts(buf, seq_off, seq, mono())
        send(buf)
        res.sent = seq + 1
        time.sleep(0.01)
        self._collect_errors(res)
        res.elapsed_ns = mono() - start
        res.ctx = delta(ctx_switches(), ctx0)
        return res
