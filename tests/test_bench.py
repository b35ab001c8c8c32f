"""make bench's verdict on the Python timed closed loop (issue #12: <= 1.5x C, moonshot 1.3x)."""

from __future__ import annotations

from nlperf.bench import timed_verdict


def test_the_verdict_is_the_median_of_the_rounds_ratios_against_the_target() -> None:
    assert timed_verdict([1.42, 2.0, 1.1]) == (
        "Python timed 1.42x C (target <= 1.5x: met; moonshot <= 1.3x missed)")
    assert timed_verdict([1.5]) == (
        "Python timed 1.50x C (target <= 1.5x: met; moonshot <= 1.3x missed)")
    assert timed_verdict([1.25, 1.3, 1.9]) == (
        "Python timed 1.30x C (target <= 1.5x: met, and the moonshot <= 1.3x too)")
    assert timed_verdict([1.8]) == "Python timed 1.80x C (target <= 1.5x: missed by 20 %)"
