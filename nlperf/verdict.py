"""A/B verdicts: ratio CIs, tests and the verdict rule between two cases; counts.

Pure functions over plain numbers; per-repetition values as in nlperf/stats.py.

Two cases, A baseline and B candidate (`compare_metric`, `compare_metrics`)
    ratio  = the ratio of geometric means of the repetitions, exp(mean log B - mean log A)
             (`CompareOptions.statistic` "geomean", the default). A ratio above 1 means B is
             higher. Per-repetition values are taken as log-normal (multiplicative noise:
             per-repetition percentiles and means of many messages are close to it), so the
             ratio, its CI and the deciding test are one model: the t on log values.
    ci     = the t-interval of the mean log ratio, exponentiated:
             exp(d ± t(df, (1 + confidence) / 2) · se). It is the interval of the deciding
             t-test: at confidence 1 - alpha it excludes 1 exactly when p < alpha.
    Unpaired (`paired=False`: A and B measured in different boots, or one after the other):
             d = mean log B - mean log A, se² = s²_logA / n_A + s²_logB / n_B, df by
             Welch-Satterthwaite; p = Welch's t-test on log values (`test` "welch-log").
    Paired (`paired=True`: A[r] and B[r] ran in the same round r of one boot, so they share
    that round's drift — nlperf/design.py; or they are the same measurements):
             d = mean of the per-round log ratios log(B[r] / A[r]) (the drift shared by A[r]
             and B[r] cancels in each), se = their sd / sqrt(n), df = n - 1; p = the paired
             t-test on them (`test` "paired-t-log"). Both sides need the same number of
             rounds. B equal to A in every round (a run against itself): ratio 1, CI [1, 1],
             p = 1, exactly.
    Coverage of the nominal 95 % CI (tests/test_coverage.py: log-normal repetitions, a
    known ratio, a drift shared within a round when paired): 95-96 % at 3 and 5 repetitions,
    paired and unpaired; the percentile bootstrap of the median ratio it replaced: 77 %
    (paired) and 88 % (unpaired) at 3, 93 % paired at 5.
    Why a t and not a rank test decides: at 3 a side Mann-Whitney cannot go below p = 2 /
    C(6,3) = 0.1, nor Wilcoxon's signed-rank test over 3 rounds below 2/2^3 = 0.25 (it can
    reach 0.05 from 6 rounds on), so "every latency metric with ≥ 3 repetitions significant"
    would be impossible. The rank test's p is `p_rank` (Mann-Whitney unpaired, Wilcoxon on
    the per-round log ratios paired), a cross-check that never vetoes; where it could have
    reached alpha at these sizes and did not, a decided verdict's `reason` says so.
    Fallbacks: a value ≤ 0 has no log, so the ratio is of medians with a percentile
    bootstrap CI (rounds drawn once for both sides when paired) and the rank test decides
    (`test` "mannwhitney" or "wilcoxon"); `statistic` says which. `CompareOptions`
    statistic "median"/"mean" asks for that bootstrap, test "mannwhitney" for the rank test.
    p_holm = Holm's step-down adjustment over all metrics of one comparison (`holm`).
    Verdict, with t the noise threshold (default 0.02) and [lo, hi] the ratio CI:
      * "inconclusive" when there is no CI (a side with one repetition: "no CI", never an
                       invented one; a zero baseline);
      * "no change"    when 1 - t ≤ lo and hi ≤ 1 + t (the whole CI inside the noise band,
                       whatever p: a real but negligible difference);
      * B worse        when p_holm < alpha and lo > 1 + t (lower-is-better metric), or
                       p_holm < alpha and hi < 1 - t (higher-is-better metric);
      * B better       the mirror image;
      * "inconclusive" otherwise, with the reason (a deciding rank test that cannot reach
                       alpha at these sizes says so).
    `significant` is true exactly for "faster" and "slower": the Holm-adjusted p below
    alpha AND the CI wholly outside the noise band. A p below alpha whose CI reaches into
    the band is not called significant (the reason gives the p).
    The words are "faster" for B better and "slower" for B worse in the metric's direction:
    for a higher-is-better metric (throughput) a ratio above 1 is "faster".

Counts (losses, drops: `poisson_ci`, `compare_counts`)
    Exact Garwood interval from chi-square quantiles. Two counts with exposures (e.g. lost
    messages over sent messages) are compared by the exact conditional test: given n = kA + kB
    events, kB ~ Binomial(n, eB / (eA + eB)) when both rates are equal. The rate ratio's CI
    is the Clopper-Pearson interval of that binomial proportion mapped to rB / rA. The same
    verdict rule applies (counts are lower-is-better unless told); no events on either side
    is "no change". A `Comparison` of counts carries the event counts in n_a and n_b and
    rates in estimate_a and estimate_b; it can join a Holm family through `holm_adjust`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from nlperf.significance import holm, log_t_ratio_ci, rank_disagrees, rank_floor, tests
from nlperf.stats import (
    _STATISTICS,
    DEFAULT_RESAMPLES,
    _as_values,
    _finite_or_none,
    _percentile_ci,
    _resampled,
)

CompareStatistic = Literal["geomean", "median", "mean"]  # geomean: the t-interval on logs
TestName = Literal["welch-log", "mannwhitney"]
Verdict = Literal["faster", "slower", "no change", "inconclusive"]


# --------------------------------------------------------------------------- two cases


@dataclass(frozen=True)
class CompareOptions:
    statistic: CompareStatistic = "geomean"  # t-interval on logs; median, mean: bootstrap
    test: TestName = "welch-log"
    threshold: float = 0.02  # noise band: ratios within 1 ± threshold are "no change"
    alpha: float = 0.05
    confidence: float = 0.95
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0


@dataclass(frozen=True)
class Comparison:
    """B (candidate) against A (baseline) on one metric; see the module docstring."""

    metric: str
    higher_is_better: bool
    statistic: str  # "geomean" | "median" | "mean" of repetitions, or "rate" for counts
    n_a: int  # repetitions (event counts for statistic "rate")
    n_b: int
    estimate_a: float
    estimate_b: float
    ratio: float | None  # estimate_b / estimate_a
    ci: tuple[float, float] | None  # of the ratio; high may be inf (unbounded)
    confidence: float
    test: str
    p_value: float | None  # raw, two-sided
    p_rank: float | None  # the rank test (Mann-Whitney; Wilcoxon paired), a cross-check
    p_holm: float | None
    alpha: float
    significant: bool
    threshold: float
    verdict: Verdict
    reason: str  # why "inconclusive" (or a note); empty otherwise
    paired: bool = False  # compared round by round (see the module docstring)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: an unbounded CI end becomes null."""
        out = asdict(self)
        out["ratio"] = _finite_or_none(self.ratio)
        out["ci"] = [_finite_or_none(x) for x in self.ci] if self.ci is not None else None
        return out


