"""The module's tracepoints (kmod/nlperf_trace.h), in the lab VM: they exist, fire exactly once
per message with the arguments the header documents, time the module for the probe suite as raw
tracepoints (kprobes only as the fallback), and leave unloading clean.

A small BCC program of its own counts every event by its arguments, independent of the probe
suite; one ProbeSession serves the file (one compile each).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from nlperf import kmod, wire
from nlperf.nlsock import Control
from nlperf.probe_attach import MODULE_TRACEPOINTS
from nlperf.probe_build import LIN_STEP_NS, compile_bpf, import_bcc
from nlperf.probes import ProbeSession
from tests.test_module_tracepoints import trace_events
from tests.vm.conftest import PROTO, Loaded, client, recv_msgs

MODES = ["callback", "kthread", "workqueue"]
TRACEFS = Path("/sys/kernel/tracing")
REFCNT = Path("/sys/module/nlperf/refcnt")
EVENTS = trace_events()  # every event of kmod/nlperf_trace.h -> its arguments, in order
SIGNED = {"result"}
NLPERF_REPLIED = 1  # nlperf_process_end's result for a handler that sent a data reply

# One raw tracepoint program per event: counts (event, its arguments as u32) in a hash. A raw
# tracepoint program may read only as many arguments as the tracepoint has.
_COUNTER_HEAD = """
struct key { u32 event; u32 a[4]; };
BPF_HASH(seen, struct key, u64, 4096);
"""
_COUNTER_PROG = """
RAW_TRACEPOINT_PROBE({name})
{{
	struct key k = {{ .event = {index} }};
	{reads}
	seen.increment(k);
	return 0;
}}
"""


def counter_source() -> str:
    progs = []
    for i, (name, args) in enumerate(EVENTS.items()):
        reads = " ".join(f"k.a[{j}] = (u32)ctx->args[{j}];" for j in range(len(args)))
        progs.append(_COUNTER_PROG.format(name=name, index=i, reads=reads))
    return _COUNTER_HEAD + "".join(progs)


class EventCounter:
    """Every nlperf event counted by its arguments while attached."""

    def __init__(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "count_events.bpf.c"
            src.write_text(counter_source())
            self.bpf = compile_bpf(import_bcc(), src, [])  # attached later: no autoload
        self.attached: list[str] = []

    def attach(self) -> None:
        for name in EVENTS:
            self.bpf.attach_raw_tracepoint(tp=name.encode(),
                                           fn_name=f"raw_tracepoint__{name}".encode())
            self.attached.append(name)

    def detach(self) -> None:
        while self.attached:
            self.bpf.detach_raw_tracepoint(tp=self.attached.pop().encode())

    def clear(self) -> None:
        self.bpf[b"seen"].clear()

    def read(self) -> Counter[tuple[object, ...]]:
        """(event, argument values...) -> times seen; results as signed numbers."""
        out: Counter[tuple[object, ...]] = Counter()
        names = list(EVENTS)
        for k, v in self.bpf[b"seen"].items():
            name = names[k.event]
            vals = []
            for j, arg in enumerate(EVENTS[name]):
                x = int(k.a[j])
                vals.append(x - (1 << 32) if arg in SIGNED and x >= 1 << 31 else x)
            out[(name, *vals)] += int(v.value)
        return out


class Tools:
    def __init__(self) -> None:
        self.counter = EventCounter()
        self.session = ProbeSession(PROTO, ["module"])


@pytest.fixture(scope="module")
def tools() -> Iterator[Tools]:
    t = Tools()
    yield t
    t.counter.detach()
    t.session.close()
    t.counter.bpf.cleanup()


@pytest.fixture
def attached(module: Loaded, tools: Tools) -> Iterator[tuple[Loaded, Tools]]:
    yield module, tools
    # before the module fixture unloads: an attached raw tracepoint holds the module
    tools.counter.detach()
    tools.session.detach_module()
    tools.session.module_tracepoints = True


def events_dir() -> Path:
    if not (TRACEFS / "events").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True)
    return TRACEFS / "events" / "nlperf"


def timed_echoes(n: int) -> int:
    """n timed echoes, one per datagram, closed loop; returns the sender's port id."""
    s = client()
    for i in range(n):
        s.send(wire.nlmsg(wire.MSG_TIMED_ECHO, wire.stamp(i, time.monotonic_ns()), seq=i))
        assert len(recv_msgs(s, 1)) == 1
    port = int(s.getsockname()[0])
    s.close()
    return port


