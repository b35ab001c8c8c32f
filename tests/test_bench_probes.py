"""The probe-cost table: costs relative to the no-probes run, targets judged on the cost."""

from nlperf.bench_probes import report


def test_costs_are_relative_to_no_probes_and_targets_are_judged() -> None:
    lines = report({"none": 10_000.0, "only unicast": 10_500.0, "counters-only": 10_400.0,
                    "full": 10_900.0}, {"nlperf_process": "raw_tracepoint"})
    rows = {ln.split("|")[0].strip(): ln for ln in lines[2:]}
    assert "+5.0%" in rows["only unicast"]
    assert "+4.0%" in rows["counters-only"] and "target ≤ +3%: NOT met" in rows["counters-only"]
    assert "+9.0%" in rows["full"] and "target ≤ +10%: met" in rows["full"]
    assert "+0.0%" in rows["none"] and "target" not in rows["none"]
    assert "nlperf_process raw_tracepoint" in lines[0]
