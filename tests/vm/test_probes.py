"""The BCC probe suite against the module, in the lab VM: counts that must add up exactly.

One ProbeSession (one compile) serves the whole file; the last test closes it and checks that
nothing stays attached.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nlperf import bpfsys, probe_kernel, wire
from nlperf.nlsock import Control, netlink_drops, open_socket, socket_inode
from nlperf.probes import ProbeSession
from tests.vm.conftest import PROTO, Loaded, client, recv_msgs, track

KPROBES_LIST = Path("/sys/kernel/debug/kprobes/list")
KPTR_RESTRICT = Path("/proc/sys/kernel/kptr_restrict")
BPF_PROG_GET_NEXT_ID = 11


def bpf_prog_count() -> int:
    """Loaded BPF programs, by walking BPF_PROG_GET_NEXT_ID (no bpftool needed)."""
    sys_ = bpfsys.Syscalls()
    n, start = 0, 0
    while True:
        attr = ctypes.create_string_buffer(bpfsys.BPF_ATTR_SIZE)
        struct.pack_into("=I", attr, 0, start)
        try:
            sys_.bpf("BPF_PROG_GET_NEXT_ID", BPF_PROG_GET_NEXT_ID, attr)
        except bpfsys.ProbeError:
            return n
        start = struct.unpack_from("=I", attr, 4)[0]
        n += 1


def our_kprobes() -> list[str]:
    if not KPROBES_LIST.exists():
        return []
    return [ln for ln in KPROBES_LIST.read_text().splitlines()
            if any(f in ln for f in ("netlink_", "nlperf_"))]


class Suite:
    def __init__(self) -> None:
        self.progs_before = bpf_prog_count()
        self.kprobes_before = our_kprobes()
        self.session = ProbeSession(PROTO, ["unicast", "broadcast", "overrun", "sched", "module",
                                            "send"])


@pytest.fixture(scope="module")
def suite() -> Iterator[Suite]:
    s = Suite()
    print(f"probe session: compile {s.session.compile_s:.1f} s, attach {s.session.attach_s:.1f} s,"
          f" kinds {s.session.attach_kinds}")
    yield s
    s.session.close()


@pytest.fixture
def probed(module: Loaded, suite: Suite) -> Iterator[tuple[Loaded, ProbeSession]]:
    yield module, suite.session
    suite.session.detach_module()  # before the module fixture unloads


def load(module: Loaded, session: ProbeSession, **params: object) -> int:
    # an attached module tracepoint holds a module reference: detach before the reload's rmmod,
    # as the runner does before every unload
    session.detach_module()
    module(**params)
    session.attach_module()
    with Control(PROTO) as ctl:
        return int(ctl.stats().fields["kthread_pid"])


@pytest.mark.parametrize("mode", ["callback", "kthread"])
def test_timed_echoes_give_two_unicasts_each(probed: tuple[Loaded, ProbeSession],
                                             mode: str) -> None:
    module, ps = probed
    kthread = load(module, ps, mode=mode)
    s = client()
    ps.watch([os.getpid()], kthread)
    ps.reset()
    n = 300
    for i in range(n):
        s.send(wire.nlmsg(wire.MSG_TIMED_ECHO, wire.stamp(i, time.monotonic_ns()), seq=i))
        assert len(recv_msgs(s, 1)) == 1
    r = ps.read()
    hist = ps.histograms()["rows"]
    s.close()
    uc = r["netlink_unicast"]
    assert uc["calls"] == 2 * n, uc
    assert uc["results"]["ok"] == 2 * n
    assert uc["by_direction"]["to_kernel"]["calls"] == n
    assert uc["by_direction"]["kernel_to_user"]["calls"] == n
    assert uc["latency_ns"]["count"] == 2 * n
    lat = uc["latency_ns"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert r["module"]["nlperf_input"]["count"] == n
    assert r["module"]["nlperf_process"]["count"] == n
    assert r["attach"]["nlperf_input"] == r["attach"]["nlperf_process"] == "raw_tracepoint"
    if r["attach"]["netlink_unicast"] == "fentry/fexit":
        assert "nmissed" not in r  # no kretprobe anywhere: the module's are tracepoints
    assert r["deliveries"]["total"] == n
    assert r["netlink_overrun"]["total"] == 0
    if mode == "callback":
        # the reply is sent from inside the request's netlink_unicast, by the sender itself
        assert uc["by_process"] == {str(os.getpid()): 2 * n}
        assert r["sched"]["kthread"] is None
        assert not any(k.startswith("wakeup/kthread") for k in hist)
    else:
        assert uc["by_process"][str(kthread)] == n
        k = r["sched"]["kthread"]
        assert k["pid"] == kthread and k["wakeups"] > 0 and k["voluntary"] > 0
        assert k["wakeup_to_run_ns"]["count"] > 0
        assert "wakeup/kthread" in hist


def test_a_suspended_session_sees_nothing_and_resumes_as_it_was(
        probed: tuple[Loaded, ProbeSession]) -> None:
    """A probes-off control run: no probe of the session fires (core and module probes
    detached), and resume() attaches the same probes again, counting from there."""
    module, ps = probed
    kthread = load(module, ps, mode="kthread")  # the scheduler probes have work too
    s = client()

    def echoes(n: int) -> dict[str, Any]:
        ps.watch([os.getpid()], kthread)
        ps.reset()
        for i in range(n):
            s.send(wire.nlmsg(wire.MSG_TIMED_ECHO, wire.stamp(i, time.monotonic_ns()), seq=i))
            assert len(recv_msgs(s, 1)) == 1
        return ps.read()

    kinds = dict(ps.attach_kinds)
    ps.detach_module()
    ps.suspend()
    off = echoes(100)
    assert off["netlink_unicast"]["calls"] == 0
    assert off["deliveries"]["total"] == 0
    assert off["module"]["nlperf_input"]["count"] == 0
    assert off["sched"]["kthread"] is None or off["sched"]["kthread"]["wakeups"] == 0
    assert off["send_syscall_ns"]["count"] == 0
    ps.resume()
    ps.attach_module()
    on = echoes(100)
    s.close()
    assert ps.attach_kinds == kinds
    assert on["netlink_unicast"]["calls"] == 200
    assert on["module"]["nlperf_input"]["count"] == 100
    assert on["sched"]["kthread"]["wakeups"] > 0
    assert on["send_syscall_ns"]["count"] == 100


def test_the_send_syscall_holds_the_sender_through_processing_in_callback_mode_only(
        probed: tuple[Loaded, ProbeSession]) -> None:
    """The article's claim, measured: input() runs in the sender's sendmsg(), so 200 µs of
    sleeping work per message lengthens callback mode's send by that much; a kthread takes the
    work off the sender, whose send returns once the message is queued. And every send of the
    watched sender is timed exactly once."""
    module, ps = probed
    n = 100
    p50: dict[tuple[str, int], float] = {}
    for mode, sleep_us in (("callback", 0), ("callback", 200), ("kthread", 200)):
        kthread = load(module, ps, mode=mode, work_sleep_us=sleep_us)
        s = client()
        ps.watch([os.getpid()], kthread)
        ps.reset()
        for i in range(n):
            s.send(wire.nlmsg(wire.MSG_TIMED_ECHO, wire.stamp(i, time.monotonic_ns()), seq=i))
            assert len(recv_msgs(s, 1)) == 1
        block = ps.read()["send_syscall_ns"]
        s.close()
        assert block["count"] == n, (mode, sleep_us, block)
        p50[(mode, sleep_us)] = block["p50"]
    assert ps.attach_kinds["send_syscall"] == "tracepoint"
    assert p50[("callback", 200)] >= p50[("callback", 0)] + 150_000, p50
    assert p50[("kthread", 200)] <= p50[("callback", 200)] - 150_000, p50


def test_deliveries_per_socket_inode(probed: tuple[Loaded, ProbeSession]) -> None:
    module, ps = probed
    load(module, ps, mode="callback")
    s = client()
    ps.reset()
    for i in range(50):
        s.send(wire.nlmsg(wire.MSG_ECHO, b"x", seq=i))
    recv_msgs(s, 50)
    assert ps.read()["deliveries"]["by_socket"] == {str(socket_inode(s)): 50}


def test_overruns_equal_sk_drops(probed: tuple[Loaded, ProbeSession]) -> None:
    module, ps = probed
    load(module, ps, mode="callback")
    small = track(open_socket(PROTO, groups=(1,), rcvbuf=4096))
    big = track(open_socket(PROTO, groups=(1,), rcvbuf=1 << 22))
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ps.reset()
        count = 2000
        ctl.gen_start([1], 64, count=count)
        deadline = time.monotonic() + 60
        while ctl.stats().fields["gen_pid"] and time.monotonic() < deadline:
            time.sleep(0.05)
        r = ps.read()
        sent = ctl.stats().groups[1]["gen_sent"]
    assert sent == count + 1  # and the end marker
    ino_small, ino_big = socket_inode(small), socket_inode(big)
    drops = netlink_drops(ino_small)
    assert drops and drops > 0
    ov = r["netlink_overrun"]
    assert ov["by_socket"].get(str(ino_small)) == drops
    assert ov["total"] == drops and netlink_drops(ino_big) == 0
    dl = r["deliveries"]["by_socket"]
    assert dl[str(ino_small)] + drops == sent
    assert dl[str(ino_big)] == sent
    # 6.8+: nlmsg_multicast calls netlink_broadcast_filtered directly, not netlink_broadcast
    bcs = [r[k] for k in ("netlink_broadcast", "netlink_broadcast_filtered") if k in r]
    assert sum(b["calls"] for b in bcs) == sent
    assert sum(b["results"]["ok"] for b in bcs) == sent
    assert sum(b["by_direction"].get("kernel_to_user", {}).get("calls", 0) for b in bcs) == sent
    assert sum(b["latency_ns"]["count"] for b in bcs if b["latency_ns"]) == sent


def test_workqueue_items_counted(probed: tuple[Loaded, ProbeSession]) -> None:
    module, ps = probed
    load(module, ps, mode="workqueue")
    s = client()
    ps.reset()
    for i in range(30):
        s.send(wire.nlmsg(wire.MSG_ECHO, b"x", seq=i))
        recv_msgs(s, 1)
    r = ps.read()
    assert 1 <= r["sched"]["workqueue"]["count"] <= 30
    assert r["module"]["nlperf_process"]["count"] == 30


def test_counters_only_counts_from_fexit_alone(probed: tuple[Loaded, ProbeSession]) -> None:
    module, suite_ps = probed
    load(module, suite_ps, mode="callback")
    with ProbeSession(PROTO, ["unicast", "overrun", "module"], timing=False,
                      deliveries=True) as ps:
        ps.attach_module()
        s = client()
        ps.reset()
        n = 200
        for i in range(n):
            s.send(wire.nlmsg(wire.MSG_ECHO, b"x", seq=i))
            assert len(recv_msgs(s, 1)) == 1
        r = ps.read()
        ps.detach_module()
    uc = r["netlink_unicast"]
    assert r["attach"]["netlink_unicast"] in ("fexit", "kprobe/kretprobe")  # fexit: no entry
    assert uc["calls"] == 2 * n and uc["results"]["ok"] == 2 * n
    assert uc["by_direction"]["to_kernel"]["calls"] == n
    assert uc["by_direction"]["kernel_to_user"]["calls"] == n
    assert uc["latency_ns"] is None and uc["by_process"] is None
    assert r["deliveries"]["by_socket"] == {str(socket_inode(s)): n}
    assert r["module"] == {"nlperf_input": None, "nlperf_process": None}
    assert r["attach"]["nlperf_input"] == "off (timing=False)"


def test_hidden_kernel_addresses_lose_no_probe_silently(module: Loaded,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """With kernel.kptr_restrict=2 kallsyms shows every address as 0, to root too. Functions
    probed by name are still attached (6.12 multicasts through netlink_broadcast_filtered);
    the workqueue count, which needs nlperf_work_fn's address, reads None and a note says why,
    never 0."""
    saved = KPTR_RESTRICT.read_text()
    KPTR_RESTRICT.write_text("2")
    try:
        assert all(ln.startswith("0000000000000000 ")  # every address hidden, also to root
                   for ln in probe_kernel.KALLSYMS.read_text().splitlines()[:100])
        with ProbeSession(PROTO, ["broadcast", "sched"]) as ps:
            module(mode="workqueue")
            ps.attach_module()
            track(open_socket(PROTO, groups=(1,), rcvbuf=1 << 22))
            with Control(PROTO) as ctl:
                track(ctl.sock)
                ps.reset()
                ctl.gen_start([1], 64, count=100)
                deadline = time.monotonic() + 60
                while ctl.stats().fields["gen_pid"] and time.monotonic() < deadline:
                    time.sleep(0.05)
                r = ps.read()
                sent = ctl.stats().groups[1]["gen_sent"]
            ps.detach_module()
    finally:
        KPTR_RESTRICT.write_text(saved)
    assert sent == 101
    bcs = [r[k] for k in ("netlink_broadcast", "netlink_broadcast_filtered") if k in r]
    assert sum(b["calls"] for b in bcs) == sent
    assert r["sched"]["workqueue"] is None
    hidden = [n for n in r["notes"] if n.startswith("nlperf_work_fn's address is hidden")]
    assert len(hidden) == 1 and "kernel.kptr_restrict=2" in hidden[0], r.get("notes")
    # loudly: once on stderr too (a probe that measures nothing)
    assert capsys.readouterr().err.count(f"nlperf: warning: probes: {hidden[0]}\n") == 1


# --- the kprobe fallback under many blocked senders ---------------------------------------------


def possible_cpus() -> int:
    n = 0
    for part in Path("/sys/devices/system/cpu/possible").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def wchan(tid: int) -> str:
    try:
        return Path(f"/proc/self/task/{tid}/wchan").read_text()
    except OSError:
        return ""


def test_kretprobes_see_every_return_of_blocked_senders(module: Loaded) -> None:
    """Each sender blocked inside netlink_unicast (full receiver) holds a kretprobe instance.
    More of them than the kernel's default (max(10, 2 x CPUs)) must still all be counted, and
    the probes block says how many returns were missed (none)."""
    module(mode="callback")
    n = max(10, 2 * possible_cpus()) + 8
    with ProbeSession(PROTO, ["unicast"], fentry=False) as ps:
        assert ps.attach_kinds["netlink_unicast"] == "kprobe/kretprobe"
        receiver = track(open_socket(PROTO, rcvbuf=1))  # the kernel's minimum
        port = receiver.getsockname()[0]
        msg = wire.nlmsg(wire.MSG_ECHO, b"x" * 64)
        filler = track(open_socket(PROTO))
        filler.setblocking(False)  # EAGAIN once full (with a timeout Python would retry)
        ps.reset()
        attempts = filled = 0
        while True:  # fill the receiver without blocking
            attempts += 1
            try:
                filler.sendto(msg, socket.MSG_DONTWAIT, (port, 0))
                filled += 1
            except BlockingIOError:
                break
        senders = [track(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, PROTO))
                   for _ in range(n)]
        tids: list[int] = []
        errors: list[BaseException] = []

        def send(s: socket.socket) -> None:
            tids.append(threading.get_native_id())
            try:
                s.sendto(msg, (port, 0))  # blocking: sleeps inside netlink_unicast
            except BaseException as e:
                errors.append(e)

        for s in senders:
            s.bind((0, 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 120, 0))
        threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in senders]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                len(tids) < n or any(wchan(t) != "netlink_attachskb" for t in tids)):
            time.sleep(0.05)
        assert [wchan(t) for t in tids] == ["netlink_attachskb"] * n  # all blocked at once
        receiver.settimeout(30)
        for _ in range(filled + n):
            receiver.recv(1 << 16)
        for t in threads:
            t.join(60)
        assert not errors, errors
        r = ps.read()
    u2u = r["netlink_unicast"]["by_direction"]["user_to_user"]
    assert u2u["calls"] == attempts + n
    assert u2u["results"] == {"ok": filled + n, "EAGAIN": 1}
    assert r["nmissed"] == {"netlink_unicast": 0}


# --- wakeups of a task that is still on the CPU -------------------------------------------------

SYS_FUTEX, SYS_FUTEX_WAITV, FUTEX_WAKE, FUTEX_32, WAITV_MAX = 202, 449, 1, 2, 128
_libc = ctypes.CDLL(None, use_errno=True)
# shared words: go, done (sleeper finished), ready (sleeper spinning), then the futexes
GO, DONE, READY, FUTEXES = 0, 1, 2, 3


class FutexWaitv(ctypes.Structure):
    _fields_ = [("val", ctypes.c_uint64), ("uaddr", ctypes.c_uint64), ("flags", ctypes.c_uint32),
                ("reserved", ctypes.c_uint32)]


def _futex_addr(shared: ctypes.Array[ctypes.c_int], i: int) -> int:
    return ctypes.addressof(shared) + (FUTEXES + i) * ctypes.sizeof(ctypes.c_int)


def _sleeper(shared: ctypes.Array[ctypes.c_int], rounds: int) -> None:
    """The watched task, on CPU 1: waits on WAITV_MAX futexes at once, ``rounds`` times, and
    yields the CPU after each wait. futex_waitv sets the sleeping state, then queues the futexes
    one by one: the waker, waking the first, mostly finds the task still on the CPU."""
    os.sched_setaffinity(0, {1})
    waiters = (FutexWaitv * WAITV_MAX)(*[FutexWaitv(0, _futex_addr(shared, i), FUTEX_32, 0)
                                         for i in range(WAITV_MAX)])
    shared[READY] = 1
    while not shared[GO]:  # spin, do not sleep: the watch starts while this task runs
        pass
    for _ in range(rounds):
        _libc.syscall(SYS_FUTEX_WAITV, waiters, WAITV_MAX, 0, None, 0)
        os.sched_yield()
    shared[DONE] = 1


def _waker(shared: ctypes.Array[ctypes.c_int]) -> None:
    """Wakes the first futex as fast as it can from CPU 0 (shared futexes: other processes)."""
    os.sched_setaffinity(0, {0})
    first = ctypes.c_void_p(_futex_addr(shared, 0))
    while not shared[DONE]:
        _libc.syscall(SYS_FUTEX, first, FUTEX_WAKE, 1, None, None, 0)


def _spinner(shared: ctypes.Array[ctypes.c_int]) -> None:
    """Keeps CPU 1 busy: the sleeper is preempted (involuntary switches, task runnable)."""
    os.sched_setaffinity(0, {1})
    while not shared[DONE]:
        pass


def test_wakeup_to_run_counts_only_wakeups_from_sleep(suite: Suite) -> None:
    """A wakeup→run sample is taken at a switch-in that follows a wakeup; a sched_wakeup of a
    task still on the CPU must not be kept for its next (involuntary) switch-in. Every sleep of
    the watched task is a voluntary switch-out, one wakeup, one switch-in; its other switches
    leave it runnable (nothing can wake it): so its wakeup→run count equals its blocked-time
    count exactly, however many wakeups found it still on the CPU."""
    ps = suite.session
    ctx = multiprocessing.get_context("fork")
    shared = ctx.RawArray(ctypes.c_int, FUTEXES + WAITV_MAX)
    sleeper = ctx.Process(target=_sleeper, args=(shared, 300))
    helpers = [ctx.Process(target=f, args=(shared,)) for f in (_waker, _spinner)]
    sleeper.start()
    try:
        deadline = time.monotonic() + 30
        while not shared[READY] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert shared[READY]
        ps.watch([sleeper.pid], None)
        ps.reset()
        for h in helpers:
            h.start()
        shared[GO] = 1
        sleeper.join(300)
        assert sleeper.exitcode == 0
    finally:
        shared[DONE] = 1
        for p in [sleeper, *helpers]:
            if p.pid is not None:
                p.join(30)
                if p.is_alive():
                    p.kill()
    lab = ps.read()["sched"]["lab"]
    woken = (lab["wakeup_to_run_ns"] or {}).get("count", 0)
    blocked = (lab["blocked_ns"] or {}).get("count", 0)
    print(f"sleeper: {lab['wakeups']} wakeups, {lab['voluntary']} voluntary and "
          f"{lab['involuntary']} involuntary switches; {woken} wakeup->run, {blocked} blocked")
    assert blocked > 0 and lab["involuntary"] >= 3
    assert lab["wakeups"] > woken  # some wakeups found the task still on the CPU
    assert woken == blocked


def test_close_detaches_everything(suite: Suite) -> None:
    ps = suite.session
    assert bpf_prog_count() > suite.progs_before
    if ps.attach_kinds.get("netlink_unicast") == "kprobe/kretprobe":
        assert len(our_kprobes()) > len(suite.kprobes_before)
    ps.close()
    ps.close()  # idempotent
    deadline = time.monotonic() + 5
    while bpf_prog_count() > suite.progs_before and time.monotonic() < deadline:
        time.sleep(0.1)  # programs are freed after an RCU grace period
    assert bpf_prog_count() == suite.progs_before
    assert our_kprobes() == suite.kprobes_before
