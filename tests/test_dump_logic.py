"""The dump section's validation, the dump reader's datagram parsing and the dump metrics,
without a kernel (the module side is tests/vm/test_dump.py)."""

from __future__ import annotations

from typing import Any

import pytest

from nlperf import metrics, scenario, wire
from nlperf.errors import BadInput, RunFailed
from nlperf.workloads.dump import Attempt, DumpResult, parse_datagram


def dump_scenario(**dump: Any) -> dict[str, Any]:
    return {"name": "d", "traffic": "dump", "dump": dump}


def test_dump_section_defaults_and_values() -> None:
    s = scenario.parse(dump_scenario(objects=10000, recv_size=4096, interrupt_after=10000))
    assert s.active_dump is not None and s.active_unicast is None
    assert (s.active_dump.objects, s.active_dump.object_size, s.active_dump.recv_size,
            s.active_dump.dumps, s.active_dump.interrupt_after, s.active_dump.rcvbuf) == (
        10000, 64, 4096, 10, 10000, None)


@pytest.mark.parametrize(("data", "message"), [
    (dump_scenario(objects=10, interrupt_after=11),
     "<s>: dump: interrupt_after (11) is beyond objects (10)"),
    (dump_scenario(object_size=7),
     "<s>: dump.object_size: Input should be greater than or equal to 8, got 7"),
    (dump_scenario(object_size=wire.DUMP_SIZE_MAX + 1),
     "<s>: dump.object_size: Input should be less than or equal to 2048, got 2049"),
    (dump_scenario(objects=wire.DUMP_OBJECTS_MAX + 1),
     "<s>: dump.objects: Input should be less than or equal to 1048576, got 1048577"),
    (dump_scenario(recv_size=2048),
     "<s>: dump.recv_size: Input should be greater than or equal to 4096, got 2048"),
    (dump_scenario(dumps=0), "<s>: dump.dumps: Input should be greater than or equal to 1, got 0"),
    (dump_scenario(routes=5), "<s>: dump.routes: unknown key"),
    ({"name": "d", "traffic": "dump"}, "<s>: <top>: traffic dump needs a dump section"),
    ({"name": "d", "dump": {}},
     "<s>: <top>: needs a unicast or a multicast section (or traffic dump)"),
])
def test_dump_section_refuses_what_the_module_would(data: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput) as e:
        scenario.parse(data, "<s>")
    assert str(e.value) == message


def test_dump_matrix_keys_are_known() -> None:
    data = {**dump_scenario(), "matrix": {"dump.objects": [100, 1000],
                                          "dump.recv_size": [4096, 32768]}}
    _, cases = scenario.expand(data)
    assert [c.id for c in cases] == ["objects=100,recv_size=4096", "objects=100,recv_size=32768",
                                     "objects=1000,recv_size=4096",
                                     "objects=1000,recv_size=32768"]
    assert cases[3].scenario.active_dump is not None
    assert cases[3].scenario.active_dump.recv_size == 32768


def datagram(*msgs: tuple[int, int, bytes], seq: int = 5) -> bytes:
    return b"".join(wire.nlmsg(t, p, flags=f, seq=seq) for t, f, p in msgs)


def obj(i: int, gen: int = 1, size: int = 12) -> tuple[int, int, bytes]:
    return (wire.MSG_DUMP_GET, wire.NLM_F_MULTI, wire.DUMP_OBJ.pack(i, gen) + bytes(size - 8))


DONE = (wire.NLMSG_DONE, wire.NLM_F_MULTI, bytes(4))


def test_parse_datagram_counts_objects_and_sees_done_and_intr() -> None:
    att = Attempt()
    first = datagram(obj(0), obj(1))
    assert parse_datagram(memoryview(first), len(first), 5, 0, att) == (2, False)
    t, _, p = obj(2, 2)
    second = datagram((t, wire.NLM_F_MULTI | wire.NLM_F_DUMP_INTR, p), DONE)
    assert parse_datagram(memoryview(second), len(second), 5, 2, att) == (3, True)
    assert (att.objects, att.messages, att.interrupted) == (3, 4, True)


@pytest.mark.parametrize(("dgram", "expect", "message"), [
    (datagram(obj(1)), 0, "dump: object 1 where 0 was due"),
    (datagram(obj(0), seq=6), 0, "dump: a message with seq 6 in the reply to 5"),
    (datagram((wire.NLMSG_ERROR, 0, wire.NLMSGERR.pack(-16, 0, 0, 0, 0, 0))), 0,
     "dump refused: errno 16"),
    (datagram((wire.MSG_ECHO, 0, b"")), 0, "dump: unexpected message type 0x10"),
])
def test_parse_datagram_refuses_what_a_correct_dump_never_sends(dgram: bytes, expect: int,
                                                                 message: str) -> None:
    with pytest.raises(RunFailed, match=message):
        parse_datagram(memoryview(dgram), len(dgram), 5, expect, Attempt())


def result(dumps: int, attempts: int, objects: int, recvs: int, messages: int, nbytes: int,
           elapsed_ns: int, durations: list[int]) -> DumpResult:
    return DumpResult(dumps=dumps, attempts=attempts, interrupted=attempts - dumps,
                      retries=attempts - dumps, objects=objects, messages=messages, recvs=recvs,
                      bytes=nbytes, elapsed_ns=elapsed_ns, durations_ns=durations)


def test_dump_block_rates_and_per_recv() -> None:
    b = metrics.dump_block(result(2, 3, 3000, 30, 3003, 240_060, 500_000_000,
                                  [100_000_000, 300_000_000]))
    assert (b.dumps, b.attempts, b.interrupted, b.retries, b.objects_read, b.recvs) == (
        2, 3, 1, 1, 3000, 30)
    assert (b.objects_per_s, b.bytes_per_s, b.msgs_per_recv, b.elapsed_s) == (
        6000.0, 480_120.0, 100.1, 0.5)
    assert (b.duration_ns.count, b.duration_ns.p50, b.duration_ns.max) == (2, 200e6, 300e6)


def test_pool_dump_sums_counts_and_time_and_keeps_every_duration() -> None:
    a = result(1, 1, 1000, 10, 1001, 80_020, 1_000_000_000, [1_000_000_000])
    b = result(1, 2, 2000, 20, 2002, 160_040, 3_000_000_000, [3_000_000_000])
    p = metrics.pool_dump([a, b])
    assert (p.dumps, p.attempts, p.retries, p.objects_read, p.recvs, p.bytes) == (
        2, 3, 1, 3000, 30, 240_060)
    assert (p.objects_per_s, p.msgs_per_recv, p.elapsed_s) == (750.0, 100.1, 4.0)
    assert (p.duration_ns.count, p.duration_ns.p50) == (2, 2e9)
    assert p.document()["duration_ns"]["max"] == 3e9


def test_no_time_gives_zero_rates_not_a_division_error() -> None:
    b = metrics.dump_block(DumpResult())
    assert (b.objects_per_s, b.bytes_per_s, b.msgs_per_recv, b.duration_ns.count) == (
        0.0, 0.0, 0.0, 0)
