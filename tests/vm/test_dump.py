"""The module's rtnetlink-style dump (NLPERF_MSG_DUMP_GET), in each processing model (lab VM)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest

from nlperf import wire
from nlperf.nlsock import Control
from nlperf.workloads.dump import DumpConfig, Dumper
from tests.vm.conftest import PROTO, Loaded, client, error_of, parse_msgs, unloads_within

MODES = ["callback", "kthread", "workqueue"]
DUMP_FLAGS = wire.NLM_F_REQUEST | wire.NLM_F_DUMP
REFCNT = Path("/sys/module/nlperf/refcnt")

Msg = tuple[int, int, int, bytes]


def request(s: socket.socket, objects: int, size: int = 64, interrupt_after: int = 0,
            seq: int = 7, payload: bytes | None = None) -> None:
    body = wire.dump_request(objects, size, interrupt_after) if payload is None else payload
    s.send(wire.nlmsg(wire.MSG_DUMP_GET, body, flags=DUMP_FLAGS, seq=seq))


def read_dump(s: socket.socket, recv_size: int = 32768) -> list[list[Msg]]:
    """The datagrams of one dump, to the one that carries NLMSG_DONE (or an error)."""
    out: list[list[Msg]] = []
    while True:
        data, _, flags, _ = s.recvmsg(recv_size)
        assert not flags & socket.MSG_TRUNC
        out.append(parse_msgs(data))
        if any(m[0] in (wire.NLMSG_DONE, wire.NLMSG_ERROR) for m in out[-1]):
            return out


def objects_of(msgs: list[Msg]) -> list[tuple[int, int]]:
    """(index, generation) of each object message."""
    return [wire.DUMP_OBJ.unpack_from(p) for t, _, _, p in msgs if t == wire.MSG_DUMP_GET]


def counters() -> dict[str, int]:
    with Control(PROTO) as ctl:
        f = ctl.stats().fields
    return {k: int(f[k]) for k in ("received", "processed", "replied", "err_inval")}


def reset() -> None:
    with Control(PROTO) as ctl:
        ctl.reset_stats()


@pytest.mark.parametrize("mode", MODES)
def test_every_object_once_in_order_then_done(module: Loaded, mode: str) -> None:
    module(mode=mode)
    reset()
    s = client()
    request(s, 1000, size=100, seq=7)
    grams = read_dump(s)
    msgs = [m for g in grams for m in g]
    assert len(grams) > 1  # 1000 x 116 bytes do not fit one datagram
    assert [t for t, *_ in msgs] == [wire.MSG_DUMP_GET] * 1000 + [wire.NLMSG_DONE]
    assert objects_of(msgs) == [(i, 1) for i in range(1000)]
    assert {(f, seq) for _, f, seq, _ in msgs} == {(wire.NLM_F_MULTI, 7)}
    assert all(len(p) == 100 and p[8:] == bytes(92) for t, _, _, p in msgs
               if t == wire.MSG_DUMP_GET)
    assert msgs[-1][3][:4] == bytes(4)  # NLMSG_DONE carries error 0
    assert grams[-1][-1][0] == wire.NLMSG_DONE
    # an empty table: NLMSG_DONE alone
    request(s, 0, seq=8)
    assert [(t, seq) for t, _, seq, _ in (m for g in read_dump(s) for m in g)] == [
        (wire.NLMSG_DONE, 8)]
    assert counters() == {"received": 2, "processed": 2, "replied": 2, "err_inval": 0}


@pytest.mark.parametrize("mode", MODES)
def test_a_generation_change_flags_the_next_message(module: Loaded, mode: str) -> None:
    module(mode=mode)
    s = client()
    request(s, 100, interrupt_after=40)
    grams = read_dump(s)
    msgs = [m for g in grams for m in g]
    assert objects_of(msgs) == [(i, 1 if i < 40 else 2) for i in range(100)]
    intr = [i for i, (_, f, _, _) in enumerate(msgs) if f & wire.NLM_F_DUMP_INTR]
    assert intr == [40]  # the first message written after the change, alone
    # the datagram that wrote object 39 ended there
    assert any(objects_of(g)[-1:] == [(39, 1)] for g in grams)
    # the change after the last object: NLMSG_DONE carries the flag
    request(s, 10, interrupt_after=10, seq=9)
    msgs = [m for g in read_dump(s) for m in g]
    assert [(t, f) for t, f, _, _ in msgs][-2:] == [
        (wire.MSG_DUMP_GET, wire.NLM_F_MULTI),
        (wire.NLMSG_DONE, wire.NLM_F_MULTI | wire.NLM_F_DUMP_INTR)]


def test_bad_requests_are_refused_and_counted(module: Loaded) -> None:
    module(mode="callback")
    reset()
    s = client()
    bad = [wire.dump_request(10, wire.DUMP_OBJ.size - 1),
           wire.dump_request(10, wire.DUMP_SIZE_MAX + 1),
           wire.dump_request(10, 64, 11), wire.dump_request(wire.DUMP_OBJECTS_MAX + 1, 64),
           wire.DUMP_REQ.pack(10, 64, 0, 1), wire.dump_request(10, 64)[:12]]
    for i, payload in enumerate(bad):
        request(s, 0, seq=100 + i, payload=payload)
        (t, _, seq, p), = read_dump(s)[0]
        assert (t, seq, error_of(p)) == (wire.NLMSG_ERROR, 100 + i, errno.EINVAL)
    # the error replies count as replies, as every reply handed to netlink does
    assert counters() == {"received": 6, "processed": 6, "replied": 6, "err_inval": 6}


@pytest.mark.parametrize("mode", MODES)
def test_the_reader_counts_exactly(module: Loaded, mode: str) -> None:
    module(mode=mode)
    reset()
    d = Dumper(DumpConfig(proto=PROTO, objects=500, object_size=64, recv_size=4096, dumps=3,
                          interrupt_after=100))
    res = d.run()
    d.close()
    assert (res.dumps, res.attempts, res.interrupted, res.retries) == (3, 6, 3, 3)
    assert (res.objects, res.messages) == (6 * 500, 6 * 501)
    assert res.bytes == 6 * (500 * (16 + 64) + 16 + 4)
    assert len(res.durations_ns) == 3
    assert counters() == {"received": 6, "processed": 6, "replied": 6, "err_inval": 0}


def test_a_running_dump_pins_the_module_and_closing_ends_it(module: Loaded) -> None:
    module(mode="workqueue")
    s = client()
    base = int(REFCNT.read_text())
    request(s, 10000)
    s.recv(32768)  # one datagram: the rest is still to be dumped
    assert int(REFCNT.read_text()) == base + 1
    s.close()
    unloads_within(10)
