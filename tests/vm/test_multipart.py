"""Coalesced replies (NLPERF_F_COALESCE, kmod/nlperf_uapi.h), in each processing model (in the
lab VM): one datagram of flagged echoes comes back as one datagram of parts with NLM_F_MULTI,
closed by NLMSG_DONE; what does not fit falls back; without the flag nothing changes."""

from __future__ import annotations

import errno
import itertools
import socket
import time

import pytest

from nlperf import wire
from nlperf.nlsock import Control
from nlperf.workloads.unicast import Sender, SenderConfig
from tests.vm.conftest import PROTO, Loaded, client, error_of, parse_msgs, track

MODES = ["callback", "kthread", "workqueue"]
COALESCE = wire.NLM_F_REQUEST | wire.F_COALESCE
MULTI = wire.NLM_F_MULTI
WORK_NS = 20_000  # busy work per message: consecutive messages' stamps cannot coincide
DONE_PAYLOAD = bytes(4)
NLM_F_CAPPED = 0x100  # linux/netlink.h: an ack without the request's payload

Msg = tuple[int, int, int, bytes]  # type, flags, seq, payload


def datagrams(s: socket.socket, n: int) -> list[list[Msg]]:
    """The next ``n`` datagrams, each as its messages; then checks that nothing else came."""
    got = [parse_msgs(s.recv(1 << 17)) for _ in range(n)]
    s.settimeout(0.3)
    with pytest.raises(TimeoutError):
        s.recv(1 << 17)
    return got


def parts_of(dgram: list[Msg]) -> list[Msg]:
    """A datagram of parts without its NLMSG_DONE, after checking that it ends with exactly
    one, carrying the last part's seq, and that every part has NLM_F_MULTI."""
    *parts, done = dgram
    assert parts, dgram
    assert done == (wire.NLMSG_DONE, MULTI, parts[-1][2], DONE_PAYLOAD)
    assert all(flags == MULTI for _, flags, _, _ in parts), dgram
    assert wire.NLMSG_DONE not in [mtype for mtype, _, _, _ in parts]
    return parts


def settled(ctl: Control) -> dict[str, int | str]:
    return ctl.wait_idle(10).fields


@pytest.mark.parametrize("mode", MODES)
def test_a_datagram_of_echoes_comes_back_as_one_datagram_of_parts(module: Loaded,
                                                                  mode: str) -> None:
    module(mode=mode, work_ns=WORK_NS)
    s = client()
    k = 6
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.reset_stats()
        t_send = time.monotonic_ns()
        # timed and raw echoes mixed: one run
        msgs = [wire.nlmsg(wire.MSG_TIMED_ECHO, wire.stamp(100 + i, t_send) + b"p" * i,
                           flags=COALESCE, seq=i) if i % 3 else
                wire.nlmsg(wire.MSG_ECHO, b"raw%d" % i, flags=COALESCE, seq=i)
                for i in range(k)]
        s.send(b"".join(msgs))
        (dgram,) = datagrams(s, 1)
        st = settled(ctl)
    parts = parts_of(dgram)
    assert [(mtype, seq) for mtype, _, seq, _ in parts] == [
        (wire.MSG_TIMED_ECHO if i % 3 else wire.MSG_ECHO, i) for i in range(k)]
    assert [p for _, _, _, p in parts[::3]] == [b"raw0", b"raw3"]
    # each timed part carries its own message's stamps, taken in processing order
    stamps = [wire.Stamp.unpack_from(p) for mtype, _, _, p in parts
              if mtype == wire.MSG_TIMED_ECHO]
    assert [(st_.seq, st_.user_send_ns) for st_ in stamps] == [
        (100 + i, t_send) for i in range(k) if i % 3]
    assert len({st_.kern_recv_ns for st_ in stamps}) == 1  # one datagram, one input()
    assert t_send <= stamps[0].kern_recv_ns <= stamps[0].proc_start_ns
    for st_ in stamps:
        assert st_.kern_send_ns - st_.proc_start_ns >= WORK_NS
    for before, after in itertools.pairwise(stamps):
        assert before.kern_send_ns <= after.proc_start_ns
    assert [p[wire.STAMP.size:] for mtype, _, _, p in parts
            if mtype == wire.MSG_TIMED_ECHO] == [b"p" * i for i in range(k) if i % 3]
    # one reply counted per part
    assert (st["received"], st["processed"], st["replied"]) == (k, k, k)
    assert (st["err_reply"], st["err_nomem"], st["skbs_held"]) == (0, 0, 0)


