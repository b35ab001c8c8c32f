"""Two-sided p-values of the tests behind a verdict, the t-interval of the ratio that goes
with the t-tests on logs, and Holm's correction (nlperf/verdict.py says which decides when).

Unpaired (two independent sets of repetitions): Welch's t on logs, Mann-Whitney U.
Paired (repetition r of A and of B ran in the same round of one boot, nlperf/design.py): the
one-sample t on the per-round log ratios log(B_r / A_r), Wilcoxon's signed-rank test on the
per-round differences (log ratios when every value is positive, else B_r - A_r).

Degenerate inputs have a defined answer, never a warning: no spread at all is p = 1 when
there is no difference and p = 0 when there is one (a certain difference); every paired
difference zero is p = 1; fewer than two values a side (two pairs) is no test (None).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps


def log_t(a: np.ndarray, b: np.ndarray, *, paired: bool) -> tuple[float, float, float]:
    """(mean log ratio, its standard error, degrees of freedom) of B against A; needs ≥ 2
    positive values a side. Paired: the one-sample t on the per-round log ratios
    log(B_r / A_r) (n − 1 df; drift shared by A_r and B_r cancels in each). Unpaired:
    Welch's t on the difference of mean logs (Welch–Satterthwaite df). exp(mean log ratio)
    is the ratio of geometric means in both cases."""
    la, lb = np.log(a), np.log(b)
    if paired:
        d = lb - la
        return float(np.mean(d)), float(np.std(d, ddof=1)) / math.sqrt(d.size), d.size - 1.0
    va, vb = float(np.var(la, ddof=1)) / la.size, float(np.var(lb, ddof=1)) / lb.size
    diff = float(np.mean(lb) - np.mean(la))
    if va + vb == 0:
        return diff, 0.0, float(la.size + lb.size - 2)
    df = (va + vb) ** 2 / (va**2 / (la.size - 1) + vb**2 / (lb.size - 1))
    return diff, math.sqrt(va + vb), df


def log_t_p(a: np.ndarray, b: np.ndarray, *, paired: bool) -> float:
    """Two-sided p of the t-test on logs (``log_t``): mean log ratio = 0."""
    diff, se, df = log_t(a, b, paired=paired)
    if se == 0:  # no spread at all: a difference is certain, no difference is none
        return 1.0 if diff == 0 else 0.0
    return float(2 * sps.t.sf(abs(diff) / se, df))


def log_t_ratio_ci(a: np.ndarray, b: np.ndarray, *, paired: bool, confidence: float
                   ) -> tuple[float, tuple[float, float]]:
    """The ratio B/A of geometric means and its t-interval, exponentiated from the log scale:
    exp(mean log ratio ± t(df, (1 + confidence) / 2) · se). It is the interval of the test
    ``log_t_p`` (it excludes 1 exactly when p < 1 − confidence); no spread: zero width."""
    diff, se, df = log_t(a, b, paired=paired)
    reach = float(sps.t.ppf((1.0 + confidence) / 2.0, df)) * se if se > 0 else 0.0
    return math.exp(diff), (math.exp(diff - reach), math.exp(diff + reach))


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    if np.all(a == a[0]) and np.all(b == a[0]):
        return 1.0
    return float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def paired_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-round differences: log(B_r / A_r) when every value is positive, else B_r - A_r."""
    if np.all(a > 0) and np.all(b > 0):
        return np.log(b) - np.log(a)
    return b - a


def signed_rank_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Wilcoxon's signed-rank test on the paired differences (zero differences dropped, as
    Wilcoxon did); needs ≥ 2 pairs. Its smallest two-sided p is 2 / 2^n for n non-zero
    differences: 0.25 at 3 pairs, 0.0625 at 5, 0.031 at 6 — it can decide from 6 pairs on."""
    if a.size < 2:
        return None
    d = paired_differences(a, b)
    if not np.any(d):
        return 1.0
    with warnings.catch_warnings():  # older scipy warns when zeros force an approximation
        warnings.simplefilter("ignore")
        return float(sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def tests(a: np.ndarray, b: np.ndarray, *, on_logs: bool, paired: bool
          ) -> tuple[str, float | None, float | None]:
    """(the deciding test, its p, the rank test's p) for ≥ 2 values a side: the t-test on
    logs when ``on_logs`` and every value is positive, else the rank test (nlperf/verdict.py)."""
    logs = on_logs and bool(np.all(a > 0) and np.all(b > 0))
    if paired:
        p_rank = signed_rank_p(a, b)
        return ("paired-t-log", log_t_p(a, b, paired=True), p_rank) if logs else (
            "wilcoxon", p_rank, p_rank)
    p_rank = mann_whitney_p(a, b)
    return ("welch-log", log_t_p(a, b, paired=False), p_rank) if logs else (
        "mannwhitney", p_rank, p_rank)


def rank_floor(test: str, n_a: int, n_b: int) -> float | None:
    """The smallest two-sided p a rank test can give at these sizes: 2 / 2^n for Wilcoxon's
    signed-rank test over n pairs, 2 / C(n_a + n_b, n_a) for Mann-Whitney; None for others."""
    if test == "wilcoxon":
        return 2.0 / 2**n_a
    if test == "mannwhitney":
        return 2.0 / math.comb(n_a + n_b, n_a)
    return None


def rank_disagrees(test: str, p_rank: float | None, n_a: int, n_b: int, alpha: float) -> str:
    """A note for a verdict the t-test decided when the rank cross-check could have reached
    alpha at these sizes and did not. It does not veto (below 6 pairs, or 4 + 4 repetitions,
    it never could reach 0.05), it says."""
    rank = {"paired-t-log": "wilcoxon", "welch-log": "mannwhitney"}.get(test)
    floor = rank_floor(rank, n_a, n_b) if rank else None
    if p_rank is None or floor is None or floor >= alpha or p_rank < alpha:
        return ""
    return f"the rank cross-check ({rank}) disagrees: p_rank={p_rank:.3g}"


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in input order; None (no test) stays None and
    does not count towards the family size."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted
