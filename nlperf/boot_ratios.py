"""Within-boot ratios compared across boots: what a ``kernel`` (or ``target``) matrix changed.

Cases of different boots cannot be paired, and their absolute figures are confounded by the
boot: under emulation the same case's timing moves from boot to boot by up to 3× (LAB-NOTES:
a callback p50 of 19.8 µs in one boot, 62.7 µs in another). What one boot measures about
itself does not share that confound: the ratio of two cases that ran in the same rounds of
that boot (kthread ÷ callback), paired round by round (nlperf/design.py). So along a boot key
the verdict is read on those ratios:

* inside each boot, the inner key's candidate against its baseline (``compare.compare_cases``,
  paired by rounds), and the per-round ratios B[r] ÷ A[r] of every value metric both have;
* across boots, a later boot's per-round ratios against the first boot's: Welch's t on their
  logs (the boots are independent), so the shift is (mean log ratio of boot 2) − (mean log
  ratio of boot 1) with se² = s₁²/n₁ + s₂²/n₂ — the paired se of each boot's ratio, added;
  Holm over the metrics of one shift. "slower" means the candidate lost ground against the
  baseline on the later boot (a latency ratio that grew, a throughput ratio that shrank).

A metric enters only where both boots' ratios are paired (same rounds on both sides, order
with rounds) and every value is > 0 (a ratio needs both). A boot-wide change that moves both
inner values alike (every model 20 % slower on the later kernel) leaves the ratios alone: that
is what the absolute figures would show, were they not confounded; the report says so.
"""

from __future__ import annotations

import json
from typing import Any

from nlperf import design, verdict
from nlperf.analysis import CaseAnalysis, RunAnalysis, short_value, varying_keys
from nlperf.catalog import Metric
from nlperf.compare import PREFERRED_ALONG, Across, RatioShift, compare_cases


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def inner_key(run: RunAnalysis, key: str) -> str | None:
    """The key compared inside each boot: the processing model when it varies, else the first
    varying key that is neither a boot key nor ``traffic`` (its cases measure different
    things)."""
    keys = varying_keys([c.case for c in run.cases])
    for k in (*PREFERRED_ALONG, *keys):
        if k in keys and k not in design.BOOT_KEYS and k != "traffic" and k != key:
            return k
    return None


def per_round_ratios(a: CaseAnalysis, b: CaseAnalysis, key: str) -> list[float] | None:
    """B[r] ÷ A[r] per round, when both have the metric in the same rounds and > 0."""
    if key not in a.values or key not in b.values or a.rounds(key) != b.rounds(key):
        return None
    va, vb = a.series(key), b.series(key)
    if not va or min(va) <= 0 or min(vb) <= 0:
        return None
    return [y / x for x, y in zip(va, vb, strict=True)]


def _within(run: RunAnalysis, a: CaseAnalysis, b: CaseAnalysis, o: verdict.CompareOptions
            ) -> tuple[dict[str, verdict.Comparison], dict[str, Metric], dict[str, list[float]]]:
    """Inside one boot: B against A (paired by rounds), and the per-round ratios to carry."""
    metrics, info = compare_cases(a, b, o, rounds=run.paired_cases(a, b))
    ratios = {k: r for k, c in metrics.items()
              if c.paired and (r := per_round_ratios(a, b, k)) is not None}
    return metrics, info, ratios


def across(run: RunAnalysis, key: str, o: verdict.CompareOptions,
           inner: str | None = None) -> Across | None:
    """Within-boot ratios along ``key`` (kernel, target); None when ``key`` is no boot key or
    has one value."""
    cases = [c.case for c in run.cases]
    if key not in design.BOOT_KEYS or key not in varying_keys(cases):
        return None
    inner = inner or inner_key(run, key)
    values = list(dict.fromkeys(_text(c.params[key]) for c in cases if key in c.params))
    if inner is None:
        return Across(key, None, values, [], f"only {key} varies: no two cases share a boot")
    others = [k for k in varying_keys(cases) if k not in (key, inner)]
    inner_values = list(dict.fromkeys(_text(c.params[inner]) for c in cases
                                      if inner in c.params))
    # context (the other matrix values) → boot value → inner value → case
    table: dict[str, dict[str, dict[str, CaseAnalysis]]] = {}
    for c in run.cases:
        p = c.case.params
        if key not in p or inner not in p:
            continue
        context = " · ".join(short_value(k, p.get(k)) for k in others)
        table.setdefault(context, {}).setdefault(_text(p[key]), {})[_text(p[inner])] = c
    shifts: list[RatioShift] = []
    for context, by_boot in table.items():
        for candidate in inner_values[1:]:
            shifts += _shifts(run, o, context, by_boot, (inner_values[0], candidate), values)
    why = "" if shifts else (
        "the run's order has no rounds (sequential, or written before order was recorded), "
        "so no ratio inside a boot is paired" if not run.rounds
        else f"no {inner} pair ran on two {key} values with a metric in the same rounds")
    return Across(key, inner, values, shifts, why)


def _shifts(run: RunAnalysis, o: verdict.CompareOptions, context: str,
            by_boot: dict[str, dict[str, CaseAnalysis]], pair: tuple[str, str],
            values: list[str]) -> list[RatioShift]:
    """Each later boot's within-boot ratios ``pair[1] ÷ pair[0]`` against the first boot's."""
    within: dict[str, tuple[dict[str, verdict.Comparison], dict[str, Metric],
                            dict[str, list[float]]]] = {}
    for boot in values:
        cases = by_boot.get(boot, {})
        if pair[0] in cases and pair[1] in cases:
            within[boot] = _within(run, cases[pair[0]], cases[pair[1]], o)
    first = values[0]
    if first not in within:
        return []
    label = f"{pair[1]} ÷ {pair[0]}" + (f" · {context}" if context else "")
    out = []
    for boot in values[1:]:
        if boot not in within:
            continue
        (ma, info, ra), (mb, _, rb) = within[first], within[boot]
        raw = {k: verdict.compare_metric(ra[k], rb[k], metric=k, options=o, paired=False,
                                         higher_is_better=info[k].higher_is_better)
               for k in ra if k in rb}
        if not raw:
            continue
        shift = verdict.holm_adjust(raw)
        out.append(RatioShift(first, boot, label, pair, shift, {k: info[k] for k in shift},
                              {first: ma, boot: mb}))
    return out
