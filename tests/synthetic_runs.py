"""Synthetic run directories with known distributions, built through the results models.

Every message latency is drawn from a log-normal with a known median (``exp(μ)``) and σ, so
its percentiles are known: p = median · exp(σ · z_p). Per repetition a multiplicative
``rep_noise`` moves the whole distribution (what differs between boots), so repetitions are
the unit of variation. ``drift`` adds a multiplicative factor per round (repetition index),
the same for every case that is given it: what one boot's rounds share. Files: summary.json
(validated), env.json, and optionally samples.parquet and probe-histograms.json as the
runner writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nlperf import results
from nlperf.models import (
    Case,
    CaseProbes,
    Control,
    CtxSwitches,
    Env,
    EnvProbes,
    Multicast,
    Probes,
    Receiver,
    Repetition,
    RunOrder,
    Sched,
    Status,
    Unicast,
)
from nlperf.samples import latency_block

PARTS = (("user_to_kernel", 0.15), ("queue", 0.10), ("processing", 0.05),
         ("kernel_to_user", 0.70))
ATTACH = {"netlink_unicast": "fentry/fexit", "sched_wakeup": "raw_tracepoint"}


@dataclass
class Spec:
    """One case: what its messages' distributions are."""

    id: str
    params: dict[str, Any]
    traffic: str = "unicast"  # or "multicast"
    median_us: float = 100.0  # of the round trip (unicast) or the latency (multicast)
    sigma: float = 0.25  # log-normal shape of one repetition's messages
    reps: int = 5
    rep_noise: float = 0.01  # σ of the per-repetition multiplicative shift
    messages: int = 4000
    control: bool = True  # a probes-off pass too
    probe_cost: float = 1.05  # probed ÷ probes-off latency
    switches_per_msg: float = 0.5
    loss: dict[str, float] = field(default_factory=lambda: {"r0.0": 0.3, "r1.0": 0.0})
    kthread: bool = False
    send_syscall: bool = False
    quiet: bool = False  # counts (losses, switches) at their expectation, not drawn
    seed: int = 0
    drift: tuple[float, ...] = ()  # per round (repetition index): a factor shared by cases


def _draw(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(n))


def _latency_ns(values_ns: np.ndarray) -> dict[str, Any]:
    return latency_block(values_ns).model_dump()


def _log2(values_ns: np.ndarray) -> dict[str, Any]:
    v = np.maximum(values_ns.astype(np.int64), 1)
    slots = np.floor(np.log2(v)).astype(int) + 1
    counts = np.bincount(slots)
    return {"count": int(v.size), "sum_ns": int(v.sum()), "max_ns": int(v.max()),
            "log2": [[1 << (s - 1), 1 << s, int(n)] for s, n in enumerate(counts) if n and s],
            "linear": []}


def _rep(spec: Spec, index: int, rng: np.random.Generator, probed: bool,
         rows: list[dict[str, Any]], hist: list[dict[str, Any]]) -> Repetition:
    shift = float(np.exp(spec.rep_noise * rng.standard_normal()))
    shift *= spec.drift[index] if spec.drift else 1.0
    median = spec.median_us * 1000 * shift * (spec.probe_cost if probed else 1.0)
    rep = Repetition(index=index, duration_s=1.0)
    n = spec.messages
    if spec.traffic == "unicast":
        rtt = _draw(rng, median, spec.sigma, n)
        parts = {name: rtt * share for name, share in PARTS}
        elapsed = float(rtt.sum()) / 1e9
        rep.unicast = Unicast(
            sent=n, received=n, errors=0, throughput_per_s=round(n / elapsed, 1),
            elapsed_s=round(elapsed, 6), rtt_us=latency_block(rtt, 1000.0),
            **{f"{name}_us": latency_block(v, 1000.0) for name, v in parts.items()})
        rows += [{"source": "unicast", "rtt_ns": rtt,
                  **{f"{k}_ns": v for k, v in parts.items()}, "latency_ns": None}]
        messages = n
    else:
        receivers = []
        for rid, loss in spec.loss.items():
            lost = round(n * loss) if spec.quiet else int(rng.binomial(n, loss))
            lat = _draw(rng, median, spec.sigma, n - lost)
            receivers.append(Receiver(id=rid, groups=[1], sent=n, received=n - lost, lost=lost,
                                      enobufs=1 if lost else 0, sk_drops=lost,
                                      latency_us=latency_block(lat, 1000.0)))
            rows.append({"source": rid, "latency_ns": lat})
        rep.multicast = Multicast(source="generator", sent_by_group={"1": n},
                                  receivers=receivers)
        messages = n
    expected = spec.switches_per_msg * messages
    switches = round(expected) if spec.quiet else int(rng.poisson(expected))
    rep.sched = Sched(senders=CtxSwitches(voluntary=switches, involuntary=0))
    if probed:
        calls = _draw(rng, median / 20, spec.sigma, n)
        block: dict[str, Any] = {"attach": ATTACH, "timing": True, "netlink_unicast": {
            "calls": n, "latency_ns": _latency_ns(calls)}, "sched": {"kthread": None}}
        rep_hist: dict[str, Any] = {"netlink_unicast/to_kernel": _log2(calls)}
        if spec.kthread:
            wake = _draw(rng, 30_000.0 * shift, spec.sigma, n)
            block["sched"]["kthread"] = {"wakeup_to_run_ns": _latency_ns(wake)}
            rep_hist["wakeup/kthread"] = _log2(wake)
        if spec.send_syscall:
            blocked = _draw(rng, median * 0.3, spec.sigma, n)
            block["send_syscall_ns"] = _latency_ns(blocked)
            rep_hist["send_syscall/lab"] = _log2(blocked)
        rep.probes = Probes.model_validate(block)
        hist.append({"linear_step_ns": 1000, "rows": rep_hist})
    return rep