def _decided(c: Comparison) -> Comparison:
    """Apply the verdict rule of the module docstring to a comparison's numbers."""
    test_passed = c.p_holm is not None and c.p_holm < c.alpha
    t = c.threshold
    if c.statistic == "rate" and c.n_a == 0 and c.n_b == 0:
        return replace(c, significant=False, verdict="no change",
                       reason="no events on either side")
    if c.ci is None:
        return replace(c, significant=False, verdict="inconclusive",
                       reason=c.reason or "no CI")
    low, high = c.ci
    p_text = f"p_holm={c.p_holm:.3g}" if c.p_holm is not None else "no test"
    band = f"1 ± {t:g}"
    past_band = low > 1 + t or high < 1 - t
    if 1 - t <= low and high <= 1 + t:
        return replace(c, significant=False, verdict="no change", reason="")
    if test_passed and past_band:
        better = (low > 1 + t) == c.higher_is_better
        return replace(c, significant=True, verdict="faster" if better else "slower",
                       reason=rank_disagrees(c.test, c.p_rank, c.n_a, c.n_b, c.alpha))
    if test_passed:
        why = f"{p_text} < {c.alpha:g} but the CI [{low:.4g}, {high:.4g}] reaches into {band}"
    elif past_band:
        why = f"the CI [{low:.4g}, {high:.4g}] is outside {band} but not significant ({p_text})"
    else:
        why = f"not significant ({p_text}) and the CI [{low:.4g}, {high:.4g}] is wider than {band}"
    floor = rank_floor(c.test, c.n_a, c.n_b)
    if not test_passed and floor is not None and floor >= c.alpha:
        why += (f"; {c.test} cannot go below p = {floor:.2g} with {c.n_a} and {c.n_b} "
                "repetitions")
    return replace(c, significant=False, verdict="inconclusive", reason=why)


