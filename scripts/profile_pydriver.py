"""Where the Python ping-pong driver's time goes, against the C client, in one lab VM boot.

Run inside the lab VM (docs/python-driver.md):

    flock /tmp/nlperf-vm.lock .venv/bin/nlperf vm exec --kernel 6.12.117+deb12-amd64 \
        --timeout 900 -- $PWD/.venv/bin/python scripts/profile_pydriver.py [LABEL=OLD.py]...

Loads the module in callback mode and runs the C client and every variant below in
interleaved rounds (the order rotates each round: the emulated machine drifts within a boot),
64-byte timed echoes, window 1. Prints µs per round trip (elapsed ÷ replies) and the ratio to
the C client of the same round, medians over the rounds, and writes them to
results/pydriver-profile-<kernel>.json. Each LABEL=OLD.py is an older
nlperf/workloads/unicast.py (e.g. `git show main:nlperf/workloads/unicast.py`) measured
beside the current one; the first is also run on a blocking socket, and its raw closed loop.
The loops other than the Sender rows are trimmed copies of the ping-pong loop, one change at
a time; they exist only to attribute the cost and record what they would record.
"""

from __future__ import annotations

import cProfile
import importlib.util
import io
import json
import platform
import pstats
import socket
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from nlperf import bench, kmod, wire
from nlperf.measure import clocksource
from nlperf.nlsock import open_socket
from nlperf.paths import RESULTS_DIR
from nlperf.samples import StampLog
from nlperf.targets.vm import running_under
from nlperf.workloads import unicast
from nlperf.workloads.common import (
    LOG_RECORD,
    LOG_RECV_AT,
    STAMP_AT,
    STAMP_SEQ_TS,
    STAMP_TIMES,
    STAMPED_MIN,
    TS,
    TYPE_AT,
    Datagram,
    kernel_timeout,
)

N = 20_000
WARMUP = 2_000
ROUNDS = 5
SO_TIMESTAMPNS = 35  # asm-generic/socket.h (SO_TIMESTAMPNS_OLD); not in Python 3.11
STAMP_OFF = STAMP_AT + wire.STAMP.offset("seq")


class Rig:
    """A bare socket, datagram, receive buffer and log: what the Sender holds."""

    def __init__(self, python_timeout: bool = False) -> None:
        self.sock = open_socket(wire.PROTO_DEFAULT)
        self.dgram = Datagram(wire.MSG_TIMED_ECHO, 64, 1)
        self.rbuf = bytearray(1 << 16)
        self.log = StampLog(N + WARMUP)
        self.python_timeout = python_timeout

    def run(self, loop: Callable[[Rig, int], int], n: int) -> float:
        self.log.reset()
        if self.python_timeout:
            self.sock.settimeout(1.0)
            t0 = time.monotonic_ns()
            got = loop(self, n)
            return (time.monotonic_ns() - t0) / got
        with kernel_timeout(self.sock, 1000):
            t0 = time.monotonic_ns()
            got = loop(self, n)
            return (time.monotonic_ns() - t0) / got


def floor_send_recv(r: Rig, n: int) -> int:
    """send + recv_into, nothing else: CPython's floor for this exchange."""
    send, recv_into, buf, rbuf = r.sock.send, r.sock.recv_into, r.dgram.buf, r.rbuf
    for _ in range(n):
        send(buf)
        recv_into(rbuf)
    return n


def floor_recvfrom(r: Rig, n: int) -> int:
    """The floor with recvfrom_into (the sender's port id) instead of recv_into."""
    send, recvfrom_into, buf, rbuf = r.sock.send, r.sock.recvfrom_into, r.dgram.buf, r.rbuf
    for _ in range(n):
        send(buf)
        _n, (_sender, _) = recvfrom_into(rbuf)
    return n


def floor_two_clocks(r: Rig, n: int) -> int:
    """The recvfrom floor plus the two clock reads a timed message needs."""
    send, recvfrom_into, buf, rbuf = r.sock.send, r.sock.recvfrom_into, r.dgram.buf, r.rbuf
    mono = time.monotonic_ns
    for _ in range(n):
        mono()
        send(buf)
        _n, (_sender, _) = recvfrom_into(rbuf)
        mono()
    return n


def floor_recvmsg_timestampns(r: Rig, n: int) -> int:
    """recvmsg with SO_TIMESTAMPNS on: would the kernel's receive stamp spare a clock read?"""
    sock = r.sock
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    send, recvmsg_into, buf = sock.send, sock.recvmsg_into, r.dgram.buf
    bufs = [r.rbuf]
    ancillary = 0
    try:
        for _ in range(n):
            send(buf)
            _n, anc, _flags, _addr = recvmsg_into(bufs, 64)
            ancillary += len(anc)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 0)
    FACTS["so_timestampns_ancillary_items"] = ancillary
    return n


