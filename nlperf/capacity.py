"""Multicast capacity planning (issue #11): the highest event rate a receiver takes without loss.

For each (receiver cost ``delay_us``, ``rcvbuf``, ``no_enobufs``) of a scenario's ``capacity``
section, the generator's rate is bisected (geometrically) between ``rates`` [lo, hi]: each
probe is one repetition (measure.run_repetition) of the case with that rate and a burst of
``messages`` per group, and every probe is recorded. The knee is the highest rate probed with
zero loss, confirmed ``confirm`` more times. The kernel's charge for one queued message
(truesize) is measured per payload size, and the planning rule follows from it.

The search assumes loss is monotonic in the rate for a fixed burst (a faster burst never loses
less): under that assumption, the knee lies within a factor ``resolution`` of the first rate
found to lose, or ``max_steps`` bisection probes were spent. Emulation makes single probes
noisy; the confirmation runs are the guard: a knee that loses in one falls back to the next
lower zero-loss rate probed, which is confirmed in turn.
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
from nlperf.nlsock import Control, netlink_drops, open_socket, rmem_alloc, socket_inode
from nlperf.scenario import Capacity, Case

# one probe run at a rate; ``confirm`` marks a confirmation run at the knee
Probe = Callable[[float, bool], models.CapacityPoint]
TRUESIZE_RCVBUF = 64 << 20  # large enough that the measuring queue never overruns


@dataclass
class Knee:
    knee: float | None  # highest zero-loss rate (None: the lowest rate lost)
    failed_at: float | None  # lowest rate that lost above the knee (None: none did)
    confirmed: bool
    points: list[models.CapacityPoint] = field(default_factory=list)


def find_knee(probe: Probe, lo: float, hi: float, resolution: float, max_steps: int,
              confirm: int) -> Knee:
    """Bisect (geometric mean) for the highest zero-loss rate in [lo, hi]; see the module doc.

    Probes lo, then hi, then up to ``max_steps`` midpoints until hi/lo < ``resolution``; then
    ``confirm`` more runs at the knee. A confirmation that loses makes the knee the failure
    (``failed_at``) and falls back to the next lower zero-loss rate probed.
    """
    points: list[models.CapacityPoint] = []

    def run(rate: float, confirming: bool = False) -> bool:
        p = probe(rate, confirming)
        points.append(p)
        return p.lost == 0

    if not run(lo):
        return Knee(None, lo, False, points)
    passed = [lo]
    if run(hi):
        good, bad = hi, None
        passed.append(hi)
    else:
        good, bad = lo, hi
        for _ in range(max_steps):
            if bad / good < resolution:
                break
            mid = math.sqrt(good * bad)
            if run(mid):
                good = mid
                passed.append(mid)
            else:
                bad = mid
    while True:
        if all(run(good, confirming=True) for _ in range(confirm)):
            return Knee(good, bad, True, points)
        bad = good
        lower = [r for r in passed if r < good]
        if not lower:
            return Knee(None, bad, False, points)
        good = max(lower)


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
        knee = "none (the lowest rate lost)" if sr.knee_per_s is None \
            else f"{sr.knee_per_s:.0f}/s" + ("" if sr.confirmed else " (unconfirmed)")
        above = "" if sr.failed_at_per_s is None else f", loss from {sr.failed_at_per_s:.0f}/s"
        out.append(f"delay_us={sr.delay_us} rcvbuf={sr.rcvbuf} no_enobufs={sr.no_enobufs}: "
                   f"zero loss for bursts of {cap.messages} × {size} B up to {knee}{above}")
    return out


def sweep(case: Case, module: ModuleSlot, case_timeout: float) -> models.Capacity:
    """The case's whole capacity section: truesize per size, then one knee search per
    (delay_us, rcvbuf, no_enobufs)."""
    cap = case.scenario.capacity
    m = case.scenario.active_multicast
    assert cap is not None and m is not None
    block = models.Capacity(messages=cap.messages, size=m.size, series=[], truesize=[],
                            rules=[])
    block.truesize = [measure_truesize(case, module, size, cap.truesize_messages)
                      for size in cap.sizes]
    for delay_us, rcvbuf, no_enobufs in itertools.product(cap.delay_us, cap.rcvbuf,
                                                          cap.no_enobufs):
        series = models.CapacitySeries(delay_us=delay_us, rcvbuf=rcvbuf, no_enobufs=no_enobufs,
                                       knee_per_s=None, failed_at_per_s=None, confirmed=False,
                                       points=[])
        block.series = [*block.series, series]

        def probe(rate: float, confirm: bool, series: models.CapacitySeries = series,
                  d: int = delay_us, b: int = rcvbuf, ne: bool = no_enobufs
                  ) -> models.CapacityPoint:
            derived = derived_case(case, cap, rate, d, b, ne)
            rep = run_repetition(derived, len(series.points), module, case_timeout)
            p = point_of(rate, rep, confirm)
            series.points = [*series.points, p]
            return p

        knee = find_knee(probe, cap.rates[0], cap.rates[1], cap.resolution, cap.max_steps,
                         cap.confirm)
        series.knee_per_s = None if knee.knee is None else round(knee.knee, 3)
        series.failed_at_per_s = None if knee.failed_at is None else round(knee.failed_at, 3)
        series.confirmed = knee.confirmed
    block.rules = rules(cap, m.size, block.series, block.truesize)
    return block


def summary_lines(case_id: str, block: models.Capacity) -> list[str]:
    """What ``nlperf run`` prints at the end: the knees, then the rule."""
    head = f"capacity {case_id}: knees (max zero-loss rate, bursts of {block.messages} × " \
           f"{block.size} B)"
    rows = [f"  delay_us={s.delay_us:<6} rcvbuf={s.rcvbuf:<9} no_enobufs={s.no_enobufs!s:<5} "
            f"knee={'none' if s.knee_per_s is None else f'{s.knee_per_s:.0f}/s'}"
            + _achieved(s) for s in block.series]
    return [head, *rows, *(f"  {r}" for r in block.rules[:1 + len(block.truesize)])]


def _achieved(series: models.CapacitySeries) -> str:
    """', achieved N/s' at the knee when the generator fell short of it by over 10 %."""
    got = [p.achieved_per_s for p in series.points
           if p.rate_per_s == series.knee_per_s and p.achieved_per_s is not None]
    if series.knee_per_s is None or not got or min(got) > 0.9 * series.knee_per_s:
        return ""
    return f" (achieved {min(got):.0f}/s)"
