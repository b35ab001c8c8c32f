"""Bounded sample stores, latency blocks, pooling and loss accounting, /proc parsers."""

from __future__ import annotations

import socket
import struct
from dataclasses import replace
from pathlib import Path
from threading import Event
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from nlperf import metrics, models, nlsock, probe_pool, probe_table, samples, wire
from nlperf import probe_blocks as pb
from nlperf.probe_table import calls_index, hist_index
from nlperf.samples import StampLog, components, latency_block
from nlperf.workloads import procstat
from nlperf.workloads.multicast import Receiver, ReceiverConfig, ReceiverResult
from nlperf.workloads.unicast import SenderResult

REC = struct.Struct("=5q")


def fill(log: StampLog, rows: list[tuple[int, int, int, int, int]]) -> None:
    """Write records the way the hot loop does: ask for a slot, copy bytes into it."""
    for row in rows:
        off = log.slot()
        if off is not None:
            REC.pack_into(log.buf, off, *row)


# --- StampLog ----------------------------------------------------------------------------------


def test_stamplog_below_capacity_keeps_everything_in_order() -> None:
    log = StampLog(capacity=16)
    rows = [(i, i + 1, i + 3, i + 6, i + 10) for i in range(0, 100, 10)]
    fill(log, rows)
    arr = log.array()
    assert arr.shape == (10, 5) and arr.dtype == np.int64
    assert [tuple(int(x) for x in r) for r in arr] == rows
    assert log.count == 10


def test_stamplog_memory_bounded_and_count_exact() -> None:
    cap = 256
    log = StampLog(capacity=cap, seed=3)
    size = len(log.buf)
    assert size == cap * 5 * 8
    n = 20_000
    fill(log, [(i, i, i, i, i) for i in range(n)])
    assert len(log.buf) == size  # never grows
    assert log.count == n
    arr = log.array()
    assert arr.shape == (cap, 5)
    kept = arr[:, 0]
    assert len(set(kept.tolist())) == cap  # each slot holds a distinct message
    assert ((kept >= 0) & (kept < n)).all()
    # records stay whole: the five fields of a kept record come from the same message
    assert (arr == kept[:, None]).all()


def test_stamplog_extend_leaves_what_a_slot_and_copy_per_record_would() -> None:
    """Blocks of records (the ping-pong loop's bursts), past capacity too: the same records
    in the same places, the same reservoir draws, the same count."""
    rows = [(i, i + 1, i + 2, i + 3, i + 4) for i in range(0, 5000, 5)]
    one_by_one, blocks = StampLog(capacity=64, seed=7), StampLog(capacity=64, seed=7)
    fill(one_by_one, rows)
    for at in range(0, len(rows), 48):
        block = np.array(rows[at:at + 48], dtype=np.int64)
        blocks.extend(block[:, :4], [int(t) for t in block[:, 4]])
    assert blocks.count == one_by_one.count == len(rows)
    assert (blocks.array() == one_by_one.array()).all()


def test_stamplog_reservoir_is_uniform() -> None:
    cap, n = 2000, 200_000
    log = StampLog(capacity=cap, seed=12345)
    for i in range(n):
        off = log.slot()
        if off is not None:
            REC.pack_into(log.buf, off, i, 0, 0, 0, 0)
    kept = log.array()[:, 0].astype(np.float64)
    # a uniform sample of 0..n-1: mean n/2, and about a tenth in each tenth of the range
    assert abs(kept.mean() - n / 2) < 0.03 * n
    hist, _ = np.histogram(kept, bins=10, range=(0, n))
    assert hist.min() > 0.7 * cap / 10 and hist.max() < 1.3 * cap / 10
    # not just the first cap messages
    assert (kept >= cap).sum() > 0.9 * cap


def test_stamplog_array_is_a_copy() -> None:
    log = StampLog(capacity=4)
    fill(log, [(1, 2, 3, 4, 5)])
    arr = log.array()
    fill(log, [(9, 9, 9, 9, 9)])
    REC.pack_into(log.buf, 0, 7, 7, 7, 7, 7)
    assert arr.tolist() == [[1, 2, 3, 4, 5]]


def test_components_arithmetic() -> None:
    recs = np.array([[100, 130, 150, 190, 260],
                     [1000, 1010, 1500, 1600, 1700]], dtype=np.int64)
    c = components(recs)
    assert c["rtt"].tolist() == [160, 700]
    assert c["user_to_kernel"].tolist() == [30, 10]
    assert c["queue"].tolist() == [20, 490]
    assert c["processing"].tolist() == [40, 100]
    assert c["kernel_to_user"].tolist() == [70, 100]
    parts = c["user_to_kernel"] + c["queue"] + c["processing"] + c["kernel_to_user"]
    assert (parts == c["rtt"]).all()
    assert set(components(recs, timed=False)) == {"rtt"}


# --- latency_block -----------------------------------------------------------------------------


