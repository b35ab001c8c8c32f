"""Verdicts between runs and along a matrix key: known shifts are found, no shift is "no
change", and ``nlperf compare`` keeps its contract (formats, exit status 2 on no match).

What nlperf.stats can decide at few repetitions (its docstring): Welch's t on logs reaches
significance at 3 repetitions a side when the spread is small, and its t-interval of the
ratio covers the true ratio at its nominal 95 % (tests/test_coverage.py). A run compared
with itself (or a copy of it) is paired — the same measurements on both sides —: ratio 1,
CI [1, 1], "no change" however noisy it is. Cases of one boot run in rounds are paired too,
so a shift hidden by the drift between rounds is found; different runs, sequential runs and
different boots stay unpaired.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from nlperf import analysis, compare, results
from nlperf.errors import EXIT_BAD_INPUT, BadInput
from tests.synthetic_runs import Spec, processing_models, write_run
from tests.test_analysis import fixture_run
from tests.test_cli import nlperf, run_many

LATENCY_BLOCK = {"count", "mean", "p50", "p90", "p99", "p999", "max"}


def scaled_copy(run_dir: Path, out: Path, factor: float) -> Path:
    """Another run (started an hour later) like this one with every latency block (µs or ns,
    probes included) × factor."""
    def scale(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) >= LATENCY_BLOCK:
                return {k: (v * factor if k != "count" and v is not None else v)
                        for k, v in node.items()}
            return {k: scale(v) for k, v in node.items()}
        if isinstance(node, list):
            return [scale(v) for v in node]
        return node
    out.mkdir()
    doc = scale(results.read_json(run_dir / results.SUMMARY))
    doc["started"] = (dt.datetime.fromisoformat(doc["started"]) + dt.timedelta(hours=1)
                      ).isoformat(timespec="seconds")
    results.write_summary(out, doc)
    return out


def between(*dirs: Path, threshold_pct: float = 2.0) -> compare.RunComparison:
    return compare.between_runs([analysis.analyze(d) for d in dirs],
                                compare.options(threshold_pct))


def one_metric(rc: compare.RunComparison, case: str, key: str) -> Any:
    return next(cc.metrics[key] for cc in rc.comparisons if cc.case == case)


def test_a_known_20_percent_shift_is_significant_with_a_ci_covering_it(tmp_path: Path) -> None:
    a = write_run(tmp_path, "a", [Spec("mode=callback", {"module.mode": "callback"},
                                       median_us=100.0, rep_noise=0.02, seed=1)])
    b = write_run(tmp_path, "b", [Spec("mode=callback", {"module.mode": "callback"},
                                       median_us=120.0, rep_noise=0.02, seed=2)])
    rc = between(a, b)
    for key in ("rtt_p50_us", "rtt_p99_us", "queue_p50_us", "kernel_to_user_p50_us"):
        c = one_metric(rc, "mode=callback", key)
        assert c.significant and c.verdict == "slower", (key, c)
        assert c.ci[0] <= 1.2 <= c.ci[1], (key, c.ci)
    tput = one_metric(rc, "mode=callback", "throughput_per_s")
    assert tput.verdict == "slower" and tput.ratio == pytest.approx(1 / 1.2, rel=0.03)


def test_two_samples_of_one_distribution_are_no_change(tmp_path: Path) -> None:
    spec = {"id": "mode=callback", "params": {"module.mode": "callback"}, "reps": 5,
            "rep_noise": 0.003, "messages": 20_000, "quiet": True}
    a = write_run(tmp_path, "a", [Spec(**spec, seed=1)])  # type: ignore[arg-type]
    b = write_run(tmp_path, "b", [Spec(**spec, seed=2)])  # type: ignore[arg-type]
    (cc,) = between(a, b).comparisons
    assert len(cc.metrics) >= 10
    for key, c in cc.metrics.items():
        assert not c.significant and c.verdict == "no change", (key, c)


NO_EVENTS = ("no events on either side", "0 in every repetition on both sides")


def assert_nothing_changed(rc: compare.RunComparison) -> None:
    """Every metric "no change", nothing significant, paired; ratio 1 with CI [1, 1] — but
    counts without a single event, which have no ratio."""
    for cc in rc.comparisons:
        for key, c in cc.metrics.items():
            assert not c.significant and c.verdict == "no change", (cc.case, key, c)
            assert c.paired, (cc.case, key, c)
            if c.reason not in NO_EVENTS:
                assert (c.ratio, c.ci, c.p_holm, c.paired) == (1.0, (1.0, 1.0), 1.0, True), (
                    cc.case, key, c)
    assert compare.summary_line(rc).startswith("**Nothing changed**")


def test_a_noisy_run_against_itself_changed_nothing(tmp_path: Path) -> None:
    # repetitions 15 % apart and 3 of them: unpaired, every CI would be far wider than ±2 %
    noisy = write_run(tmp_path, "noisy", [replace(s, rep_noise=0.15)
                                          for s in processing_models(reps=3)], samples=False)
    rc = between(noisy, noisy)
    assert len(rc.comparisons) == 6 and sum(len(cc.metrics) for cc in rc.comparisons) > 60
    assert_nothing_changed(rc)
    copy = tmp_path / "copy"
    shutil.copytree(noisy, copy)  # a copy of a run is that run
    assert_nothing_changed(between(noisy, copy))
    old = fixture_run(tmp_path)  # a summary from before `order` was recorded
    assert_nothing_changed(between(old, fixture_run(tmp_path / "again")))


def test_different_runs_are_never_paired(tmp_path: Path) -> None:
    specs = processing_models(reps=3)
    first = write_run(tmp_path, "first", specs, samples=False, order="round-robin",
                      scenario="pm", started="2026-11-28T03:17:07+00:00")
    second = write_run(tmp_path, "second", specs, samples=False, order="round-robin",
                       scenario="pm", started="2026-11-28T03:17:08+00:00")
    rc = between(first, second)  # the same numbers, a second apart: two boots
    assert not any(c.paired for cc in rc.comparisons for c in cc.metrics.values())
    rtt = one_metric(rc, "mode=callback,traffic=unicast", "rtt_p50_us")
    assert rtt.ratio == 1.0 and rtt.test == "welch-log" and rtt.ci != (1.0, 1.0)


def drifting_models(tmp_path: Path, name: str, order: str | None, *,
                    kernels: bool = False) -> analysis.RunAnalysis:
    """callback and kthread (25 % slower) in the rounds of one boot, drifting 30 % between
    rounds; with ``kernels`` the two cases are two kernels instead (two boots)."""
    drift = tuple(np.exp(np.random.default_rng(7).normal(0.0, 0.30, 5)))
    key, values = ("kernel", ("6.1.0-56-amd64", "6.12.117")) if kernels else (
        "module.mode", ("callback", "kthread"))
    specs = [Spec(f"{key.split('.')[-1]}={value}", {key: value}, median_us=100.0 * factor,
                  reps=5, rep_noise=0.005, drift=drift, seed=seed, loss={"r0.0": 0.0})
             for seed, (value, factor) in enumerate(zip(values, (1.0, 1.25), strict=True))]
    return analysis.analyze(write_run(tmp_path, name, specs, samples=False, histograms=False,
                                      order=order))


def test_rounds_of_one_boot_are_paired_and_find_a_shift_hidden_by_drift(tmp_path: Path) -> None:
    for order in ("round-robin", "random"):
        by_mode = compare.along(drifting_models(tmp_path, order, order), None, compare.options())
        assert by_mode is not None
        (cc,) = by_mode.groups[0].comparisons
        for key in ("rtt_p50_us", "rtt_p99_us", "queue_p50_us", "kernel_to_user_p50_us"):
            c = cc.metrics[key]
            assert c.paired and c.test == "paired-t-log", (order, key, c)
            assert c.significant and c.verdict == "slower", (order, key, c)
            assert c.ci is not None and c.ci[0] <= 1.25 <= c.ci[1], (order, key, c.ci)
            assert c.ci[1] - c.ci[0] < 0.1, (order, key, c.ci)
        assert cc.metrics["throughput_per_s"].verdict == "slower"  # fewer messages a second
    # the same numbers without shared rounds: unpaired, the drift hides the shift. Both cases
    # carry the same 5 drift factors exp(N(0, 0.3²)) (seed 7) and 0.5 % noise, so the log
    # values' sample sd is the drift's s on either side: Welch's se = √(2/5)·s with df = 8,
    # CI ≈ 1.25 · exp(± t(0.975, 8) · √(2/5) · s) = [1.026, 1.523] (s = 0.1355), 5× the
    # paired width; the raw CI clears 1 but Holm over the case's metrics leaves p above 0.05
    drift_sd = float(np.std(np.random.default_rng(7).normal(0.0, 0.30, 5), ddof=1))
    reach = sps.t.ppf(0.975, 8) * math.sqrt(2 / 5) * drift_sd
    unpaired_ci = (1.25 * math.exp(-reach), 1.25 * math.exp(reach))
    for name, order, kernels in (("sequential", "sequential", False), ("old", None, False),
                                 ("two-boots", "round-robin", True)):
        run = drifting_models(tmp_path, name, order, kernels=kernels)
        by = compare.along(run, None, compare.options())
        assert by is not None
        (cc,) = by.groups[0].comparisons
        assert not any(c.paired for c in cc.metrics.values()), name
        c = cc.metrics["rtt_p50_us"]
        assert not c.significant and c.verdict == "inconclusive", (name, c)
        assert c.ci is not None and c.ci[0] <= 1.25 <= c.ci[1], (name, c.ci)
        assert c.ci == pytest.approx(unpaired_ci, rel=0.02), (name, c.ci)
        assert c.p_value is not None and c.p_value < 0.05 < c.p_holm, (name, c)  # type: ignore[operator]


def test_the_observer_effect_is_paired_in_rounds(tmp_path: Path) -> None:
    rounds = drifting_models(tmp_path, "rr", "round-robin")
    observer = rounds.cases[0].observer
    assert observer is not None
    p50 = observer.comparisons["rtt_p50_us"]  # probes cost 5 % in every round
    assert p50.paired and p50.verdict == "slower" and p50.ci[0] <= 1.05 <= p50.ci[1]
    sequential = drifting_models(tmp_path, "seq", "sequential").cases[0].observer
    assert sequential is not None
    assert not sequential.comparisons["rtt_p50_us"].paired
    assert sequential.comparisons["rtt_p50_us"].verdict == "inconclusive"


def test_latencies_25_percent_higher_are_significant_from_3_repetitions(tmp_path: Path) -> None:
    specs = processing_models(reps=3)
    specs.append(Spec("mode=callback,traffic=two", {"module.mode": "callback",
                                                    "traffic": "two"}, reps=2, seed=99))
    base = write_run(tmp_path, "base", specs, samples=False, histograms=False)
    slower = scaled_copy(base, tmp_path / "slower", 1.25)
    rc = between(base, slower)
    assert len(rc.comparisons) == 7
    for cc in rc.comparisons:
        latency = {k: c for k, c in cc.metrics.items() if cc.info[k].latency}
        assert len(latency) >= 5
        for key, c in latency.items():
            assert c.ratio == pytest.approx(1.25), (cc.case, key)
            assert c.ci is not None and c.ci[0] <= 1.25 <= c.ci[1], (cc.case, key, c.ci)
            if cc.a.repetitions >= 3:  # below 3 the Welch test has next to no power
                assert c.significant and c.verdict == "slower", (cc.case, key, c)
        for key, c in cc.metrics.items():
            if not cc.info[key].latency:  # throughput, losses, switches: the same numbers
                assert not c.significant and c.ratio in (1.0, None), (cc.case, key, c)
                assert c.verdict in ("no change", "inconclusive"), (cc.case, key, c)
    # a band wider than the change turns every verdict into "no change"
    wide = between(base, slower, threshold_pct=40)
    assert {c.verdict for cc in wide.comparisons for c in cc.metrics.values()} == {"no change"}


def test_one_repetition_says_no_ci(tmp_path: Path) -> None:
    spec = Spec("mode=callback", {"module.mode": "callback"}, reps=1)
    a = write_run(tmp_path, "a", [spec])
    c = one_metric(between(a, scaled_copy(a, tmp_path / "b", 1.5)), "mode=callback",
                   "rtt_p50_us")
    assert c.ci is None and c.verdict == "inconclusive" and "no CI" in c.reason
    assert c.ratio == pytest.approx(1.5)


def test_cases_along_the_processing_model(tmp_path: Path) -> None:
    run = analysis.analyze(write_run(tmp_path, "pm", processing_models(reps=5),
                                     samples=False, histograms=False))
    assert compare.default_along(run) == "module.mode"
    by_mode = compare.along(run, None, compare.options())
    assert by_mode is not None and by_mode.values == ["callback", "kthread", "workqueue"]
    assert [g.context for g in by_mode.groups] == ["unicast", "multicast"]
    unicast = by_mode.groups[0]
    assert [cc.candidate for cc in unicast.comparisons] == ["kthread", "workqueue"]
    for cc, factor in zip(unicast.comparisons, (1.3, 1.5), strict=True):
        c = cc.metrics["rtt_p50_us"]
        assert c.verdict == "slower" and c.ci[0] <= factor <= c.ci[1]
        assert cc.metrics["ctx_switches_per_msg"].verdict == "slower"  # 0.05 → 1 a message
    old = analysis.analyze(fixture_run(tmp_path))
    with pytest.raises(BadInput, match="has one value"):
        compare.along(old, "module.mode", compare.options())
    assert compare.default_along(old) is None  # only traffic varies: nothing to compare along


# --- the command line ----------------------------------------------------------------------------


def test_compare_formats(tmp_path: Path) -> None:
    a = write_run(tmp_path, "a", processing_models(reps=3), samples=False, histograms=False)
    b = scaled_copy(a, tmp_path / "b", 1.25)
    procs = run_many({"json": (["compare", a, b, "--format", "json"], None),
                      "csv": (["compare", a, b, "--format", "csv", "--threshold", "40"], None),
                      "md": (["compare", a, b], None),
                      "along": (["compare", a, "--along", "module.mode", "--format", "csv"],
                                None)})
    for name, p in procs.items():
        assert p.returncode == 0, (name, p.stderr)
    doc = json.loads(procs["json"].stdout)
    assert doc["threshold_pct"] == 2.0 and len(doc["comparisons"]) == 6
    first = doc["comparisons"][0]
    assert (first["baseline"], first["candidate"], first["case"]) == (
        "a", "b", "mode=callback,traffic=unicast")
    rtt = next(m for m in first["metrics"] if m["metric"] == "rtt_p50_us")
    assert {"ratio", "ci", "p_value", "significant", "verdict"} <= set(rtt)
    assert rtt["ratio"] == pytest.approx(1.25) and rtt["significant"] is True
    assert rtt["verdict"] == "slower" and rtt["ci"][0] <= 1.25 <= rtt["ci"][1]
    rows = list(csv.DictReader(io.StringIO(procs["csv"].stdout)))
    assert list(rows[0]) == list(compare.FIELDS)
    assert {r["verdict"] for r in rows} == {"no change"}  # --threshold 40
    assert {r["paired"] for r in rows} == {"False"} and rtt["paired"] is False  # two runs
    # the Markdown's first line, derived metric by metric: every latency metric is 1.25× and
    # "slower" (test_latencies_25_percent_higher_are_significant_from_3_repetitions); every
    # other metric has the same values on both sides, so ratio 1 and, with no event on either
    # side, "no change" untested; else Welch's CI exp(± t(0.975, 4)·√(2/3)·s), s the sd of
    # its 3 log values (equal sizes and spreads: Welch's df = 2·(3 − 1) = 4), "no change"
    # when that stays inside ±2 %, "inconclusive" when not
    analysed = {c.id: c for c in analysis.analyze(a).cases}
    expected = {"slower": 0, "no change": 0, "inconclusive": 0}
    for cc in doc["comparisons"]:
        for m in cc["metrics"]:
            if m["ratio"] is not None and m["ratio"] == pytest.approx(1.25):
                expected["slower"] += 1
                assert m["verdict"] == "slower" and m["significant"], m
                continue
            assert m["ratio"] in (1.0, None) and not m["significant"], m
            if m["test"] != "welch-log":
                assert m["reason"] == "no events on either side", m
                expected["no change"] += 1
                continue
            s = np.std(np.log(analysed[cc["case"]].series(m["metric"])), ddof=1)
            reach = math.exp(sps.t.ppf(0.975, 4) * math.sqrt(2 / 3) * s)
            inside = 1 / reach >= 0.98 and reach <= 1.02
            expected["no change" if inside else "inconclusive"] += 1
            assert m["verdict"] == ("no change" if inside else "inconclusive"), m
    n = sum(len(cc["metrics"]) for cc in doc["comparisons"])
    md = procs["md"].stdout
    assert md.startswith(f"**Summary**: {n} metrics in 6 case comparisons: "
                         f"{expected['slower']} slower, {expected['no change']} no change, "
                         f"{expected['inconclusive']} inconclusive; {expected['slower']} "
                         "significant.\n\nRatio = candidate ÷ baseline")
    assert (n, expected["slower"]) == (88, 64)  # 6 cases' metrics; 64 of them latencies
    assert "| round trip p50 (µs) |" in md and "none paired" in md
    along = list(csv.DictReader(io.StringIO(procs["along"].stdout)))
    assert {r["baseline"] for r in along} == {"mode=callback,traffic=unicast",
                                              "mode=callback,traffic=multicast"}
    assert {r["candidate"].split(",")[0] for r in along} == {"mode=kthread", "mode=workqueue"}


def test_compare_a_run_written_by_earlier_code(tmp_path: Path) -> None:
    old = fixture_run(tmp_path)
    again = tmp_path / "again"
    shutil.copytree(old, again)
    p = nlperf("compare", old, again, "--format", "csv")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert {r["case"] for r in rows} == {"mode=callback,traffic=unicast",
                                        "mode=callback,traffic=multicast"}
    assert {r["significant"] for r in rows} == {"False"}


def test_compare_refuses_in_one_line(tmp_path: Path) -> None:
    a = write_run(tmp_path, "a", [Spec("mode=callback", {"module.mode": "callback"}, reps=2)],
                  samples=False, histograms=False)
    other = fixture_run(tmp_path)
    procs = run_many({"no-match": (["compare", a, other], None),
                      "one-run-no-key": (["compare", other], None),
                      "along-two-runs": (["compare", a, other, "--along", "module.mode"], None),
                      "bad-key": (["compare", other, "--along", "nope"], None)})
    for name, p in procs.items():
        assert p.returncode == EXIT_BAD_INPUT, (name, p.stderr)
        assert len(p.stderr.splitlines()) == 1 and p.stdout == "", (name, p.stderr)
        assert "Traceback" not in p.stderr
    assert "no case of" in procs["no-match"].stderr and str(other) in procs["no-match"].stderr
    assert nlperf("compare", a, a, "--threshold", "-1").returncode == EXIT_BAD_INPUT  # usage


def test_a_group_without_the_baseline_value_compares_nothing(tmp_path: Path) -> None:
    specs = [s for s in processing_models(reps=2) if s.id != "mode=callback,traffic=multicast"]
    run = analysis.analyze(write_run(tmp_path, "gap", specs, samples=False, histograms=False))
    by_mode = compare.along(run, None, compare.options())
    assert by_mode is not None and by_mode.values[0] == "callback"
    unicast, multicast = by_mode.groups
    assert [cc.baseline for cc in unicast.comparisons] == ["callback", "callback"]
    assert multicast.comparisons == []
    from nlperf.report import build

    verdict = build(run).sections[0]
    assert any("No callback case to compare with for: multicast" in getattr(b, "text", "")
               for b in verdict.blocks)
