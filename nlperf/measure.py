"""Measures a scenario's cases on this kernel: module, workloads, (probes,) results.

Per case and repetition: load the module with the case's parameters → start receivers and
senders (separate processes, behind a barrier) → warm up → reset module counters → measure →
read counters → unload. This is what ``--target host`` does, natively or inside the lab VM.
Blocks come out as typed models (nlperf/models.py); the loop over cases and repetitions is
in nlperf/cases.py.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import numpy as np

from nlperf import __version__, kmod, models, phases, wire
from nlperf.errors import RunFailed
from nlperf.metrics import (
    dump_block,
    multicast_block,
    pool_dump,
    pool_multicast,
    pool_unicast,
    send_spacing_of,
    unicast_block,
)
from nlperf.nlsock import Control
from nlperf.probes import ProbeSession
from nlperf.scenario import Case, Multicast, Scenario, Unicast
from nlperf.workloads.dump import DumpConfig, dump_main
from nlperf.workloads.multicast import Receiver, ReceiverConfig, RelaySender
from nlperf.workloads.procstat import ctx_switches, delta
from nlperf.workloads.unicast import Sender, SenderConfig

BARRIER_TIMEOUT = 120.0
MODULE_COUNTERS = wire.STATS_COUNTERS  # summed over repetitions; the rest are levels

_ctx = mp.get_context("fork")


def clocksource() -> str | None:
    p = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    try:
        return p.read_text().strip()
    except OSError:
        return None


def env_facts(target: models.Target, accel: models.Accel, cases: list[Case]) -> models.Env:
    """What env.json says about this place; probe attach kinds are filled in as they attach."""
    return models.Env(kernel=platform.release(), target=target, accel=accel,
                      clocksource=clocksource(), cpus=os.cpu_count(),
                      nlperf_version=__version__, python=platform.python_version(),
                      module_params={c.id: module_params(c.scenario) for c in cases},
                      probes=models.EnvProbes(attach={}))


def module_params(s: Scenario) -> dict[str, str]:
    m = s.module
    return kmod.validate_params({"mode": m.mode, "proto": m.proto, "queue_len": m.queue_len,
                                 "queue_bytes": m.queue_bytes,
                                 "work_ns": m.work_ns, "work_sleep_us": m.work_sleep_us,
                                 "allow_unpriv": m.allow_unpriv})


def _pin(cpus: list[int] | None, index: int) -> None:
    if cpus:
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})


def _fail(q: Any, who: str, e: BaseException, *barriers: Barrier) -> None:
    for b in barriers:
        b.abort()
    q.put(("error", who, f"{type(e).__name__}: {e}"))


def _sender_main(cfg: SenderConfig, u: Unicast, warmup: tuple[int, float | None], index: int,
                 ready: Barrier, warm: Barrier, go: Barrier, q: Any) -> None:
    try:
        _pin(u.cpus, index)
        s = Sender(cfg)
        ready.wait(BARRIER_TIMEOUT)
        msgs, secs = warmup
        if secs or msgs:
            s.run(None if secs else msgs, secs, record=False)
        warm.wait(BARRIER_TIMEOUT)
        go.wait(BARRIER_TIMEOUT)
        q.put(("sender", index, s.run(u.count, u.duration)))
        s.close()
    except BaseException as e:
        _fail(q, f"sender {index}", e, ready, warm, go)


def _receiver_main(cfg: ReceiverConfig, expect: tuple[int, ...], ready: Barrier, warm: Barrier,
                   go: Barrier, done: Event, q: Any) -> None:
    try:
        r = Receiver(cfg)
        ready.wait(BARRIER_TIMEOUT)
        warm.wait(BARRIER_TIMEOUT)
        r.drain_stale()
        r.start_window()
        go.wait(BARRIER_TIMEOUT)
        q.put(("receiver", cfg.id, r.run(done, expect)))
        r.close()
    except BaseException as e:
        _fail(q, f"receiver {cfg.id}", e, ready, warm, go)


def _relay_main(proto: int, m: Multicast, ready: Barrier, warm: Barrier, go: Barrier,
                done: Event, q: Any) -> None:
    try:
        rs = RelaySender(proto, m.groups, m.size)
        ready.wait(BARRIER_TIMEOUT)
        warm.wait(BARRIER_TIMEOUT)
        go.wait(BARRIER_TIMEOUT)
        res = rs.run(m.count, m.duration, m.rate)
        done.set()
        q.put(("relay", 0, res))
        rs.close()
    except BaseException as e:
        done.set()
        _fail(q, "relay sender", e, ready, warm, go)


@dataclass
class RepResult:
    block: models.Repetition
    unicast_records: np.ndarray | None = None
    receiver_latency: dict[str, np.ndarray] = field(default_factory=dict)
    send_spacing: dict[int, np.ndarray] = field(default_factory=dict)  # per group, ns
    probe_histograms: dict[str, Any] | None = None
    dump: Any = None  # the dump reader's DumpResult, pooled by pool_case


def _proc_ctx(pid: int) -> dict[str, int] | None:
    try:
        return ctx_switches(pid)
    except OSError:
        return None


class ModuleSlot:
    """The companion module across one boot's runs.

    A run loads the module with its case's parameters; the next run keeps it when it has the
    same parameters and the same repetition index, and the module is idle (nothing queued,
    no skb held, no generator). With the cases taking turns round by round (nlperf/design.py),
    a round's probed and control runs of a case, and cases that differ only in traffic, share
    one load: the headline scenario's 72 runs need 18 loads instead of 72. A case's
    repetitions never share a load, so a load's luck (where the kthread lands, the module's
    memory) stays a between-repetition effect, as the statistics assume. A kept module starts
    the run as a fresh one does: counters and the queue high-water mark reset after warm-up,
    an empty queue (docs/ARCHITECTURE.md, "What a repetition resets").
    """

    IDLE_WAIT_S = 2.0

    def __init__(self, ko: Path) -> None:
        self.ko = ko
        self.key: tuple[dict[str, str], int] | None = None

    def take(self, params: dict[str, str], index: int) -> None:
        """The module loaded with ``params`` for repetition ``index``, kept if it can be."""
        if self.key == (params, index) and kmod.is_loaded() and _idle(int(params["proto"]),
                                                                        self.IDLE_WAIT_S):
            return
        self.release()  # ours only: a module someone else loaded makes load() refuse
        kmod.load(self.ko, params)
        self.key = (params, index)

    def release(self) -> None:
        """Unload the module this slot loaded, if any."""
        if self.key is not None:
            self.key = None
            kmod.unload()


def _idle(proto: int, wait_s: float) -> bool:
    """Whether the module has finished the last run's work (a deferred model may still be
    processing what a sink or open-loop sender left queued) and no generator runs."""
    with Control(proto) as ctl:
        try:
            return not ctl.wait_idle(wait_s).fields["gen_pid"]
        except RunFailed:  # still busy: the caller loads afresh, which drops what is left
            return False


def run_repetition(case: Case, index: int, module: ModuleSlot | Path, case_timeout: float,
                   probes: ProbeSession | None = None,
                   quiet: Sequence[ProbeSession] = ()) -> RepResult:
    """One repetition. ``module``: the boot's slot (the module stays loaded for the next run
    when it can), or a built module to load and unload around this run alone. ``probes``
    is attached for the run, every session in ``quiet`` detached (a probes-off run has no
    ``probes``)."""
    s = case.scenario
    proto = s.module.proto
    laps = phases.Laps()
    slot = module if isinstance(module, ModuleSlot) else ModuleSlot(module)
    slot.take(module_params(s), index)
    procs: list[Any] = []
    ok = False
    try:
        for other in quiet:
            other.suspend()
        if probes:
            probes.resume()
            probes.attach_module()
        laps.lap("load")
        rep = _measure(case, index, proto, procs, case_timeout, probes, laps)
        ok = True
    finally:
        for p in procs:
            if p.pid is None:  # never started: stopped while starting the others
                continue
            if p.is_alive():
                p.kill()
            p.join(5)
        if probes:
            probes.detach_module()
        if not ok or not isinstance(module, ModuleSlot):
            slot.release()  # after a failure the module's state is unknown: start afresh
    laps.lap("unload")
    rep.block.phases_s = {k: round(v, 4) for k, v in laps.seconds.items()}
    return rep


def _measure(case: Case, index: int, proto: int, procs: list[Any],
             case_timeout: float, probes: ProbeSession | None, laps: phases.Laps) -> RepResult:
    s = case.scenario
    u, m = s.active_unicast, s.active_multicast
    receivers = [ReceiverConfig(id=f"r{gi}.{k}", groups=tuple(spec.groups), proto=proto,
                                rcvbuf=spec.rcvbuf, delay_us=spec.delay_us,
                                no_enobufs=spec.no_enobufs, broadcast_error=spec.broadcast_error,
                                drain_timeout_ms=m.drain_timeout_ms)
                 for gi, spec in enumerate(m.receivers) for k in range(spec.count)] if m else []
    n_senders = u.senders if u else 0
    relay = m is not None and m.source == "relay"
    d = s.active_dump
    parties = n_senders + len(receivers) + int(relay) + int(d is not None) + 1
    # ready: every worker's sockets made (start-up ends); warm: warm-up done; go: measure
    ready, warm, go = (_ctx.Barrier(parties) for _ in range(3))
    done = _ctx.Event()
    q = _ctx.Queue()
    if u:
        cfg = SenderConfig(proto=proto, kind=u.kind, message_size=u.message_size,
                           pattern=u.pattern, window=u.window, rate=u.rate, batch=u.batch,
                           coalesce=u.coalesce, count=u.count, duration=u.duration,
                           reply_timeout_ms=u.reply_timeout_ms)
        warmup = (s.warmup.messages, s.warmup.seconds)
        procs += [_ctx.Process(target=_sender_main, args=(cfg, u, warmup, i, ready, warm, go, q))
                  for i in range(n_senders)]
    expect = tuple(m.groups) if m else ()
    procs += [_ctx.Process(target=_receiver_main, args=(rc, expect, ready, warm, go, done, q))
              for rc in receivers]
    if relay:
        assert m is not None
        procs.append(_ctx.Process(target=_relay_main, args=(proto, m, ready, warm, go, done, q)))
    if d is not None:
        dcfg = DumpConfig(proto=proto, objects=d.objects, object_size=d.object_size,
                          rcvbuf=d.rcvbuf, recv_size=d.recv_size, dumps=d.dumps,
                          interrupt_after=d.interrupt_after, timeout_s=case_timeout)
        procs.append(_ctx.Process(target=dump_main,
                                  args=(dcfg, (ready, warm, go), BARRIER_TIMEOUT, q)))
    for p in procs:
        p.start()
    with Control(proto) as ctl:
        try:
            ready.wait(BARRIER_TIMEOUT)
            laps.lap("start")
            warm.wait(BARRIER_TIMEOUT)
            ctl.reset_stats()
            kthread = ctl.stats().fields["kthread_pid"]
            kthread_ctx0 = _proc_ctx(int(kthread)) if kthread else None
            if probes:
                probes.watch([p.pid for p in procs], int(kthread) or None)
                probes.reset()
            go.wait(BARRIER_TIMEOUT)
            laps.lap("warmup")
        except Exception as e:  # a child failed before measuring: its message says why
            raise RunFailed(_first_child_error(q) or f"workers did not start: {e}") from None
        t0 = time.monotonic()
        if m is not None and m.source == "generator":
            _run_generator(ctl, m, case_timeout)
            done.set()
        got = _collect(q, len(procs), case_timeout)
        duration = time.monotonic() - t0
        laps.lap("measure")
        # before the stats request, which is lab traffic too
        probe_block = probes.read() if probes else None
        probe_hist = probes.histograms() if probes else None
        stats = ctl.stats()
    block = models.Repetition(index=index, duration_s=round(duration, 3))
    rep = RepResult(block, probe_histograms=probe_hist)
    if probe_block is not None:
        block.probes = models.Probes.model_validate(probe_block)
    senders = [r for kind, _, r in got if kind == "sender"]
    recvs = [r for kind, _, r in got if kind == "receiver"]
    if u:
        block.unicast = unicast_block(senders, timed=u.kind == "timed")
        recs = [r.records for r in senders if r.records is not None]
        rep.unicast_records = np.concatenate(recs) if recs else None
    if m:
        key = "relay_sent" if m.source == "relay" else "gen_sent"
        sent_by_group = {g: stats.groups.get(g, {}).get(key, 0) for g in m.groups}
        recvs.sort(key=lambda r: [int(x) for x in r.id[1:].split(".")])
        rep.send_spacing = send_spacing_of(recvs)
        block.multicast = multicast_block(m.source, sent_by_group, recvs, rep.send_spacing)
        rep.receiver_latency = {r.id: r.records[:, 4] - r.records[:, 3] for r in recvs
                                if r.records is not None}
    rep.dump = next((r for kind, _, r in got if kind == "dump"), None)
    if rep.dump is not None:
        block.dump = dump_block(rep.dump)
    block.module = models.Module.model_validate(stats.as_dict())
    sched = models.Sched()
    if senders:
        sched.senders = _sum_ctx([r.ctx for r in senders])
    if recvs:
        sched.receivers = _sum_ctx([r.ctx for r in recvs])
    relays = [r for kind, _, r in got if kind == "relay"]
    if relays:
        sched.relay_sender = models.CtxSwitches.model_validate(relays[0].ctx)
        if block.multicast is not None:
            block.multicast.relay_requested = relays[0].sent
            block.multicast.relay_errors = relays[0].errors
    if kthread and kthread_ctx0 is not None:
        after = _proc_ctx(int(kthread))
        if after is not None:
            sched.kthread = models.CtxSwitches.model_validate(delta(after, kthread_ctx0))
    block.sched = sched
    laps.lap("read")
    return rep


def _sum_ctx(items: list[dict[str, int]]) -> models.CtxSwitches:
    return models.CtxSwitches(voluntary=sum(i.get("voluntary", 0) for i in items),
                              involuntary=sum(i.get("involuntary", 0) for i in items))


def _first_child_error(q: Any) -> str | None:
    try:
        while True:
            kind, who, msg = q.get(timeout=2)
            if kind == "error":
                return f"{who} failed: {msg}"
    except queue.Empty:
        return None


def _collect(q: Any, n: int, timeout: float) -> list[tuple[str, Any, Any]]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        try:
            item = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise RunFailed(f"workers did not finish within {timeout:.0f} s") from None
        if item[0] == "error":
            raise RunFailed(f"{item[1]} failed: {item[2]}")
        out.append(item)
    return out


def _run_generator(ctl: Control, m: Multicast, timeout: float) -> None:
    ctl.gen_start(m.groups, m.size, count=m.count or 0,
                  duration_ns=int((m.duration or 0) * 1e9), rate=int(m.rate),
                  alloc=m.alloc)
    deadline = time.monotonic() + timeout
    while ctl.stats().fields["gen_pid"]:
        if time.monotonic() > deadline:
            ctl.gen_stop()
            raise RunFailed(f"the generator did not finish within {timeout:.0f} s")
        time.sleep(0.05)


def pool_case(case: Case, reps: list[RepResult]) -> models.Blocks:
    """Case-level blocks pooled over repetitions."""
    s = case.scenario
    out = models.Blocks()
    blocks = [r.block for r in reps]
    u = s.active_unicast
    if u:
        out.unicast = pool_unicast([b.unicast for b in blocks if b.unicast is not None],
                                   [r.unicast_records for r in reps
                                    if r.unicast_records is not None],
                                   timed=u.kind == "timed")
    if s.active_multicast:
        lat: dict[str, list[np.ndarray]] = {}
        for r in reps:
            for rid, arr in r.receiver_latency.items():
                lat.setdefault(rid, []).append(arr)
        out.multicast = pool_multicast([b.multicast for b in blocks if b.multicast is not None],
                                       lat, [r.send_spacing for r in reps])
    dumps = [r.dump for r in reps if r.dump is not None]
    if dumps:
        out.dump = pool_dump(dumps)
    # the module's keys are the wire format's (nlperf/wire.py): pooled by name
    mods = [b.module.document() for b in blocks if b.module is not None]
    module = {k: v for k, v in mods[0].items() if k not in MODULE_COUNTERS}
    module.update({k: sum(int(m_[k]) for m_ in mods) for k in MODULE_COUNTERS})
    module["queue_hwm"] = max(int(m_["queue_hwm"]) for m_ in mods)
    out.module = models.Module.model_validate(module)
    return out
