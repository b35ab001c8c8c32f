"""make bench's verdicts (issue #12): the Python timed closed loop (<= 1.5x C, moonshot 1.3x) and
batched throughput (>= the C client's single-message throughput)."""

from __future__ import annotations

from nlperf.bench import batched_verdict, timed_verdict


def test_the_verdict_is_the_median_of_the_rounds_ratios_against_the_target() -> None:
    assert timed_verdict([1.42, 2.0, 1.1]) == (
        "Python timed 1.42x C (target <= 1.5x: met; moonshot <= 1.3x missed)")
    assert timed_verdict([1.5]) == (
        "Python timed 1.50x C (target <= 1.5x: met; moonshot <= 1.3x missed)")
    assert timed_verdict([1.25, 1.3, 1.9]) == (
        "Python timed 1.30x C (target <= 1.5x: met, and the moonshot <= 1.3x too)")
    assert timed_verdict([1.8]) == "Python timed 1.80x C (target <= 1.5x: missed by 20 %)"


def test_the_batched_verdict_holds_the_ratio_against_one_times_c() -> None:
    assert batched_verdict(1.67, 32) == (
        "Python batched 1.67x C single-message (batch 32, coalesced; target >= 1x: met)")
    assert batched_verdict(1.0, 32).endswith("target >= 1x: met)")
    assert batched_verdict(0.61, 8).endswith("(batch 8, coalesced; target >= 1x: missed by 39 %)")