def processed(tools: Tools, n: int, counted: bool = True) -> None:
    """Waits until n processings have ended for the counter and the probe suite alike: a
    deferring model sends the last reply before its processing ends, on another thread."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ends = sum(v for k, v in tools.counter.read().items() if k[0] == "nlperf_process_end")
        timed = (tools.session.read()["module"]["nlperf_process"] or {}).get("count", 0)
        if (ends >= n or not counted) and timed >= n:
            return
        time.sleep(0.05)


def load(module: Loaded, tools: Tools, **params: object) -> None:
    module(**params)
    tools.counter.attach()
    tools.session.attach_module()
    with Control(PROTO) as ctl:
        ctl.stats()  # a control message: input and reply events, no processing
    tools.counter.clear()
    tools.session.reset()


def test_the_events_are_listed_in_tracefs(module: Loaded) -> None:
    module(mode="callback")
    d = events_dir()
    assert sorted(p.name for p in d.iterdir() if p.is_dir()) == sorted(EVENTS)
    for name, args in EVENTS.items():
        fmt = (d / name / "format").read_text()
        for arg in args:
            assert f" {arg};" in fmt, (name, arg, fmt)


@pytest.mark.parametrize("mode", MODES)
def test_each_timed_echo_fires_each_event_once(attached: tuple[Loaded, Tools], mode: str
                                               ) -> None:
    """N timed echoes: exactly N of every per-message event, with the documented arguments,
    counted by a BCC program of the test's own; the probe suite, on the same tracepoints,
    times exactly N datagrams and N processings."""
    module, tools = attached
    load(module, tools, mode=mode)
    n = 200
    port = timed_echoes(n)
    processed(tools, n)
    seen = tools.counter.read()
    block = tools.session.read()
    length = wire.NLMSG_HDRLEN + len(wire.stamp(0))
    expected = Counter({
        ("nlperf_datagram_start", length, port): n,
        ("nlperf_datagram_end", length, port): n,
        ("nlperf_input", wire.MSG_TIMED_ECHO, length, port, 1): n,
        ("nlperf_process_start", wire.MSG_TIMED_ECHO): n,
        ("nlperf_process_end", wire.MSG_TIMED_ECHO, NLPERF_REPLIED): n,
        ("nlperf_reply", length, 0): n,
    })
    enqueued = Counter({k: v for k, v in seen.items() if k[0] == "nlperf_enqueue"})
    assert seen - enqueued == expected
    if mode == "callback":
        assert not enqueued
    else:
        # depth afterwards: this message, and at most the previous one not yet freed
        assert sum(enqueued.values()) == n
        assert {(depth, result) for _, depth, result in enqueued} <= {(1, 0), (2, 0)}, enqueued
    assert block["attach"]["nlperf_input"] == "raw_tracepoint"
    assert block["attach"]["nlperf_process"] == "raw_tracepoint"
    assert block["module"]["nlperf_input"]["count"] == n
    assert block["module"]["nlperf_process"]["count"] == n
    assert "nmissed" not in block  # no kretprobes


@pytest.mark.parametrize("tracepoints", [True, False], ids=["raw_tracepoint", "kprobe"])
def test_processing_time_is_process_end_minus_start(attached: tuple[Loaded, Tools],
                                                    tracepoints: bool) -> None:
    """Each message busy-waits work_ns inside processing: every timed processing, by the
    tracepoints or by the kprobe fallback, takes at least that, and each datagram's input()
    (callback mode: processing inside) at least as long again."""
    module, tools = attached
    tools.session.module_tracepoints = tracepoints
    work_ns = 200_000
    load(module, tools, mode="callback", work_ns=work_ns)
    n = 50
    timed_echoes(n)
    block = tools.session.read()
    kind = "raw_tracepoint" if tracepoints else "kprobe/kretprobe"
    assert block["attach"]["nlperf_process"] == kind
    assert block["attach"]["nlperf_input"] == kind
    proc, inp = block["module"]["nlperf_process"], block["module"]["nlperf_input"]
    assert proc["count"] == inp["count"] == n
    assert proc["mean"] >= work_ns and inp["mean"] >= proc["mean"], (proc, inp)  # exact sums
    # percentiles come from 1 µs linear buckets: one bucket of slack below
    assert proc["p50"] >= work_ns - LIN_STEP_NS, proc
    assert inp["p50"] >= proc["p50"] - LIN_STEP_NS, (inp, proc)
    if not tracepoints:
        assert block["nmissed"] == {"nlperf_input": 0, "nlperf_process": 0}


def test_attached_tracepoints_hold_the_module_until_detached(attached: tuple[Loaded, Tools]
                                                             ) -> None:
    """An attached raw tracepoint holds a reference on the module: rmmod is refused (the
    module stays, nothing breaks); once the probes are detached it unloads cleanly."""
    module, tools = attached
    load(module, tools, mode="kthread")
    timed_echoes(20)
    held = len(tools.counter.attached) + 2 * len(MODULE_TRACEPOINTS)
    assert int(REFCNT.read_text()) == held  # no lab socket is open
    proc = subprocess.run(["rmmod", kmod.MODULE], capture_output=True, text=True)
    assert proc.returncode != 0 and "in use" in proc.stderr, proc.stderr
    assert kmod.is_loaded()
    tools.counter.detach()
    tools.session.detach_module()
    assert int(REFCNT.read_text()) == 0
    kmod.unload()
    assert not kmod.is_loaded()


def test_unload_under_attached_kprobes_is_clean(attached: tuple[Loaded, Tools]) -> None:
    """The fallback's kprobes do not hold the module: it unloads under them, they are
    detached afterwards, and the next load is timed again."""
    module, tools = attached
    tools.session.module_tracepoints = False
    module(mode="workqueue")
    tools.session.attach_module()
    assert tools.session.attach_kinds["nlperf_process"] == "kprobe/kretprobe"
    timed_echoes(10)
    kmod.unload()
    assert not kmod.is_loaded()
    tools.session.detach_module()
    tools.session.module_tracepoints = True
    module(mode="workqueue")
    tools.session.attach_module()
    tools.session.reset()
    timed_echoes(10)
    processed(tools, 10, counted=False)
    block = tools.session.read()
    assert block["attach"]["nlperf_process"] == "raw_tracepoint"
    assert block["module"]["nlperf_process"]["count"] == 10
