"""Verdicts: the cases of one run along a matrix key, and runs against a baseline run.

One case comparison (B against A) compares every metric both have (nlperf/catalog.py):

* value metrics: per-repetition values, ``verdict.compare_metric`` (ratio of geometric means,
  the t-interval of the log ratio and its t-test: paired t round by round, else Welch's t
  on logs; ratio of medians with a bootstrap CI and a rank test where a value is ≤ 0);
  0 in every repetition on both sides is "no change" without a test;
* count metrics: per-repetition rates compared the same way — the repetition is the
  independent unit, not the message; when A's typical repetition had no event (a ratio to 0
  is undefined) the pooled counts go to the exact conditional Poisson test
  (``verdict.compare_counts``), which also calls "no events on either side" "no change".

Holm's correction runs over the metrics of one case comparison; a verdict "faster" or
"slower" (and ``significant``) needs the Holm-adjusted p below alpha and the ratio's CI
wholly outside the noise band (default ±2 %).

Paired or not (``stats``' docstring; ``paired`` in every output row): a metric is compared
round by round when both sides ran in the same rounds of one boot and have its values for
the same repetition indices; otherwise unpaired. Same rounds of one boot means: two cases
of one run in one boot whose order has rounds (round-robin, random; not sequential:
nlperf/design.py), or the same case of the same run on both sides (a run against itself or
its copy: ``RunAnalysis.identity``). Cases of different runs are never paired. The exact
Poisson test of pooled counts is unpaired whatever the design (no event on either side:
no test, "no change", paired as the design is).

Between cases (``along``): cases that differ only in one matrix key; the key's first value
(in plan order: callback for the processing models) is the baseline. Between runs
(``between_runs``): cases matched by id; the first run is the baseline.

Along a key that puts cases in different boots (``kernel``, ``target``: design.BOOT_KEYS) the
absolute comparisons are unpaired and confounded by the boot (emulated timing moves from boot
to boot); nlperf/boot_ratios.py adds what does not depend on the boot's speed: each boot's
within-boot ratios (e.g. kthread ÷ callback, paired by rounds) compared across boots
(``Across``, ``RatioShift``; rendered first by every format).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nlperf import verdict
from nlperf.analysis import CaseAnalysis, RunAnalysis, short_value, varying_keys
from nlperf.catalog import Metric, fmt_metric, fmt_ratio
from nlperf.errors import BadInput

PREFERRED_ALONG = ("module.mode", "mode")
DEFAULT_THRESHOLD_PCT = 2.0


def options(threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> verdict.CompareOptions:
    return verdict.CompareOptions(threshold=threshold_pct / 100.0)


def _zero_both(metric: Metric, n_a: int, n_b: int, o: verdict.CompareOptions,
               paired: bool) -> verdict.Comparison:
    statistic = "median" if o.statistic == "geomean" else o.statistic  # 0 has no log
    return verdict.Comparison(
        metric=metric.key, higher_is_better=metric.higher_is_better, statistic=statistic,
        n_a=n_a, n_b=n_b, estimate_a=0.0, estimate_b=0.0, ratio=None, ci=None,
        confidence=o.confidence, test="none", p_value=None, p_rank=None, p_holm=None,
        alpha=o.alpha, significant=False, threshold=o.threshold, verdict="no change",
        reason="0 in every repetition on both sides", paired=paired)


def compare_cases(a: CaseAnalysis, b: CaseAnalysis, o: verdict.CompareOptions, *,
                  rounds: bool = False
                  ) -> tuple[dict[str, verdict.Comparison], dict[str, Metric]]:
    """B against A on every metric both have, Holm-adjusted; and what each metric is.

    ``rounds``: A and B ran in the same rounds of one boot; a metric whose values come from
    the same repetition indices on both sides is then compared round by round (paired)."""
    raw: dict[str, verdict.Comparison] = {}
    untested: dict[str, verdict.Comparison] = {}
    metrics = {m.key: m for m in a.metrics()}
    for key, m in metrics.items():
        va, vb = a.series(key), b.series(key)
        if not va or not vb:
            continue
        paired = rounds and a.rounds(key) == b.rounds(key)
        if key in a.values and key in b.values:
            if not any(va) and not any(vb):
                untested[key] = _zero_both(m, len(va), len(vb), o, paired)
            else:
                raw[key] = verdict.compare_metric(va, vb, metric=key, options=o, paired=paired,
                                                higher_is_better=m.higher_is_better)
        elif key in a.counts and key in b.counts:
            ca, cb = a.counts[key], b.counts[key]
            if ca.events == 0 and cb.events == 0:  # no test: as paired as the design
                none = verdict.compare_counts(0, ca.exposure, 0, cb.exposure, metric=key,
                                            options=o, higher_is_better=m.higher_is_better)
                untested[key] = replace(none, paired=paired)
            elif float(np.median(va)) == 0.0 and not (paired and va == vb):
                raw[key] = verdict.compare_counts(ca.events, ca.exposure, cb.events, cb.exposure,
                                                metric=key, options=o,
                                                higher_is_better=m.higher_is_better)
            else:  # per-repetition rates; the same in every round needs no baseline rate
                raw[key] = verdict.compare_metric(va, vb, metric=key, options=o, paired=paired,
                                                higher_is_better=m.higher_is_better)
    family = verdict.holm_adjust(raw) | untested
    ordered = {k: family[k] for k in metrics if k in family}
    return ordered, {k: metrics[k] for k in ordered}


@dataclass(frozen=True)
class CaseComparison:
    """B against A on one case (between runs) or one context (along a matrix key)."""

    baseline: str  # A: a run name, or the matrix value
    candidate: str  # B
    case: str  # the case id, or the context (the other matrix values) along a key
    a: CaseAnalysis
    b: CaseAnalysis
    metrics: dict[str, verdict.Comparison]
    info: dict[str, Metric]


@dataclass(frozen=True)
class AlongGroup:
    context: str  # the other varying matrix values; "" when only the key varies
    cases: list[tuple[str, CaseAnalysis]]  # (value, case) in the key's order
    comparisons: list[CaseComparison]


@dataclass(frozen=True)
class Along:
    key: str
    values: list[str]  # plan order; the first is the baseline
    groups: list[AlongGroup]


@dataclass(frozen=True)
class RatioShift:
    """Along a boot key: how one within-boot ratio moved from the first boot to a later one.

    ``within[boot][metric]``: ``inner[1]`` ÷ ``inner[0]`` inside that boot (paired by rounds);
    ``metrics``: the later boot's within-boot ratio ÷ the first boot's (Welch's t on the
    per-round log ratios; estimate_a/estimate_b are the two within-boot ratios)."""

    baseline: str  # the first boot's value, e.g. "6.1"
    candidate: str  # a later boot's value, e.g. "6.12"
    case: str  # "kthread ÷ callback", and the other varying values
    inner: tuple[str, str]  # (baseline, candidate) of the key compared inside each boot
    metrics: dict[str, verdict.Comparison]
    info: dict[str, Metric]
    within: dict[str, dict[str, verdict.Comparison]]


@dataclass(frozen=True)
class Across:
    """Within-boot ratios compared across the values of a boot key (nlperf/boot_ratios.py)."""

    key: str  # the boot key: kernel or target
    inner: str | None  # the key compared inside each boot (None: nothing varies there)
    values: list[str]  # the boot key's values, plan order; the first is the baseline
    shifts: list[RatioShift]
    why_none: str = ""  # when ``shifts`` is empty: why


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def default_along(run: RunAnalysis) -> str | None:
    """The processing model when it varies, else the first varying key but ``traffic`` (its
    cases measure different things)."""
    keys = varying_keys([c.case for c in run.cases])
    for k in (*PREFERRED_ALONG, *keys):
        if k in keys and k != "traffic":
            return k
    return None


def along(run: RunAnalysis, key: str | None, o: verdict.CompareOptions) -> Along | None:
    """Cases that differ only in ``key`` compared with the key's first value; None when the
    run has no key to compare along (and none was asked for)."""
    cases = [c.case for c in run.cases]
    if key is None:
        key = default_along(run)
        if key is None:
            return None
    elif key not in varying_keys(cases):
        known = sorted({k for c in cases for k in c.params})
        what = "has one value" if key in known else "is not a matrix key"
        raise BadInput(f"--along {key}: {what} in {run.run_dir} "
                       f"(matrix keys: {', '.join(known) or 'none'})")
    others = [k for k in varying_keys(cases) if k != key]
    values: list[str] = []
    groups: dict[str, dict[str, CaseAnalysis]] = {}
    contexts: dict[str, str] = {}
    for c in run.cases:
        if key not in c.case.params:
            continue
        value = _text(c.case.params[key])
        values += [value] if value not in values else []
        rest = json.dumps({k: _text(v) for k, v in c.case.params.items() if k != key},
                          sort_keys=True)
        contexts[rest] = " · ".join(short_value(k, c.case.params.get(k)) for k in others)
        groups.setdefault(rest, {})[value] = c
    out: list[AlongGroup] = []
    for rest, by_value in groups.items():
        ordered = [(v, by_value[v]) for v in values if v in by_value]
        comparisons = []
        if values[0] in by_value:  # without the baseline value a group compares nothing
            base = by_value[values[0]]
            for value, case in ordered[1:]:
                metrics, info = compare_cases(base, case, o,
                                              rounds=run.paired_cases(base, case))
                comparisons.append(CaseComparison(values[0], value, contexts[rest], base, case,
                                                  metrics, info))
        out.append(AlongGroup(contexts[rest], ordered, comparisons))
    return Along(key, values, out)


@dataclass
class RunComparison:
    comparisons: list[CaseComparison]
    options: verdict.CompareOptions
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # run → case ids
    within_boot: Across | None = None  # along a boot key: the within-boot ratios across it


def _names(runs: list[RunAnalysis]) -> list[str]:
    names = [r.name for r in runs]
    return names if len(set(names)) == len(names) else [str(r.run_dir) for r in runs]


def between_runs(runs: list[RunAnalysis], o: verdict.CompareOptions) -> RunComparison:
    """Every run after the first against the first, case by case (matched by id)."""
    names = _names(runs)
    base = runs[0]
    out = RunComparison([], o)
    for name, run in zip(names[1:], runs[1:], strict=True):
        matched = [(c, run.case(c.id)) for c in base.cases if run.case(c.id) is not None]
        if not matched:
            raise BadInput(f"no case of {run.run_dir} matches a case of {base.run_dir} "
                           "(cases are matched by id)")
        same_run = run.identity == base.identity  # a run against itself: the same rounds
        for a, b in matched:
            assert b is not None
            metrics, info = compare_cases(a, b, o, rounds=same_run)
            out.comparisons.append(CaseComparison(names[0], name, a.id, a, b, metrics, info))
        ids = {c.id for c in run.cases}
        lone = [c.id for c in base.cases if c.id not in ids]
        lone += [c.id for c in run.cases if base.case(c.id) is None]
        if lone:
            out.unmatched[name] = lone
    return out


# --------------------------------------------------------------------------- output


FIELDS = ("baseline", "candidate", "case", "metric", "unit", "n_a", "n_b", "estimate_a",
          "estimate_b", "ratio", "ci_low", "ci_high", "p_value", "p_holm", "significant",
          "verdict", "reason", "paired")
RATIO_UNIT = "ratio"  # a within-boot ratio's unit: its estimates are ratios, not figures


def _row(cc: CaseComparison | RatioShift, key: str) -> dict[str, Any]:
    c = cc.metrics[key].as_dict()
    ci = c["ci"] or [None, None]
    unit = RATIO_UNIT if isinstance(cc, RatioShift) else cc.info[key].unit
    return {"baseline": cc.baseline, "candidate": cc.candidate, "case": cc.case, "metric": key,
            "unit": unit, "n_a": c["n_a"], "n_b": c["n_b"],
            "estimate_a": c["estimate_a"], "estimate_b": c["estimate_b"], "ratio": c["ratio"],
            "ci_low": ci[0], "ci_high": ci[1], "p_value": c["p_value"], "p_holm": c["p_holm"],
            "significant": c["significant"], "verdict": c["verdict"], "reason": c["reason"],
            "paired": c["paired"]}


def _within_json(ac: Across) -> dict[str, Any]:
    def brief(c: verdict.Comparison) -> dict[str, Any]:
        d = c.as_dict()
        return {k: d[k] for k in ("ratio", "ci", "p_holm", "verdict", "paired")}

    return {"along": ac.key, "inner": ac.inner, "values": ac.values,
            "why_none": ac.why_none or None, "comparisons": [
                {"baseline": rs.baseline, "candidate": rs.candidate, "case": rs.case,
                 "inner": list(rs.inner), "metrics": [
                     {"label": rs.info[k].label, "unit": RATIO_UNIT, **rs.metrics[k].as_dict(),
                      "within": {boot: brief(by[k]) for boot, by in rs.within.items()}}
                     for k in rs.metrics]}
                for rs in ac.shifts]}


def to_json(rc: RunComparison) -> str:
    o = rc.options
    doc = {"threshold_pct": 100 * o.threshold, "alpha": o.alpha, "confidence": o.confidence,
           "statistic": o.statistic, "comparisons": [
               {"baseline": cc.baseline, "candidate": cc.candidate, "case": cc.case,
                "metrics": [{"label": cc.info[k].label, "unit": cc.info[k].unit,
                             **cc.metrics[k].as_dict()} for k in cc.metrics]}
               for cc in rc.comparisons],
           "unmatched": rc.unmatched}
    if rc.within_boot is not None:
        doc["within_boot"] = _within_json(rc.within_boot)
    return json.dumps(doc, indent=2)


def to_csv(rc: RunComparison) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for cc in [*(rc.within_boot.shifts if rc.within_boot else []), *rc.comparisons]:
        for key in cc.metrics:
            w.writerow(_row(cc, key))
    return buf.getvalue().rstrip("\n")


def short_reason(c: verdict.Comparison) -> str:
    """Why a verdict is what it is, in a few words (stats gives the long form)."""
    if c.verdict != "inconclusive" or c.ci is None:
        return c.reason
    band = f"±{100 * c.threshold:g} %"
    low, high = c.ci
    outside = low > 1 + c.threshold or high < 1 - c.threshold
    if c.p_holm is not None and c.p_holm < c.alpha:
        return f"CI reaches into {band}"
    return "not significant" if outside else f"not significant, CI wider than {band}"


def ratio_text(c: verdict.Comparison) -> str:
    """'1.25 [1.19, 1.31]', '1.25 (no CI)' or '–'."""
    if c.ratio is None:
        return "–"
    ci = f" [{fmt_ratio(c.ci[0])}, {fmt_ratio(c.ci[1])}]" if c.ci else " (no CI)"
    return fmt_ratio(c.ratio) + ci


def cell(c: verdict.Comparison) -> str:
    """'1.25× [1.19, 1.31] slower' — a comparison in one table cell."""
    return c.verdict if c.ratio is None else f"{ratio_text(c).replace(' ', '× ', 1)} {c.verdict}"


def _counted(every: list[verdict.Comparison], n: int, noun: str) -> tuple[str, bool]:
    """'12 metrics in 2 case comparisons: 3 slower, …; 3 significant', and whether nothing
    changed (no metric significant, every verdict "no change")."""
    significant = sum(c.significant for c in every)
    verdicts = Counter(c.verdict for c in every)
    what = (f"{len(every)} metric{'s' if len(every) != 1 else ''} in {n} {noun}"
            f"{'s' if n != 1 else ''}")
    if every and not significant and verdicts["no change"] == len(every):
        return f"{what}, every verdict “no change”, none significant.", True
    counts = ", ".join(f"{verdicts[v]} {v}" for v in ("slower", "faster", "no change",
                                                       "inconclusive") if verdicts[v])
    return f"{what}: {counts or 'none'}; {significant} significant.", False


def summary_line(rc: RunComparison) -> str:
    """The answer first: "Nothing changed" when no metric is significant and every verdict
    is "no change", else how many of each verdict."""
    every = [c for cc in rc.comparisons for c in cc.metrics.values()]
    text, nothing = _counted(every, len(rc.comparisons), "case comparison")
    return f"**Nothing changed**: {text}" if nothing else f"**Summary**: {text}"


def _verdict_text(c: verdict.Comparison) -> str:
    why = short_reason(c)
    return c.verdict + (f" ({why})" if why else "")


def _p_text(c: verdict.Comparison) -> str:
    return "–" if c.p_holm is None else f"{c.p_holm:.2g}"


def within_boot_markdown(ac: Across) -> list[str]:
    """The within-boot ratios across a boot key: the comparison that the boot's own speed
    does not confound."""
    lines = [f"## Within-boot ratios across {ac.key}", ""]
    if not ac.shifts:
        return [*lines, f"No within-boot ratio to compare: {ac.why_none}"]
    every = [c for rs in ac.shifts for c in rs.metrics.values()]
    lines += [f"**Within-boot ratios**: {_counted(every, len(ac.shifts), 'ratio comparison')[0]}",
              "", f"Each {ac.key} ran in its own boot, and emulated timing moves from boot to "
              f"boot (up to 3× seen), so absolute figures across {ac.key} are confounded by "
              f"the boot. Inside one boot the {ac.inner} values ran in the same rounds: their "
              "ratio, paired round by round, does not depend on the boot's speed. Shift = a "
              f"later {ac.key}'s within-boot ratio ÷ the first's ({ac.values[0]}): Welch's t "
              "on the per-round log ratios, Holm over each table's metrics; “slower”: the "
              "candidate lost ground against the baseline (or gained less) on the later "
              f"{ac.key}, “faster” the reverse."]
    for rs in ac.shifts:
        a, b = rs.baseline, rs.candidate
        lines += ["", f"### {rs.case}: {b} vs {a}", "",
                  f"| metric | {a}: ratio [CI] | {b}: ratio [CI] | {b} ÷ {a} [CI] | p (Holm) "
                  "| verdict |", "|---|---|---|---|---:|---|"]
        for key, c in rs.metrics.items():
            m = rs.info[key]
            lines.append(f"| {m.label} | {ratio_text(rs.within[a][key])} | "
                         f"{ratio_text(rs.within[b][key])} | {ratio_text(c)} | {_p_text(c)} | "
                         f"{_verdict_text(c)} |")
    return lines


def to_markdown(rc: RunComparison) -> str:
    o = rc.options
    every = [c for cc in rc.comparisons for c in cc.metrics.values()]
    paired = sum(c.paired for c in every)
    pairing = ("every metric paired" if every and paired == len(every) else
               "none paired" if not paired else f"{paired} of {len(every)} metrics paired")
    lines = []
    if rc.within_boot is not None:
        lines += [*within_boot_markdown(rc.within_boot), "",
                  f"## Absolute figures across {rc.within_boot.key} (confounded by the boot)",
                  ""]
    lines += [summary_line(rc), "",
              f"Ratio = candidate ÷ baseline (geometric means of repetitions), "
              f"{100 * o.confidence:.0f} % t-interval; p of the t-test on logs, Holm-adjusted "
              f"over each case's metrics, α = {o.alpha:g}; noise band ±{100 * o.threshold:g} %; "
              "significant = p below α and the CI outside the band. Paired: both sides ran in "
              "the same rounds of one boot, compared round by round (paired t on the log "
              f"ratios); else unpaired (Welch's t on logs) — {pairing}."]
    for cc in rc.comparisons:
        lines += ["", f"## {cc.candidate} vs {cc.baseline}: {cc.case}", "",
                  "| metric | baseline | candidate | ratio [CI] | p (Holm) | verdict | paired |",
                  "|---|---:|---:|---|---:|---|---|"]
        for key, c in cc.metrics.items():
            m = cc.info[key]
            lines.append(f"| {m.label} ({m.unit}) | {fmt_metric(m, c.estimate_a)} | "
                         f"{fmt_metric(m, c.estimate_b)} | {ratio_text(c)} | {_p_text(c)} | "
                         f"{_verdict_text(c)} | {'yes' if c.paired else 'no'} |")
    for run, ids in rc.unmatched.items():
        lines += ["", f"Not compared (in one run only, {run}): {', '.join(ids)}"]
    return "\n".join(lines)


def render(rc: RunComparison, fmt: str) -> str:
    return {"json": to_json, "csv": to_csv, "md": to_markdown}[fmt](rc)


def along_as_runs(a: Along, o: verdict.CompareOptions,
                  within_boot: Across | None = None) -> RunComparison:
    """The same outputs for a comparison inside one run (case ids in place of run names);
    ``within_boot``: along a boot key, its within-boot ratios (nlperf/boot_ratios.py)."""
    comparisons = [CaseComparison(cc.a.id, cc.b.id, cc.case or a.key, cc.a, cc.b, cc.metrics,
                                  cc.info) for g in a.groups for cc in g.comparisons]
    return RunComparison(comparisons, o, within_boot=within_boot)
