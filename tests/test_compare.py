"""Verdicts between runs and along a matrix key: known shifts are found, no shift is "no
change", and ``nlperf compare`` keeps its contract (formats, exit status 2 on no match).

What nlperf.stats can decide at few repetitions (its docstring): Welch's t on logs reaches
significance at 3 repetitions a side when the spread is small; the bootstrap CI of a ratio
covers 90 % at 3 vs 3. A run compared with itself has ratio 1 and p = 1 everywhere, but its
CI is as wide as its repetitions' spread (A and B are resampled independently): "no change"
needs that CI inside the ±2 % band, so the self-comparison contract is tested on a
low-noise run, and a noisy real run only has to show nothing significant.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from nlperf import analysis, compare, results
from nlperf.errors import EXIT_BAD_INPUT, BadInput
from tests.synthetic_runs import Spec, processing_models, write_run
from tests.test_analysis import fixture_run
from tests.test_cli import nlperf, run_many

LATENCY_BLOCK = {"count", "mean", "p50", "p90", "p99", "p999", "max"}


def scaled_copy(run_dir: Path, out: Path, factor: float) -> Path:
    """The same run with every latency block (µs or ns, probes included) × factor."""
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
    results.write_summary(out, scale(results.read_json(run_dir / results.SUMMARY)))
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


def test_a_run_against_itself_has_nothing_significant(tmp_path: Path) -> None:
    quiet = write_run(tmp_path, "quiet", processing_models(reps=5, quiet=True), samples=False)
    rc = between(quiet, quiet)
    assert len(rc.comparisons) == 6
    for cc in rc.comparisons:
        for key, c in cc.metrics.items():
            assert not c.significant and c.verdict == "no change", (cc.case, key, c)
    noisy = between(fixture_run(tmp_path), fixture_run(tmp_path / "again"))
    verdicts = {c.verdict for cc in noisy.comparisons for c in cc.metrics.values()}
    assert verdicts <= {"no change", "inconclusive"}
    assert not any(c.significant for cc in noisy.comparisons for c in cc.metrics.values())
    assert {c.ratio for cc in noisy.comparisons for c in cc.metrics.values()} <= {1.0, None}


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
    md = procs["md"].stdout
    assert md.startswith("Ratio = candidate ÷ baseline") and "| round trip p50 (µs) |" in md
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
