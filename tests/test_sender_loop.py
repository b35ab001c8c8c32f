"""The unicast senders' closed loops against a fake module (tests/fake_kernel.py): exact stamps,
exact accounting, and the socket mode they wait in. The real module: tests/vm/test_workloads.py."""

from __future__ import annotations

import errno
import time

import numpy as np
import pytest

from nlperf import wire
from nlperf.workloads import unicast
from nlperf.workloads.common import TIMEVAL, kernel_timeout
from nlperf.workloads.unicast import Sender, SenderConfig
from tests.fake_kernel import (
    CLOCK_READ_NS,
    KERN_RECV_AT,
    KERN_SEND_AT,
    PROC_START_AT,
    RECV_NS,
    SEND_NS,
    FakeClock,
    FakeKernelSocket,
)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKernelSocket:
    clock = FakeClock()
    sock = FakeKernelSocket(clock)
    monkeypatch.setattr(time, "monotonic_ns", clock)
    monkeypatch.setattr(unicast, "open_socket", lambda proto: sock)
    return sock


def _run(cfg: SenderConfig) -> unicast.SenderResult:
    s = Sender(cfg)
    try:
        return s.run(cfg.count, cfg.duration)
    finally:
        s.close()


def test_each_record_holds_its_own_send_and_reply_stamps(fake: FakeKernelSocket) -> None:
    """user send: read just before its send; kernel stamps: the module's; user receive: read
    just after its own reply. Nothing else reads the clock between a message's two stamps, and
    one clock read separates a reply's stamp from the next message's send stamp."""
    res = _run(SenderConfig(kind="timed", count=200))
    assert (res.sent, res.received, res.errors, res.timeouts, res.foreign) == (200, 200, 0, 0, 0)
    assert res.records is not None and res.records.shape == (200, 5)
    us, kr, ps, ks, ur = (res.records[:, i] for i in range(5))
    assert (kr - us == KERN_RECV_AT).all() and (ps - us == PROC_START_AT).all()
    assert (ks - us == KERN_SEND_AT).all()
    assert (ur - us == SEND_NS + RECV_NS + CLOCK_READ_NS).all()
    assert (us[1:] - ur[:-1] == CLOCK_READ_NS).all()
    assert fake.clock.reads == 2 * 200 + 2  # two per message, the budget's start and end
    assert res.elapsed_ns == int(ur[-1] - us[0]) + 2 * CLOCK_READ_NS


def test_a_raw_ping_pong_times_each_round_trip_as_a_timed_one(fake: FakeKernelSocket) -> None:
    """A raw echo carries back the send time the sender wrote: the same lean loop, the same
    round trips; no kernel stamps (zeros)."""
    res = _run(SenderConfig(kind="raw", count=100))
    assert (res.sent, res.received, res.timeouts) == (100, 100, 0)
    assert res.records is not None and res.records.shape == (100, 5)
    assert (res.records[:, 1:4] == 0).all()
    assert (res.records[:, 4] - res.records[:, 0] == SEND_NS + RECV_NS + CLOCK_READ_NS).all()
    assert fake.clock.reads == 2 * 100 + 2


@pytest.mark.parametrize("cfg", [SenderConfig(kind="timed", count=50),
                                 SenderConfig(kind="timed", count=48, batch=4),
                                 SenderConfig(kind="raw", count=30)],
                         ids=["ping-pong", "batched", "raw"])
def test_closed_loops_wait_in_the_kernel_not_in_python(fake: FakeKernelSocket,
                                                       cfg: SenderConfig) -> None:
    """A Python socket timeout costs a poll and two clock reads per call: the closed loops
    receive on a blocking socket whose SO_RCVTIMEO is the reply timeout, and give the socket
    its Python timeout back afterwards."""
    res = _run(cfg)
    assert (res.sent, res.received) == (cfg.count, cfg.count)
    assert fake.receives and set(fake.receives) == {(None, TIMEVAL.pack(1, 0))}
    assert fake.timeout == 1.0 and fake.rcvtimeo == TIMEVAL.pack(0, 0)


def test_ping_pong_accounts_for_every_message(fake: FakeKernelSocket) -> None:
    """Lost, errored and overrun replies, and a foreign message, each counted once; the lost
    one is waited for as long as the reply timeout, and the loop goes on."""
    fake.lose, fake.error_for, fake.overrun_for = {3}, {5: errno.EPERM}, {7}
    fake.forge(wire.nlmsg(wire.MSG_TIMED_ECHO, wire.stamp(0, 1)), port=4321)
    res = _run(SenderConfig(kind="timed", count=100, reply_timeout_ms=250))
    assert (res.sent, res.received, res.errors, res.timeouts, res.enobufs, res.foreign) == (
        100, 97, 1, 2, 1, 1)
    assert res.errnos == {"EPERM": 1}
    assert res.records is not None and len(res.records) == 97
    assert set(fake.receives) == {(None, TIMEVAL.pack(0, 250_000))}
    sent_stamps = res.records[:, 0]
    assert (np.diff(sent_stamps) > 0).all()


def test_past_its_capacity_the_log_keeps_a_reservoir_and_counts_every_reply(
        fake: FakeKernelSocket) -> None:
    res = _run(SenderConfig(kind="timed", count=300, capacity=16))
    assert (res.sent, res.received) == (300, 300)
    assert res.records is not None and res.records.shape == (16, 5)
    parts = res.records[:, 4] - res.records[:, 0]
    assert (parts == SEND_NS + RECV_NS + CLOCK_READ_NS).all()  # whole records, never torn


def test_a_duration_is_checked_every_burst(fake: FakeKernelSocket) -> None:
    """1 ms of fake time is less than one burst of round trips (~101 µs each): the deadline
    is read before the first message and after every BURST messages."""
    res = _run(SenderConfig(kind="timed", count=None, duration=0.001))
    assert res.sent == res.received == unicast.BURST


def test_kernel_timeout_restores_the_python_timeout_even_on_error(fake: FakeKernelSocket) -> None:
    fake.settimeout(2.5)
    with pytest.raises(RuntimeError), kernel_timeout(fake, 1500):  # type: ignore[arg-type]
        assert (fake.timeout, fake.rcvtimeo) == (None, TIMEVAL.pack(1, 500_000))
        raise RuntimeError
    assert (fake.timeout, fake.rcvtimeo) == (2.5, TIMEVAL.pack(0, 0))