def test_latency_block_known_values() -> None:
    b = latency_block(list(range(1, 1001))).document()
    # linear interpolation between order statistics of 1..1000
    assert b == {"count": 1000, "mean": 500.5, "p50": 500.5, "p90": 900.1, "p99": 990.01,
                 "p999": 999.001, "max": 1000.0}


def test_latency_block_scales_and_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    ns = rng.lognormal(mean=10, sigma=1, size=5000).astype(np.int64)
    b = latency_block(ns, 1000.0)
    assert b.count == 5000
    for key, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        assert getattr(b, key) == pytest.approx(np.percentile(ns, q) / 1000, abs=1e-3)
    assert b.mean == pytest.approx(ns.mean() / 1000, abs=1e-3)
    assert b.max == pytest.approx(ns.max() / 1000, abs=1e-3)
    assert b.p50 <= b.p90 <= b.p99 <= b.p999 <= b.max  # type: ignore[operator]


def test_latency_block_empty() -> None:
    b = latency_block([], 1000.0)
    assert b.count == 0
    assert all(getattr(b, k) is None for k in ("mean", "p50", "p90", "p99", "p999", "max"))


# --- unicast / multicast blocks and pooling ----------------------------------------------------


def sender(sent: int, received: int, elapsed_ns: int, rtts: list[int], **kw: object
           ) -> SenderResult:
    log = StampLog(capacity=len(rtts) or 1)
    # user_send t, kernel stamps in between, user_recv t + rtt
    fill(log, [(t * 10_000, t * 10_000 + r // 4, t * 10_000 + r // 2, t * 10_000 + 3 * r // 4,
                t * 10_000 + r) for t, r in enumerate(rtts)])
    res = SenderResult(sent=sent, received=received, elapsed_ns=elapsed_ns, **kw)  # type: ignore[arg-type]
    res.records = log.array() if rtts else None
    return res


def test_unicast_block_pools_senders() -> None:
    a = sender(100, 98, 2_000_000_000, [1000, 2000, 3000], errors=2,
               errnos={"ENOBUFS": 2}, timeouts=0)
    b = sender(50, 50, 1_000_000_000, [4000, 5000], errnos={"ENOBUFS": 1, "EPERM": 3},
               timeouts=1)
    block = metrics.unicast_block([a, b], timed=True).document()
    assert block["sent"] == 150 and block["received"] == 148
    assert block["errors"] == 2 and block["timeouts"] == 1
    assert block["errnos"] == {"ENOBUFS": 3, "EPERM": 3}
    # senders ran side by side: the longest one is the elapsed time
    assert block["elapsed_s"] == 2.0
    assert block["throughput_per_s"] == 74.0
    assert block["rtt_us"]["count"] == 5
    assert block["rtt_us"]["p50"] == 3.0
    assert block["rtt_us"]["max"] == 5.0
    assert block["user_to_kernel_us"]["p50"] == 0.75
    assert block["kernel_to_user_us"]["max"] == 1.25
    for key in ("queue_us", "processing_us"):
        assert block[key]["count"] == 5
    # what a closed-loop block holds, and nothing else (no open-loop rate keys)
    assert list(block) == ["sent", "received", "errors", "timeouts", "foreign", "throughput_per_s",
                           "elapsed_s", "errnos", "rtt_us", "user_to_kernel_us", "queue_us",
                           "processing_us", "kernel_to_user_us"]


def test_unicast_block_sink_without_replies() -> None:
    a = sender(1000, 0, 500_000_000, [])
    block = metrics.unicast_block([a], timed=False).document()
    assert block["throughput_per_s"] == 2000.0  # what was sent, since nothing came back
    assert block["rtt_us"]["count"] == 0 and block["rtt_us"]["p50"] is None
    assert "queue_us" not in block


def test_unicast_block_open_loop_rates() -> None:
    a = sender(10, 10, 10**9, [1000], achieved_rate=10.0, max_backlog=3)
    b = sender(20, 20, 10**9, [1000], achieved_rate=20.0, max_backlog=7)
    block = metrics.unicast_block([a, b], timed=True)
    assert block.achieved_rate_per_s == 30.0 and block.max_backlog == 7


def test_pool_unicast_sums_repetitions() -> None:
    reps = [sender(100, 90, 10**9, [1000] * 3, errors=10), sender(200, 200, 3 * 10**9,
                                                                    [3000] * 1, timeouts=4)]
    blocks = [metrics.unicast_block([r], timed=True) for r in reps]
    pooled = metrics.pool_unicast(blocks, [r.records for r in reps if r.records is not None],
                                  timed=True).document()
    assert (pooled["sent"], pooled["received"], pooled["errors"], pooled["timeouts"]) == (
        300, 290, 10, 4)
    assert pooled["elapsed_s"] == 4.0
    assert pooled["throughput_per_s"] == 72.5
    assert pooled["rtt_us"]["count"] == 4
    assert pooled["rtt_us"]["mean"] == 1.5
    assert pooled["rtt_us"]["max"] == 3.0


