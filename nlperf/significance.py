"""Two-sided p-values of the tests behind a verdict, and Holm's correction (nlperf/stats.py
says which test decides when).

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


def welch_log_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Welch t-test on log values; needs ≥ 2 positive values a side."""
    la, lb = np.log(a), np.log(b)
    va, vb = float(np.var(la, ddof=1)) / la.size, float(np.var(lb, ddof=1)) / lb.size
    diff = float(np.mean(lb) - np.mean(la))
    if va + vb == 0:  # no spread at all: a difference is certain, no difference is none
        return 1.0 if diff == 0 else 0.0
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (la.size - 1) + vb**2 / (lb.size - 1))
    return float(2 * sps.t.sf(abs(t), df))


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    if np.all(a == a[0]) and np.all(b == a[0]):
        return 1.0
    return float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def paired_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-round differences: log(B_r / A_r) when every value is positive, else B_r - A_r."""
    if np.all(a > 0) and np.all(b > 0):
        return np.log(b) - np.log(a)
    return b - a


def paired_log_t_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided t-test of mean(log(B_r / A_r)) = 0 (the paired t on logs); needs ≥ 2 pairs
    of positive values. Drift shared by A_r and B_r cancels in each log ratio."""
    if a.size < 2:
        return None
    d = np.log(b) - np.log(a)
    mean, sd = float(np.mean(d)), float(np.std(d, ddof=1))
    if sd == 0:  # the same ratio in every round: certain when it is not 1
        return 1.0 if mean == 0 else 0.0
    t = mean / (sd / math.sqrt(d.size))
    return float(2 * sps.t.sf(abs(t), d.size - 1))


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
    logs when ``on_logs`` and every value is positive, else the rank test (nlperf/stats.py)."""
    logs = on_logs and bool(np.all(a > 0) and np.all(b > 0))
    if paired:
        p_rank = signed_rank_p(a, b)
        return ("paired-t-log", paired_log_t_p(a, b), p_rank) if logs else (
            "wilcoxon", p_rank, p_rank)
    p_rank = mann_whitney_p(a, b)
    return ("welch-log", welch_log_p(a, b), p_rank) if logs else (
        "mannwhitney", p_rank, p_rank)


def rank_floor(test: str, n_a: int, n_b: int) -> float | None:
    """The smallest two-sided p a rank test can give at these sizes: 2 / 2^n for Wilcoxon's
    signed-rank test over n pairs, 2 / C(n_a + n_b, n_a) for Mann-Whitney; None for others."""
    if test == "wilcoxon":
        return 2.0 / 2**n_a
    if test == "mannwhitney":
        return 2.0 / math.comb(n_a + n_b, n_a)
    return None


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