def shared_clock(r: Rig, n: int) -> int:
    """One clock read per message: a reply's receive stamp is also the next send stamp;
    the reply is recorded before the next send (its cost lands in user_to_kernel)."""
    send, recvfrom_into, buf, rbuf = r.sock.send, r.sock.recvfrom_into, r.dgram.buf, r.rbuf
    mono = time.monotonic_ns
    pack_stamp, pack_ts = STAMP_SEQ_TS.pack_into, TS.pack_into
    reply_times = memoryview(rbuf)[STAMP_TIMES]
    log_buf, kept, capacity = r.log.buf, 0, r.log.capacity
    record, recv_at, reply_min, type_at, err = LOG_RECORD, LOG_RECV_AT, STAMPED_MIN, TYPE_AT, 2
    t = mono()
    for seq in range(n):
        pack_stamp(buf, STAMP_OFF, seq, t)
        send(buf)
        n_, (_sender, _) = recvfrom_into(rbuf)
        t = mono()
        if n_ >= reply_min and rbuf[type_at] != err and kept < capacity:
            off = kept * record
            log_buf[off:off + recv_at] = reply_times
            pack_ts(log_buf, off + recv_at, t)
            kept += 1
    return kept


def shared_clock_record_after_send(r: Rig, n: int) -> int:
    """One clock read per message, the reply recorded after the next send (its cost lands in
    the next message's kernel_to_user; both stamps sit where they do today)."""
    send, recvfrom_into, buf, rbuf = r.sock.send, r.sock.recvfrom_into, r.dgram.buf, r.rbuf
    mono = time.monotonic_ns
    pack_stamp, pack_ts = STAMP_SEQ_TS.pack_into, TS.pack_into
    reply_times = memoryview(rbuf)[STAMP_TIMES]
    log_buf, kept, capacity = r.log.buf, 0, r.log.capacity
    record, recv_at, reply_min, type_at, err = LOG_RECORD, LOG_RECV_AT, STAMPED_MIN, TYPE_AT, 2
    good = False
    t = mono()
    for seq in range(n):
        pack_stamp(buf, STAMP_OFF, seq, t)
        send(buf)
        if good:
            off = kept * record
            log_buf[off:off + recv_at] = reply_times  # the previous reply, still in rbuf
            pack_ts(log_buf, off + recv_at, t)
            kept += 1
        n_, (_sender, _) = recvfrom_into(rbuf)  # a foreign sender would be checked here
        t = mono()
        good = n_ >= reply_min and rbuf[type_at] != err and kept < capacity
    return n


