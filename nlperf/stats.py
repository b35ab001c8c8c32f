"""Statistics of one case: estimates, CIs, instability warnings, the `repetitions: auto` rule.
A/B comparisons and counts are in nlperf/verdict.py; the bootstrap helpers here serve both.

Pure functions over plain numbers; nothing here knows about runs or files.

The independent unit is the repetition. Inputs are per-repetition values of one metric (e.g.
the p50 round trip of each repetition): messages inside one repetition share a boot, a module
load and a scheduler state, so they are not independent samples of the case.

One case (`summarize`)
    Point estimates: the geometric mean (default), median and mean of the repetitions. CI of
    the geometric mean: the t-interval of the mean log value (covers 95 % at 3 and 5
    repetitions: tests/test_coverage.py); of the median or mean: percentile bootstrap of the
    chosen statistic, resampling repetitions, seeded. Measured coverage
    of a nominal 95 % CI for the median of log-normal values (σ = 5 %, 1000 draws each):
    50 % at 2 repetitions, 75 % at 3, 87 % at 4, 92-94 % from 5 on (the mean does worse:
    83 % at 5, 90 % at 10), hence the median and the "few repetitions" warning below 5.
    One repetition: no CI (`ci` is None, `ci_reason` says why), never an invented one.
    Warnings (pyperf's rules): std dev ≥ 10 % of the mean;
    minimum ≥ 50 % below or maximum ≥ 50 % above the mean; fewer than `min_repetitions`.

`repetitions: auto` (`ci_halfwidth_pct`, `target_met`)
    The CI's reach as a percentage of the estimate, the larger of (estimate - lo) and
    (hi - estimate); the target is met when that is ≤ target and there are at least
    `min_repetitions` (5) repetitions: below that the spread itself is too rough an estimate.

Every bootstrap takes a seed: same inputs, same seed, same numbers. The bootstrap is the
percentile method written out in numpy (what scipy.stats.bootstrap(method="percentile") does):
scipy's seeding keyword changes name across scipy>=1.10 (random_state → rng), and its BCa
covered no better at 3 and 5 repetitions (74 %, 94 %, measured as above).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Statistic = Literal["geomean", "median", "mean"]

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
    geomean: float | None  # None unless every value is positive
    ci: tuple[float, float] | None
    confidence: float
    ci_reason: str  # why there is no CI; empty when there is one
    warnings: tuple[str, ...]

    @property
    def estimate(self) -> float:
        if self.statistic == "geomean" and self.geomean is not None:
            return self.geomean
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


def log_t_ci(array: np.ndarray, confidence: float) -> tuple[float, float]:
    """The t-interval of the mean log value, exponentiated: the CI of the geometric mean."""
    logs = np.log(array)
    centre = float(np.mean(logs))
    se = float(np.std(logs, ddof=1)) / math.sqrt(array.size)
    # imported here: the lab VM's inner run imports this module for ``repetitions: auto``
    # alone, and scipy.stats takes ~18 s to import under emulation
    from scipy import stats as scipy_stats

    reach = float(scipy_stats.t.ppf((1.0 + confidence) / 2.0, array.size - 1)) * se
    return math.exp(centre - reach), math.exp(centre + reach)


def summarize(values: Sequence[float] | np.ndarray, *, statistic: Statistic = "geomean",
              confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
              min_repetitions: int = MIN_REPETITIONS) -> Summary:
    """Estimates, CI of `statistic`, spread and warnings for one metric.

    "geomean" (the default): the t-interval on log values; with a value ≤ 0 the median and
    its bootstrap instead (`statistic` then says "median")."""
    array = _as_values(values)
    mean = float(np.mean(array))
    std = float(np.std(array, ddof=1)) if array.size > 1 else None
    positive = bool(np.all(array > 0))
    geomean = float(np.exp(np.mean(np.log(array)))) if positive else None
    if statistic == "geomean" and not positive:
        statistic = "median"
    ci: tuple[float, float] | None = None
    ci_reason = ""
    if array.size < 2:
        ci_reason = "no CI: one repetition"
    elif statistic == "geomean":
        ci = log_t_ci(array, confidence)
    else:
        rng = np.random.default_rng(seed)
        ci = _percentile_ci(_resampled(array, statistic, n_resamples, rng), confidence)
    return Summary(
        n=int(array.size), median=float(np.median(array)), mean=mean, std=std,
        cv=std / mean if std is not None and mean != 0 else None,
        min=float(np.min(array)), max=float(np.max(array)), statistic=statistic,
        geomean=geomean, ci=ci, confidence=confidence, ci_reason=ci_reason,
        warnings=tuple(instability_warnings(array, min_repetitions)))


def ci_halfwidth_pct(values: Sequence[float] | np.ndarray, *, statistic: Statistic = "geomean",
                     confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0) -> float | None:
    """The CI's reach in % of the estimate; None while there is no CI (one repetition)."""
    return summarize(values, statistic=statistic, confidence=confidence,
                     n_resamples=n_resamples, seed=seed).ci_halfwidth_pct


def target_met(values: Sequence[float] | np.ndarray, target_ci_pct: float, *,
               min_repetitions: int = MIN_REPETITIONS, statistic: Statistic = "geomean",
               confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
               seed: int = 0) -> bool:
    """`repetitions: auto`: enough repetitions and the CI within ±target_ci_pct %."""
    if len(values) < max(min_repetitions, 2):
        return False
    reach = ci_halfwidth_pct(values, statistic=statistic, confidence=confidence,
                             n_resamples=n_resamples, seed=seed)
    return reach is not None and reach <= target_ci_pct