def compare_metric(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                   metric: str = "", higher_is_better: bool = False,
                   options: CompareOptions | None = None, paired: bool = False) -> Comparison:
    """B against A on one metric, alone (Holm over a family of one: p_holm = p_value).

    ``paired``: a[r] and b[r] are round r of one boot (see the module docstring)."""
    o = options or CompareOptions()
    va, vb = _as_values(a, f"{metric or 'metric'} (A)"), _as_values(b, f"{metric or 'metric'} (B)")
    if paired and va.size != vb.size:
        raise ValueError(f"{metric or 'metric'}: paired sides need one value per round "
                         f"(n_a={va.size}, n_b={vb.size})")
    log_scale = o.statistic == "geomean" and bool(np.all(va > 0) and np.all(vb > 0))
    statistic = "geomean" if log_scale else "median" if o.statistic == "geomean" else o.statistic
    if log_scale:
        est_a, est_b = (float(np.exp(np.mean(np.log(v)))) for v in (va, vb))
    else:
        est_a, est_b = (float(_STATISTICS[statistic](v)) for v in (va, vb))
    ratio = est_b / est_a if est_a > 0 and est_b >= 0 else None
    ci: tuple[float, float] | None = None
    p_value = p_rank = None
    test = "none"  # until a test runs
    reason = ""
    if min(va.size, vb.size) < 2:
        reason = f"no CI: one repetition (n_a={va.size}, n_b={vb.size})"
    elif paired and np.array_equal(va, vb):  # the same measurements: nothing to resample
        ratio, ci, p_value, p_rank = 1.0, (1.0, 1.0), 1.0, 1.0
        test = "paired-t-log" if o.test == "welch-log" and np.all(va > 0) else "wilcoxon"
    elif ratio is None:
        reason = f"no ratio: baseline estimate {est_a:g}"
    elif log_scale:  # the ratio is exp(mean log ratio), the centre of its CI on the log scale
        ratio, ci = log_t_ratio_ci(va, vb, paired=paired, confidence=o.confidence)
    else:
        rng = np.random.default_rng(o.seed)
        index = (rng.integers(0, va.size, size=(o.n_resamples, va.size)) if paired
                 else None)
        boot_a = _resampled(va, statistic, o.n_resamples, rng, index)  # type: ignore[arg-type]
        boot_b = _resampled(vb, statistic, o.n_resamples, rng, index)  # type: ignore[arg-type]
        if np.any(boot_a <= 0):
            reason = "no CI: resampled baselines reach 0"
        else:
            ci = _percentile_ci(boot_b / boot_a, o.confidence)
    if min(va.size, vb.size) >= 2 and test == "none":
        test, p_value, p_rank = tests(va, vb, on_logs=o.test == "welch-log", paired=paired)
    result = Comparison(
        metric=metric, higher_is_better=higher_is_better, statistic=statistic,
        n_a=int(va.size), n_b=int(vb.size), estimate_a=est_a, estimate_b=est_b, ratio=ratio,
        ci=ci, confidence=o.confidence, test=test, p_value=p_value, p_rank=p_rank,
        p_holm=p_value, alpha=o.alpha, significant=False, threshold=o.threshold,
        verdict="inconclusive", reason=reason, paired=paired)
    return _decided(result)


