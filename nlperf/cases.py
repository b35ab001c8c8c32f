"""Runs a group of cases on this kernel (one boot): every case × repetition into a GroupResult.

A case has a probed pass — with probes attached when the scenario asks — and, with
``probes.control``, a probes-off control pass (the observer effect); both are the same code.
The order of the runs and when ``repetitions: auto`` stops are nlperf/design.py's: by default
the cases take turns round by round, a case's probed and control repetition r both in
round r, by load group, and every probe detached for a control run. After every
repetition the case's blocks are pooled again, so a run that stops keeps what finished.
Nothing here writes a file: the caller persists the GroupResult and the repetition's samples
(``on_repetition``) and the result once more when the run stops (nlperf/runner.py).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nlperf import capacity, design, models, samples
from nlperf.errors import RunFailed
from nlperf.measure import ModuleSlot, RepResult, module_params, pool_case, run_repetition
from nlperf.metrics import observer_effect
from nlperf.probe_pool import pool_probes
from nlperf.probes import ProbeSession
from nlperf.scenario import Case

# one compiled probe session per (protocol, probe set, timing) in a run
Sessions = dict[tuple[int, tuple[str, ...], bool], ProbeSession]

# after every repetition: its progress line and its samples (a pyarrow table)
OnRepetition = Callable[[models.Progress, Any], None]
# a case's results changed outside a repetition (a capacity probe point): persist them
OnChange = Callable[[str], None]


def run_cases(cases: list[Case], ko: Path, group: models.GroupResult, on_repetition: OnRepetition,
              case_timeout: float = 600.0, *, started: dt.datetime | None = None,
              on_change: OnChange | None = None) -> None:
    """Run every case × repetition into ``group``, calling ``on_repetition`` after each one.

    ``started`` is when the whole run started (progress lines count seconds from it).
    """
    _Boot(cases, ko, group, on_repetition, case_timeout, started or dt.datetime.now(dt.UTC),
          on_change or (lambda _case_id: None)).run()


def runs_per_case(case: Case) -> int:
    """Runs a case takes before ``repetitions: auto`` adds any, its control runs included."""
    return case.scenario.first_repetitions * (2 if has_control(case) else 1)


def has_control(case: Case) -> bool:
    p = case.scenario.probes
    return p.enabled and p.control


def probe_attach_kinds(sessions: Sessions) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for ps in sessions.values():
        kinds.update(ps.attach_kinds)
    return kinds


def _probe_session(case: Case, sessions: Sessions) -> ProbeSession | None:
    """One compile per run: cases share a session unless their protocol or probe set differs."""
    p = case.scenario.probes
    if not p.enabled:
        return None
    key = (case.scenario.module.proto, tuple(p.which), p.timing)
    if key not in sessions:
        sessions[key] = ProbeSession(key[0], list(key[1]), timing=p.timing)
    return sessions[key]


class _CaseRun:
    """One case in the boot: its entry in the GroupResult, both passes, its stopping rule."""

    def __init__(self, index: int, case: Case) -> None:
        self.index, self.case = index, case
        self.entry = models.Case(id=case.id, params=case.params, status=models.Status.failed,
                                 repetitions=[])
        self.probed: list[RepResult] = []
        self.control: list[RepResult] = []
        self.planned = case.scenario.first_repetitions  # probed repetitions, so far
        self.started = False
        self.swept = case.scenario.capacity is None  # its capacity sweep done, if it has one

    @property
    def passes(self) -> int:
        return 2 if has_control(self.case) else 1

    def wants_more(self) -> bool:
        """Whether the probed pass takes another repetition."""
        n, rule = len(self.probed), self.case.scenario.auto
        if rule is None:
            return n < self.case.scenario.first_repetitions
        if n < rule.min:
            return True
        verdict = self.entry.repetitions_auto
        return n < rule.max and not (verdict is not None and verdict.met)

    def finished(self) -> bool:
        return self.swept and not self.wants_more() and (self.passes == 1 or len(self.control)
                                          == len(self.probed))

    def record(self, rep: RepResult, control: bool) -> None:
        """Add a repetition and pool its pass again."""
        if control:
            self.control.append(rep)
            if self.entry.control is None:
                self.entry.control = models.Control(repetitions=[])
            self.entry.control.repetitions.append(rep.block)
            self.entry.control.take(pool_case(self.case, self.control))
        else:
            self.probed.append(rep)
            self.entry.repetitions.append(rep.block)
            self.entry.take(pool_case(self.case, self.probed))
            blocks = [r.block.probes for r in self.probed if r.block.probes is not None]
            if blocks:
                self.entry.probes = pool_probes(
                    blocks[0].attach, [b.document() for b in blocks],
                    [r.probe_histograms for r in self.probed])
            rule = self.case.scenario.auto
            if rule is not None:
                self.entry.repetitions_auto = design.auto_verdict(self.entry.repetitions, rule)
        self._observe()

    def _observe(self) -> None:
        """The observer effect over the pairs so far: repetitions 0 … k−1 of both passes.

        Rounds alternate which pass goes first (nlperf/design.py), so mid-round either pass
        can be one repetition ahead; its extra repetition waits for its partner.
        """
        if self.entry.probes is None or self.entry.control is None:
            return
        k = min(len(self.probed), len(self.control))
        probed = self.entry if k == len(self.probed) else pool_case(self.case, self.probed[:k])
        control = (self.entry.control if k == len(self.control)
                   else pool_case(self.case, self.control[:k]))
        self.entry.probes.overhead = observer_effect(probed, control)


class _Boot:
    """This boot's cases in the scenario's order; see nlperf/design.py."""

    def __init__(self, cases: list[Case], ko: Path, group: models.GroupResult,
                 on_repetition: OnRepetition, case_timeout: float, started: dt.datetime,
                 on_change: OnChange) -> None:
        self.module, self.group = ModuleSlot(ko), group
        self.on_repetition, self.case_timeout, self.started = on_repetition, case_timeout, started
        self.on_change = on_change
        self.runs = [_CaseRun(i, c) for i, c in enumerate(cases)]
        self.sessions: Sessions = {}
        self.done = 0
        first = cases[0].scenario if cases else None
        self.order: models.OrderKind = first.order if first else "round-robin"
        self.rng = random.Random(first.seed if first else None)
        samples.part_schema()  # pyarrow loaded before the first repetition, not after it

    @property
    def total(self) -> int:
        return sum(r.planned * r.passes for r in self.runs)

    def _load_key(self, i: int) -> tuple[tuple[str, str], ...]:
        """Cases with equal load parameters can share a module load (ModuleSlot)."""
        return tuple(sorted(module_params(self.runs[i].case.scenario).items()))

    def _plan_round(self, cases: list[int]) -> None:
        """``cases`` take one more repetition: the progress total grows now, not later."""
        for i in cases:
            run = self.runs[i]
            run.planned = max(run.planned, len(run.probed) + 1)

    def run(self) -> None:
        current: _CaseRun | None = None
        try:
            for planned in design.schedule(
                    self.order, len(self.runs), wants_more=lambda i: self.runs[i].wants_more(),
                    has_control=lambda i: has_control(self.runs[i].case),
                    done=lambda i: len(self.runs[i].probed), on_round=self._plan_round,
                    rng=self.rng, load_key=self._load_key):
                current = self.runs[planned.case]
                self._one(current, planned.control)
                if current.finished():
                    current.entry.status = models.Status.complete
            for current in self.runs:  # a capacity section: its sweep, after the case's runs
                if not current.swept:
                    for ps in self.sessions.values():  # the sweep reads no probe
                        ps.suspend()
                    capacity.sweep(current.case, self.module, self.case_timeout,
                                   lambda block, run=current: self._swept_some(run, block))
                    current.swept = True
                    current.entry.status = models.Status.complete
        except KeyboardInterrupt:
            for r in self.runs:
                if r.started and not r.finished():
                    r.entry.status = models.Status.interrupted
            raise
        except RunFailed as e:
            assert current is not None
            current.entry.error = str(e)
            for r in self.runs:
                if r.started and r is not current and not r.finished():
                    r.entry.error = f"not finished: the run stopped when {current.case.id} failed"
            raise
        finally:
            self._note_attach_kinds()
            t0 = time.monotonic()
            for ps in self.sessions.values():
                ps.close()
            self.module.release()
            self.group.phases_s = {**self.group.phases_s,
                                   "teardown": round(time.monotonic() - t0, 3)}

    def _swept_some(self, run: _CaseRun, block: models.Capacity) -> None:
        """A capacity measurement finished: the entry holds the block, written at once."""
        run.entry.capacity = block
        self.on_change(run.case.id)

    def _note_attach_kinds(self) -> None:
        """env.json says how each probe was attached (fentry, kprobe, tracepoint, unavailable)."""
        if self.sessions:
            self.group.env.probes.attach = probe_attach_kinds(self.sessions)
            ps = self.sessions.values()
            # assigned, not updated in place: a field never assigned is not written
            self.group.phases_s = {**self.group.phases_s,
                                   "bpf_compile": round(sum(p.compile_s for p in ps), 3),
                                   "bpf_attach": round(sum(p.attach_s for p in ps), 3)}

    def _start(self, run: _CaseRun) -> None:
        """The case's entry joins the result in plan order, whatever order the cases start in."""
        at = sum(1 for r in self.runs if r.started and r.index < run.index)
        run.started = True
        self.group.cases.insert(at, run.entry)

    def _one(self, run: _CaseRun, control: bool) -> None:
        if not run.started:
            self._start(run)
        case = run.case
        probes = None if control else _probe_session(case, self.sessions)
        index = len(run.control if control else run.probed)
        quiet = [ps for ps in self.sessions.values() if ps is not probes]
        rep = run_repetition(case, index, self.module, self.case_timeout, probes, quiet=quiet)
        rep.block.run_index = self.done
        run.record(rep, control)
        if rep.probe_histograms is not None:
            self.group.probe_histograms.setdefault(case.id, []).append(rep.probe_histograms)
        u = case.scenario.active_unicast
        table = samples.sample_table(case.id, index, control, rep.unicast_records,
                                     u is not None and u.kind == "timed", rep.receiver_latency)
        self.done += 1
        self._note_attach_kinds()
        now = dt.datetime.now(dt.UTC)
        self.on_repetition(models.Progress(
            case=run.index, cases=len(self.runs), id=case.id, rep=index, control=control,
            done=self.done, total=self.total, time=now.isoformat(timespec="milliseconds"),
            elapsed_s=round((now - self.started).total_seconds(), 3)), table)
