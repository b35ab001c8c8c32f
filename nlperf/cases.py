"""Runs a group of cases on this kernel: every case × repetition, pooled, into a GroupResult.

A case is one pass over its repetitions — with probes attached when the scenario asks — and,
with ``probes.control``, a second pass without them (the observer effect). Both passes are
the same loop. Nothing here writes a file: the caller persists the GroupResult after every
repetition (``on_repetition``) and once more when the run stops (nlperf/runner.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nlperf import models
from nlperf.errors import RunFailed
from nlperf.measure import RepResult, pool_case, run_repetition
from nlperf.metrics import observer_effect
from nlperf.probes import ProbeSession
from nlperf.scenario import Case

# one compiled probe session per (protocol, probe set, timing) in a run
Sessions = dict[tuple[int, tuple[str, ...], bool], ProbeSession]


OnRepetition = Callable[[models.Progress], None]


def run_cases(cases: list[Case], ko: Path, group: models.GroupResult, on_repetition: OnRepetition,
              case_timeout: float = 600.0) -> None:
    """Run every case × repetition into ``group``, calling ``on_repetition`` after each one."""
    _CaseRunner(cases, ko, group, on_repetition, case_timeout).run()


def runs_per_case(case: Case) -> int:
    """Repetitions a case takes, its probes-off control run included."""
    p = case.scenario.probes
    return case.scenario.repetitions * (2 if p.enabled and p.control else 1)


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


class _CaseRunner:
    """Cases in order; per case a probed pass (or the only pass) and, if asked, a control pass."""

    def __init__(self, cases: list[Case], ko: Path, group: models.GroupResult,
                 on_repetition: OnRepetition, case_timeout: float) -> None:
        self.cases, self.ko, self.group = cases, ko, group
        self.on_repetition, self.case_timeout = on_repetition, case_timeout
        self.sessions: Sessions = {}
        self.total = sum(runs_per_case(c) for c in cases)
        self.done = 0

    def run(self) -> None:
        try:
            for ci, case in enumerate(self.cases):
                self._case(ci, case)
        finally:
            self._note_attach_kinds()
            for ps in self.sessions.values():
                ps.close()

    def _note_attach_kinds(self) -> None:
        """env.json says how each probe was attached (fentry, kprobe, tracepoint, unavailable)."""
        if self.sessions:
            self.group.env.probes.attach = probe_attach_kinds(self.sessions)

    def _case(self, ci: int, case: Case) -> None:
        entry = models.Case(id=case.id, params=case.params, status=models.Status.failed,
                             repetitions=[])
        self.group.cases.append(entry)
        try:
            probes = _probe_session(case, self.sessions)
            reps = self._repeat(ci, case, entry, probes)
            if probes is not None:
                first = reps[0].block.probes
                entry.probes = models.Probes(attach=first.attach if first is not None else {})
            if probes is not None and case.scenario.probes.control:
                # the observer effect: the same repetitions again with no probe attached
                entry.control = models.Control(repetitions=[])
                self._repeat(ci, case, entry.control, None)
                assert entry.probes is not None
                entry.probes.overhead = observer_effect(entry, entry.control)
            entry.status = models.Status.complete
        except KeyboardInterrupt:
            entry.status = models.Status.interrupted
            raise
        except RunFailed as e:
            entry.error = str(e)
            raise

    def _repeat(self, ci: int, case: Case, into: models.Case | models.Control,
                probes: ProbeSession | None) -> list[RepResult]:
        """One pass over the case's repetitions, pooled into ``into`` even if it stops early."""
        reps: list[RepResult] = []
        try:
            for r in range(case.scenario.repetitions):
                rep = run_repetition(case, r, self.ko, self.case_timeout, probes)
                reps.append(rep)
                into.repetitions.append(rep.block)
                if rep.probe_histograms is not None:
                    self.group.probe_histograms.setdefault(case.id, []).append(
                        rep.probe_histograms)
                self.done += 1
                self._note_attach_kinds()
                self.on_repetition(models.Progress(
                    case=ci, cases=len(self.cases), id=case.id, rep=r,
                    control=isinstance(into, models.Control), done=self.done, total=self.total))
        finally:
            if reps:
                into.take(pool_case(case, reps))
        return reps
