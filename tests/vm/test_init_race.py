"""#13 item 6, the init race: requests that arrive while the module is still loading.

The protocol is live inside ``netlink_kernel_create()``, before the module's init has stored
the socket it returns. A request in that window must be served like any other (the module
sends from the socket input() was called for); before the fix, callback mode replied through
a still-NULL global and oopsed, and a deferred worker running in the window did the same.

From user space alone the window is a few instructions wide. A BCC program holds it open: a
kretprobe on ``__netlink_kernel_create`` (for the lab's unit only) spins, with the loader's CPU
held, until this test releases it or HOLD_NS pass. Meanwhile a sender on the other vCPU opens
a socket of the protocol as soon as one can be opened, sends a stats request, two echoes (one
with NLM_F_ACK) and a relay, and waits for every answer. The test asserts the answers, that
they came while init was still running (the module's sysfs ``initstate`` read by the sender
says "coming", and the hold was still on when the sender was done), a clean dmesg and unload.
"""

from __future__ import annotations

import ctypes
import errno
import multiprocessing
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from nlperf import kmod, wire
from nlperf.nlsock import Control
from tests.vm.conftest import PROTO, Loaded, client, parse_msgs, recv_msgs, track

MODES = list(wire.MODES)
LOADER_CPU, SENDER_CPU = 0, 1  # the lab VM has 2 vCPUs: the held one, and the sender's
HOLD_NS = 5_000_000_000  # bound of a hold never released (its 34 runs of spins end it at ~1 s)
SPIN_TIMEOUT = 60.0  # seconds the sender tries to open a socket (the BCC compile is before)
REPLY_TIMEOUT = 3.0  # seconds the sender waits for the answers, inside the hold
RELAY_GROUP = 1
INITSTATE = kmod.SYSFS / "initstate"
MODPROBE = Path("/proc/sys/kernel/modprobe")

# Slots of the BPF program's hold_state array.
HOLDS, HOLDING, RELEASE, RELEASED, HELD_NS, RUNS = range(6)

BPF_TEXT = r"""
#include <uapi/linux/ptrace.h>

#define HOLDS		0	/* holds started */
#define HOLDING		1	/* 1 while a hold runs */
#define RELEASE		2	/* set by user space: end the hold */
#define RELEASED	3	/* holds ended by RELEASE, not by the deadline */
#define HELD_NS		4	/* how long the last hold lasted */
#define RUNS		5	/* program runs of the last hold */

/*
 * Spins per program run. The verifier walks every spin, so a run is short;
 * it tail-calls itself to go on (the kernel allows 33 tail calls). No
 * bpf_loop(): BCC 0.26 cannot pass it a callback.
 */
#define SPINS		2000
#define WALKS		3	/* stack walks a spin (one: ~3 us a spin, TCG) */

struct hold {
	u64 start_ns;
	u64 runs;
	u8 started;
};

BPF_ARRAY(hold_state, u64, 6);
BPF_HASH(creating, u32, struct hold);
BPF_PROG_ARRAY(hold_next, 1);

static inline void state_set(int key, u64 value)
{
	u64 *v = hold_state.lookup(&key);

	if (v)
		*v = value;
}

static inline void state_add(int key, u64 value)
{
	u64 *v = hold_state.lookup(&key);

	if (v)
		__sync_fetch_and_add(v, value);
}

static inline u64 state_get(int key)
{
	u64 *v = hold_state.lookup(&key);

	return v ? *v : 0;
}

/* __netlink_kernel_create(net, unit, module, cfg): remember our unit's caller. */
int on_create(struct pt_regs *ctx)
{
	u32 tid = bpf_get_current_pid_tgid();
	struct hold h = {};

	if ((int)PT_REGS_PARM2(ctx) != NLPERF_PROTO)
		return 0;
	creating.update(&tid, &h);
	return 0;
}

/*
 * Its return: the protocol is registered and the module's init has not
 * stored the socket yet. Spin until user space sets RELEASE or HOLD_NS pass.
 */
int on_created(struct pt_regs *ctx)
{
	u32 tid = bpf_get_current_pid_tgid();
	struct hold *h = creating.lookup(&tid);
	u64 stack[24];
	int i, j;

	if (!h)
		return 0;
	if (!h->started) {
		if (!PT_REGS_RC(ctx)) {
			creating.delete(&tid);
			return 0;
		}
		h->started = 1;
		h->start_ns = bpf_ktime_get_ns();
		state_add(HOLDS, 1);
		state_set(HOLDING, 1);
	}
	h->runs++;
	for (i = 0; i < SPINS; i++) {
		if (state_get(RELEASE))
			goto done;
		if (bpf_ktime_get_ns() - h->start_ns > HOLD_NS)
			goto done;
		/* stack walks cost time: fewer spins for the same hold */
		for (j = 0; j < WALKS; j++)
			bpf_get_stack(ctx, stack, sizeof(stack), 0);
	}
	hold_next.call(ctx, 0);
	/* here only once the tail calls are used up */
done:
	if (state_get(RELEASE))
		state_add(RELEASED, 1);
	state_set(HELD_NS, bpf_ktime_get_ns() - h->start_ns);
	state_set(RUNS, h->runs);
	state_set(HOLDING, 0);
	creating.delete(&tid);
	return 0;
}
"""


