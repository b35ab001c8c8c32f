"""Measures a scenario's cases on this kernel: module, workloads, (probes,) results.

Per case and repetition: load the module with the case's parameters → start receivers and
senders (separate processes, behind a barrier) → warm up → reset module counters → measure →
read counters → unload. This is what ``--target host`` does, natively or inside the lab VM.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import numpy as np

from nlperf import __version__, kmod, results, wire
from nlperf.errors import RunFailed
from nlperf.metrics import (
    multicast_block,
    observer_effect,
    pool_multicast,
    pool_unicast,
    unicast_block,
)
from nlperf.nlsock import Control
from nlperf.probes import ProbeSession
from nlperf.scenario import Case, Multicast, Scenario, Unicast
from nlperf.workloads.multicast import Receiver, ReceiverConfig, RelaySender
from nlperf.workloads.procstat import ctx_switches, delta
from nlperf.workloads.unicast import Sender, SenderConfig

BARRIER_TIMEOUT = 120.0
MODULE_COUNTERS = wire.STATS_COUNTERS  # summed over repetitions; the rest are levels

_ctx = mp.get_context("fork")
# one compiled probe session per (protocol, probe set, timing) in a run
Sessions = dict[tuple[int, tuple[str, ...], bool], ProbeSession]
PROBE_HISTOGRAMS = "probe-histograms.json"  # beside summary.json: {case id: [per repetition]}


def clocksource() -> str | None:
    p = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    try:
        return p.read_text().strip()
    except OSError:
        return None


def env_facts(target: str, accel: str) -> dict[str, Any]:
    return {"kernel": platform.release(), "target": target, "accel": accel,
            "clocksource": clocksource(), "cpus": os.cpu_count(),
            "nlperf_version": __version__, "python": platform.python_version()}


def module_params(s: Scenario) -> dict[str, str]:
    m = s.module
    return kmod.validate_params({"mode": m.mode, "proto": m.proto, "queue_len": m.queue_len,
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
                 warm: Barrier, go: Barrier, q: Any) -> None:
    try:
        _pin(u.cpus, index)
        s = Sender(cfg)
        msgs, secs = warmup
        if secs or msgs:
            s.run(None if secs else msgs, secs, record=False)
        warm.wait(BARRIER_TIMEOUT)
        go.wait(BARRIER_TIMEOUT)
        q.put(("sender", index, s.run(u.count, u.duration)))
        s.close()
    except BaseException as e:
        _fail(q, f"sender {index}", e, warm, go)


def _receiver_main(cfg: ReceiverConfig, expect: tuple[int, ...], warm: Barrier, go: Barrier,
                   done: Event, q: Any) -> None:
    try:
        r = Receiver(cfg)
        warm.wait(BARRIER_TIMEOUT)
        r.drain_stale()
        r.start_window()
        go.wait(BARRIER_TIMEOUT)
        q.put(("receiver", cfg.id, r.run(done, expect)))
        r.close()
    except BaseException as e:
        _fail(q, f"receiver {cfg.id}", e, warm, go)


def _relay_main(proto: int, m: Multicast, warm: Barrier, go: Barrier, done: Event,
                q: Any) -> None:
    try:
        rs = RelaySender(proto, m.groups, m.size)
        warm.wait(BARRIER_TIMEOUT)
        go.wait(BARRIER_TIMEOUT)
        res = rs.run(m.count, m.duration, m.rate)
        done.set()
        q.put(("relay", 0, res))
        rs.close()
    except BaseException as e:
        done.set()
        _fail(q, "relay sender", e, warm, go)


@dataclass
class RepResult:
    block: dict[str, Any]
    unicast_records: np.ndarray | None = None
    receiver_latency: dict[str, np.ndarray] = field(default_factory=dict)
    probe_histograms: dict[str, Any] | None = None


def _proc_ctx(pid: int) -> dict[str, int] | None:
    try:
        return ctx_switches(pid)
    except OSError:
        return None


def run_repetition(case: Case, index: int, ko: Path, case_timeout: float,
                   probes: ProbeSession | None = None) -> RepResult:
    s = case.scenario
    proto = s.module.proto
    kmod.load(ko, module_params(s))
    procs: list[Any] = []
    try:
        if probes:
            probes.attach_module()
        return _measure(case, index, proto, procs, case_timeout, probes)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)
        if probes:
            probes.detach_module()
        kmod.unload()


def _measure(case: Case, index: int, proto: int, procs: list[Any],
             case_timeout: float, probes: ProbeSession | None = None) -> RepResult:
    s = case.scenario
    u, m = s.active_unicast, s.active_multicast
    receivers = [ReceiverConfig(id=f"r{gi}.{k}", groups=tuple(spec.groups), proto=proto,
                                rcvbuf=spec.rcvbuf, delay_us=spec.delay_us,
                                no_enobufs=spec.no_enobufs, broadcast_error=spec.broadcast_error,
                                drain_timeout_ms=m.drain_timeout_ms)
                 for gi, spec in enumerate(m.receivers) for k in range(spec.count)] if m else []
    n_senders = u.senders if u else 0
    relay = m is not None and m.source == "relay"
    parties = n_senders + len(receivers) + int(relay) + 1
    warm, go = _ctx.Barrier(parties), _ctx.Barrier(parties)
    done = _ctx.Event()
    q = _ctx.Queue()
    if u:
        cfg = SenderConfig(proto=proto, kind=u.kind, message_size=u.message_size,
                           pattern=u.pattern, window=u.window, rate=u.rate, batch=u.batch,
                           count=u.count, duration=u.duration,
                           reply_timeout_ms=u.reply_timeout_ms)
        warmup = (s.warmup.messages, s.warmup.seconds)
        procs += [_ctx.Process(target=_sender_main, args=(cfg, u, warmup, i, warm, go, q))
                  for i in range(n_senders)]
    expect = tuple(m.groups) if m else ()
    procs += [_ctx.Process(target=_receiver_main, args=(rc, expect, warm, go, done, q))
              for rc in receivers]
    if relay:
        assert m is not None
        procs.append(_ctx.Process(target=_relay_main, args=(proto, m, warm, go, done, q)))
    for p in procs:
        p.start()
    with Control(proto) as ctl:
        try:
            warm.wait(BARRIER_TIMEOUT)
            ctl.reset_stats()
            kthread = ctl.stats().fields["kthread_pid"]
            kthread_ctx0 = _proc_ctx(int(kthread)) if kthread else None
            if probes:
                probes.watch([p.pid for p in procs], int(kthread) or None)
                probes.reset()
            go.wait(BARRIER_TIMEOUT)
        except Exception as e:  # a child failed before measuring: its message says why
            raise RunFailed(_first_child_error(q) or f"workers did not start: {e}") from None
        t0 = time.monotonic()
        if m is not None and m.source == "generator":
            _run_generator(ctl, m, case_timeout)
            done.set()
        got = _collect(q, len(procs), case_timeout)
        duration = time.monotonic() - t0
        # before the stats request, which is lab traffic too
        probe_block = probes.read() if probes else None
        probe_hist = probes.histograms() if probes else None
        stats = ctl.stats()
    block: dict[str, Any] = {"index": index, "duration_s": round(duration, 3)}
    rep = RepResult(block, probe_histograms=probe_hist)
    if probe_block is not None:
        block["probes"] = probe_block
    senders = [r for kind, _, r in got if kind == "sender"]
    recvs = [r for kind, _, r in got if kind == "receiver"]
    if u:
        block["unicast"] = unicast_block(senders, timed=u.kind == "timed")
        recs = [r.records for r in senders if r.records is not None]
        rep.unicast_records = np.concatenate(recs) if recs else None
    if m:
        key = "relay_sent" if m.source == "relay" else "gen_sent"
        sent_by_group = {g: stats.groups.get(g, {}).get(key, 0) for g in m.groups}
        recvs.sort(key=lambda r: [int(x) for x in r.id[1:].split(".")])
        block["multicast"] = multicast_block(m.source, sent_by_group, recvs)
        rep.receiver_latency = {r.id: r.records[:, 4] - r.records[:, 3] for r in recvs
                                if r.records is not None}
    block["module"] = stats.as_dict()
    sched: dict[str, Any] = {}
    if senders:
        sched["senders"] = _sum_ctx([r.ctx for r in senders])
    if recvs:
        sched["receivers"] = _sum_ctx([r.ctx for r in recvs])
    relays = [r for kind, _, r in got if kind == "relay"]
    if relays:
        sched["relay_sender"] = relays[0].ctx
        block.setdefault("multicast", {})["relay_errors"] = relays[0].errors
    if kthread and kthread_ctx0 is not None:
        after = _proc_ctx(int(kthread))
        if after is not None:
            sched["kthread"] = delta(after, kthread_ctx0)
    block["sched"] = sched
    return rep


def _sum_ctx(items: list[dict[str, int]]) -> dict[str, int]:
    return {k: sum(i.get(k, 0) for i in items) for k in ("voluntary", "involuntary")}


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


def pool_case(case: Case, reps: list[RepResult]) -> dict[str, Any]:
    """Case-level blocks pooled over repetitions."""
    s = case.scenario
    out: dict[str, Any] = {}
    blocks = [r.block for r in reps]
    u = s.active_unicast
    if u:
        out["unicast"] = pool_unicast([b["unicast"] for b in blocks],
                                      [r.unicast_records for r in reps
                                       if r.unicast_records is not None],
                                      timed=u.kind == "timed")
    if s.active_multicast:
        lat: dict[str, list[np.ndarray]] = {}
        for r in reps:
            for rid, arr in r.receiver_latency.items():
                lat.setdefault(rid, []).append(arr)
        out["multicast"] = pool_multicast([b["multicast"] for b in blocks], lat)
    mods = [b["module"] for b in blocks]
    module = {k: v for k, v in mods[0].items() if k not in MODULE_COUNTERS}
    module.update({k: sum(int(m_[k]) for m_ in mods) for k in MODULE_COUNTERS})
    module["queue_hwm"] = max(int(m_["queue_hwm"]) for m_ in mods)
    out["module"] = module
    return out


ProgressFn = Callable[[dict[str, Any]], None]


def run_cases(cases: list[Case], run_dir: Path, summary: dict[str, Any], ko: Path,
              progress: ProgressFn | None = None, case_timeout: float = 600.0) -> None:
    """Run every case × repetition, rewriting summary.json after each repetition."""
    sessions: Sessions = {}
    try:
        _run_cases(cases, run_dir, summary, ko, progress, case_timeout, sessions)
    finally:
        if sessions:
            _record_attach_kinds(run_dir, probe_attach_kinds(sessions))
        for ps in sessions.values():
            ps.close()


def _record_attach_kinds(run_dir: Path, kinds: dict[str, str]) -> None:
    """env.json says how each probe was attached (fentry, kprobe, tracepoint, unavailable)."""
    path = run_dir / results.ENV
    env = results.read_json(path) if path.exists() else {}
    env["probes"] = {"attach": kinds}
    results.write_json(path, env)


def runs_per_case(case: Case) -> int:
    """Repetitions a case takes, its probes-off control run included."""
    p = case.scenario.probes
    return case.scenario.repetitions * (2 if p.enabled and p.control else 1)


def _progress(run_dir: Path, progress: ProgressFn | None, ci: int, cases: list[Case],
              cid: str, rep: int, done: int, total: int, control: bool) -> None:
    record = {"case": ci, "cases": len(cases), "id": cid, "rep": rep, "control": control,
              "done": done, "total": total}
    results.append_progress(run_dir, record)
    if progress:
        progress(record)


def probe_attach_kinds(sessions: Sessions
                       ) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for ps in sessions.values():
        kinds.update(ps.attach_kinds)
    return kinds


def _probe_session(case: Case, sessions: Sessions
                   ) -> ProbeSession | None:
    """One compile per run: cases share a session unless their protocol or probe set differs."""
    p = case.scenario.probes
    if not p.enabled:
        return None
    key = (case.scenario.module.proto, tuple(p.which), p.timing)
    if key not in sessions:
        sessions[key] = ProbeSession(key[0], list(key[1]), timing=p.timing)
    return sessions[key]


def _run_cases(cases: list[Case], run_dir: Path, summary: dict[str, Any], ko: Path,
               progress: ProgressFn | None, case_timeout: float,
               sessions: Sessions) -> None:
    total = sum(runs_per_case(c) for c in cases)
    done = 0
    histograms: dict[str, list[Any]] = {}
    for ci, case in enumerate(cases):
        entry: dict[str, Any] = {"id": case.id, "params": case.params, "status": "failed",
                                 "repetitions": []}
        summary["cases"].append(entry)
        reps: list[RepResult] = []
        try:
            probes = _probe_session(case, sessions)
            for r in range(case.scenario.repetitions):
                rep = run_repetition(case, r, ko, case_timeout, probes)
                reps.append(rep)
                if rep.probe_histograms is not None:
                    histograms.setdefault(case.id, []).append(rep.probe_histograms)
                    results.write_json(run_dir / PROBE_HISTOGRAMS, histograms)
                entry["repetitions"].append(rep.block)
                done += 1
                _progress(run_dir, progress, ci, cases, case.id, r, done, total, False)
                results.write_summary(run_dir, summary)
            entry.update(pool_case(case, reps))
            if probes is not None:
                entry["probes"] = {"attach": reps[0].block.get("probes", {}).get("attach", {})}
            if probes is not None and case.scenario.probes.control:
                # the observer effect: the same repetitions again with no probe attached
                control: dict[str, Any] = {"repetitions": []}
                entry["control"] = control
                creps = []
                for r in range(case.scenario.repetitions):
                    rep = run_repetition(case, r, ko, case_timeout, None)
                    creps.append(rep)
                    control["repetitions"].append(rep.block)
                    done += 1
                    _progress(run_dir, progress, ci, cases, case.id, r, done, total, True)
                    results.write_summary(run_dir, summary)
                control.update(pool_case(case, creps))
                entry["probes"]["overhead"] = observer_effect(entry, control)
            entry["status"] = "complete"
        except KeyboardInterrupt:
            entry["status"] = "interrupted"
            raise
        except RunFailed as e:
            entry["error"] = str(e)
            raise
        finally:
            if reps and "module" not in entry:
                entry.update(pool_case(case, reps))
            results.write_summary(run_dir, summary)