def receiver(rid: str, groups: list[int], received: int, lat_ns: list[int], *,
             enobufs: int = 0, sk_drops: int | None = 0, seq_gaps: int = 0) -> ReceiverResult:
    recs = np.zeros((len(lat_ns), 5), dtype=np.int64)
    recs[:, 3] = 1_000_000
    recs[:, 4] = 1_000_000 + np.asarray(lat_ns, dtype=np.int64)
    return ReceiverResult(id=rid, groups=groups, received=received, enobufs=enobufs,
                          sk_drops=sk_drops, seq_gaps=seq_gaps, records=recs)


def test_multicast_block_loss_per_receiver_counts_only_its_groups() -> None:
    sent = {1: 1000, 2: 500, 3: 70}
    rs = [receiver("r0.0", [1], 1000, [2000, 4000]),
          receiver("r1.0", [2, 3], 400, [1000], enobufs=2, sk_drops=170, seq_gaps=170),
          receiver("r2.0", [1, 2], 1200, [], sk_drops=None),
          receiver("r3.0", [4], 0, [])]
    block = metrics.multicast_block("relay", sent, rs).document()
    assert block["source"] == "relay"
    assert block["sent_by_group"] == {"1": 1000, "2": 500, "3": 70}
    by_id = {r["id"]: r for r in block["receivers"]}
    assert [r["id"] for r in block["receivers"]] == ["r0.0", "r1.0", "r2.0", "r3.0"]
    assert (by_id["r0.0"]["sent"], by_id["r0.0"]["lost"]) == (1000, 0)
    assert (by_id["r1.0"]["sent"], by_id["r1.0"]["lost"]) == (570, 170)
    assert (by_id["r2.0"]["sent"], by_id["r2.0"]["lost"]) == (1500, 300)
    assert (by_id["r3.0"]["sent"], by_id["r3.0"]["lost"]) == (0, 0)
    assert by_id["r1.0"]["enobufs"] == 2 and by_id["r1.0"]["sk_drops"] == 170
    assert by_id["r2.0"]["sk_drops"] is None
    assert by_id["r0.0"]["latency_us"]["count"] == 2
    assert by_id["r0.0"]["latency_us"]["mean"] == 3.0
    assert by_id["r2.0"]["latency_us"]["count"] == 0


def test_pool_multicast_sums_repetitions() -> None:
    rep1 = metrics.multicast_block("generator", {1: 100, 2: 50}, [
        receiver("r0.0", [1, 2], 140, [1000, 3000], enobufs=1, sk_drops=10, seq_gaps=10),
        receiver("r1.0", [2], 50, [2000], sk_drops=0)])
    rep2 = metrics.multicast_block("generator", {1: 100, 2: 60}, [
        receiver("r0.0", [1, 2], 160, [5000], enobufs=0, sk_drops=0, seq_gaps=0),
        receiver("r1.0", [2], 55, [], sk_drops=None)])
    lat = {"r0.0": [np.array([1000, 3000]), np.array([5000])], "r1.0": [np.array([2000]),
                                                                      np.array([])]}
    pooled = metrics.pool_multicast([rep1, rep2], lat).document()
    assert pooled["source"] == "generator"
    assert pooled["sent_by_group"] == {"1": 200, "2": 110}
    r0, r1 = pooled["receivers"]
    assert r0["id"] == "r0.0" and r0["groups"] == [1, 2]
    assert (r0["sent"], r0["received"], r0["lost"], r0["enobufs"], r0["seq_gaps"]) == (
        310, 300, 10, 1, 10)
    assert r0["sk_drops"] == 10
    assert r0["latency_us"]["count"] == 3 and r0["latency_us"]["max"] == 5.0
    assert (r1["sent"], r1["received"], r1["lost"]) == (110, 105, 5)
    assert r1["sk_drops"] is None  # unknown in one repetition: unknown overall
    assert r1["latency_us"]["count"] == 1


# --- achieved inter-send spacing of the multicast source --------------------------------------


def stamped(rid: str, group: int, got: dict[int, int]) -> ReceiverResult:
    """A receiver that got the sends ``got`` (seq → kernel send stamp) of ``group``."""
    recs = np.zeros((len(got), 5), dtype=np.int64)
    recs[:, 3] = list(got.values())
    ids = np.array([[group, seq] for seq in got], dtype=np.int64).reshape(-1, 2)
    return ReceiverResult(id=rid, groups=[group], received=len(got), records=recs,
                          send_ids=ids)


# group 1's sends, seq → kernel send stamp (ns); seq 3 never reached a receiver
SENDS_1 = {0: 1000, 1: 1100, 2: 1250, 3: 1300, 4: 2000, 5: 2010}


