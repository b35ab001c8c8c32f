"""The Python workload drivers against the real module (in the lab VM)."""

from __future__ import annotations

import socket
import time
from threading import Event

import numpy as np
import pytest

from nlperf import wire
from nlperf.metrics import multicast_block, send_spacing_of
from nlperf.nlsock import Control
from nlperf.samples import components
from nlperf.workloads.multicast import Receiver, ReceiverConfig, RelaySender
from nlperf.workloads.unicast import Sender, SenderConfig
from tests.vm.conftest import Loaded


def _run(cfg: SenderConfig, count: int, rcvbuf: int | None = None):  # type: ignore[no-untyped-def]
    s = Sender(cfg)
    if rcvbuf:
        s.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
    try:
        return s.run(count, None)
    finally:
        s.close()


def _check_timed(records: np.ndarray, n: int) -> None:
    assert records.shape == (n, 5)
    parts = components(records)
    for name in ("user_to_kernel", "queue", "processing", "kernel_to_user"):
        assert (parts[name] >= 0).all(), name
    assert (parts["rtt"] == parts["user_to_kernel"] + parts["queue"] + parts["processing"]
            + parts["kernel_to_user"]).all()


def test_ping_pong_and_windowed_batches_account_for_every_message(module: Loaded) -> None:
    module(mode="kthread")
    res = _run(SenderConfig(kind="timed", count=500), 500)
    assert (res.sent, res.received, res.errors, res.timeouts) == (500, 500, 0, 0)
    assert res.records is not None
    _check_timed(res.records, 500)
    res = _run(SenderConfig(kind="timed", count=600, window=8, batch=4), 600)
    assert (res.sent, res.received, res.errors, res.timeouts) == (600, 600, 0, 0)
    assert res.records is not None
    _check_timed(res.records, 600)
    res = _run(SenderConfig(kind="raw", count=300, window=4), 300)
    assert (res.sent, res.received) == (300, 300)
    assert res.records is not None and (components(res.records, False)["rtt"] > 0).all()


def test_open_loop_keeps_its_schedule_and_reports_what_it_achieved(module: Loaded) -> None:
    """Exact relations only (emulated timing is noisy): the rate reported is sent ÷ elapsed,
    the schedule is never run ahead of, and the backlog is 1 when the reply comes inside send()
    (callback) but grows when the module serves 4x slower than the offered rate."""
    rate, count = 2000, 40
    module(mode="callback")
    res = _run(SenderConfig(kind="timed", pattern="open", rate=rate, count=count), count)
    assert (res.sent, res.received, res.timeouts) == (count, count, 0)
    assert res.achieved_rate == res.sent / (res.elapsed_ns / 1e9)
    # the last send is due (count - 1) intervals after the first: never earlier
    assert res.elapsed_ns >= (count - 1) * int(1e9 / rate)
    assert res.max_backlog == 1  # each reply is queued before send() returns
    module(mode="kthread", work_sleep_us=2000)  # serves at most 500/s
    res = _run(SenderConfig(kind="timed", pattern="open", rate=rate, count=count), count)
    assert (res.sent, res.received, res.timeouts) == (count, count, 0)
    assert res.max_backlog > 1


def test_a_window_beyond_the_receive_buffer_loses_replies_and_says_so(module: Loaded) -> None:
    """Replies are sent MSG_DONTWAIT: a full receive queue drops them; the sender must not hang."""
    module(mode="workqueue", queue_len=4096)
    cfg = SenderConfig(kind="timed", count=3000, window=3000, batch=64, reply_timeout_ms=300)
    res = _run(cfg, 3000, rcvbuf=4096)
    assert res.sent == 3000
    assert res.timeouts > 0
    assert res.received + res.timeouts + res.errors == res.sent
    assert res.sk_drops is not None and res.sk_drops >= res.timeouts - res.errors
    assert res.sk_drops > 0  # the loss is the sender's own queue, and the result says so


def test_a_deep_window_sizes_its_own_receive_queue_and_loses_nothing(module: Loaded) -> None:
    """Raw echoes, window 256 in batches of 32: the replies of a whole window are queued at
    once, each charged its skb truesize; the default queue (208 KiB) overran and lost about
    half of them. The sender measures the charge of one reply and makes room for the window."""
    module(mode="callback")
    cfg = SenderConfig(kind="raw", message_size=64, count=5000, window=256, batch=32)
    s = Sender(cfg)
    try:
        assert s.reply_truesize is not None and s.reply_truesize > 64 + 16  # not the payload
        assert s.rcvbuf is not None and s.rcvbuf >= 256 * s.reply_truesize
        res = s.run(5000, None)
    finally:
        s.close()
    assert (res.sent, res.received, res.timeouts, res.sk_drops) == (5000, 5000, 0, 0)
    assert (res.reply_truesize, res.rcvbuf) == (s.reply_truesize, s.rcvbuf)