def holm_adjust(results: Mapping[str, Comparison]) -> dict[str, Comparison]:
    """One comparison's family: Holm over every p_value, verdicts re-decided on p_holm."""
    adjusted = holm([r.p_value for r in results.values()])
    return {key: _decided(replace(r, p_holm=p))
            for (key, r), p in zip(results.items(), adjusted, strict=True)}


def compare_metrics(a: Mapping[str, Sequence[float] | np.ndarray],
                    b: Mapping[str, Sequence[float] | np.ndarray], *,
                    higher_is_better: Collection[str] = (),
                    options: CompareOptions | None = None,
                    paired: Collection[str] = ()) -> dict[str, Comparison]:
    """B against A on every metric both have (A's order), Holm-adjusted across them; the
    metrics named in ``paired`` compared round by round."""
    raw = {name: compare_metric(a[name], b[name], metric=name,
                                higher_is_better=name in higher_is_better, options=options,
                                paired=name in paired)
           for name in a if name in b}
    return holm_adjust(raw)


# --------------------------------------------------------------------------- counts


def _check_count(count: int, exposure: float, what: str) -> None:
    if isinstance(count, bool) or int(count) != count or count < 0:
        raise ValueError(f"{what}: count must be a whole number ≥ 0, not {count!r}")
    if not (math.isfinite(exposure) and exposure > 0):
        raise ValueError(f"{what}: exposure must be > 0, not {exposure!r}")


def poisson_ci(count: int, *, exposure: float = 1.0,
               confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) CI of a Poisson count, or of its rate per unit of `exposure`."""
    _check_count(count, exposure, "poisson_ci")
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if count == 0 else float(sps.chi2.ppf(tail, 2 * count)) / 2.0
    high = float(sps.chi2.ppf(1.0 - tail, 2 * count + 2)) / 2.0
    return low / exposure, high / exposure


def compare_counts(count_a: int, exposure_a: float, count_b: int, exposure_b: float, *,
                   metric: str = "", higher_is_better: bool = False,
                   options: CompareOptions | None = None) -> Comparison:
    """Rate B/A of two Poisson counts with exposures (e.g. lost of sent), exact test and CI."""
    o = options or CompareOptions()
    _check_count(count_a, exposure_a, f"{metric or 'count'} (A)")
    _check_count(count_b, exposure_b, f"{metric or 'count'} (B)")
    count_a, count_b = int(count_a), int(count_b)
    rate_a, rate_b = count_a / exposure_a, count_b / exposure_b
    ratio = rate_b / rate_a if count_a else None
    ci: tuple[float, float] | None = None
    p_value = None
    if count_a + count_b:
        share_b = exposure_b / (exposure_a + exposure_b)
        exact = sps.binomtest(count_b, count_a + count_b, share_b)
        p_value = float(exact.pvalue)
        share = exact.proportion_ci(confidence_level=o.confidence, method="exact")
        scale = exposure_a / exposure_b

        def to_ratio(p: float) -> float:
            return math.inf if p >= 1 else p / (1 - p) * scale

        ci = (to_ratio(float(share.low)), to_ratio(float(share.high)))
    result = Comparison(
        metric=metric, higher_is_better=higher_is_better, statistic="rate", n_a=count_a,
        n_b=count_b, estimate_a=rate_a, estimate_b=rate_b, ratio=ratio, ci=ci,
        confidence=o.confidence, test="poisson-conditional", p_value=p_value, p_rank=None,
        p_holm=p_value, alpha=o.alpha, significant=False, threshold=o.threshold,
        verdict="inconclusive", reason="")
    return _decided(result)
