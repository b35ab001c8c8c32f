"""nlperf.stats against synthetic data with known distributions and hand-computed values."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps

from nlperf import stats, verdict
from nlperf.verdict import CompareOptions

FAST = CompareOptions(n_resamples=2000)  # for loops over many seeds


def lognormal(seed: int, n: int, median: float, sigma: float) -> np.ndarray:
    return median * np.exp(np.random.default_rng(seed).normal(0.0, sigma, n))


# --------------------------------------------------------------------------- one case


def test_summary_exact_values() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    s = stats.summarize(values)
    assert (s.n, s.median, s.mean, s.min, s.max) == (5, 3.0, 22.0, 1.0, 100.0)
    assert s.std == pytest.approx(math.sqrt((21**2 + 20**2 + 19**2 + 18**2 + 78**2) / 4))
    assert s.cv == pytest.approx(s.std / 22.0)
    # the estimate is the geometric mean, 2400^(1/5); its CI the t-interval of the mean log,
    # exp(mean ± t(4, 0.975) · sd / √5) with t(4, 0.975) = 2.776445
    logs = [math.log(v) for v in values]
    centre = sum(logs) / 5
    sd = math.sqrt(sum((x - centre) ** 2 for x in logs) / 4)
    reach = 2.776445 * sd / math.sqrt(5)
    assert s.statistic == "geomean" and s.estimate == pytest.approx(2400 ** (1 / 5))
    assert s.ci == pytest.approx((math.exp(centre - reach), math.exp(centre + reach)), rel=1e-6)
    assert s.ci_reason == ""
    # the median and its bootstrap on request: resampled medians sit on the values
    m = stats.summarize(values, statistic="median")
    assert m.estimate == 3.0 and m.ci is not None and 1.0 <= m.ci[0] <= 3.0 <= m.ci[1] <= 100.0


def test_a_value_at_or_below_zero_falls_back_to_the_median() -> None:
    s = stats.summarize([0.0, 2.0, 4.0])
    assert s.statistic == "median" and s.geomean is None and s.estimate == 2.0


def test_summary_recovers_a_known_median_and_mean() -> None:
    s = stats.summarize(lognormal(1, 40, 50.0, 0.05))
    assert s.median == pytest.approx(50.0, rel=0.02)
    assert s.mean == pytest.approx(50.0 * math.exp(0.05**2 / 2), rel=0.02)
    assert s.ci is not None and s.ci[0] < 50.0 < s.ci[1]
    assert s.warnings == ()


def test_median_ci_covers_the_true_median_at_its_nominal_rate() -> None:
    covered = []
    for seed in range(200):
        s = stats.summarize(lognormal(seed, 10, 50.0, 0.05), n_resamples=2000, seed=seed)
        assert s.ci is not None
        covered.append(s.ci[0] <= 50.0 <= s.ci[1])
    assert 0.88 <= np.mean(covered) <= 0.99  # measured 0.93 for percentile bootstrap, n=10


def test_one_repetition_has_no_ci() -> None:
    s = stats.summarize([7.0])
    assert s.ci is None and "no CI" in s.ci_reason
    assert s.std is None and s.cv is None and s.ci_halfwidth_pct is None
    assert s.median == s.mean == 7.0
    assert any("only 1 repetition" in w for w in s.warnings)
    assert stats.ci_halfwidth_pct([7.0]) is None
    assert not stats.target_met([7.0], 50.0, min_repetitions=1)


def test_instability_warnings_follow_pyperf_rules() -> None:
    assert stats.instability_warnings([10.0] * 5) == []
    assert stats.instability_warnings([10.0] * 5, min_repetitions=9) == [
        "only 5 repetitions (fewer than 9): the CI is rough or absent"]
    # std = sqrt(8 / 4) = 1.414, 14 % of the mean 10
    assert stats.instability_warnings([10.0, 12.0, 8.0, 10.0, 10.0]) == [
        "unstable: std dev 1.414 is 14 % of the mean 10"]
    # std = sqrt(0.405) = 0.636, 6 % of the mean: no warning
    assert stats.instability_warnings([10.0, 10.9, 9.1, 10.0, 10.0]) == []
    # mean 18.9, std sqrt(108.9 / 9) = 3.479; 9 is 52 % below the mean
    assert stats.instability_warnings([20.0] * 9 + [9.0]) == [
        "unstable: std dev 3.479 is 18 % of the mean 18.9",
        "unstable: minimum 9 is 52 % below the mean 18.9"]
    # mean 12, std sqrt(360 / 9) = 6.325; 30 is 150 % above the mean
    assert stats.instability_warnings([10.0] * 9 + [30.0]) == [
        "unstable: std dev 6.325 is 53 % of the mean 12",
        "unstable: maximum 30 is 150 % above the mean 12"]


def test_bootstrap_is_deterministic_per_seed() -> None:
    values = lognormal(3, 8, 10.0, 0.05)
    assert stats.summarize(values, seed=5).ci == stats.summarize(values, seed=5).ci
    # medians of resamples sit on the repetitions' values; means show the seed
    assert (stats.summarize(values, statistic="mean", seed=5).ci
            != stats.summarize(values, statistic="mean", seed=6).ci)
    a, b = lognormal(4, 6, 10.0, 0.05), lognormal(5, 6, 11.0, 0.05)
    assert verdict.compare_metric(a, b) == verdict.compare_metric(a, b)


def test_ci_halfwidth_and_target_for_auto_repetitions() -> None:
    # two values: resampled medians are 10, 11 or 12 with probability 1/4, 1/2, 1/4,
    # so the 95 % CI of the median is [10, 12] around the median 11: a reach of 1/11
    assert stats.ci_halfwidth_pct([10.0, 12.0], statistic="median") == pytest.approx(100 / 11)
    # the geometric mean's t-interval with one degree of freedom: se = |ln 12 - ln 10| / 2,
    # t(1, 0.975) = 12.706205; the upper side reaches further: exp(t · se) - 1
    se = math.log(12 / 10) / 2
    assert stats.ci_halfwidth_pct([10.0, 12.0]) == pytest.approx(
        100 * (math.exp(12.706205 * se) - 1), rel=1e-6)
    tight = lognormal(7, 10, 10.0, 0.01)
    assert stats.target_met(tight, 5.0)
    assert not stats.target_met(tight[:4], 5.0)  # fewer than 5: the CI is too narrow to trust
    assert stats.target_met(tight[:4], 5.0, min_repetitions=3)
    assert not stats.target_met(lognormal(7, 10, 10.0, 0.2), 5.0)


def test_bad_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no repetitions"):
        stats.summarize([])
    with pytest.raises(ValueError, match="finite"):
        verdict.compare_metric([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="count"):
        verdict.poisson_ci(-1)
    with pytest.raises(ValueError, match="exposure"):
        verdict.compare_counts(1, 0.0, 1, 1.0)


# --------------------------------------------------------------------------- two cases


def test_a_twenty_percent_shift_is_slower() -> None:
    for seed in range(20):
        c = verdict.compare_metric(lognormal(2 * seed, 10, 100.0, 0.03),
                                 lognormal(2 * seed + 1, 10, 120.0, 0.03), metric="rtt_us")
        assert c.significant and c.verdict == "slower", c
        assert c.ratio == pytest.approx(1.2, rel=0.05)
        assert c.n_a == c.n_b == 10 and c.test == "welch-log"
    c = verdict.compare_metric(lognormal(0, 10, 100.0, 0.03), lognormal(1, 10, 120.0, 0.03))
    assert c.ci is not None and c.ci[0] < 1.2 < c.ci[1]
    assert c.p_rank is not None and c.p_rank < 0.001


def test_higher_is_better_mirrors_the_words() -> None:
    a = lognormal(10, 10, 5000.0, 0.03)
    more = verdict.compare_metric(a, a * 1.2, metric="throughput_per_s", higher_is_better=True)
    less = verdict.compare_metric(a, a / 1.2, metric="throughput_per_s", higher_is_better=True)
    assert (more.verdict, less.verdict) == ("faster", "slower")
    assert verdict.compare_metric(a, a / 1.2).verdict == "faster"  # lower-is-better latency


def test_one_distribution_twice_is_rarely_significant() -> None:
    results = [verdict.compare_metric(lognormal(2 * seed, 10, 100.0, 0.03),
                                    lognormal(2 * seed + 1, 10, 100.0, 0.03), options=FAST)
               for seed in range(200)]
    # Welch's t on logs alone: its nominal 5 % false positives (200 draws: sd 1.5 %) ...
    assert np.mean([c.p_value < 0.05 for c in results]) <= 0.08
    # ... and "significant" also needs the CI past ±2 %, so it is exactly a verdict, rarer:
    # the CI's reach is t(0.975, 18)·√(2/10)·3 % ≈ 2.8 %, so the estimate must be ≈ 4.8 % off,
    # 3.6 sd of its √(2/10)·3 % ≈ 1.34 %
    assert all(c.significant == (c.verdict in ("faster", "slower")) for c in results)
    assert np.mean([c.significant for c in results]) <= 0.02


def test_a_sample_against_itself() -> None:
    a = lognormal(11, 10, 100.0, 0.01)
    c = verdict.compare_metric(a, a)
    assert c.ratio == 1.0 and c.p_value == 1.0 and c.p_rank == 1.0
    assert not c.significant and c.verdict == "no change" and c.reason == ""
    noisy = lognormal(11, 10, 100.0, 0.10)
    c = verdict.compare_metric(noisy, noisy)
    # too noisy to bound the change within ±2 %: nothing significant, but no "no change"
    assert c.ratio == 1.0 and not c.significant and c.verdict == "inconclusive"
    assert "not significant" in c.reason


def test_three_repetitions_25_percent_higher_are_significant_on_every_metric() -> None:
    names = ["rtt_us", "user_to_kernel_us", "queue_us", "processing_us", "kernel_to_user_us"]
    a = {name: lognormal(i, 3, 10.0 * (i + 1), 0.03) for i, name in enumerate(names)}
    scaled = verdict.compare_metrics(a, {name: v * 1.25 for name, v in a.items()})
    for seed in range(10):  # independent noise on B too
        b = {name: lognormal(100 + 10 * seed + i, 3, 12.5 * (i + 1), 0.03)
             for i, name in enumerate(names)}
        drawn = verdict.compare_metrics(a, b, options=FAST)
        assert [c.verdict for c in drawn.values()] == ["slower"] * 5, drawn
    for c in scaled.values():
        assert c.significant and c.verdict == "slower" and c.p_holm is not None
        assert c.ci is not None and c.ci[0] <= 1.25 <= c.ci[1]
        assert c.ratio == pytest.approx(1.25)
        assert c.p_rank == pytest.approx(0.1)  # why the rank test cannot decide at n = 3
    assert list(scaled) == names


def test_rank_test_can_be_chosen_and_is_the_fallback_without_logs() -> None:
    a, b = lognormal(1, 3, 10.0, 0.03), lognormal(2, 3, 12.5, 0.03)
    c = verdict.compare_metric(a, b, options=CompareOptions(test="mannwhitney"))
    assert c.test == "mannwhitney" and c.p_value == pytest.approx(0.1)
    assert c.verdict == "inconclusive" and "not significant" in c.reason
    assert c.reason.endswith("; mannwhitney cannot go below p = 0.1 with 3 and 3 repetitions")
    zeros = verdict.compare_metric([0.0, 0.0, 0.0], [0.0, 1.0, 2.0], metric="queue_us")
    assert zeros.test == "mannwhitney" and zeros.ratio is None and zeros.ci is None
    assert zeros.verdict == "inconclusive" and "baseline" in zeros.reason


def test_one_repetition_comparison_is_inconclusive() -> None:
    c = verdict.compare_metric([10.0], [12.0, 12.1, 12.2])
    assert c.ci is None and c.p_value is None and c.p_holm is None and c.test == "none"
    assert c.verdict == "inconclusive" and "no CI" in c.reason
    # the ratio of geometric means (the default statistic), not of medians (12.1 / 10)
    assert c.ratio == pytest.approx((12.0 * 12.1 * 12.2) ** (1 / 3) / 10.0, rel=1e-12)
    assert not c.significant


def test_holm_against_a_hand_computed_example() -> None:
    # sorted: 0.005×4 = 0.02, 0.01×3 = 0.03, 0.03×2 = 0.06, 0.04×1 = 0.04 → running max 0.06
    assert verdict.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert verdict.holm([0.02, None, 0.04]) == pytest.approx([0.04, None, 0.04])  # m = 2
    assert verdict.holm([0.6, 0.7]) == [1.0, 1.0]
    assert verdict.holm([]) == []


def test_holm_family_turns_a_lone_success_inconclusive() -> None:
    a, b = lognormal(1, 10, 100.0, 0.03), lognormal(2, 10, 120.0, 0.03)
    alone = verdict.compare_metric(a, b)
    assert alone.verdict == "slower" and alone.p_holm == alone.p_value
    family = verdict.holm_adjust({"x": replace(alone, p_value=0.03),
                                "y": replace(alone, p_value=0.04)})
    assert family["x"].p_holm == pytest.approx(0.06)
    assert [c.verdict for c in family.values()] == ["inconclusive"] * 2
    assert "outside 1 ± 0.02 but not significant" in family["x"].reason


def test_compare_metrics_uses_the_metrics_both_sides_have() -> None:
    a = {"rtt_us": [1.0, 1.1, 1.2], "only_a": [1.0, 2.0]}
    b = {"rtt_us": [1.0, 1.1, 1.2], "only_b": [1.0, 2.0]}
    assert list(verdict.compare_metrics(a, b)) == ["rtt_us"]


# --------------------------------------------------------------------------- paired (rounds)


def drifting(seed: int, rounds: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """A and B measured round by round in one boot: a drift of σ 30 % shared by both sides of
    a round, 1 % noise of their own, B `factor` × A."""
    rng = np.random.default_rng(seed)
    drift = np.exp(rng.normal(0.0, 0.30, rounds))
    a = 100.0 * drift * np.exp(rng.normal(0.0, 0.01, rounds))
    b = 100.0 * factor * drift * np.exp(rng.normal(0.0, 0.01, rounds))
    return a, b


@pytest.mark.filterwarnings("error")
def test_a_noisy_sample_against_itself_paired_is_exactly_no_change() -> None:
    noisy = lognormal(11, 10, 100.0, 0.30)
    c = verdict.compare_metric(noisy, noisy, paired=True)
    assert (c.ratio, c.ci, c.p_value, c.p_rank, c.p_holm) == (1.0, (1.0, 1.0), 1.0, 1.0, 1.0)
    assert c.paired and c.test == "paired-t-log" and c.reason == ""
    assert not c.significant and c.verdict == "no change"
    # unpaired, the same numbers are only "inconclusive": the CI spans the repetitions' spread
    assert verdict.compare_metric(noisy, noisy).verdict == "inconclusive"
    # no log (a zero) and a median of 0: still the same measurements, still exactly 1
    zeros = verdict.compare_metric([0.0, 0.0, 3.0], [0.0, 0.0, 3.0], paired=True)
    assert (zeros.ratio, zeros.ci, zeros.test, zeros.verdict) == (1.0, (1.0, 1.0), "wilcoxon",
                                                                 "no change")


def test_a_25_percent_shift_under_drift_is_found_only_when_paired() -> None:
    a, b = drifting(1, 5, 1.25)
    paired = verdict.compare_metric(a, b, paired=True)
    unpaired = verdict.compare_metric(a, b)
    assert paired.paired and paired.test == "paired-t-log"
    assert paired.significant and paired.verdict == "slower" and paired.p_value < 1e-4
    assert paired.ci is not None and paired.ci[0] <= 1.25 <= paired.ci[1]
    assert paired.ci[1] - paired.ci[0] < 0.1
    assert not unpaired.paired and unpaired.test == "welch-log"
    assert not unpaired.significant and unpaired.verdict == "inconclusive"
    # unpaired, the drift counts as noise: Welch's interval on logs, written out by hand
    la, lb = np.log(a), np.log(b)
    va, vb = la.var(ddof=1) / 5, lb.var(ddof=1) / 5
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 4)
    reach = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    centre = lb.mean() - la.mean()
    assert unpaired.ci == pytest.approx((math.exp(centre - reach), math.exp(centre + reach)))
    assert unpaired.ci[0] < 1.0 < 1.25 < unpaired.ci[1]  # the shift is hidden
    # over many boots: paired always "slower" and its CI covers 1.25 at the nominal 95 %
    # (tests/test_coverage.py; 100 draws: binomial sd 2.2 %)
    draws = [drifting(seed, 5, 1.25) for seed in range(100)]
    found = [verdict.compare_metric(a, b, paired=True, options=FAST) for a, b in draws]
    assert all(c.verdict == "slower" for c in found)
    assert np.mean([c.ci[0] <= 1.25 <= c.ci[1] for c in found]) >= 0.88
    # unpaired, A and B share one drift vector (σ 30 %), so their difference of mean logs is
    # log 1.25 to within the 1 % noise, but Welch takes se = √(2/5)·s, s the drift's sample
    # sd (df ≈ 8). "slower" needs the CI's low end past 1.02: s < log(1.25 / 1.02) /
    # (t(0.975, 8)·√(2/5)), and 4 s² / σ² is χ²(4): ≈ 7 % of boots
    s_max = math.log(1.25 / 1.02) / (sps.t.ppf(0.975, 8) * math.sqrt(2 / 5))
    expected = float(sps.chi2.cdf(4 * (s_max / 0.30) ** 2, 4))
    assert expected == pytest.approx(0.07, abs=0.01)
    blind = [verdict.compare_metric(a, b, options=FAST).verdict for a, b in draws]
    assert abs(blind.count("slower") - 100 * expected) <= 3 * math.sqrt(
        100 * expected * (1 - expected))  # within 3 binomial sd
    assert "faster" not in blind


def test_paired_no_shift_is_rarely_significant() -> None:
    results = [verdict.compare_metric(*drifting(seed, 5, 1.0), paired=True, options=FAST)
               for seed in range(200)]
    # the paired t's false-positive rate is its nominal 5 % (200 draws: sd 1.5 %) ...
    assert np.mean([c.p_value < 0.05 for c in results]) <= 0.09
    # ... and a verdict also needs the CI past ±2 %: with 1 % noise a side, se of the mean log
    # ratio ≈ √2 · 1 % / √5 ≈ 0.63 %, the CI's reach ≈ 2.78 · 0.63 % ≈ 1.8 %: never past
    assert not any(c.significant for c in results)
    assert {c.verdict for c in results} <= {"no change", "inconclusive"}


@pytest.mark.filterwarnings("error")
def test_paired_tests_exact_values_and_degenerate_cases() -> None:
    a = np.array([10.0, 20.0, 40.0])
    same_ratio = verdict.compare_metric(a, a * 1.25, paired=True)
    assert same_ratio.p_value == 0.0 and same_ratio.verdict == "slower"  # certain: no spread
    assert same_ratio.ci == pytest.approx((1.25, 1.25))
    # Wilcoxon's signed-rank floor 2 / 2^n: it cannot decide at 3 rounds, it can at 6
    assert same_ratio.p_rank == pytest.approx(0.25)
    six = np.array([10.0, 20.0, 40.0, 15.0, 25.0, 30.0])
    ranked = verdict.compare_metric(six, six * [1.1, 1.2, 1.3, 1.4, 1.5, 1.6], paired=True,
                                  options=CompareOptions(test="mannwhitney"))
    assert ranked.test == "wilcoxon" and ranked.p_value == pytest.approx(2 / 2**6)
    assert ranked.significant and ranked.verdict == "slower"
    floor = verdict.compare_metric(a, a * 1.25, paired=True,
                                 options=CompareOptions(test="mannwhitney"))
    assert floor.verdict == "inconclusive" and floor.p_value == pytest.approx(0.25)
    assert floor.reason.endswith("; wilcoxon cannot go below p = 0.25 with 3 and 3 repetitions")
    # a zero: no logs, differences B - A = (0.5, -0.5, 1, 2) by hand: ranks 1.5, 1.5, 3, 4,
    # T+ = 8.5; of the 2^4 sign patterns |T+ - 5| ≥ 3.5 for T+ ∈ {0, 1.5, 1.5, 8.5, 8.5, 10}
    tied = verdict.compare_metric([0.0, 1.0, 1.0, 1.0], [0.5, 0.5, 2.0, 3.0], paired=True)
    assert tied.test == "wilcoxon" and tied.p_value == tied.p_rank == pytest.approx(6 / 16)
    one = verdict.compare_metric([10.0], [12.0], paired=True)
    assert one.ci is None and one.p_value is None and one.test == "none"
    assert one.verdict == "inconclusive" and "one repetition" in one.reason and one.paired
    with pytest.raises(ValueError, match="one value per round"):
        verdict.compare_metric([1.0, 2.0], [1.0, 2.0, 3.0], paired=True)
    without_logs = verdict.compare_metric([0.0, 1.0, 2.0], [0.5, 1.5, 2.5], paired=True)
    assert without_logs.test == "wilcoxon" and without_logs.ci is None
    assert without_logs.p_value == pytest.approx(0.25)


def test_compare_metrics_pairs_the_metrics_it_is_told() -> None:
    a, b = drifting(3, 5, 1.25)
    both = verdict.compare_metrics({"x": a, "y": a}, {"x": b, "y": b}, paired=["x"])
    assert both["x"].paired and both["x"].verdict == "slower"
    assert not both["y"].paired and both["y"].verdict == "inconclusive"


# --------------------------------------------------------------------------- counts


def test_poisson_ci_known_values() -> None:
    assert verdict.poisson_ci(0) == pytest.approx((0.0, 3.689), abs=5e-4)
    assert verdict.poisson_ci(10) == pytest.approx((4.795, 18.39), abs=5e-3)
    assert verdict.poisson_ci(1) == pytest.approx((0.0253, 5.572), abs=5e-4)
    assert verdict.poisson_ci(10, exposure=1000.0) == pytest.approx((0.004795, 0.01839), rel=1e-3)


def binomial_tail(k: int, n: int, at_least: bool) -> float:
    terms = range(k, n + 1) if at_least else range(k + 1)
    return sum(math.comb(n, i) for i in terms) / 2**n


def test_compare_counts_exact_test_and_ci() -> None:
    c = verdict.compare_counts(10, 1e6, 30, 1e6, metric="lost")
    assert c.p_value == pytest.approx(2 * binomial_tail(30, 40, at_least=True))
    assert c.ratio == pytest.approx(3.0) and c.verdict == "slower"
    assert (c.estimate_a, c.estimate_b, c.n_a, c.n_b) == (1e-5, 3e-5, 10, 30)
    # Clopper-Pearson ends: the tail beyond 30 of 40 at the end's share is exactly 2.5 %
    assert c.ci is not None
    for ratio, at_least in ((c.ci[0], True), (c.ci[1], False)):
        share = ratio / (1 + ratio)
        tail = sum(math.comb(40, i) * share**i * (1 - share) ** (40 - i)
                   for i in (range(30, 41) if at_least else range(31)))
        assert tail == pytest.approx(0.025, rel=1e-6)
    assert verdict.compare_counts(30, 1e6, 10, 1e6).verdict == "faster"


def test_compare_counts_edge_cases() -> None:
    same = verdict.compare_counts(10, 1000.0, 20, 2000.0)
    assert same.ratio == pytest.approx(1.0) and same.p_value == pytest.approx(1.0)
    assert same.verdict == "inconclusive"
    none = verdict.compare_counts(0, 1e6, 0, 1e6)
    assert none.verdict == "no change" and none.ratio is None and none.p_value is None
    new = verdict.compare_counts(0, 1e6, 20, 1e6)
    assert new.ratio is None and new.ci is not None and new.ci[1] == math.inf
    assert new.verdict == "slower"
    assert new.as_dict()["ci"][1] is None


def test_results_are_json_serialisable() -> None:
    items = [stats.summarize([1.0, 2.0, 3.0]).as_dict(), stats.summarize([1.0]).as_dict(),
             verdict.compare_metric([1.0, 1.1], [1.2, 1.3]).as_dict(),
             verdict.compare_counts(0, 10.0, 5, 10.0).as_dict()]
    round_trip = json.loads(json.dumps(items, allow_nan=False))
    assert round_trip[0]["ci"] == list(stats.summarize([1.0, 2.0, 3.0]).ci or [])
    assert round_trip[2]["verdict"] in ("faster", "slower", "no change", "inconclusive")
    assert set(round_trip[2]) >= {"ratio", "ci", "p_value", "p_holm", "significant",
                                  "verdict", "n_a", "n_b", "reason", "paired"}


def test_the_rank_cross_check_is_reported_and_never_vetoes() -> None:
    # 8 rounds, log ratios 0.28 … 0.32 in five and -0.01, -0.02, -0.03 in three: mean 0.18,
    # sd 0.163, t = 3.1 with 7 df (p ≈ 0.018), CI exp(0.18 ± 2.365 · 0.0577) = [1.04, 1.38]:
    # past ±2 %, so "slower". Wilcoxon: the negatives hold ranks 1, 2, 3, T- = 6; of the 2^8
    # sign patterns 14 have a rank sum ≤ 6 (1+1+1+2+2+3+4 for sums 0…6), so p = 2 · 14 / 256
    # = 0.109 — it could have reached 0.05 at 8 pairs (floor 2/256), did not, and says so
    d = np.array([0.28, 0.29, 0.30, 0.31, 0.32, -0.01, -0.02, -0.03])
    a = np.array([100.0, 110.0, 90.0, 105.0, 95.0, 120.0, 80.0, 100.0])
    c = verdict.compare_metric(a, a * np.exp(d), paired=True)
    assert c.p_value == pytest.approx(2 * sps.t.sf(d.mean() / (d.std(ddof=1) / math.sqrt(8)), 7))
    assert c.ci == pytest.approx(tuple(np.exp(d.mean() + np.array([-1, 1]) * sps.t.ppf(
        0.975, 7) * d.std(ddof=1) / math.sqrt(8))))
    assert c.significant and c.verdict == "slower"
    assert c.p_rank == pytest.approx(28 / 256)
    assert c.reason == "the rank cross-check (wilcoxon) disagrees: p_rank=0.109"
    # at 3 rounds it could never reach 0.05 (floor 0.25): no note, however it comes out
    three = verdict.compare_metric(a[:3], a[:3] * 1.25 * np.exp(d[5:]), paired=True)
    assert three.verdict == "slower" and three.p_rank == pytest.approx(0.25)
    assert three.reason == ""


def test_a_tiny_but_certain_difference_is_not_significant() -> None:
    # paired log ratios 0.019, 0.020, 0.021 (about 2 %): t = 0.02 / (0.001 / √3) = 34.6 with
    # 2 df, p ≈ 0.0008; the CI exp(0.02 ± 4.303 · 0.000577) = [1.0177, 1.0227] straddles
    # 1.02: the test passes, the CI reaches into the band, so neither a verdict nor
    # "significant" — the reason gives the p
    a = np.array([100.0, 130.0, 80.0])
    c = verdict.compare_metric(a, a * np.exp([0.019, 0.020, 0.021]), paired=True)
    p = 2 * sps.t.sf(0.02 / (0.001 / math.sqrt(3)), 2)
    assert c.p_holm == pytest.approx(p) and p == pytest.approx(0.0008, abs=1e-4)
    assert c.ci == pytest.approx((1.0177, 1.0227), abs=1e-4)
    assert not c.significant and c.verdict == "inconclusive"
    assert c.reason == f"p_holm={p:.3g} < 0.05 but the CI [1.018, 1.023] reaches into 1 ± 0.02"