def test_send_spacing_takes_consecutive_sends_only_and_each_send_once() -> None:
    lossy = stamped("r0.0", 1, {s: t for s, t in SENDS_1.items() if s != 3})
    # a second receiver of group 1 got sends the first got too (same stamps: one send each),
    # in another order
    other = stamped("r0.1", 1, {5: 2010, 0: 1000, 1: 1100})
    relay = stamped("r1.0", 2, {7: 500, 8: 900, 10: 1500})  # seq 9: a refused relay
    got = metrics.send_spacing_of([lossy, other, relay])
    assert sorted(got) == [1, 2]
    # not 2 → 4 (750 ns across the lost seq 3), not 8 → 10
    assert got[1].tolist() == [100, 150, 10]
    assert got[2].tolist() == [400]
    # receivers that carry no send ids (results read back, stand-ins) give none
    assert metrics.send_spacing_of([SimpleNamespace(records=lossy.records)]) == {}


def test_send_spacing_pairs_across_receivers_of_one_group() -> None:
    """seq 1 reached only one receiver and seq 2 only the other: still one pair, one spacing."""
    got = metrics.send_spacing_of([stamped("a", 1, {1: 1100}), stamped("b", 1, {2: 1250})])
    assert got[1].tolist() == [150]


class KernelFeed:
    """Stands in for a receiver's socket: hands out the given datagrams as the kernel's (port
    id 0), then times out."""

    def __init__(self, datagrams: list[bytes]) -> None:
        self.datagrams = list(datagrams)

    def settimeout(self, _: float) -> None:
        pass

    def recvfrom_into(self, buf: bytearray) -> tuple[int, tuple[int, int]]:
        if not self.datagrams:
            raise TimeoutError
        d = self.datagrams.pop(0)
        buf[:len(d)] = d
        return len(d), (0, 0)


def kern_send(group: int, seq: int) -> int:
    return 1_000_000 * group + 10 * seq * seq


def mcast(group: int, seq: int, flags: int = 0) -> bytes:
    st = wire.STAMP.pack(wire.WIRE_VERSION, wire.STAMP.size, flags, group, seq, 0, 0, 0,
                         kern_send(group, seq))
    return wire.nlmsg(wire.MSG_MCAST_DATA, st + bytes(16), flags=0)


@pytest.mark.parametrize("capacity", [64, 3])
def test_a_receiver_logs_which_send_each_stamp_came_from(capacity: int) -> None:
    """Group and seq are kept beside each logged stamp, row for row, also when the reservoir
    replaces records (capacity 3 of 8 messages)."""
    sends = [(1, 0), (1, 1), (2, 0), (1, 2), (1, 4), (2, 1), (1, 5), (2, 2)]  # 1.3 lost
    rx = Receiver.__new__(Receiver)
    rx.cfg = ReceiverConfig(id="r", groups=(1, 2), drain_timeout_ms=0, capacity=capacity)
    rx.inode, rx.buf, rx.log = 0, bytearray(1 << 12), StampLog(capacity)
    rx._ids = np.empty(capacity * 16, dtype=np.uint8)  # the stamp head kept: version..seq
    rx._drops0 = None
    rx._ctx0 = {}
    rx.sock = KernelFeed([mcast(g, s) for g, s in sends]  # type: ignore[assignment]
                         + [mcast(1, 6, wire.STAMP_F_END), mcast(2, 3, wire.STAMP_F_END)])
    done = Event()
    done.set()
    res = rx.run(done, (1, 2))
    assert (res.received, res.ends, res.seq_gaps) == (10, 2, 1)
    assert res.records is not None and res.send_ids is not None
    assert len(res.send_ids) == len(res.records) == min(capacity, len(sends))
    assert [kern_send(g, s) for g, s in res.send_ids.tolist()] == res.records[:, 3].tolist()
    if capacity > len(sends):
        assert res.send_ids.tolist() == [list(x) for x in sends]
        assert {g: a.tolist() for g, a in metrics.send_spacing_of([res]).items()} == {
            1: [10, 30, 90], 2: [10, 30]}  # 1.2 → 1.4 spans the lost 1.3: left out


def test_send_spacing_blocks_per_group_and_pooled_over_repetitions() -> None:
    rs = [receiver("r0.0", [1, 2], 3, [1000])]
    rep1, rep2 = {1: np.array([100, 150, 10]), 2: np.array([400])}, {1: np.array([20])}
    b1 = metrics.multicast_block("generator", {1: 6, 2: 3, 3: 0}, rs, rep1)
    b2 = metrics.multicast_block("generator", {1: 6, 2: 3, 3: 0}, rs, rep2)
    assert b1.send_spacing == models.SendSpacing(count=4, p50_ns=125.0, p99_ns=392.5)
    assert b1.send_spacing_by_group is not None
    assert b1.send_spacing_by_group["1"] == models.SendSpacing(count=3, p50_ns=100.0,
                                                               p99_ns=149.0)
    assert b2.send_spacing_by_group == {
        "1": models.SendSpacing(count=1, p50_ns=20.0, p99_ns=20.0),
        "2": models.SendSpacing(count=0, p50_ns=None, p99_ns=None),
        "3": models.SendSpacing(count=0, p50_ns=None, p99_ns=None)}
    pooled = metrics.pool_multicast([b1, b2], {}, [rep1, rep2])
    # [10, 20, 100, 150] and [400]: percentiles of all spacings, not of the repetitions' ones
    assert pooled.send_spacing_by_group is not None
    assert pooled.send_spacing_by_group["1"] == models.SendSpacing(count=4, p50_ns=60.0,
                                                                   p99_ns=148.5)
    assert pooled.send_spacing_by_group["2"].count == 1
    assert pooled.send_spacing == models.SendSpacing(count=5, p50_ns=100.0, p99_ns=390.0)
    # without spacings (as before): no key
    assert "send_spacing" not in metrics.multicast_block("generator", {1: 6}, rs).document()
    assert "send_spacing" not in metrics.pool_multicast([b1], {}).document()