@pytest.mark.parametrize("mode", MODES)
def test_what_does_not_fit_or_fails_is_answered_alone_in_request_order(module: Loaded,
                                                                      mode: str) -> None:
    module(mode=mode)
    s = client()
    big = 1200  # parts of 1216 bytes: two fit a datagram of parts with its NLMSG_DONE, three not
    bad_stamp = wire.STAMP.pack(wire.WIRE_VERSION + 7, wire.STAMP.size, 0, 0, 0, 0, 0, 0, 0)
    plan = [  # (type, payload, flags); the seq is the index
        (wire.MSG_ECHO, bytes(big), COALESCE),
        (wire.MSG_ECHO, bytes(big), COALESCE),
        (wire.MSG_ECHO, bytes(big), COALESCE),
        (wire.MSG_ECHO, bytes(wire.COALESCE_MAX), COALESCE),  # could never be a part
        (wire.MSG_ECHO, b"a", COALESCE),
        (wire.MSG_TIMED_ECHO, bad_stamp, COALESCE),  # EINVAL, in the middle of a run
        (wire.MSG_ECHO, b"b", COALESCE),
        (wire.MSG_ECHO, b"acked", COALESCE | wire.NLM_F_ACK),  # never a part
        (wire.MSG_ECHO, b"c", COALESCE),
        (wire.MSG_ECHO, b"plain", wire.NLM_F_REQUEST),
    ]
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.reset_stats()
        s.send(b"".join(wire.nlmsg(t, p, flags=f, seq=q) for q, (t, p, f) in enumerate(plan)))
        got = datagrams(s, 10)
        st = settled(ctl)
    echo, err, done = wire.MSG_ECHO, wire.NLMSG_ERROR, wire.NLMSG_DONE
    assert [[(mtype, flags, seq) for mtype, flags, seq, _ in d] for d in got] == [
        [(echo, MULTI, 0), (echo, MULTI, 1), (done, MULTI, 1)],
        [(echo, MULTI, 2), (done, MULTI, 2)],  # the run goes on in the next datagram
        [(echo, 0, 3)],  # alone, as without the flag
        [(echo, MULTI, 4), (done, MULTI, 4)],  # the parts before an error go first
        [(err, NLM_F_CAPPED, 5)],
        [(echo, MULTI, 6), (done, MULTI, 6)],
        [(echo, 0, 7)], [(err, NLM_F_CAPPED, 7)],  # with NLM_F_ACK: reply then ack, alone
        [(echo, MULTI, 8), (done, MULTI, 8)],
        [(echo, 0, 9)],
    ]
    for d in got:  # every datagram of parts within the bound, closed as documented
        if len(d) > 1:
            assert parts_of(d)
            assert sum(wire.pad4(wire.NLMSG_HDRLEN + len(p)) for _, _, _, p in d) \
                <= wire.COALESCE_MAX
    assert (error_of(got[4][0][3]), error_of(got[7][0][3])) == (errno.EINVAL, 0)
    assert {seq: p for d in got for mtype, _, seq, p in d if mtype == echo} == {
        q: p for q, (t, p, _) in enumerate(plan) if t == echo}
    # replies, errors and acks: one each, whatever datagram they travelled in
    assert (st["received"], st["processed"], st["replied"], st["err_inval"]) == (10, 10, 11, 1)
    assert (st["err_reply"], st["err_nomem"], st["skbs_held"]) == (0, 0, 0)


@pytest.mark.parametrize("mode", MODES)
def test_without_the_flag_every_reply_is_a_datagram_of_its_own(module: Loaded,
                                                               mode: str) -> None:
    module(mode=mode)
    s = client()
    t_send = time.monotonic_ns()
    s.send(b"".join(wire.nlmsg(wire.MSG_TIMED_ECHO, wire.stamp(i, t_send), seq=i)
                    for i in range(3))
           + wire.nlmsg(wire.MSG_ECHO, b"raw", flags=0, seq=3))
    got = datagrams(s, 4)
    assert [[(mtype, flags, seq) for mtype, flags, seq, _ in d] for d in got] == [
        [(wire.MSG_TIMED_ECHO, 0, 0)], [(wire.MSG_TIMED_ECHO, 0, 1)],
        [(wire.MSG_TIMED_ECHO, 0, 2)], [(wire.MSG_ECHO, 0, 3)]]


@pytest.mark.parametrize("mode", MODES)
def test_the_open_loop_sender_reads_every_coalesced_reply(module: Loaded, mode: str) -> None:
    module(mode=mode)
    n, batch = 600, 16
    sender = Sender(SenderConfig(proto=PROTO, kind="timed", pattern="open", rate=1e6,
                                 batch=batch, coalesce=True, count=n))
    track(sender.sock)
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.reset_stats()
        res = sender.run(n, None)
        st = settled(ctl)
    assert (res.sent, res.received, res.errors, res.timeouts) == (n, n, 0, 0)
    assert res.records is not None and len(res.records) == n
    user_send, kern_recv, proc_start, kern_send, user_recv = res.records.T
    assert (user_send <= kern_recv).all() and (kern_recv <= proc_start).all()
    assert (proc_start <= kern_send).all() and (kern_send <= user_recv).all()
    assert (st["received"], st["processed"], st["replied"], st["err_reply"]) == (n, n, n, 0)


@pytest.mark.parametrize("mode", ["kthread", "workqueue"])
def test_a_closed_sockets_coalesced_reply_never_reaches_the_next_owner_of_its_port(
        module: Loaded, mode: str) -> None:
    module(mode=mode, work_sleep_us=20000)
    old = client()
    port = old.getsockname()[0]
    k = 20  # one run, 20 × 20 ms queued: its datagram would go out after the last
    old.send(b"".join(wire.nlmsg(wire.MSG_ECHO, b"for the old socket", flags=COALESCE, seq=i)
                      for i in range(k)))
    old.close()
    new = track(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, PROTO))
    new.bind((port, 0))
    new.settimeout(5)
    with Control(PROTO) as ctl:
        track(ctl.sock)
        st = ctl.wait_idle(10).fields
    new.send(wire.nlmsg(wire.MSG_ECHO, b"mine", seq=100))
    assert datagrams(new, 1) == [[(wire.MSG_ECHO, 0, 100, b"mine")]]
    # processed and counted, the parts as failed replies, as a closed socket's replies are
    assert (st["received"], st["processed"], st["skbs_held"]) == (k, k, 0)
    assert (st["replied"], st["err_reply"]) == (0, k)