class Hold:
    """The BPF program, compiled once and attached to ``__netlink_kernel_create``."""

    def __init__(self) -> None:
        from bcc import BPF  # the guest's system BCC (the venv sees system site-packages)

        self.bpf = BPF(text=BPF_TEXT, cflags=[f"-DNLPERF_PROTO={PROTO}",
                                              f"-DHOLD_NS={HOLD_NS}ULL"])
        chained = self.bpf.load_func("on_created", BPF.KPROBE)
        self.bpf["hold_next"][ctypes.c_int(0)] = ctypes.c_int(chained.fd)
        self.state = self.bpf["hold_state"]
        self.bpf.attach_kprobe(event="__netlink_kernel_create", fn_name="on_create")
        self.bpf.attach_kretprobe(event="__netlink_kernel_create", fn_name="on_created")

    def __getitem__(self, slot: int) -> int:
        return int(self.state[ctypes.c_int(slot)].value)

    def __setitem__(self, slot: int, value: int) -> None:
        self.state[ctypes.c_int(slot)] = self.state.Leaf(value)

    def reset(self) -> None:
        for slot in range(RUNS + 1):
            self[slot] = 0

    def summary(self) -> dict[str, int]:
        return {"holds": self[HOLDS], "released": self[RELEASED],
                "held_ms": self[HELD_NS] // 1_000_000, "runs": self[RUNS]}

    def close(self) -> None:
        self.bpf.cleanup()


@pytest.fixture(scope="module")
def hold() -> Iterator[Hold]:
    # Every socket() of a protocol nobody serves asks for the module (request_module, which
    # runs modprobe). An empty modprobe path makes those attempts cheap, so the sender sees
    # the protocol appear at once. The throwaway VM's setting, restored all the same.
    saved = MODPROBE.read_text()
    MODPROBE.write_text("\n")
    h = Hold()
    try:
        yield h
    finally:
        h.close()
        MODPROBE.write_text(saved)


def _recv_until(s: socket.socket, n: int, deadline: float) -> list[tuple[int, int, int, bytes]]:
    """Up to ``n`` messages as (type, flags, seq, payload), until ``deadline``."""
    out: list[tuple[int, int, int, bytes]] = []
    while len(out) < n:
        s.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            out += parse_msgs(s.recv(1 << 16))
        except TimeoutError:
            break
    return out


def _sender(conn: Connection) -> None:
    """In a child process on SENDER_CPU (an oops in the module kills it, not pytest)."""
    os.sched_setaffinity(0, {SENDER_CPU})
    attempts = 0
    deadline = time.monotonic() + SPIN_TIMEOUT
    while True:
        try:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, PROTO)
            break
        except OSError as e:
            if e.errno != errno.EPROTONOSUPPORT or time.monotonic() > deadline:
                conn.send({"error": f"socket(): {e.strerror} after {attempts} attempts"})
                return
            attempts += 1
    s.bind((0, 0))
    s.setsockopt(wire.SOL_NETLINK, wire.NETLINK_ADD_MEMBERSHIP, RELAY_GROUP)
    until = time.monotonic() + REPLY_TIMEOUT
    s.send(wire.nlmsg(wire.MSG_STATS_GET, seq=1))
    stats = _recv_until(s, 1, until)
    s.send(wire.nlmsg(wire.MSG_ECHO, b"in the window", seq=2)
           + wire.nlmsg(wire.MSG_ECHO, b"acked", seq=3,
                        flags=wire.NLM_F_REQUEST | wire.NLM_F_ACK)
           + wire.nlmsg(wire.MSG_RELAY,
                        wire.relay_payload(wire.groups_mask([RELAY_GROUP]), 4, 0), seq=4))
    answers = _recv_until(s, 4, until)  # two echoes, the ack, the relayed message
    conn.send({"attempts": attempts, "stats": stats, "answers": answers,
               "initstate": INITSTATE.read_text().strip()})
    s.close()


