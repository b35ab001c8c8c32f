"""The analysis of a run directory, on synthetic runs whose distributions are known
(tests/synthetic_runs.py) and on a real summary (tests/data/summary-c7cf7ae.json)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from nlperf import analysis, results, stats, verdict
from tests.synthetic_runs import Spec, processing_models, write_run

FIXTURE = Path(__file__).resolve().parent / "data" / "summary-c7cf7ae.json"


def fixture_run(tmp_path: Path) -> Path:
    run = tmp_path / "c7cf7ae"
    run.mkdir(parents=True)
    shutil.copy(FIXTURE, run / results.SUMMARY)
    return run


def test_known_percentiles_are_recovered(tmp_path: Path) -> None:
    # log-normal messages: p = median · exp(σ z_p); no shift between repetitions
    spec = Spec("mode=callback", {"module.mode": "callback"}, median_us=100.0, sigma=0.25,
                reps=5, rep_noise=0.0, messages=20_000)
    case = analysis.analyze(write_run(tmp_path, "known", [spec])).cases[0]
    p50, p99 = case.values["rtt_p50_us"].summary, case.values["rtt_p99_us"].summary
    assert p50.n == 5 and p50.ci is not None
    assert p50.estimate == pytest.approx(100.0, rel=0.01)
    assert p50.ci[0] <= 100.0 <= p50.ci[1]
    assert p99.estimate == pytest.approx(100.0 * math.exp(0.25 * norm.ppf(0.99)), rel=0.02)
    # the stamp parts are 15 / 10 / 5 / 70 % of each round trip
    for key, share in (("user_to_kernel_p50_us", 15.0), ("queue_p50_us", 10.0),
                       ("processing_p50_us", 5.0), ("kernel_to_user_p50_us", 70.0)):
        assert case.values[key].summary.estimate == pytest.approx(share, rel=0.01), key
    # closed loop: throughput = 1 / mean round trip, mean = median · exp(σ²/2)
    mean_us = 100.0 * math.exp(0.25**2 / 2)
    assert case.values["throughput_per_s"].summary.estimate == pytest.approx(1e6 / mean_us,
                                                                             rel=0.01)
    # probe-measured, in the probed pass (5 % slower): netlink_unicast took 1/20 of a round trip
    assert case.values["netlink_unicast_p50_us"].summary.estimate == pytest.approx(
        100.0 * spec.probe_cost / 20, rel=0.02)
    assert "kthread_wakeup_p50_us" not in case.values


def test_estimates_are_stats_summaries_of_the_per_repetition_values(tmp_path: Path) -> None:
    spec = Spec("mode=callback", {"module.mode": "callback"}, reps=4, rep_noise=0.05)
    run_dir = write_run(tmp_path, "ref", [spec])
    case = analysis.analyze(run_dir).cases[0]
    written = results.read_summary(run_dir).cases[0]
    assert written.control is not None
    p50s = [r.unicast.rtt_us.p50 for r in written.control.repetitions]  # type: ignore[union-attr]
    assert case.workload_pass == "control"
    assert case.values["rtt_p50_us"].values == tuple(p50s)
    assert case.values["rtt_p50_us"].summary == stats.summarize(p50s)
    probed = [r.probes.netlink_unicast["latency_ns"]["p50"] / 1000  # type: ignore[union-attr]
              for r in written.repetitions]
    assert case.values["netlink_unicast_p50_us"].values == pytest.approx(probed)


def test_one_repetition_has_no_ci(tmp_path: Path) -> None:
    spec = Spec("mode=callback", {"module.mode": "callback"}, reps=1)
    case = analysis.analyze(write_run(tmp_path, "one", [spec])).cases[0]
    s = case.values["rtt_p50_us"].summary
    assert s.n == 1 and s.ci is None and s.ci_reason.startswith("no CI")
    assert case.repetitions == 1


def test_counts_get_exact_poisson_cis(tmp_path: Path) -> None:
    spec = Spec("mode=callback,traffic=multicast", {"traffic": "multicast"},
                traffic="multicast", reps=3, loss={"r0.0": 0.3, "r1.0": 0.0},
                switches_per_msg=0.5)
    run_dir = write_run(tmp_path, "counts", [spec])
    case = analysis.analyze(run_dir).cases[0]
    reps = results.read_summary(run_dir).cases[0].control.repetitions  # type: ignore[union-attr]
    lost = case.counts["mc_lost[r0.0]"]
    assert lost.events == sum(r.multicast.receivers[0].lost for r in reps)  # type: ignore[union-attr]
    assert lost.exposure == 3 * spec.messages
    assert lost.ci == verdict.poisson_ci(lost.events, exposure=lost.exposure)
    assert lost.ci[0] < 0.3 < lost.ci[1]
    none = case.counts["mc_lost[r1.0]"]
    assert none.events == 0 and none.ci[0] == 0.0
    assert none.ci[1] == pytest.approx(-math.log(0.025) / none.exposure)  # exact: 3.689 / n
    assert case.counts["mc_sk_drops[r0.0]"].events == lost.events
    everyone = case.counts["mc_loss"]
    assert everyone.events == lost.events and everyone.exposure == 2 * lost.exposure
    switches = case.counts["ctx_switches_per_msg"]  # Poisson draws, mean 0.5 a message
    assert switches.ci == verdict.poisson_ci(switches.events, exposure=3 * spec.messages)
    assert switches.rate == pytest.approx(0.5, rel=0.05)
    assert case.values["mc_latency_p50_us[r1.0]"].summary.estimate == pytest.approx(100, rel=0.02)


def test_observer_effect_is_probed_against_control_with_a_warning_past_10_percent(
        tmp_path: Path) -> None:
    costly = Spec("mode=callback", {"module.mode": "callback"}, probe_cost=1.2, reps=5, seed=1)
    cheap = Spec("mode=kthread", {"module.mode": "kthread"}, probe_cost=1.05, reps=5, seed=2)
    run_dir = write_run(tmp_path, "observer", [costly, cheap])
    run = analysis.analyze(run_dir)
    effect = run.cases[0].observer
    assert effect is not None
    p50 = effect.comparisons["rtt_p50_us"]
    assert p50.ratio == pytest.approx(1.2, rel=0.02) and p50.verdict == "slower"
    assert p50.ci is not None and p50.ci[0] <= 1.2 <= p50.ci[1]
    assert effect.comparisons["throughput_per_s"].verdict == "slower"  # fewer messages/s
    # the warning quotes the ratio of geometric means, probed ÷ probes-off, of the p50s written
    written = results.read_summary(run_dir).cases[0]
    assert written.control is not None
    probed, control = (np.log([r.unicast.rtt_us.p50 for r in reps])  # type: ignore[union-attr]
                       for reps in (written.repetitions, written.control.repetitions))
    ratio = math.exp(probed.mean() - control.mean())
    assert p50.ratio == pytest.approx(ratio, rel=1e-12)
    assert f"probes moved round trip p50 by {100 * (ratio - 1):+.0f} % (probed ÷ probes-off)" \
        in effect.warnings()
    assert run.cases[1].observer is not None and run.cases[1].observer.warnings() == []


def test_the_probed_pass_measures_when_the_control_pass_stopped_short(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "short", [Spec("mode=callback", {"module.mode": "callback"},
                                                  reps=3)])
    summary = results.read_summary(run_dir)
    case = summary.cases[0]
    assert case.control is not None
    case.control.repetitions = case.control.repetitions[:1]  # interrupted after one
    got = analysis.analyze_case(case)
    assert got.workload_pass == "probed" and got.values["rtt_p50_us"].summary.n == 3
    assert analysis.analyze_case(summary.cases[0].model_copy(update={"control": None})
                                 ).workload_pass == "probed"


def test_labels_name_the_varying_matrix_values(tmp_path: Path) -> None:
    run = analysis.analyze(write_run(tmp_path, "pm", processing_models(reps=2),
                                     samples=False, histograms=False))
    cases = [c.case for c in run.cases]
    assert analysis.varying_keys(cases) == ["module.mode", "traffic"]
    assert [c.label for c in run.cases][:2] == ["callback · unicast", "callback · multicast"]
    assert run.samples is None and run.histograms is None and run.notes == []
    kthread = run.case("mode=kthread,traffic=unicast")
    assert kthread is not None and "kthread_wakeup_p50_us" in kthread.values
    assert kthread.values["kthread_wakeup_p50_us"].summary.estimate == pytest.approx(30, rel=0.1)
    assert "send_syscall_p50_us" in kthread.values


def test_unreadable_optional_files_become_notes(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "torn", [Spec("mode=callback", {"module.mode": "callback"},
                                                 reps=2)])
    (run_dir / analysis.SAMPLES).write_bytes(b"PAR1 torn")
    (run_dir / results.ENV).write_text('{"kernel": 1}')
    (run_dir / results.PROBE_HISTOGRAMS).write_text("[")
    run = analysis.analyze(run_dir)
    assert run.samples is None and run.env is None and run.histograms is None
    assert len(run.notes) == 3 and any("samples.parquet unreadable" in n for n in run.notes)
    assert run.cases[0].values["rtt_p50_us"].summary.n == 2  # the summary still speaks


def test_a_summary_written_by_earlier_code(tmp_path: Path) -> None:
    run = analysis.analyze(fixture_run(tmp_path))
    unicast, multicast = run.cases
    assert [c.label for c in run.cases] == ["unicast", "multicast"]
    assert unicast.workload_pass == "control"  # its probes-off pass measured the workload
    assert unicast.values["rtt_p50_us"].summary.estimate == pytest.approx(
        math.sqrt(117.615 * 120.534))  # the geometric mean of the two repetitions
    assert unicast.counts["ctx_switches_per_msg"].events == 0
    assert multicast.counts["mc_lost[r0.0]"].events == 767 * 2
    assert set(multicast.observer.comparisons) == {  # type: ignore[union-attr]
        "mc_latency_p50_us", "mc_latency_p99_us"}
    assert "netlink_unicast_p50_us" in unicast.values  # the probed pass


def test_relays_refused_are_a_headline_count_out_of_those_requested() -> None:
    from nlperf import catalog
    from nlperf.models import Multicast, Repetition

    def rep(source: str, **relay: int) -> Repetition:
        return Repetition(index=0, duration_s=1.0, multicast=Multicast(
            source=source, sent_by_group={"1": 94}, receivers=[], **relay))

    metric, count = catalog.counts_of(rep("relay", relay_requested=101, relay_errors=7))[
        "relay_refused"]
    assert count == (7, 101) and metric.headline and metric.unit == "of requested"
    assert "relay_refused" not in catalog.counts_of(rep("generator"))