# --- the observer effect: probed pass against the probes-off control pass ----------------------


def unicast_pass(elapsed_ns: int, rtt_ns: int) -> models.Blocks:
    """A pass that moved 100 replies in ``elapsed_ns`` with every round trip ``rtt_ns``."""
    return models.Blocks(unicast=metrics.unicast_block(
        [sender(100, 100, elapsed_ns, [rtt_ns] * 3)], timed=True))


def multicast_pass(p50s_ns: list[int | None]) -> models.Blocks:
    """A multicast pass whose receivers' latency p50s are ``p50s_ns`` (None: no samples)."""
    rs = [receiver(f"r{i}.0", [1], 3, [] if p is None else [p] * 3)
          for i, p in enumerate(p50s_ns)]
    return models.Blocks(multicast=metrics.multicast_block("relay", {1: 3}, rs))


def test_observer_effect_exact_percentages_and_their_signs() -> None:
    # probed: 100 replies in 2 s (50/s), rtt 3 µs; control: 100 in 1 s (100/s), rtt 2 µs
    probed, control = unicast_pass(2 * 10**9, 3000), unicast_pass(10**9, 2000)
    assert metrics.observer_effect(probed, control).document() == {
        "throughput_pct": -50.0,  # the probes halved the throughput
        "p50_pct": 50.0}  # and made the round trip 50 % slower
    # the other way round is a different answer, not the same one: order matters
    assert metrics.observer_effect(control, probed).document() == {
        "throughput_pct": 100.0, "p50_pct": -33.33}


def test_observer_effect_multicast_is_the_mean_of_receiver_p50s() -> None:
    # probed receivers' p50s 3, 3 and 9 µs (mean 5, median 3); one receiver got nothing
    probed, control = multicast_pass([3000, 3000, 9000, None]), multicast_pass([2000, 2000])
    assert metrics.observer_effect(probed, control).document() == {
        "multicast_latency_p50_pct": 150.0}
    assert metrics.observer_effect(control, probed).document() == {
        "multicast_latency_p50_pct": -60.0}


def test_observer_effect_without_data_is_null_and_without_a_block_absent() -> None:
    no_replies = models.Blocks(unicast=metrics.unicast_block([sender(100, 0, 0, [])],
                                                             timed=True))
    assert metrics.observer_effect(unicast_pass(10**9, 2000), no_replies).document() == {
        "throughput_pct": None, "p50_pct": None}
    assert metrics.observer_effect(multicast_pass([None]), multicast_pass([2000])).document() \
        == {"multicast_latency_p50_pct": None}
    assert metrics.observer_effect(unicast_pass(10**9, 2000), models.Blocks()).document() == {}


# --- /proc parsers -----------------------------------------------------------------------------

PROC_NETLINK = """\
sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
000000006ad3026c 0   0          00000000 0        0        0     2        0        4
00000000a4c8a257 31  4242       00000003 2304     0        0     2        17       918273
0000000065731efa 31  -4107      00000001 0        0        0     2        123456   918274
000000004018ddb4 9   0          00000000 0        0        0     2        0        17
"""


def test_netlink_drops_parses_table() -> None:
    assert nlsock.netlink_drops(918273, PROC_NETLINK) == 17
    assert nlsock.netlink_drops(918274, PROC_NETLINK) == 123456
    assert nlsock.netlink_drops(4, PROC_NETLINK) == 0
    # an inode equal to another column's value (Drops 17 / Inode 17) matches by Inode only
    assert nlsock.netlink_drops(17, PROC_NETLINK) == 0
    assert nlsock.netlink_drops(2, PROC_NETLINK) is None
    assert nlsock.netlink_drops(999, PROC_NETLINK) is None
    assert nlsock.netlink_drops(4, "") is None
    assert nlsock.netlink_drops(4, "sk Eth Pid\n0 0 0\n") is None


def test_netlink_drops_of_a_live_socket() -> None:
    s = nlsock.open_socket(socket.NETLINK_ROUTE)
    try:
        inode = nlsock.socket_inode(s)
        assert nlsock.netlink_drops(inode) == 0
    finally:
        s.close()
    assert nlsock.netlink_drops(inode) is None


STATUS = """\
Name:\tpython3
State:\tS (sleeping)
Pid:\t4242
Threads:\t1
voluntary_ctxt_switches:\t1234
nonvoluntary_ctxt_switches:\t56
"""


