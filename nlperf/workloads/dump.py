"""Dump reader: requests the module's rtnetlink-style dump and reads it to NLMSG_DONE.

What a pyroute2 or dhcpcd route dump does, against N synthetic objects: one request with
NLM_F_DUMP, then ``recv`` after ``recv`` (one kernel-filled datagram each, as many object
messages as fit) until NLMSG_DONE. A dump whose messages carry NLM_F_DUMP_INTR (the table
changed under it) is thrown away and asked again, as libnl and pyroute2 do; the retry does not
ask for the change again, so it reads a stable table.

The reader checks what it gets: every object exactly once, in order, with the request's
sequence number; anything else is a failure, not a number.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

from nlperf import wire
from nlperf.errors import RunFailed
from nlperf.nlsock import open_socket
from nlperf.workloads.procstat import ctx_switches, delta

HDR = wire.NLMSGHDR.struct_of("nlmsg_len", "nlmsg_seq")  # len, type, flags, seq
OBJ_INDEX = wire.DUMP_OBJ.struct_of("index")
ERRNO = wire.NLMSGERR.struct_of("error")
DUMP_FLAGS = wire.NLM_F_REQUEST | wire.NLM_F_DUMP
MAX_RETRIES = 8  # a retry reads a stable table: more than one means something is wrong


@dataclass
class DumpConfig:
    proto: int = wire.PROTO_DEFAULT
    objects: int = 1000
    object_size: int = 64
    rcvbuf: int | None = None
    recv_size: int = 32768
    dumps: int = 10
    interrupt_after: int = 0
    timeout_s: float = 30.0


@dataclass
class Attempt:
    """One request read to NLMSG_DONE."""

    objects: int = 0
    messages: int = 0  # netlink messages, NLMSG_DONE included
    recvs: int = 0  # datagrams
    bytes: int = 0
    interrupted: bool = False


@dataclass
class DumpResult:
    dumps: int = 0  # dumps completed (each read without NLM_F_DUMP_INTR in the end)
    attempts: int = 0  # requests sent: dumps + retries
    interrupted: int = 0  # attempts that carried NLM_F_DUMP_INTR
    retries: int = 0
    objects: int = 0  # object messages read, retries included
    messages: int = 0
    recvs: int = 0
    bytes: int = 0
    elapsed_ns: int = 0
    durations_ns: list[int] = field(default_factory=list)  # per dump, its retries included
    ctx: dict[str, int] = field(default_factory=dict)


def parse_datagram(buf: memoryview, n: int, seq: int, expect_index: int,
                   att: Attempt) -> tuple[int, bool]:
    """Reads the messages of one datagram into ``att``; returns the next object index expected
    and whether NLMSG_DONE came. Raises RunFailed on anything a correct dump never sends."""
    off = 0
    done = False
    while off + wire.NLMSG_HDRLEN <= n:
        length, mtype, flags, mseq = HDR.unpack_from(buf, off)
        if length < wire.NLMSG_HDRLEN or off + length > n:
            raise RunFailed(f"dump: a message of {length} bytes at {off} of a {n}-byte datagram")
        if mseq != seq:
            raise RunFailed(f"dump: a message with seq {mseq} in the reply to {seq}")
        att.messages += 1
        if flags & wire.NLM_F_DUMP_INTR:
            att.interrupted = True
        if mtype == wire.MSG_DUMP_GET:
            index, = OBJ_INDEX.unpack_from(buf, off + wire.NLMSG_HDRLEN)
            if index != expect_index:
                raise RunFailed(f"dump: object {index} where {expect_index} was due")
            expect_index += 1
            att.objects += 1
        elif mtype == wire.NLMSG_DONE:
            done = True
        elif mtype == wire.NLMSG_ERROR:
            err, = ERRNO.unpack_from(buf, off + wire.NLMSG_HDRLEN)
            raise RunFailed(f"dump refused: errno {-err}")
        else:
            raise RunFailed(f"dump: unexpected message type {mtype:#x}")
        off += wire.pad4(length)
    return expect_index, done


class Dumper:
    """One socket that asks for dumps and reads them."""

    def __init__(self, cfg: DumpConfig) -> None:
        self.cfg = cfg
        self.sock = open_socket(cfg.proto, rcvbuf=cfg.rcvbuf)
        self.sock.settimeout(cfg.timeout_s)
        self.buf = bytearray(cfg.recv_size)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def attempt(self, interrupt_after: int) -> Attempt:
        """Sends one dump request and reads its answer to NLMSG_DONE."""
        cfg = self.cfg
        self.seq += 1
        seq = self.seq
        self.sock.send(wire.nlmsg(wire.MSG_DUMP_GET,
                                  wire.dump_request(cfg.objects, cfg.object_size,
                                                    interrupt_after),
                                  flags=DUMP_FLAGS, seq=seq))
        att = Attempt()
        view = memoryview(self.buf)
        recvmsg_into, size = self.sock.recvmsg_into, cfg.recv_size
        expect, done = 0, False
        while not done:
            try:
                n, _, msg_flags, _ = recvmsg_into([view], 0, 0)
            except TimeoutError:
                raise RunFailed(f"dump: nothing for {cfg.timeout_s:g} s after object "
                                f"{expect} of {cfg.objects}") from None
            if msg_flags & socket.MSG_TRUNC:
                raise RunFailed(f"dump: a datagram longer than recv_size {size} was cut short")
            att.recvs += 1
            att.bytes += n
            expect, done = parse_datagram(view, n, seq, expect, att)
        if expect != cfg.objects:
            raise RunFailed(f"dump: NLMSG_DONE after {expect} of {cfg.objects} objects")
        return att

    def run(self) -> DumpResult:
        cfg = self.cfg
        res = DumpResult()
        ctx0 = ctx_switches()
        t0 = time.monotonic_ns()
        for _ in range(cfg.dumps):
            start = time.monotonic_ns()
            att = self.attempt(cfg.interrupt_after)
            self._add(res, att)
            retries = 0
            while att.interrupted:
                if retries == MAX_RETRIES:
                    raise RunFailed(f"dump: still interrupted after {MAX_RETRIES} retries")
                retries += 1
                att = self.attempt(0)
                self._add(res, att)
            res.retries += retries
            res.durations_ns.append(time.monotonic_ns() - start)
            res.dumps += 1
        res.elapsed_ns = time.monotonic_ns() - t0
        res.ctx = delta(ctx_switches(), ctx0)
        return res

    @staticmethod
    def _add(res: DumpResult, att: Attempt) -> None:
        res.attempts += 1
        res.interrupted += int(att.interrupted)
        res.objects += att.objects
        res.messages += att.messages
        res.recvs += att.recvs
        res.bytes += att.bytes


def dump_main(cfg: DumpConfig, barriers: tuple[Any, Any, Any], timeout: float, q: Any) -> None:
    """The dump process of a repetition (nlperf.measure): ready, warm, go, then one result."""
    ready, warm, go = barriers
    try:
        d = Dumper(cfg)
        ready.wait(timeout)
        warm.wait(timeout)
        go.wait(timeout)
        q.put(("dump", 0, d.run()))
        d.close()
    except BaseException as e:
        for b in barriers:
            b.abort()
        q.put(("error", "dump reader", f"{type(e).__name__}: {e}"))
