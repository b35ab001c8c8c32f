"""Multicast capacity planning (issue #11): the highest event rate a receiver takes without loss.

For each (receiver cost ``delay_us``, ``rcvbuf``, ``no_enobufs``) of a scenario's ``capacity``
section, the generator's rate is bisected (geometrically) between ``rates`` [lo, hi]: each
probe is one repetition (measure.run_repetition) of the case with that rate and a burst of
``messages`` per group, and every probe is recorded as it is measured. The search reasons on
the rate each run ACHIEVED, not the rate asked (an emulated generator falls short of high
asked rates): see find_knee and docs/scenarios.md. The kernel's charge for one queued message
(truesize) is measured per payload size, and the planning rule follows from it.

The search assumes loss is monotonic in the achieved rate for a fixed burst; a lossy run caps
the knee below its rate even when a faster run did not lose (emulation noise), and the
confirmation runs at the knee guard against one lucky run.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nlperf import kmod, models
from nlperf.errors import RunFailed
from nlperf.measure import ModuleSlot, RepResult, module_params, run_repetition
from nlperf.models_capacity import KneeOutcome
from nlperf.nlsock import Control, netlink_drops, open_socket, rmem_alloc, socket_inode
from nlperf.scenario import Capacity, Case

# one probe run at a rate; ``confirm`` marks a confirmation run at the knee
Probe = Callable[[float, bool], models.CapacityPoint]
TRUESIZE_RCVBUF = 64 << 20  # large enough that the measuring queue never overruns


SHORT = 0.9  # a run whose generator achieved less than this × the rate asked fell short


def reached(p: models.CapacityPoint) -> float:
    """The rate a run achieved (the rate asked when no pair of its messages arrived)."""
    return p.achieved_per_s if p.achieved_per_s is not None else p.rate_per_s


def fell_short(p: models.CapacityPoint) -> bool:
    return reached(p) < SHORT * p.rate_per_s


@dataclass
class Knee:
    knee: float | None  # highest achieved zero-loss rate, held in every confirmation
    failed_at: float | None  # lowest achieved rate that lost (None: none did)
    confirmed: bool
    outcome: KneeOutcome
    points: list[models.CapacityPoint] = field(default_factory=list)


def find_knee(probe: Probe, lo: float, hi: float, resolution: float, max_steps: int,
              confirm: int) -> Knee:
    """Bisect on ACHIEVED rates for the highest zero-loss rate; see docs/scenarios.md.

    A zero-loss run proves capacity >= the rate it achieved; a lossy one shows loss at the rate
    it achieved. The bracket is (the highest achieved zero-loss rate below the lowest achieved
    lossy rate, that lowest lossy rate): a lossy run caps the knee whatever was asked. Probes
    lo, hi, then ask the geometric mean of the bracket (up to ``max_steps`` times) until its
    ratio is below ``resolution``. With no loss seen, the search stops: the knee is a lower
    bound (the top of ``rates``, or the generator's reach when it fell short of hi). The knee
    is then run ``confirm`` more times, asking the rate it achieved when the generator fell
    short; a confirmation that loses rejects that knee and the search goes on.
    """
    points: list[models.CapacityPoint] = []
    rejected: set[int] = set()  # indices of knees a confirmation run refuted

    def run(rate: float, confirming: bool = False) -> models.CapacityPoint:
        p = probe(rate, confirming)
        points.append(p)
        return p

    first = run(lo)
    if first.lost:
        return Knee(None, reached(first), False, "no_knee", points)
    run(hi)
    steps = 0
    while True:
        lossy = [reached(p) for p in points if p.lost]
        bad = min(lossy) if lossy else None
        candidates = [i for i, p in enumerate(points) if not p.lost and not p.confirm
                      and i not in rejected and (bad is None or reached(p) < bad)]
        if not candidates:
            return Knee(None, bad, False, "no_knee", points)
        best = max(candidates, key=lambda i: reached(points[i]))
        good = reached(points[best])
        if bad is not None and bad / good >= resolution and steps < max_steps:
            steps += 1
            run(math.sqrt(good * bad))
            continue
        candidate = points[best]
        ask = reached(candidate) if fell_short(candidate) else candidate.rate_per_s
        held = [candidate]
        for _ in range(confirm):
            held.append(run(ask, confirming=True))
            if held[-1].lost:
                break
        if held[-1].lost:
            rejected.add(best)
            continue
        knee = min(reached(p) for p in held)
        outcome: KneeOutcome = "loss" if bad is not None else (
            "rates" if knee >= SHORT * hi else "generator")
        return Knee(knee, bad, True, outcome, points)


def point_of(rate: float, rep: RepResult, confirm: bool) -> models.CapacityPoint:
    """A probe's accounting, summed over its receivers, and the rate the generator achieved."""
    m = rep.block.multicast
    if m is None or not m.receivers:
        raise RunFailed("a capacity probe ran without a multicast receiver")
    rs = m.receivers
    drops = [r.sk_drops for r in rs]
    sent = sum(r.sent for r in rs)
    lost = sum(r.lost for r in rs)
    spacings = [a for a in rep.send_spacing.values() if a.size]
    mean_ns = float(np.concatenate(spacings).mean()) if spacings else 0.0
    point = models.CapacityPoint(
        rate_per_s=round(rate, 3), sent=sent, received=sum(r.received for r in rs), lost=lost,
        sk_drops=None if None in drops else sum(d for d in drops if d is not None),
        enobufs=sum(r.enobufs for r in rs), loss_fraction=lost / sent if sent else 0.0,
        confirm=confirm)
    if mean_ns > 0:  # absent, not null, when no consecutive pair arrived
        point.achieved_per_s = round(1e9 / mean_ns, 1)
    return point


def derived_case(case: Case, cap: Capacity, rate: float, delay_us: int, rcvbuf: int,
                 no_enobufs: bool) -> Case:
    """The case with the probe's rate and burst, and every receiver's cost and buffer."""
    s = case.scenario
    m = s.active_multicast
    assert m is not None  # the scenario's validation holds it
    receivers = [r.model_copy(update={"delay_us": delay_us, "rcvbuf": rcvbuf,
                                      "no_enobufs": no_enobufs}) for r in m.receivers]
    mc = m.model_copy(update={"rate": rate, "count": cap.messages, "duration": None,
                              "receivers": receivers})
    probes = s.probes.model_copy(update={"enabled": False})
    scen = s.model_copy(update={"multicast": mc, "traffic": "multicast", "probes": probes})
    params = {**case.params, "capacity.delay_us": delay_us, "capacity.rcvbuf": rcvbuf,
              "capacity.no_enobufs": no_enobufs, "capacity.rate": rate}
    return Case(id=f"{case.id}.capacity", params=params, scenario=scen)


def measure_truesize(case: Case, module: ModuleSlot, size: int, queued: int
                     ) -> models.Truesize:
    """Load the module, let the generator queue ``queued`` messages (+ its end marker) of
    ``size`` bytes on a socket nobody reads, and divide the queue's charge by the count."""
    s = case.scenario
    m = s.active_multicast
    assert m is not None
    group = m.groups[0]
    module.release()  # the module the case's last run kept loaded, if any
    kmod.load(module.ko, module_params(s))
    try:
        sock = open_socket(s.module.proto, rcvbuf=TRUESIZE_RCVBUF, groups=(group,))
        try:
            with Control(s.module.proto) as ctl:
                ctl.gen_start([group], size, count=queued)
                deadline = time.monotonic() + 60
                while ctl.stats().fields["gen_pid"]:
                    if time.monotonic() > deadline:
                        raise RunFailed("the truesize generator did not finish within 60 s")
                    time.sleep(0.02)
                sent = ctl.stats().groups.get(group, {}).get("gen_sent", 0)
            charged = rmem_alloc(sock)
            drops = netlink_drops(socket_inode(sock))
        finally:
            sock.close()
    finally:
        kmod.unload()
    if not sent or drops:
        raise RunFailed(f"truesize of {size}-byte messages: {sent} sent, {drops} dropped")
    per = charged / sent
    return models.Truesize(size=size, queued=sent, truesize=round(per, 1),
                           ratio=round(per / size, 3))


GENERAL_RULE = (
    "a burst of B events of S bytes needs sk_rcvbuf >= B × truesize(S) bytes (SO_RCVBUF of "
    "half that: the kernel doubles it); a consumer needing C µs per event keeps up with R "
    "events/s only while R < 1e6/C, and above that a burst of B grows its queue by "
    "B × (1 − 1e6/(R·C)) messages")


def rules(cap: Capacity, size: int, series: list[models.CapacitySeries],
          truesize: list[models.Truesize]) -> list[str]:
    """The planning rule in words: the general rule, one line per measured size (the charge),
    then one per series (its knee). ``summary_lines`` prints all but the series."""
    out = [GENERAL_RULE]
    for t in truesize:
        out.append(f"{t.size}-byte events are charged {t.truesize:.0f} bytes each "
                   f"({t.ratio:.2f}× the payload): a burst of 1000 needs sk_rcvbuf >= "
                   f"{1000 * t.truesize:.0f} bytes")
    for sr in series:
        knee = "none (no zero-loss rate below a loss)" if sr.knee_per_s is None \
            else knee_text(sr).replace(",", "")
        above = "" if sr.failed_at_per_s is None else f", loss from {sr.failed_at_per_s:.0f}/s"
        out.append(f"delay_us={sr.delay_us} rcvbuf={sr.rcvbuf} no_enobufs={sr.no_enobufs}: "
                   f"zero loss for bursts of {cap.messages} × {size} B up to {knee}{above}")
    return out


def sweep(case: Case, module: ModuleSlot, case_timeout: float,
          on_change: Callable[[models.Capacity], None] = lambda _block: None
          ) -> models.Capacity:
    """The case's whole capacity section: truesize per size, then one knee search per
    (delay_us, rcvbuf, no_enobufs). ``on_change`` gets the block (the same object, grown)
    once made and after every measurement, so that a sweep that stops keeps what it
    measured; a series still searching says ``outcome: unfinished``."""
    cap = case.scenario.capacity
    m = case.scenario.active_multicast
    assert cap is not None and m is not None
    block = models.Capacity(messages=cap.messages, size=m.size, series=[], truesize=[],
                            rules=[])
    on_change(block)
    for size in cap.sizes:
        block.truesize = [*block.truesize,
                          measure_truesize(case, module, size, cap.truesize_messages)]
        on_change(block)
    for delay_us, rcvbuf, no_enobufs in itertools.product(cap.delay_us, cap.rcvbuf,
                                                          cap.no_enobufs):
        series = models.CapacitySeries(delay_us=delay_us, rcvbuf=rcvbuf, no_enobufs=no_enobufs,
                                       knee_per_s=None, failed_at_per_s=None, confirmed=False,
                                       outcome="unfinished", points=[])
        block.series = [*block.series, series]

        def probe(rate: float, confirm: bool, series: models.CapacitySeries = series,
                  d: int = delay_us, b: int = rcvbuf, ne: bool = no_enobufs
                  ) -> models.CapacityPoint:
            derived = derived_case(case, cap, rate, d, b, ne)
            rep = run_repetition(derived, len(series.points), module, case_timeout)
            p = point_of(rate, rep, confirm)
            series.points = [*series.points, p]
            on_change(block)
            return p

        knee = find_knee(probe, cap.rates[0], cap.rates[1], cap.resolution, cap.max_steps,
                         cap.confirm)
        series.knee_per_s = None if knee.knee is None else round(knee.knee, 3)
        series.failed_at_per_s = None if knee.failed_at is None else round(knee.failed_at, 3)
        series.confirmed = knee.confirmed
        series.outcome = knee.outcome
        on_change(block)
    block.rules = rules(cap, m.size, block.series, block.truesize)
    on_change(block)
    return block


def knee_text(series: models.CapacitySeries) -> str:
    """The knee as the summary and the report print it: '≥ ' when it is a lower bound."""
    if series.outcome == "unfinished":
        return "unfinished"
    if series.knee_per_s is None:
        return "none"
    bound = {"rates": "≥ ", "generator": "≥ "}.get(series.outcome or "", "")
    why = {"rates": " (no loss up to the top of rates)",
           "generator": " (no loss as fast as the generator went)"}.get(series.outcome or "", "")
    return f"{bound}{series.knee_per_s:,.0f}/s{why}" + ("" if series.confirmed
                                                      else " (unconfirmed)")


def summary_lines(case_id: str, block: models.Capacity) -> list[str]:
    """What ``nlperf run`` prints at the end: the knees, then the rule."""
    head = f"capacity {case_id}: knees (max zero-loss rate, bursts of {block.messages} × " \
           f"{block.size} B)"
    rows = [f"  delay_us={s.delay_us:<6} rcvbuf={s.rcvbuf:<9} no_enobufs={s.no_enobufs!s:<5} "
            f"knee={knee_text(s).replace(',', '')}" for s in block.series]
    return [head, *rows, *(f"  {r}" for r in block.rules[:1 + len(block.truesize)])]