def test_ctx_switches_parses_status() -> None:
    assert procstat.ctx_switches(status=STATUS) == {"voluntary": 1234, "involuntary": 56}
    assert procstat.ctx_switches(status="Name:\tx\n") == {"voluntary": 0, "involuntary": 0}


def test_ctx_switches_live_and_delta() -> None:
    before = procstat.ctx_switches()
    after = procstat.ctx_switches("self")
    d = procstat.delta(after, before)
    assert set(d) == {"voluntary", "involuntary"}
    assert all(v >= 0 for v in d.values())
    assert procstat.delta({"voluntary": 10, "involuntary": 3}, {"voluntary": 4}) == {
        "voluntary": 6, "involuntary": 3}


def test_sent_to() -> None:
    assert metrics.sent_to([1, 3], {1: 5, 2: 7, 3: 11}) == 16
    assert metrics.sent_to([4], {1: 5}) == 0


def test_simple_namespace_receivers_work_too() -> None:
    """multicast_block takes any object with the ReceiverResult attributes."""
    r = SimpleNamespace(id="x", groups=[1], received=3, enobufs=0, sk_drops=None, seq_gaps=0,
                        foreign=0, records=None)
    block = metrics.multicast_block("generator", {1: 5}, [r])
    assert block.receivers[0].lost == 2
    assert block.receivers[0].latency_us.count == 0


# --- samples.parquet: one repetition's rows -------------------------------------------------


def test_sample_table_rows_and_columns() -> None:
    records = np.array([[0, 100, 300, 600, 1000], [50, 200, 260, 400, 900]], dtype=np.int64)
    table = samples.sample_table("mode=kthread", 3, True, records, True,
                                 {"r0.0": np.array([7000], dtype=np.int64),
                                  "r1.0": np.array([], dtype=np.int64)})
    assert table.column_names == list(samples.SAMPLE_COLUMNS)
    assert table.to_pylist() == [
        {"case": "mode=kthread", "repetition": 3, "control": True, "source": "unicast",
         "rtt_ns": 1000, "user_to_kernel_ns": 100, "queue_ns": 200, "processing_ns": 300,
         "kernel_to_user_ns": 400, "latency_ns": None},
        {"case": "mode=kthread", "repetition": 3, "control": True, "source": "unicast",
         "rtt_ns": 850, "user_to_kernel_ns": 150, "queue_ns": 60, "processing_ns": 140,
         "kernel_to_user_ns": 500, "latency_ns": None},
        {"case": "mode=kthread", "repetition": 3, "control": True, "source": "r0.0",
         "rtt_ns": None, "user_to_kernel_ns": None, "queue_ns": None, "processing_ns": None,
         "kernel_to_user_ns": None, "latency_ns": 7000}]
    # a raw echo has no stamps: the round trip only
    raw = samples.sample_table("default", 0, False, records, False, {}).to_pylist()
    assert [(r["rtt_ns"], r["queue_ns"]) for r in raw] == [(1000, None), (850, None)]
    assert samples.sample_table("default", 0, False, None, True, {}).num_rows == 0


# --- a case's probe counters pooled over its repetitions -----------------------------------------

P = {name: i for i, name in enumerate(probe_table.PROBES)}
TO_KERNEL, TO_USER = 0, 1
R = {name: i for i, name in enumerate(probe_table.RESULTS)}