def test_a_receiver_counts_what_another_socket_sends_to_its_group_as_foreign(
        module: Loaded) -> None:
    """Only the kernel (port id 0) speaks for the lab; a user socket's message is not data."""
    module(mode="callback")
    rx = Receiver(ReceiverConfig(id="r", groups=(1,), drain_timeout_ms=300))
    forger = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, wire.PROTO_DEFAULT)
    try:
        forger.bind((0, 0))
        rx.start_window()
        end = wire.stamp(0, flags=wire.STAMP_F_END, group=1)  # would end the stream at once
        forger.sendto(wire.nlmsg(wire.MSG_MCAST_DATA, end), (0, 1))  # root may send to groups
        with Control(wire.PROTO_DEFAULT) as ctl:
            ctl.gen_start([1], 64, count=5)
            done = Event()
            done.set()
            res = rx.run(done, (1,))
    finally:
        forger.close()
        rx.close()
    assert (res.foreign, res.received, res.ends) == (1, 6, 1)


def test_a_sender_counts_a_message_from_another_socket_as_foreign(module: Loaded) -> None:
    """A root socket may send to a sender's port: not a reply (only port id 0 is the kernel)."""
    module(mode="callback")
    forger = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, wire.PROTO_DEFAULT)
    forger.bind((0, 0))
    try:
        for cfg in (SenderConfig(kind="timed", count=50),
                    SenderConfig(kind="timed", count=60, window=4)):
            s = Sender(cfg)
            try:
                forged = wire.nlmsg(wire.MSG_TIMED_ECHO, wire.stamp(0, 1))
                forger.sendto(forged, (s.sock.getsockname()[0], 0))
                res = s.run(cfg.count, None)
            finally:
                s.close()
            assert (res.foreign, res.received, res.timeouts) == (1, cfg.count, 0)
            assert res.records is not None
            _check_timed(res.records, cfg.count)
    finally:
        forger.close()


@pytest.mark.parametrize("source", ["generator-kernel", "generator-atomic", "relay"])
def test_receivers_give_the_sources_spacing_between_consecutive_sends(
        module: Loaded, source: str) -> None:
    """Every consecutive pair of a group's sends gives one spacing, and they add up exactly to
    the span of its kernel send stamps; two receivers of a group see the same stamped sends."""
    module(mode="callback")
    n, rate = 200, 2000
    rxs = [Receiver(ReceiverConfig(id=f"r{g}.{k}", groups=(g,), rcvbuf=1 << 22,
                                   drain_timeout_ms=300, capacity=1024))
           for g, k in ((1, 0), (1, 1), (2, 0))]
    try:
        for rx in rxs:
            rx.start_window()
        if source == "relay":
            relay = RelaySender(wire.PROTO_DEFAULT, [1, 2], 64)
            try:
                assert relay.run(n, None, rate).errors == 0
            finally:
                relay.close()
        else:
            with Control(wire.PROTO_DEFAULT) as ctl:
                ctl.gen_start([1, 2], 64, count=n, rate=rate, alloc=source.split("-")[1])
                deadline = time.monotonic() + 60
                while ctl.stats().fields["gen_pid"] and time.monotonic() < deadline:
                    time.sleep(0.05)
        done = Event()
        done.set()
        results = [rx.run(done, (1, 2)) for rx in rxs]  # a 4 MiB queue holds every send
    finally:
        for rx in rxs:
            rx.close()
    for r in results:
        assert (r.received, r.seq_gaps, r.ends) == (n + 1, 0, 1)  # lossless, end marker too
        assert r.records is not None and r.send_ids is not None
        assert r.send_ids.tolist() == [[r.groups[0], seq] for seq in range(n)]
    same_a, same_b, other = results
    assert same_a.records is not None and same_b.records is not None
    assert (same_a.records[:, 3] == same_b.records[:, 3]).all()  # one send, one stamp
    spacing = send_spacing_of(results)
    assert sorted(spacing) == [1, 2]
    for r in (same_a, other):
        assert r.records is not None
        got, stamps = spacing[r.groups[0]], r.records[:, 3]
        assert got.size == r.received - 2  # n sends, n - 1 pairs (the end marker is no send)
        assert int(got.sum()) == int(stamps[-1] - stamps[0])
        assert (got >= 0).all()
    block = multicast_block("relay" if source == "relay" else "generator",
                            {1: n + 1, 2: n + 1}, results, spacing)
    assert block.send_spacing is not None and block.send_spacing_by_group is not None
    assert block.send_spacing.count == 2 * (n - 1)
    for g in ("1", "2"):
        one = block.send_spacing_by_group[g]
        assert one.count == n - 1
        assert one.p50_ns is not None and one.p99_ns is not None and one.p50_ns <= one.p99_ns