def _report(conn: Connection, sender: multiprocessing.process.BaseProcess
            ) -> dict[str, Any] | None:
    """The sender's report, or None if it died without one (an oops kills it)."""
    deadline = time.monotonic() + SPIN_TIMEOUT + REPLY_TIMEOUT + 10
    while time.monotonic() < deadline:
        if conn.poll(0.05):
            report: dict[str, Any] = conn.recv()
            return report
        if not sender.is_alive() and not conn.poll(0):
            return None
    return None


def _holding_now(hold: Hold, insmod: subprocess.Popen[bytes]) -> bool:
    """Whether the hold is on: waits for it to start (the sender may get in between the
    registration and the probed return), but not beyond the end of the load."""
    deadline = time.monotonic() + 10
    while insmod.poll() is None and time.monotonic() < deadline:
        if hold[HOLDING]:
            return True
        time.sleep(0.01)
    return bool(hold[HOLDING])


@pytest.mark.parametrize("mode", MODES)
def test_requests_during_load_are_served(module: Loaded, hold: Hold, mode: str) -> None:
    kmod.unload()
    hold.reset()
    ctx = multiprocessing.get_context("fork")
    receiver, report_end = ctx.Pipe(duplex=False)
    sender = ctx.Process(target=_sender, args=(report_end,))
    args = [f"{k}={v}" for k, v in kmod.validate_params({"mode": mode}).items()]
    home = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {SENDER_CPU})  # this process too stays off the held CPU
    sender.start()
    insmod = subprocess.Popen(["taskset", "-c", str(LOADER_CPU), "insmod", str(module.ko), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        report = _report(receiver, sender)
        held = _holding_now(hold, insmod)
        loading = insmod.poll() is None
    finally:
        hold[RELEASE] = 1
        out = insmod.communicate(timeout=120)[0].decode(errors="replace")
        sender.join(10)
        if sender.is_alive():
            sender.kill()
            sender.join()
        os.sched_setaffinity(0, home)
    how = f"hold {hold.summary()}, sender exit {sender.exitcode}"
    assert insmod.returncode == 0, f"insmod: {out.strip()} ({how})"
    assert report is not None, f"the sender died in the window ({how})"
    assert "error" not in report, f"{report['error']} ({how})"
    # the window was really hit: the sender was done before init had finished, while the
    # hold (placed after the protocol is registered, before the socket is stored) was on,
    # and the hold ended because this test released it
    assert (report["initstate"], held, loading) == ("coming", True, True), how
    assert (hold[HOLDS], hold[RELEASED]) == (1, 1), how

    assert [(t, q) for t, _, q, _ in report["stats"]] == [(wire.MSG_STATS_GET, 1)], how
    spayload = report["stats"][0][3]
    st = wire.Stats.unpack(spayload).fields
    # a deferred model's worker exists before input() can queue to it
    assert st["mode"] == mode
    assert bool(st["kthread_pid"]) == (mode == "kthread")
    assert st["wq_name"] == ("nlperf_wq" if mode == "workqueue" else "")
    answers = sorted(report["answers"], key=lambda a: (a[2], a[0] == wire.NLMSG_ERROR))
    assert [(t, q) for t, _, q, _ in answers] == [
        (wire.MSG_ECHO, 2), (wire.MSG_ECHO, 3), (wire.NLMSG_ERROR, 3),
        (wire.MSG_MCAST_DATA, 4)], how
    assert [answers[0][3], answers[1][3]] == [b"in the window", b"acked"]
    assert wire.NLMSGERR.unpack_from(answers[2][3])[0] == 0
    relayed = wire.Stamp.unpack_from(answers[3][3])
    assert (relayed.seq, relayed.group) == (4, RELAY_GROUP)

    # and the module goes on as loaded normally
    with Control(PROTO) as ctl:
        track(ctl.sock)
        s = client()
        s.send(wire.nlmsg(wire.MSG_ECHO, b"after", seq=5))
        (mtype, _, seq, payload), = recv_msgs(s, 1)
        assert (mtype, seq, payload) == (wire.MSG_ECHO, 5, b"after")
        st = ctl.wait_idle().fields
    assert (st["received"], st["processed"]) == (4, 4)
    print(f"{mode}: {report['attempts']} socket() attempts before the protocol was live; {how}")
