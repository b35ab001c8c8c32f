"""The Python workload drivers against the real module (in the lab VM)."""

from __future__ import annotations

import socket
from threading import Event

import numpy as np

from nlperf import wire
from nlperf.nlsock import Control
from nlperf.samples import components
from nlperf.workloads.multicast import Receiver, ReceiverConfig
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


def test_open_loop_reports_the_rate_it_achieved(module: Loaded) -> None:
    module(mode="callback")
    res = _run(SenderConfig(kind="timed", pattern="open", rate=2000, count=400), 400)
    assert (res.sent, res.received, res.timeouts) == (400, 400, 0)
    assert res.achieved_rate is not None and 1400 < res.achieved_rate < 2600
    assert res.max_backlog >= 1


def test_a_window_beyond_the_receive_buffer_loses_replies_and_says_so(module: Loaded) -> None:
    """Replies are sent MSG_DONTWAIT: a full receive queue drops them; the sender must not hang."""
    module(mode="workqueue", queue_len=4096)
    cfg = SenderConfig(kind="timed", count=3000, window=3000, batch=64, reply_timeout_ms=300)
    res = _run(cfg, 3000, rcvbuf=4096)
    assert res.sent == 3000
    assert res.timeouts > 0
    assert res.received + res.timeouts + res.errors == res.sent
    assert res.sk_drops is not None and res.sk_drops >= res.timeouts - res.errors


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
