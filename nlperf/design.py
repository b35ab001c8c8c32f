"""Experiment design: the order of one boot's runs, and when ``repetitions: auto`` stops.

Pure functions; nlperf/cases.py drives them with live results.

Why an order at all. A boot drifts (page cache, CPU frequency and, under emulation, the host's
load): run every repetition of case A before case B and the drift reads as a difference
between A and B. So the cases of one boot take turns:

* ``round-robin`` (default): round r runs repetition r of every case still going, in case
  order;
* ``random``: the same rounds, each round in a fresh order drawn from a generator seeded
  with the scenario's ``seed`` (drawn at run start when not given; the summary records it);
* ``sequential``: case after case, each case's control repetitions after its probed ones
  (the behaviour before rounds existed).

With a probes-off control pass, a case's probed and control repetition r both run in round
r, next to each other, so the observer effect is measured under the same drift too. The
control pass is probes-off for real: every probe is detached for it and attached again for
the next probed run (nlperf/probe_attach.py ``suspend``), and a detach waits in the kernel
(~1 s for the whole suite under TCG). So a round keeps the runs that need the same probes
together, and its cases that share a module load (``load_key``: equal load parameters;
nlperf/measure.py ``ModuleSlot``) run as one *load group*: the group's probed runs, then its
control runs, or the other way round, alternating from group to group (so the probes change
once per group) and from round to round:

    round 0: P(a) P(b) C(a) C(b) | C(c) C(d) P(c) P(d) | ...
    round 1: C(a) C(b) P(a) P(b) | P(c) P(d) C(c) C(d) | ...

Which goes first is ``(round + g) % 2`` for the g-th load group of the boot (in case order,
fixed for the boot, also with ``random``), so every group alternates from round to round.
The runs of a load group share one load, so a run's place on it (first on a fresh load, or
later on a kept one: a position effect, docs/ARCHITECTURE.md "What a repetition resets")
differs between a case's probed and control run; it favours the probed run in half the
rounds and the control run in the other half, and cancels in the paired observer effect
(the mean per-round log ratio) over an even number of rounds; over an odd number 1/n of it
is left. Each repetition's ``run_index`` says where it ran. ``sequential`` does not
alternate: its control pass runs after all the case's probed repetitions, so a probed run
and its control run share a load only with one repetition (ModuleSlot keeps a load for the
same repetition index alone).

Pairing (nlperf/verdict.py). With rounds (``round-robin``, ``random``), repetition r of every
case of a boot, and each case's control repetition r, ran in round r, next to each other in
time: the rounds are blocks, and two cases of one boot are compared round by round (paired),
so the drift between rounds cancels. ``sequential`` has no rounds — repetition r of one case
ran long before repetition r of the next, and a case's control pass after all its probed
repetitions — so its comparisons are unpaired, as are those of summaries written before
``order`` was recorded (they ran sequentially) and of cases in different boots (a ``kernel``
or ``target`` matrix: one boot per value).

``repetitions: auto``: every case takes ``min`` repetitions; then, round by round, a case
whose headline metrics do not all have a bootstrap CI half-width (nlperf.stats.
ci_halfwidth_pct of the median over per-repetition values) within ``target_ci_pct`` % takes
one more, until it has ``max``. Headline metrics, where the case has them: the unicast round
trip's p50 and p99 and the unicast throughput (``unicast.rtt_us.p50``, ``unicast.rtt_us.p99``,
``unicast.throughput_per_s``), and each multicast receiver's latency p50
(``multicast.receivers[<id>].latency_us.p50``). The rule is stats.target_met with
``min_repetitions`` = ``min``; the probed pass decides, the control pass follows it. The
decision is taken once per round, before its runs: a control repetition that goes first
(odd rounds) is always followed by its probed one, and a case never ends a round with more
control repetitions than probed ones.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Hashable, Iterator
from typing import Any, NamedTuple

from nlperf import stats
from nlperf.models import OrderKind, Repetition, RepetitionsAuto
from nlperf.scenario import AutoRepetitions


class Run(NamedTuple):
    """One planned run: which case (its index in the boot), probed or control pass."""

    case: int
    control: bool


def schedule(kind: OrderKind, n_cases: int, *, wants_more: Callable[[int], bool],
             has_control: Callable[[int], bool], done: Callable[[int], int],
             on_round: Callable[[list[int]], None], rng: random.Random,
             load_key: Callable[[int], Hashable] = lambda case: case) -> Iterator[Run]:
    """The boot's runs, decided lazily: ``wants_more(case)`` is asked with the results so far.

    ``done(case)`` is how many probed repetitions a case has; ``on_round(cases)`` is told
    which cases take one more repetition before their runs are handed out (for an honest
    progress total). With rounds, the cases of a round run by load group (``load_key``),
    each group's passes in the order the module docstring gives.
    """
    if kind == "sequential":
        for case in range(n_cases):
            while wants_more(case):
                on_round([case])
                yield Run(case, False)
            if has_control(case):
                for _ in range(done(case)):
                    yield Run(case, True)
        return
    ordinal: dict[Hashable, int] = {}  # a load group's place in the boot, fixed
    for case in range(n_cases):
        ordinal.setdefault(load_key(case), len(ordinal))
    for round_index in itertools.count():
        active = [case for case in range(n_cases) if wants_more(case)]
        if not active:
            return
        if kind == "random":
            rng.shuffle(active)
        on_round(active)
        groups: dict[Hashable, list[int]] = {}
        for case in active:
            groups.setdefault(load_key(case), []).append(case)
        # wants_more is not asked again within the round: a control run that goes first
        # always has its probed run later in the same round
        for key, cases in groups.items():
            control_first = (round_index + ordinal[key]) % 2 == 1
            for control in (control_first, not control_first):
                yield from (Run(case, control) for case in cases
                            if not control or has_control(case))


ROUND_ORDERS: tuple[OrderKind, ...] = ("round-robin", "random")
BOOT_KEYS = ("target", "kernel")  # matrix keys that put cases in different boots


def pairs_rounds(kind: OrderKind | None) -> bool:
    """Whether this order runs repetition r of a boot's cases in one round (None: a summary
    from before ``order`` was recorded, run sequentially)."""
    return kind in ROUND_ORDERS


def same_boot(params_a: dict[str, Any], params_b: dict[str, Any]) -> bool:
    """Whether two cases of one run ran in the same boot (their target and kernel agree)."""
    return all(params_a.get(k) == params_b.get(k) for k in BOOT_KEYS)


def headline_values(reps: list[Repetition]) -> dict[str, list[float]]:
    """Per-repetition values of the case's headline metrics (repetitions lacking one skipped)."""
    out: dict[str, list[float]] = {}

    def add(name: str, value: float | None) -> None:
        values = out.setdefault(name, [])
        if value is not None:
            values.append(float(value))

    for rep in reps:
        if rep.unicast is not None:
            add("unicast.rtt_us.p50", rep.unicast.rtt_us.p50)
            add("unicast.rtt_us.p99", rep.unicast.rtt_us.p99)
            add("unicast.throughput_per_s", rep.unicast.throughput_per_s)
        if rep.multicast is not None:
            for r in rep.multicast.receivers:
                add(f"multicast.receivers[{r.id}].latency_us.p50", r.latency_us.p50)
    return out


def auto_verdict(reps: list[Repetition], rule: AutoRepetitions) -> RepetitionsAuto:
    """Where the case stands against ``repetitions: auto``'s target."""
    achieved: dict[str, float | None] = {}
    met = len(reps) >= rule.min
    for name, values in headline_values(reps).items():
        reach = stats.ci_halfwidth_pct(values) if len(values) >= 2 else None
        achieved[name] = round(reach, 2) if reach is not None else None
        met = met and len(values) >= rule.min and reach is not None \
            and reach <= rule.target_ci_pct
    return RepetitionsAuto(target_ci_pct=rule.target_ci_pct, achieved_ci_pct=achieved,
                           met=met, rounds=len(reps))
