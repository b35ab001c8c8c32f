"""Statistics behind a verdict: estimates, CIs, instability warnings and A/B comparisons.

Pure functions over plain numbers; nothing here knows about runs or files.

The independent unit is the repetition. Inputs are per-repetition values of one metric (e.g.
the p50 round trip of each repetition): messages inside one repetition share a boot, a module
load and a scheduler state, so they are not independent samples of the case.

One case (`summarize`)
    Point estimates: median and mean of the repetitions. CI: percentile bootstrap of the
    chosen statistic (median by default), resampling repetitions, seeded. Measured coverage
    of a nominal 95 % CI for the median of log-normal values (σ = 5 %, 1000 draws each):
    50 % at 2 repetitions, 75 % at 3, 87 % at 4, 92-94 % from 5 on (the mean does worse:
    83 % at 5, 90 % at 10), hence the median and the "few repetitions" warning below 5.
    One repetition: no CI (`ci` is None, `ci_reason` says why), never an invented one.
    Warnings (pyperf's rules): std dev ≥ 10 % of the mean;
    minimum ≥ 50 % below or maximum ≥ 50 % above the mean; fewer than `min_repetitions`.

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

`repetitions: auto` (`ci_halfwidth_pct`, `target_met`)
    The CI's reach as a percentage of the estimate, the larger of (estimate - lo) and
    (hi - estimate); the target is met when that is ≤ target and there are at least
    `min_repetitions` (5) repetitions, because below that the bootstrap CI is too narrow.

Every bootstrap takes a seed: same inputs, same seed, same numbers. The bootstrap is the
percentile method written out in numpy (what scipy.stats.bootstrap(method="percentile") does):
scipy's seeding keyword changes name across scipy>=1.10 (random_state → rng), and its BCa
covered no better at 3 and 5 repetitions (74 %, 94 %, measured as above).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from nlperf.significance import holm, log_t_ratio_ci, rank_disagrees, rank_floor, tests

Statistic = Literal["median", "mean"]
CompareStatistic = Literal["geomean", "median", "mean"]  # geomean: the t-interval on logs
TestName = Literal["welch-log", "mannwhitney"]
Verdict = Literal["faster", "slower", "no change", "inconclusive"]

DEFAULT_RESAMPLES = 10_000
MIN_REPETITIONS = 5
CV_WARNING = 0.10
OUTLIER_WARNING = 0.50

_STATISTICS: dict[str, Callable[..., Any]] = {"median": np.median, "mean": np.mean}


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _as_values(values: Sequence[float] | np.ndarray, what: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0:
        raise ValueError(f"{what}: no repetitions")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: not every repetition has a finite value")
    return array


def _resampled(values: np.ndarray, statistic: Statistic, n_resamples: int,
               rng: np.random.Generator, index: np.ndarray | None = None) -> np.ndarray:
    """The statistic of `n_resamples` bootstrap resamples of the repetitions (of the given
    resampled indices: the same draw for both sides of a paired comparison)."""
    if index is None:
        index = rng.integers(0, values.size, size=(n_resamples, values.size))
    return _STATISTICS[statistic](values[index], axis=1)


def _percentile_ci(distribution: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(distribution, [tail, 1.0 - tail])
    return float(low), float(high)


# --------------------------------------------------------------------------- one case


@dataclass(frozen=True)
class Summary:
    """One metric of one case over its repetitions."""

    n: int
    median: float
    mean: float
    std: float | None  # sample std dev (ddof=1); None with one repetition
    cv: float | None  # std / mean
    min: float
    max: float
    statistic: Statistic  # what `estimate` and `ci` are of
    ci: tuple[float, float] | None
    confidence: float
    ci_reason: str  # why there is no CI; empty when there is one
    warnings: tuple[str, ...]

    @property
    def estimate(self) -> float:
        return self.median if self.statistic == "median" else self.mean

    @property
    def ci_halfwidth_pct(self) -> float | None:
        """How far the CI reaches from the estimate, in % of the estimate (the larger side)."""
        if self.ci is None or self.estimate == 0:
            return None
        reach = max(self.estimate - self.ci[0], self.ci[1] - self.estimate)
        return 100.0 * reach / abs(self.estimate)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci) if self.ci is not None else None
        out["warnings"] = list(self.warnings)
        out["estimate"] = self.estimate
        out["ci_halfwidth_pct"] = self.ci_halfwidth_pct
        return out


def instability_warnings(values: Sequence[float] | np.ndarray,
                         min_repetitions: int = MIN_REPETITIONS) -> list[str]:
    """pyperf's instability checks plus a warning for too few repetitions."""
    array = _as_values(values)
    out: list[str] = []
    if array.size < min_repetitions:
        out.append(f"only {array.size} repetition{'s' if array.size > 1 else ''} "
                   f"(fewer than {min_repetitions}): the CI is rough or absent")
    mean = float(np.mean(array))
    if mean <= 0:
        return out
    if array.size > 1:
        std = float(np.std(array, ddof=1))
        if std >= CV_WARNING * mean:
            out.append(f"unstable: std dev {std:.4g} is {100 * std / mean:.0f} % of the mean "
                       f"{mean:.4g}")
    low, high = float(np.min(array)), float(np.max(array))
    if low <= (1 - OUTLIER_WARNING) * mean:
        out.append(f"unstable: minimum {low:.4g} is {100 * (mean - low) / mean:.0f} % below "
                   f"the mean {mean:.4g}")
    if high >= (1 + OUTLIER_WARNING) * mean:
        out.append(f"unstable: maximum {high:.4g} is {100 * (high - mean) / mean:.0f} % above "
                   f"the mean {mean:.4g}")
    return out


def summarize(values: Sequence[float] | np.ndarray, *, statistic: Statistic = "median",
              confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
              min_repetitions: int = MIN_REPETITIONS) -> Summary:
    """Estimates, bootstrap CI of `statistic`, spread and warnings for one metric."""
    array = _as_values(values)
    mean = float(np.mean(array))
    std = float(np.std(array, ddof=1)) if array.size > 1 else None
    ci: tuple[float, float] | None = None
    ci_reason = ""
    if array.size < 2:
        ci_reason = "no CI: one repetition"
    else:
        rng = np.random.default_rng(seed)
        ci = _percentile_ci(_resampled(array, statistic, n_resamples, rng), confidence)
    return Summary(
        n=int(array.size), median=float(np.median(array)), mean=mean, std=std,
        cv=std / mean if std is not None and mean != 0 else None,
        min=float(np.min(array)), max=float(np.max(array)), statistic=statistic, ci=ci,
        confidence=confidence, ci_reason=ci_reason,
        warnings=tuple(instability_warnings(array, min_repetitions)))


def ci_halfwidth_pct(values: Sequence[float] | np.ndarray, *, statistic: Statistic = "median",
                     confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0) -> float | None:
    """The CI's reach in % of the estimate; None while there is no CI (one repetition)."""
    return summarize(values, statistic=statistic, confidence=confidence,
                     n_resamples=n_resamples, seed=seed).ci_halfwidth_pct


def target_met(values: Sequence[float] | np.ndarray, target_ci_pct: float, *,
               min_repetitions: int = MIN_REPETITIONS, statistic: Statistic = "median",
               confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
               seed: int = 0) -> bool:
    """`repetitions: auto`: enough repetitions and the CI within ±target_ci_pct %."""
    if len(values) < max(min_repetitions, 2):
        return False
    reach = ci_halfwidth_pct(values, statistic=statistic, confidence=confidence,
                             n_resamples=n_resamples, seed=seed)
    return reach is not None and reach <= target_ci_pct


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
