"""A run directory → per case and metric: estimate, CI, spread, warnings; the observer effect.

Reads only the run directory: summary.json (required), and when present env.json,
probe-histograms.json and samples.parquet (one row per message sample). The repetition is the
independent unit: a case's value metric is one number per repetition (nlperf/catalog.py) and
its CI resamples repetitions (``stats.summarize``); one repetition has no CI, never an
invented one. Counts (losses, context switches) pooled over repetitions get an exact Poisson
CI of their rate.

Which pass: a case with a probes-off control pass is measured by it (the probes cost time,
unevenly across processing models), unless the control pass stopped with fewer repetitions
than the probed one; probe-measured metrics come from the probed pass. The observer effect
compares the two passes (control = baseline) on latency and throughput, round by round
(paired) when the run's order has rounds (nlperf/design.py): probed repetition r and control
repetition r ran next to each other.

Every per-repetition value keeps its repetition's index (its round): comparisons pair rounds
by it (nlperf/compare.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pandas as pd
from pydantic import ValidationError

from nlperf import design, results, stats, verdict
from nlperf.catalog import Count, Metric, counts_of, sort_key, values_of
from nlperf.models import Case, Env, Repetition, Summary

SAMPLES = "samples.parquet"
SAMPLE_COLUMNS = ("case", "repetition", "control", "source", "rtt_ns", "latency_ns")
OBSERVED = ("rtt_p50_us", "rtt_p99_us", "throughput_per_s", "mc_latency_p50_us",
            "mc_latency_p99_us")
OBSERVER_WARNING = 0.10  # the probes moved a metric by more than this: say so
PassName = Literal["control", "probed", "only"]


@dataclass(frozen=True)
class ValueEstimate:
    metric: Metric
    values: tuple[float, ...]  # one per repetition that has the metric
    summary: stats.Summary
    rounds: tuple[int, ...] = ()  # those repetitions' indices (their rounds), in order


@dataclass(frozen=True)
class CountEstimate:
    metric: Metric
    per_rep: tuple[Count, ...]  # (events, exposure) per repetition
    ci: tuple[float, float]  # of the pooled rate, exact Poisson
    rounds: tuple[int, ...] = ()  # the repetitions' indices (their rounds), in order

    @property
    def events(self) -> int:
        return sum(e for e, _ in self.per_rep)

    @property
    def exposure(self) -> int:
        return sum(x for _, x in self.per_rep)

    @property
    def rate(self) -> float:
        return self.events / self.exposure

    @property
    def rates(self) -> tuple[float, ...]:
        return tuple(e / x for e, x in self.per_rep)


def estimate_count(metric: Metric, per_rep: list[Count],
                   rounds: tuple[int, ...] = ()) -> CountEstimate:
    events, exposure = sum(e for e, _ in per_rep), sum(x for _, x in per_rep)
    return CountEstimate(metric, tuple(per_rep), verdict.poisson_ci(events, exposure=exposure),
                         rounds)


@dataclass(frozen=True)
class ObserverEffect:
    """Probed pass against the probes-off control pass (baseline), per metric."""

    comparisons: dict[str, verdict.Comparison]
    metrics: dict[str, Metric]

    def warnings(self) -> list[str]:
        out = []
        for key, c in self.comparisons.items():
            if c.ratio is not None and abs(c.ratio - 1) > OBSERVER_WARNING:
                out.append(f"probes moved {self.metrics[key].label} by "
                           f"{100 * (c.ratio - 1):+.0f} % (probed ÷ probes-off)")
        return out


class _Series(NamedTuple):
    metrics: dict[str, Metric]
    values: dict[str, list[float]]
    rounds: dict[str, list[int]]  # the index of each value's repetition


def _series(reps: list[Repetition], source: Literal["workload", "probes"]) -> _Series:
    out = _Series({}, {}, {})
    for rep in reps:
        for key, (metric, value) in values_of(rep, source).items():
            out.metrics.setdefault(key, metric)
            out.values.setdefault(key, []).append(value)
            out.rounds.setdefault(key, []).append(rep.index)
    return out


@dataclass
class CaseAnalysis:
    case: Case
    label: str  # short: the values of the run's varying matrix keys
    workload_pass: PassName
    values: dict[str, ValueEstimate] = field(default_factory=dict)
    counts: dict[str, CountEstimate] = field(default_factory=dict)
    observer: ObserverEffect | None = None
    workload_reps: list[Repetition] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.case.id

    @property
    def repetitions(self) -> int:
        return max([len(e.values) for e in self.values.values()]
                   + [len(e.per_rep) for e in self.counts.values()] + [0])

    def receivers(self) -> list[tuple[str, list[int], int]]:
        """(id, groups, ENOBUFS seen over the repetitions) of each multicast receiver."""
        seen: dict[str, tuple[list[int], int]] = {}
        for rep in self.workload_reps:
            for r in rep.multicast.receivers if rep.multicast is not None else []:
                groups, enobufs = seen.get(r.id, (r.groups, 0))
                seen[r.id] = (groups, enobufs + r.enobufs)
        return [(rid, groups, enobufs) for rid, (groups, enobufs) in seen.items()]

    def metrics(self) -> list[Metric]:
        found = [e.metric for e in self.values.values()] + [e.metric for e in self.counts.values()]
        return sorted(found, key=sort_key)

    def series(self, key: str) -> list[float]:
        """Per-repetition values of a value metric, or rates of a count metric."""
        if key in self.values:
            return list(self.values[key].values)
        return list(self.counts[key].rates) if key in self.counts else []

    def rounds(self, key: str) -> list[int]:
        """The repetition index (round) of each value of ``series(key)``."""
        if key in self.values:
            return list(self.values[key].rounds)
        return list(self.counts[key].rounds) if key in self.counts else []

    def warnings(self) -> list[str]:
        """Instability warnings, each with the metrics it concerns (the few-repetitions one
        is said once per run, by the report)."""
        by_text: dict[str, list[str]] = {}
        for e in self.values.values():
            for w in e.summary.warnings:
                if not w.startswith("only "):
                    by_text.setdefault(w.split(":")[0], []).append(e.metric.label)
        out = [f"{what}: {', '.join(labels)}" for what, labels in by_text.items()]
        return out + (self.observer.warnings() if self.observer else [])


def _passes(case: Case) -> tuple[PassName, list[Repetition], list[Repetition]]:
    """(name of the workload pass, its repetitions, the probed pass's repetitions)."""
    probed = [r for r in case.repetitions if r.probes is not None]
    control = case.control.repetitions if case.control is not None else []
    if control and len(control) >= len(case.repetitions):
        return "control", control, probed
    return ("probed" if probed else "only"), case.repetitions, probed


def observer_effect(probed: list[Repetition], control: list[Repetition],
                    options: verdict.CompareOptions | None = None, *,
                    rounds: bool = False) -> ObserverEffect | None:
    """``rounds``: the run's order ran probed and control repetition r side by side
    (design.pairs_rounds), so metrics with the same rounds on both sides are paired."""
    if not probed or not control:
        return None
    p, c = _series(probed, "workload"), _series(control, "workload")
    a = {k: c.values[k] for k in OBSERVED if k in c.values and k in p.values}
    b = {k: p.values[k] for k in a}
    if not a:
        return None
    higher = [k for k in a if p.metrics[k].higher_is_better]
    paired = [k for k in a if rounds and c.rounds[k] == p.rounds[k]]
    compared = verdict.compare_metrics(a, b, higher_is_better=higher, options=options,
                                     paired=paired)
    return ObserverEffect(compared, {k: p.metrics[k] for k in a})


def analyze_case(case: Case, label: str | None = None, *, rounds: bool = False
                 ) -> CaseAnalysis:
    """``rounds``: the run's order has rounds (design.pairs_rounds; for the observer effect)."""
    name, workload, probed = _passes(case)
    out = CaseAnalysis(case, label or case.id, name, workload_reps=workload)
    for reps, source in ((workload, "workload"), (probed, "probes")):
        series = _series(reps, source)  # type: ignore[arg-type]
        for key, vs in series.values.items():
            out.values[key] = ValueEstimate(series.metrics[key], tuple(vs), stats.summarize(vs),
                                            tuple(series.rounds[key]))
    counts: dict[str, list[Count]] = {}
    count_rounds: dict[str, list[int]] = {}
    count_metrics: dict[str, Metric] = {}
    for rep in workload:
        for key, (metric, count) in counts_of(rep).items():
            count_metrics.setdefault(key, metric)
            counts.setdefault(key, []).append(count)
            count_rounds.setdefault(key, []).append(rep.index)
    for key, per_rep in counts.items():
        out.counts[key] = estimate_count(count_metrics[key], per_rep, tuple(count_rounds[key]))
    if case.control is not None:
        out.observer = observer_effect(probed, case.control.repetitions, rounds=rounds)
    return out


# --------------------------------------------------------------------------- matrix keys


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def varying_keys(cases: list[Case]) -> list[str]:
    """Matrix keys with several values across the cases, in order of first appearance."""
    keys: list[str] = []
    for c in cases:
        keys += [k for k in c.params if k not in keys]
    return [k for k in keys if len({_text(c.params.get(k)) for c in cases}) > 1]


def short_value(key: str, value: Any) -> str:
    """A matrix value as a label says it: the model or traffic alone, else key=value."""
    if key in ("module.mode", "mode", "traffic"):
        return _text(value)
    return f"{key.rsplit('.', 1)[-1]}={_text(value)}"


def case_labels(cases: list[Case]) -> dict[str, str]:
    keys = varying_keys(cases)
    labels = {c.id: " · ".join(short_value(k, c.params.get(k)) for k in keys) or c.id
              for c in cases}
    if len(set(labels.values())) < len(labels):  # ambiguous: the ids say it all
        return {c.id: c.id for c in cases}
    return labels


# --------------------------------------------------------------------------- the run


@dataclass
class RunAnalysis:
    run_dir: Path
    summary: Summary
    cases: list[CaseAnalysis]
    env: Env | None = None
    histograms: dict[str, list[dict[str, Any]]] | None = None
    notes: list[str] = field(default_factory=list)  # what could not be read, and why

    @property
    def name(self) -> str:
        return self.run_dir.name

    def case(self, case_id: str) -> CaseAnalysis | None:
        return next((c for c in self.cases if c.id == case_id), None)

    @property
    def identity(self) -> tuple[str, ...]:
        """What tells one run from another: its scenario, start (to the second; the run
        directory's name is made of both), target, accel and kernel. Two directories with
        the same identity hold the same run (a copy)."""
        s = self.summary
        return (s.scenario, s.started, s.target, s.accel, s.kernel or "")

    @property
    def rounds(self) -> bool:
        """Whether the run's order ran its cases in rounds (design.pairs_rounds)."""
        return _in_rounds(self.summary)

    def paired_cases(self, a: CaseAnalysis, b: CaseAnalysis) -> bool:
        """Whether two of this run's cases ran round by round in one boot."""
        return self.rounds and design.same_boot(a.case.params, b.case.params)

    @cached_property
    def samples(self) -> pd.DataFrame | None:
        """samples.parquet (message samples), or None — with a note — when absent/unreadable."""
        path = self.run_dir / SAMPLES
        if not path.exists():  # runs before samples were kept: the report says so where it matters
            return None
        try:
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names  # only what the plots use: files can be large
            return pd.read_parquet(path, columns=[c for c in SAMPLE_COLUMNS if c in names])
        except Exception as e:  # a torn or foreign file: the report goes on without it
            self.notes.append(f"{SAMPLES} unreadable ({type(e).__name__}): no distributions")
            return None


def _optional_json(path: Path, notes: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        notes.append(f"{path.name} unreadable ({e}): left out")
        return None


def _in_rounds(summary: Summary) -> bool:
    return design.pairs_rounds(summary.order.kind if summary.order else None)


def analyze(run_dir: Path) -> RunAnalysis:
    """Everything the report and the comparisons need from one run directory."""
    summary = results.read_summary(run_dir)
    labels = case_labels(summary.cases)
    notes: list[str] = []
    env: Env | None = None
    env_doc = _optional_json(run_dir / results.ENV, notes)
    if env_doc is not None:
        try:
            env = Env.model_validate(env_doc)
        except ValidationError as e:
            notes.append(f"{results.ENV} does not match the contract ({e.error_count()} "
                         "problems): environment taken from summary.json")
    hist = _optional_json(run_dir / results.PROBE_HISTOGRAMS, notes)
    if hist is not None and not isinstance(hist, dict):
        notes.append(f"{results.PROBE_HISTOGRAMS} is not a mapping of case ids: left out")
        hist = None
    cases = [analyze_case(c, labels[c.id], rounds=_in_rounds(summary)) for c in summary.cases]
    return RunAnalysis(run_dir, summary, cases, env, hist, notes)
