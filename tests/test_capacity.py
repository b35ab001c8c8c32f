"""The capacity knee search without a kernel: a fake loss function with a known knee, the
scenario's capacity section, and the block in the results contract (issue #11)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from nlperf import capacity, models, results, scenario
from nlperf.errors import BadInput

BASE = {"name": "cap", "multicast": {"source": "generator", "count": 10}}


class _All(set):
    def __contains__(self, _item: object) -> bool:
        return True

    def __bool__(self) -> bool:
        return True


ALWAYS = _All()


def _fake(knee: float, flaky: set[float] | None = None) -> tuple[capacity.Probe, list]:
    """Loses (rate − knee) messages above ``knee``; a rate in ``flaky`` loses on confirmation."""
    calls: list[tuple[float, bool]] = []

    def probe(rate: float, confirm: bool) -> models.CapacityPoint:
        calls.append((rate, confirm))
        lost = max(0, math.ceil(rate - knee))
        if confirm and flaky and rate in flaky:
            lost = 1
        return models.CapacityPoint(rate_per_s=rate, sent=1000, received=1000 - min(lost, 1000),
                                    lost=min(lost, 1000), sk_drops=min(lost, 1000), enobufs=0,
                                    loss_fraction=min(lost, 1000) / 1000, confirm=confirm)
    return probe, calls


@pytest.mark.parametrize("knee", [1500.0, 7000.0, 12345.0, 150000.0, 199000.0])
def test_the_search_finds_the_knee_within_the_resolution(knee: float) -> None:
    probe, calls = _fake(knee)
    got = capacity.find_knee(probe, 1000, 200000, 1.1, 64, confirm=2)
    assert got.knee is not None and got.failed_at is not None and got.confirmed
    assert got.outcome == ("loss" if got.failed_at else "rates")
    assert got.knee <= knee < got.failed_at  # brackets the true knee, which monotony allows
    assert got.failed_at / got.knee < 1.1
    # lo, hi, the midpoints, then exactly two confirmations, all at the knee
    assert calls[:2] == [(1000, False), (200000, False)]
    assert [c for c in calls if c[1]] == [(got.knee, True), (got.knee, True)]
    assert calls[-2:] == [(got.knee, True), (got.knee, True)]
    assert len(got.points) == len(calls)


def test_the_search_stops_after_max_steps() -> None:
    probe, calls = _fake(7000.0)
    got = capacity.find_knee(probe, 1000, 200000, 1.01, 3, confirm=0)
    assert len(calls) == 2 + 3  # lo, hi, three midpoints; no confirmation asked
    assert got.knee is not None and got.failed_at is not None
    assert got.knee <= 7000 < got.failed_at
    assert got.failed_at / got.knee > 1.01


def test_no_knee_when_the_lowest_rate_loses_and_hi_when_nothing_loses() -> None:
    probe, calls = _fake(500.0)
    got = capacity.find_knee(probe, 1000, 200000, 1.1, 8, confirm=2)
    assert (got.knee, got.failed_at, got.confirmed, calls) == (None, 1000, False,
                                                               [(1000, False)])
    probe, calls = _fake(1e9)
    got = capacity.find_knee(probe, 1000, 200000, 1.1, 8, confirm=2)
    assert (got.knee, got.failed_at, got.confirmed, got.outcome) == (200000, None, True,
                                                                     "rates")
    assert calls == [(1000, False), (200000, False), (200000, True), (200000, True)]


def test_a_knee_that_loses_on_confirmation_is_rejected_and_the_search_goes_on() -> None:
    probe, _ = _fake(7000.0)
    first = capacity.find_knee(probe, 1000, 200000, 1.1, 64, confirm=1)
    assert first.knee is not None and first.outcome == "loss"
    probe, calls = _fake(7000.0, flaky={first.knee})
    got = capacity.find_knee(probe, 1000, 200000, 1.1, 64, confirm=1)
    # the refuted knee caps the bracket; bisection resumes below it and confirms a new knee
    assert got.failed_at == first.knee and got.confirmed and got.outcome == "loss"
    assert got.knee is not None and got.knee < first.knee and first.knee / got.knee < 1.1
    assert [c for c in calls if c[1]] == [(first.knee, True), (got.knee, True)]


def test_every_knee_failing_its_confirmation_leaves_no_knee() -> None:
    probe, _ = _fake(1e9, flaky=ALWAYS)
    got = capacity.find_knee(probe, 1000, 200000, 1.1, 2, confirm=1)
    assert (got.knee, got.failed_at, got.confirmed, got.outcome) == (None, 1000, False,
                                                                     "no_knee")


def _generator(knee: float, reach: list[float]) -> tuple[capacity.Probe, list]:
    """A generator that achieves min(asked, the next of ``reach``) and a receiver that loses
    whatever is sent faster than ``knee`` (the 6.12 series of docs/scenarios.md)."""
    calls: list[tuple[float, bool, float]] = []
    reaches = iter(reach)

    def probe(rate: float, confirm: bool) -> models.CapacityPoint:
        achieved = min(rate, next(reaches))
        calls.append((rate, confirm, achieved))
        lost = 852 if achieved > knee else 0
        return models.CapacityPoint(rate_per_s=rate, achieved_per_s=achieved, sent=4001,
                                    received=4001 - lost, lost=lost, sk_drops=lost, enobufs=0,
                                    loss_fraction=lost / 4001, confirm=confirm)
    return probe, calls


def test_a_short_generator_without_loss_is_a_lower_bound_not_a_fallback() -> None:
    # seen on 6.12 (delay 50 us, rcvbuf 1 MiB): 200 000/s asked achieved 3 888/s without loss;
    # its confirmation achieved 8 353/s and lost 852, and the knee used to fall to 1 000/s
    probe, calls = _generator(5000.0, [1e9, 3888.0, 8353.0, 8353.0, 8353.0])
    got = capacity.find_knee(probe, 1000, 200000, 1.1, 8, confirm=2)
    assert (got.knee, got.failed_at, got.confirmed, got.outcome) == (3888.0, None, True,
                                                                     "generator")
    # the confirmations ask the rate the generator achieved, not 200 000/s again
    assert calls == [(1000, False, 1000), (200000, False, 3888.0), (3888.0, True, 3888.0),
                     (3888.0, True, 3888.0)]


def test_the_bracket_is_on_achieved_rates() -> None:
    # the generator reaches 10 000/s at most; the receiver loses above 7 000/s
    probe, calls = _generator(7000.0, [1e9, 10000.0] + [1e9] * 20)
    got = capacity.find_knee(probe, 1000, 200000, 1.1, 8, confirm=1)
    asked = [c[0] for c in calls if not c[1]]
    good, bad, want = 1000.0, 10000.0, [1000, 200000]
    while bad / good >= 1.1:
        mid = math.sqrt(good * bad)
        want.append(mid)
        good, bad = (good, mid) if mid > 7000 else (mid, bad)
    assert asked == pytest.approx(want)
    assert (got.knee, got.failed_at, got.outcome) == (pytest.approx(good), pytest.approx(bad),
                                                      "loss")
    assert got.knee is not None and got.failed_at is not None
    assert got.knee <= 7000 < got.failed_at and got.failed_at / got.knee < 1.1


def test_a_lossy_run_caps_the_knee_below_a_faster_lossless_one() -> None:
    # asked/achieved inverted: 200 000/s asked achieved 3 000/s and lost (a stall); a later
    # run asked 1 732/s... every candidate must lie below the lowest achieved rate that lost
    probe, _ = _generator(2500.0, [1e9, 3000.0] + [1e9] * 20)
    got = capacity.find_knee(probe, 1000, 200000, 1.1, 8, confirm=1)
    assert got.failed_at is not None and got.knee is not None
    assert got.knee <= 2500 < got.failed_at <= 3000 and got.outcome == "loss"


def test_the_shipped_scenario_and_the_section_defaults() -> None:
    base, cases, _ = scenario.load(Path("scenarios/multicast-capacity.yaml"))
    cap = base.capacity
    assert cap is not None and len(cases) == 1
    # the sweep: several receiver costs and rcvbufs, NETLINK_NO_ENOBUFS against not
    assert len(cap.delay_us) >= 2 and len(cap.rcvbuf) >= 2
    assert sorted(cap.no_enobufs) == [False, True]
    default = scenario.parse({**BASE, "capacity": {}}).capacity
    assert default is not None
    assert (default.resolution, default.max_steps, default.confirm) == (1.1, 8, 2)


@pytest.mark.parametrize(("section", "multicast", "message"), [
    ({"rates": [5000, 1000]}, {}, "capacity: rates: lo (5000) must be below hi (1000)"),
    ({"rates": [1000]}, {}, "capacity.rates: List should have at least 2 items"),
    ({"resolution": 1.0}, {}, "capacity.resolution: Input should be greater than 1"),
    ({"rcvbuf": [512]}, {}, "capacity.rcvbuf.0: Input should be greater than or equal to 1024"),
    ({"delay_us": []}, {}, "capacity.delay_us: List should have at least 1 item"),
    ({"bogus": 1}, {}, "capacity.bogus: unknown key"),
    ({}, {"source": "relay"}, "<top>: capacity needs a multicast section with source "
                              "generator (kernel → user: the sender is not the bottleneck)"),
])
def test_bad_capacity_sections_are_one_line_errors(section: dict, multicast: dict,
                                                   message: str) -> None:
    data = {**BASE, "multicast": {**BASE["multicast"], **multicast}, "capacity": section}
    with pytest.raises(BadInput) as e:
        scenario.parse(data, "f.yaml")
    assert str(e.value).startswith(f"f.yaml: {message}")


def test_capacity_cannot_be_a_matrix_key() -> None:
    with pytest.raises(BadInput, match=r"matrix.capacity.messages: this key cannot vary"):
        scenario.expand({**BASE, "capacity": {}, "matrix": {"capacity.messages": [1, 2]}}, "f")


def test_a_summary_with_a_capacity_block_is_valid_and_prints_its_knees() -> None:
    probe, _ = _fake(7000.0)
    knee = capacity.find_knee(probe, 1000, 200000, 1.1, 8, confirm=1)
    series = models.CapacitySeries(delay_us=50, rcvbuf=65536, no_enobufs=False,
                                   knee_per_s=knee.knee, failed_at_per_s=knee.failed_at,
                                   confirmed=True, points=knee.points)
    ts = [models.Truesize(size=64, queued=65, truesize=768.0, ratio=12.0)]
    cap = scenario.parse({**BASE, "capacity": {"messages": 500}}).capacity
    assert cap is not None
    block = models.Capacity(messages=500, size=64, series=[series], truesize=ts,
                            rules=capacity.rules(cap, 64, [series], ts))
    assert block.rules[0] == capacity.GENERAL_RULE
    assert block.rules[1] == ("64-byte events are charged 768 bytes each (12.00× the payload): "
                              "a burst of 1000 needs sk_rcvbuf >= 768000 bytes")
    assert block.rules[2] == (f"delay_us=50 rcvbuf=65536 no_enobufs=False: zero loss for "
                              f"bursts of 500 × 64 B up to {knee.knee:.0f}/s, loss from "
                              f"{knee.failed_at:.0f}/s")
    summary = results.new_summary("cap", "vm", "tcg", "6.1", None)
    summary.cases = [models.Case(id="default", params={}, repetitions=[], capacity=block)]
    assert results.validation_errors(summary) == []
    lines = capacity.summary_lines("default", block)
    assert lines[1] == f"  delay_us=50     rcvbuf=65536     no_enobufs=False knee={knee.knee:.0f}/s"
    assert lines[2:] == [f"  {block.rules[0]}", f"  {block.rules[1]}"]
    doc = summary.document()
    doc["cases"][0]["capacity"]["series"][0]["points"][0]["extra"] = 1
    assert results.validation_errors(doc)  # closed: unknown keys refused


def test_the_report_has_the_knee_table_the_rule_the_plot_and_every_probe(tmp_path) -> None:
    from nlperf.report import write_report
    from tests.synthetic_runs import processing_models, write_run

    run = write_run(tmp_path, "cap", processing_models(reps=2)[:1])
    summary = results.read_summary(run)
    ts = [models.Truesize(size=64, queued=65, truesize=768.0, ratio=12.0)]
    series = []
    for delay, buf, knee in [(0, 65536, 40000.0), (0, 1048576, 200000.0), (50, 65536, 5000.0)]:
        probe, _ = _fake(knee)
        k = capacity.find_knee(probe, 1000, 200000, 1.1, 8, confirm=1)
        series.append(models.CapacitySeries(delay_us=delay, rcvbuf=buf, no_enobufs=False,
                                            knee_per_s=k.knee, failed_at_per_s=k.failed_at,
                                            confirmed=k.confirmed, points=k.points))
    cap = scenario.parse({**BASE, "capacity": {}}).capacity
    assert cap is not None
    summary.cases[0].capacity = models.Capacity(messages=2000, size=64, series=series,
                                                truesize=ts,
                                                rules=capacity.rules(cap, 64, series, ts))
    results.write_summary(run, summary)
    md = write_report(run).read_text()
    assert "## Multicast capacity" in md
    knee0 = f"{series[0].knee_per_s:,.0f}/s"
    assert f"| 0 | no | {knee0} | 200,000/s |" in md
    assert f"| 50 | no | {series[2].knee_per_s:,.0f}/s | – |" in md
    assert "| 64 | 65 | 768 | 12.00× |" in md
    assert "a burst of 1000 needs sk_rcvbuf >= 768000 bytes" in md
    assert capacity.GENERAL_RULE in md
    assert (run / "fig-capacity-1.png").exists()
    probes = sum(len(s.points) for s in series)
    assert len(re.findall(r"^\| \d+ \| \d+ \| no \| [\d,]+/s", md, re.M)) == probes


def test_a_probe_point_sums_its_receivers_and_says_what_rate_was_achieved() -> None:
    import numpy as np

    from nlperf.measure import RepResult

    def receiver(rid: str, received: int, drops: int | None, enobufs: int) -> models.Receiver:
        return models.Receiver(id=rid, groups=[1], sent=101, received=received,
                               lost=101 - received, enobufs=enobufs, sk_drops=drops,
                               latency_us=models.Latency(count=0, mean=None, p50=None, p90=None,
                                                         p99=None, p999=None, max=None))
    rep = RepResult(models.Repetition(index=0, multicast=models.Multicast(
        sent_by_group={"1": 101}, receivers=[receiver("r0.0", 101, 0, 0),
                                             receiver("r0.1", 61, 40, 2)])),
        send_spacing={1: np.array([100_000, 300_000]), 2: np.array([200_000])})
    p = capacity.point_of(5000.0, rep, confirm=True)
    assert p.document() == {"rate_per_s": 5000.0, "sent": 202, "received": 162, "lost": 40,
                            "sk_drops": 40, "enobufs": 2, "loss_fraction": 40 / 202,
                            "confirm": True, "achieved_per_s": 5000.0}
    assert rep.block.multicast is not None
    rep.block.multicast.receivers[0].sk_drops = None
    rep.send_spacing = {}
    p = capacity.point_of(5000.0, rep, confirm=False)
    assert p.sk_drops is None and "achieved_per_s" not in p.document()


def test_a_sweep_that_is_interrupted_keeps_its_points_and_the_case_is_interrupted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every probe point reaches the result as it is measured (on_change), and Ctrl-C in the
    sweep makes the case interrupted like Ctrl-C in its repetitions."""
    import numpy as np

    from nlperf import cases as cases_mod
    from nlperf.measure import RepResult

    def rep(case: scenario.Case, index: int, *_args: object, **_kw: object) -> RepResult:
        m = case.scenario.active_multicast
        assert m is not None
        if len(probed) == 3:
            raise KeyboardInterrupt
        probed.append(m.rate)
        r = models.Receiver(id="r0.0", groups=[1], sent=11, received=11, lost=0, enobufs=0,
                            sk_drops=0, latency_us=models.Latency(
                                count=0, mean=None, p50=None, p90=None, p99=None, p999=None,
                                max=None))
        block = models.Repetition(index=index, multicast=models.Multicast(
            sent_by_group={"1": 11}, receivers=[r]))
        return RepResult(block, send_spacing={1: np.array([int(1e9 / max(m.rate, 1))])})

    probed: list[float] = []
    monkeypatch.setattr(cases_mod, "run_repetition", lambda *a, **k: rep(*a, **k))
    monkeypatch.setattr(cases_mod, "pool_case", lambda case, reps: models.Blocks())
    monkeypatch.setattr(capacity, "run_repetition", rep)
    monkeypatch.setattr(capacity, "measure_truesize", lambda case, module, size, queued:
                        models.Truesize(size=size, queued=queued + 1, truesize=768.0,
                                        ratio=12.0))
    monkeypatch.setattr(cases_mod.ModuleSlot, "release", lambda self: None)
    _, cases = scenario.expand({**BASE, "traffic": "multicast", "probes": {"enabled": False},
                                "capacity": {"sizes": [64], "confirm": 1}})
    group = models.GroupResult(status=models.Status.running, env=models.Env.model_construct(),
                               cases=[], probe_histograms={})
    saved: list[int] = []

    def on_change(case_id: str) -> None:
        assert case_id == "default"
        cap = group.cases[0].capacity
        assert cap is not None
        saved.append(sum(len(s.points) for s in cap.series))

    with pytest.raises(KeyboardInterrupt):
        cases_mod.run_cases(cases, Path("nlperf.ko"), group, lambda line, table: None,
                            on_change=on_change)
    (case,) = group.cases
    assert case.status is models.Status.interrupted
    assert case.capacity is not None and len(case.capacity.truesize) == 1
    (series,) = case.capacity.series
    assert series.outcome == "unfinished" and series.knee_per_s is None
    # the case's own repetition, then lo and hi of the sweep: both points kept, each saved
    assert probed[1:] == [1000.0, 200000.0]
    assert [p.rate_per_s for p in series.points] == [1000.0, 200000.0]
    assert saved == [0, 0, 1, 2]