def make_case(spec: Spec, samples: list[pd.DataFrame] | None = None,
              histograms: dict[str, list[dict[str, Any]]] | None = None) -> Case:
    rng = np.random.default_rng(spec.seed)
    case = Case(id=spec.id, params=spec.params, status=Status.complete, repetitions=[])
    passes = [(True, case.repetitions)]
    if spec.control:
        case.control = Control(repetitions=[])
        passes.append((False, case.control.repetitions))
    for probed, into in passes:
        for i in range(spec.reps):
            rows: list[dict[str, Any]] = []
            hist: list[dict[str, Any]] = []
            into.append(_rep(spec, i, rng, probed, rows, hist))
            if histograms is not None and hist:
                histograms.setdefault(spec.id, []).extend(hist)
            for r in rows if samples is not None else []:
                size = len(r.get("rtt_ns") if r.get("rtt_ns") is not None else r["latency_ns"])
                frame = pd.DataFrame({"case": spec.id, "repetition": i,
                                      "control": not probed, "source": r["source"]},
                                     index=range(size))
                for col in ("rtt_ns", "user_to_kernel_ns", "queue_ns", "processing_ns",
                            "kernel_to_user_ns", "latency_ns"):
                    v = r.get(col)
                    frame[col] = pd.array(np.round(v).astype(np.int64) if v is not None
                                          else [None] * size, dtype="Int64")
                samples.append(frame)
    # the runner pools case-level blocks over repetitions; the analysis reads repetitions, so
    # the first repetition's blocks stand in for them here
    first = case.repetitions[0]
    for name in ("unicast", "multicast", "sched"):
        if getattr(first, name) is not None:
            setattr(case, name, getattr(first, name))
    case.probes = CaseProbes(attach=ATTACH)
    return case


def write_run(parent: Path, name: str, specs: list[Spec], *, accel: str = "tcg",
              samples: bool = True, histograms: bool = True, order: str | None = None,
              scenario: str | None = None, started: str | None = None,
              releases: dict[str, str] | None = None) -> Path:
    """``order``: summary.json's order kind (None: a summary from before it was recorded);
    ``scenario`` and ``started`` (default: ``name`` and now) tell runs apart; ``releases``:
    ``kernel`` matrix value → the release its boot ran, one env.json group per boot (as the
    runner writes them: the first group, later ones under ``more``)."""
    run_dir = results.create_run_dir(name, out=parent / name)
    first_release = next(iter(releases.values())) if releases else "6.1.0-56-amd64"
    summary = results.new_summary(scenario or name, "vm", accel, first_release, "tsc")  # type: ignore[arg-type]
    if order is not None:
        summary.order = RunOrder(kind=order)  # type: ignore[arg-type]
    if started is not None:
        summary.started = started
    frames: list[pd.DataFrame] = []
    hist: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        summary.cases.append(make_case(spec, frames if samples else None,
                                       hist if histograms else None))
    summary.status = Status.complete
    summary.finished = results.now_iso()
    results.write_summary(run_dir, summary)
    boots = {value: [s.id for s in specs if s.params.get("kernel") == value]
             for value in releases} if releases else {"6.1.0-56-amd64": []}
    envs = [Env(kernel=releases[value] if releases else value, target="vm", accel=accel,  # type: ignore[arg-type]
                clocksource="tsc", cpus=2, nlperf_version="0.1.0", python="3.11.2",
                module_params={cid: {} for cid in ids}, probes=EnvProbes(attach=ATTACH))
            for value, ids in boots.items()]
    env = envs[0]
    if len(envs) > 1:
        env.more = envs[1:]
    results.write_json(run_dir / results.ENV, env)
    if frames:
        pd.concat(frames, ignore_index=True).to_parquet(run_dir / "samples.parquet")
    if hist:
        (run_dir / results.PROBE_HISTOGRAMS).write_text(json.dumps(hist))
    return run_dir


def processing_models(reps: int = 5, *, slow: dict[str, float] | None = None,
                      quiet: bool = False, seed: int = 0) -> list[Spec]:
    """callback / kthread / workqueue × unicast / multicast, the headline scenario's shape."""
    slow = slow or {"callback": 1.0, "kthread": 1.3, "workqueue": 1.5}
    specs = []
    for mi, (mode, factor) in enumerate(slow.items()):
        for ti, traffic in enumerate(("unicast", "multicast")):
            specs.append(Spec(
                id=f"mode={mode},traffic={traffic}",
                params={"module.mode": mode, "traffic": traffic}, traffic=traffic,
                median_us=100.0 * factor if traffic == "unicast" else 400.0 * factor,
                reps=reps, switches_per_msg=0.05 if mode == "callback" else 1.0,
                kthread=mode == "kthread", send_syscall=True, quiet=quiet,
                rep_noise=0.002 if quiet else 0.01, messages=20_000 if quiet else 4000,
                seed=seed + 10 * mi + ti))
    return specs