def ring_slots(r: Rig, n: int) -> int:
    """Two clock reads, no per-message copy: each reply lands in its own slot of a ring, its
    receive time is appended to a list, and numpy moves a burst into the log at once."""
    send, recvfrom_into, buf = r.sock.send, r.sock.recvfrom_into, r.dgram.buf
    mono = time.monotonic_ns
    pack_stamp = STAMP_SEQ_TS.pack_into
    slots, slot = 64, 128
    ring = bytearray(slots * slot)
    views = [memoryview(ring)[i * slot:(i + 1) * slot] for i in range(slots)]
    rows = np.frombuffer(ring, dtype=np.int64).reshape(slots, slot // 8)
    first, last = STAMP_TIMES.start // 8, STAMP_TIMES.stop // 8
    log_rows = np.frombuffer(r.log.buf, dtype=np.int64).reshape(-1, 5)
    recv_times: list[int] = []
    append = recv_times.append
    reply_min, type_at, err = STAMPED_MIN, TYPE_AT, 2
    kept = seq = 0
    while seq < n:
        burst = min(slots, n - seq)
        for view in views[:burst]:
            pack_stamp(buf, STAMP_OFF, seq, mono())
            send(buf)
            seq += 1
            n_, (_sender, _) = recvfrom_into(view)
            append(mono())
            if n_ < reply_min or view[type_at] == err:
                raise RuntimeError("the profile expects good replies only")
        log_rows[kept:kept + burst, :4] = rows[:burst, first:last]
        log_rows[kept:kept + burst, 4] = recv_times
        recv_times.clear()
        kept += burst
    return kept


def sender(module: object, kind: str = "timed", wrap: bool = False) -> Callable[[], float]:
    """A whole Sender run (warm-up first), as bench.py's py_closed does."""
    def run() -> float:
        s = module.Sender(module.SenderConfig(kind=kind, message_size=64,  # type: ignore
                                              count=N))
        try:
            s.run(WARMUP, None, record=False)
            if wrap:  # the old loop on a blocking socket with a kernel-side timeout
                with kernel_timeout(s.sock, s.cfg.reply_timeout_ms):
                    res = s.run(N, None)
            else:
                res = s.run(N, None)
            assert res.received == N and res.timeouts == 0, res
            return res.elapsed_ns / res.received
        finally:
            s.close()
    return run


def rig_case(loop: Callable[[Rig, int], int], python_timeout: bool = False) -> Callable[[], float]:
    def run() -> float:
        r = Rig(python_timeout)
        try:
            r.run(loop, WARMUP)
            return r.run(loop, N)
        finally:
            r.sock.close()
    return run


FACTS: dict[str, object] = {}


def main() -> None:
    release = platform.release()
    ko = kmod.build(release)
    binary = bench.c_client()
    cases: dict[str, Callable[[], float]] = {}
    for i, arg in enumerate(sys.argv[1:]):  # LABEL=PATH: an older unicast.py
        label, path = arg.split("=", 1)
        spec = importlib.util.spec_from_file_location(f"unicast_{i}", path)
        assert spec and spec.loader
        older = importlib.util.module_from_spec(spec)
        sys.modules[f"unicast_{i}"] = older  # its dataclasses look themselves up there
        spec.loader.exec_module(older)
        cases[f"{label}: Sender"] = sender(older)
        if i == 0:
            cases[f"{label} + blocking socket, SO_RCVTIMEO"] = sender(older, wrap=True)
            cases[f"{label}: Sender raw (closed loop)"] = sender(older, "raw")
    cases["after: Sender"] = sender(unicast)
    cases["after: Sender raw (closed loop)"] = sender(unicast, "raw")
    cases["variant: one clock read, record before send"] = rig_case(shared_clock)
    cases["variant: one clock read, record after send"] = rig_case(shared_clock_record_after_send)
    cases["variant: ring slots, numpy per 64"] = rig_case(ring_slots)
    cases["floor: send + recv_into, Python timeout"] = rig_case(floor_send_recv, True)
    cases["floor: send + recv_into"] = rig_case(floor_send_recv)
    cases["floor: send + recvfrom_into"] = rig_case(floor_recvfrom)
    cases["floor: recvfrom + 2 clock reads"] = rig_case(floor_two_clocks)
    cases["floor: recvmsg_into, SO_TIMESTAMPNS"] = rig_case(floor_recvmsg_timestampns)
    names = list(cases)
    kmod.load(ko, {"mode": "callback"})
    per: dict[str, list[float]] = {name: [] for name in ["C client", *names]}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    try:
        for rnd in range(ROUNDS):
            c = bench.c_rtt_ns(binary)
            per["C client"].append(c)
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                try:
                    v = cases[name]()
                except Exception as e:  # one broken variant must not cost the boot
                    FACTS[f"error: {name}"] = repr(e)
                    continue
                per[name].append(v)
                ratios[name].append(v / c)
        prof = cProfile.Profile()
        s = unicast.Sender(unicast.SenderConfig(kind="timed", message_size=64, count=5000))
        try:
            prof.enable()
            s.run(5000, None)
            prof.disable()
        finally:
            s.close()
    finally:
        kmod.unload()
    clock_ns = bench.monotonic_cost_ns()
    c_med = statistics.median(per["C client"])
    print(f"# pydriver profile: kernel {release}, clocksource {clocksource()}, accel "
          f"{running_under()}, {ROUNDS} rounds x {N} echoes, time.monotonic_ns() "
          f"{clock_ns:.0f} ns")
    print(f"| variant | µs/rtt | × C (median of per-round ratios) |\n|---|---|---|\n"
          f"| C client | {c_med / 1000:.2f} | 1.00 |")
    for name in (n for n in names if per[n]):
        print(f"| {name} | {statistics.median(per[name]) / 1000:.2f} | "
              f"{statistics.median(ratios[name]):.2f} |")
    print(bench.timed_verdict(ratios["after: Sender"]))
    print("facts:", FACTS)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    print(out.getvalue())
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"pydriver-profile-{release}.json").write_text(json.dumps(
        {"kernel": release, "clocksource": clocksource(), "accel": running_under(),
         "monotonic_ns_cost": clock_ns, "rounds": per, "ratios": ratios, "facts": FACTS,
         "profile": out.getvalue()}, indent=1))


if __name__ == "__main__":
    main()