def _cell(values: list[int]) -> pb.HistCell:
    log2 = [0] * probe_table.LOG2_SLOTS
    lin = [0] * 101
    for v in values:
        log2[v.bit_length()] += 1
        lin[min(v // 1000, 100)] += 1
    return pb.HistCell(len(values), sum(values), max(values), log2, lin)


def _snapshot(scale: int) -> pb.MapSnapshot:
    """A repetition's maps; ``scale`` makes the two repetitions differ."""
    return pb.MapSnapshot(
        hist={hist_index(P["netlink_unicast"], TO_KERNEL): [_cell([1500 * scale, 2500])],
              hist_index(P["netlink_unicast"], TO_USER): [_cell([3000 * scale])],
              hist_index(P["netlink_broadcast"], TO_USER): [_cell([400 * scale] * scale)],
              hist_index(P["nlperf_input"], 0): [_cell([4000 * scale])],
              hist_index(P["work"], 0): [_cell([9000])],
              hist_index(P["offcpu"], probe_table.ROLE_LAB): [_cell([200_000 * scale])],
              hist_index(P["wakeup"], probe_table.ROLE_KTHREAD): [_cell([7000 + scale])]},
        calls={calls_index(P["netlink_unicast"], TO_KERNEL, R["ok"]): [2, scale],
               calls_index(P["netlink_unicast"], TO_KERNEL, R["EAGAIN"]): [0, scale],
               calls_index(P["netlink_unicast"], TO_USER, R["ok"]): [scale, 0],
               calls_index(P["netlink_broadcast"], TO_USER, R["ESRCH"]): [0, 3 * scale]},
        by_proc={(100 + scale, 0): [4, 1]},
        overruns={7000 + scale: [1, scale]},
        deliveries={8000 + scale: [5, 0]},
        sched_cnt={100 + scale: (3, scale, 4), 900: (1, 1, scale)})


def _settings(scale: int, timing: bool = True) -> pb.BlockSettings:
    return pb.BlockSettings(
        which=("unicast", "broadcast", "overrun", "sched", "module"), timing=timing,
        by_process=True, deliveries=True, lin_step_ns=1000,
        attach_kinds={"netlink_unicast": "fentry/fexit"}, pids=(100 + scale,),
        kthread_pid=900)


def _both(a: pb.MapSnapshot, b: pb.MapSnapshot) -> pb.MapSnapshot:
    """One snapshot holding both repetitions (each one's CPUs side by side)."""
    def join(x: dict[Any, list[Any]], y: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
        return {k: x.get(k, []) + y.get(k, []) for k in x.keys() | y.keys()}
    sched = dict(a.sched_cnt)
    for pid, counts in b.sched_cnt.items():
        old = sched.get(pid, (0, 0, 0))
        sched[pid] = tuple(o + c for o, c in zip(old, counts, strict=True))  # type: ignore
    return pb.MapSnapshot(hist=join(a.hist, b.hist), calls=join(a.calls, b.calls),
                          overruns=join(a.overruns, b.overruns),
                          deliveries=join(a.deliveries, b.deliveries), sched_cnt=sched)


def test_histogram_row_labels_are_the_probe_suites() -> None:
    every = pb.MapSnapshot(hist={hist_index(p, d): [_cell([5])]
                                 for p in range(len(probe_table.PROBES))
                                 for d in range(len(probe_table.DIRS))})
    assert sorted(pb.histograms_block(every, 1000)["rows"]) == sorted(
        probe_pool.row_label(probe, d) for probe in probe_table.PROBES
        for d in range(len(probe_table.DIRS)))


def test_case_probes_pool_counts_and_histograms_of_the_repetitions() -> None:
    reps = [(_settings(1), _snapshot(1)), (_settings(2), _snapshot(2))]
    pooled = probe_pool.pool_probes(
        {"netlink_unicast": "fentry/fexit"}, [pb.probes_block(s, snap) for s, snap in reps],
        [pb.histograms_block(snap, 1000) for _, snap in reps])
    # the reference: the block of one snapshot holding both repetitions' maps
    both = pb.probes_block(_settings(1), _both(reps[0][1], reps[1][1]))
    uc, ref = pooled.netlink_unicast, both["netlink_unicast"]
    # repetition 1: to_kernel ok 3, EAGAIN 1, kernel_to_user ok 1; repetition 2: 4, 2, 2
    results = {"ok": 10, "EAGAIN": 3, "ENOBUFS": 0, "ESRCH": 0, "ECONNREFUSED": 0, "other": 0}
    assert (ref["calls"], ref["results"]) == (13, results)
    assert uc is not None and uc.document() == {
        "calls": 13, "results": results,
        "by_direction": {
            "to_kernel": {"calls": 10, "results": {"ok": 7, "EAGAIN": 3},
                          "latency_ns": ref["by_direction"]["to_kernel"]["latency_ns"]},
            "kernel_to_user": {"calls": 3, "results": {"ok": 3},
                               "latency_ns": ref["by_direction"]["kernel_to_user"]["latency_ns"]}},
        "latency_ns": ref["latency_ns"]}
    # 1500, 2500 | 3000, 2500 to the kernel and 3000 | 6000 back
    assert uc.latency_ns is not None
    assert (uc.latency_ns.count, uc.latency_ns.mean, uc.latency_ns.max) == (6, 3083.3, 6000)
    bc = pooled.netlink_broadcast
    assert bc is not None and (bc.calls, bc.results["ESRCH"]) == (9, 9)
    assert bc.by_direction["kernel_to_user"].latency_ns is not None
    assert bc.by_direction["kernel_to_user"].latency_ns.count == 3
    assert pooled.netlink_overrun is not None and pooled.netlink_overrun.total == 5
    assert pooled.deliveries is not None and pooled.deliveries.total == 10
    sched = pooled.sched
    assert sched is not None and sched.lab is not None and sched.kthread is not None
    assert (sched.lab.voluntary, sched.lab.involuntary, sched.lab.wakeups) == (6, 3, 8)
    assert (sched.kthread.voluntary, sched.kthread.involuntary, sched.kthread.wakeups) == (
        2, 2, 3)
    assert sched.lab.blocked_ns is not None
    assert sched.lab.blocked_ns.document() == both["sched"]["lab"]["blocked_ns"]
    assert sched.lab.blocked_ns.count == 2
    assert sched.lab.wakeup_to_run_ns is None  # no such row: left out, not invented
    assert sched.kthread.wakeup_to_run_ns is not None
    assert sched.kthread.wakeup_to_run_ns.document() == both["sched"]["kthread"][
        "wakeup_to_run_ns"]
    assert sched.workqueue is not None and sched.workqueue.count == 2
    assert pooled.module is not None and list(pooled.module) == ["nlperf_input"]
    assert pooled.module["nlperf_input"].document() == both["module"]["nlperf_input"]
    assert list(pooled.document()) == ["attach", "netlink_unicast", "netlink_broadcast",
                                       "netlink_overrun", "deliveries", "sched", "module"]


def test_case_probes_without_timing_keep_counts_only() -> None:
    reps = [(_settings(1, timing=False), _snapshot(1)), (_settings(2, timing=False),
                                                         _snapshot(2))]
    pooled = probe_pool.pool_probes({}, [pb.probes_block(s, snap) for s, snap in reps],
                                    [None, None])
    assert pooled.netlink_unicast is not None and pooled.netlink_unicast.document() == {
        "calls": 13, "results": {"ok": 10, "EAGAIN": 3, "ENOBUFS": 0, "ESRCH": 0,
                                 "ECONNREFUSED": 0, "other": 0},
        "by_direction": {"to_kernel": {"calls": 10, "results": {"ok": 7, "EAGAIN": 3}},
                         "kernel_to_user": {"calls": 3, "results": {"ok": 3}}}}
    assert pooled.module is None
    assert pooled.sched is not None and pooled.sched.lab is not None
    assert pooled.sched.lab.blocked_ns is None  # no histograms: no latency


def test_relay_requests_and_refusals_are_pooled_into_the_case() -> None:
    def rep(requested: int | None, errors: int | None) -> models.Multicast:
        return models.Multicast(source="relay", sent_by_group={"1": 10}, receivers=[],
                                relay_requested=requested, relay_errors=errors)

    pooled = metrics.pool_multicast([rep(101, 7), rep(101, 0), rep(101, 3)], {})
    assert (pooled.relay_requested, pooled.relay_errors) == (303, 10)
    assert pooled.sent_by_group == {"1": 30}
    generator = metrics.pool_multicast([rep(None, None)], {})
    assert (generator.relay_requested, generator.relay_errors) == (None, None)


def test_the_senders_own_queue_is_reported_and_pooled() -> None:
    a = sender(100, 90, 10**9, [1000], timeouts=10, sk_drops=10, reply_truesize=768,
               rcvbuf=400_000)
    b = sender(100, 100, 10**9, [1000], sk_drops=0, reply_truesize=832, rcvbuf=300_000)
    block = metrics.unicast_block([a, b], timed=True)
    # the replies the senders' queues dropped; the largest charge, the smallest queue
    assert (block.sk_drops, block.reply_truesize, block.rcvbuf) == (10, 832, 300_000)
    case = metrics.pool_unicast([block, block], [], timed=True)
    assert (case.sk_drops, case.reply_truesize, case.rcvbuf) == (20, 832, 300_000)
    unknown = metrics.unicast_block([a, sender(1, 1, 10**9, [1000])], timed=True)
    assert unknown.sk_drops is None and unknown.rcvbuf == 400_000  # one sender could not tell


def test_the_senders_send_syscall_time_is_a_block_and_pools_into_the_case() -> None:
    send = probe_table.PROBES.index("send_syscall")

    def rep(values: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
        snap = pb.MapSnapshot(hist={hist_index(send, probe_table.ROLE_LAB): [_cell(values)]})
        s = replace(_settings(1), which=("send",))
        return pb.probes_block(s, snap), pb.histograms_block(snap, 1000)

    (b1, h1), (b2, h2) = rep([20_000, 30_000]), rep([250_000])
    assert b1["send_syscall_ns"]["count"] == 2 and b1["send_syscall_ns"]["max"] == 30_000
    assert list(h1["rows"]) == ["send_syscall/lab"]
    pooled = probe_pool.pool_probes({"send_syscall": "tracepoint"}, [b1, b2], [h1, h2])
    assert pooled.send_syscall_ns is not None
    assert (pooled.send_syscall_ns.count, pooled.send_syscall_ns.max) == (3, 250_000)
    assert pooled.send_syscall_ns.mean == 100_000.0
    # counters only: not timed, not reported
    off = pb.probes_block(replace(_settings(1, timing=False), which=("send",)),
                          pb.MapSnapshot())
    assert "send_syscall_ns" not in off


def test_the_inner_run_writes_sample_parts_without_importing_pandas(tmp_path: Path) -> None:
    """pyarrow imports pandas on its first conversion: ~10 s of emulated CPU in the lab VM."""
    import subprocess
    import sys

    code = f"""
import sys
import numpy as np
from pathlib import Path
from nlperf import samples
samples.arrow_without_pandas()
table = samples.sample_table("c", 0, False, None, True, {{"r0.0": np.arange(5)}})
samples.write_part(Path({str(tmp_path)!r}), 3, table)
assert "pandas" not in sys.modules, "pandas was imported"
import pandas as pd  # still importable afterwards
frame = pd.read_parquet(Path({str(tmp_path)!r}) / samples.part_name(3))
assert frame["latency_ns"].tolist() == [0, 1, 2, 3, 4], frame
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
