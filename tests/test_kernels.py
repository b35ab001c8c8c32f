"""Kernel against kernel (#11): the verdict between two kernels is read on within-boot ratios.

Synthetic runs of the kernels scenario's shape: callback and kthread on two kernels, one boot
each. Each boot has its own speed (the boot confound: here 2×) and its own drift shared by its
rounds; kthread ÷ callback is known per kernel. The absolute comparison along ``kernel`` is
unpaired (Welch) and cannot see through the boot; the within-boot ratios, paired by rounds in
each boot and compared across boots with Welch's t on the per-round log ratios, find the
change in the ratio — and call an unchanged ratio unchanged, whatever the boot's speed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from nlperf import analysis, boot_ratios, compare
from nlperf.report import build
from nlperf.reportdoc import to_markdown
from tests.synthetic_runs import Spec, processing_models, write_run
from tests.test_cli import run_many

RELEASES = {"6.1": "6.1.0-56-amd64", "6.12": "6.12.117+deb12-amd64"}


def kernel_run(tmp_path: Path, name: str, kthread: tuple[float, float], *,
               boot_speed: tuple[float, float] = (1.0, 2.0), order: str | None = "round-robin",
               reps: int = 3) -> Path:
    """callback and kthread (``kthread[i]`` × callback) on kernel i's boot; boot i runs at
    ``boot_speed[i]`` and drifts 20 % (σ of the log) between its rounds, shared by its cases."""
    specs = []
    for i, kernel in enumerate(RELEASES):
        drift = tuple(np.exp(np.random.default_rng(100 + i).normal(0.0, 0.2, reps)))
        for j, (mode, factor) in enumerate((("callback", 1.0), ("kthread", kthread[i]))):
            specs.append(Spec(f"kernel={kernel},mode={mode}",
                              {"kernel": kernel, "module.mode": mode},
                              median_us=100.0 * boot_speed[i] * factor, reps=reps,
                              rep_noise=0.005, drift=drift, seed=10 * i + j,
                              kthread=mode == "kthread", send_syscall=True, loss={}))
    return write_run(tmp_path, name, specs, samples=False, histograms=False, order=order,
                     releases=RELEASES)


def welch_on_logs(a: list[float], b: list[float]) -> tuple[float, tuple[float, float], float]:
    """Reference: ratio exp(mean log b − mean log a), its Welch t-interval and p."""
    la, lb = np.log(a), np.log(b)
    va, vb = la.var(ddof=1) / la.size, lb.var(ddof=1) / lb.size
    df = (va + vb) ** 2 / (va ** 2 / (la.size - 1) + vb ** 2 / (lb.size - 1))
    d, reach = lb.mean() - la.mean(), sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    p = float(sps.ttest_ind(lb, la, equal_var=False).pvalue)
    return math.exp(d), (math.exp(d - reach), math.exp(d + reach)), p


def test_a_changed_ratio_is_found_through_the_boot_confound(tmp_path: Path) -> None:
    run = analysis.analyze(kernel_run(tmp_path, "k", kthread=(1.3, 1.6)))
    o = compare.options()
    # the absolute figures along kernel: other boots, unpaired, the boot's 2× in them
    absolute = compare.along(run, "kernel", o)
    assert absolute is not None
    for g in absolute.groups:
        (cc,) = g.comparisons
        c = cc.metrics["rtt_p50_us"]
        assert (c.paired, c.test) == (False, "welch-log")
    ac = boot_ratios.across(run, "kernel", o)
    assert ac is not None and (ac.key, ac.inner, ac.values) == ("kernel", "module.mode",
                                                                ["6.1", "6.12"])
    (rs,) = ac.shifts
    assert (rs.baseline, rs.candidate, rs.case, rs.inner) == (
        "6.1", "6.12", "kthread ÷ callback", ("callback", "kthread"))
    by_id = {c.id: c for c in run.cases}

    def per_round(kernel: str, key: str) -> list[float]:
        cb = by_id[f"kernel={kernel},mode=callback"].values[key].values
        kt = by_id[f"kernel={kernel},mode=kthread"].values[key].values
        return [b / a for a, b in zip(cb, kt, strict=True)]

    for key in ("rtt_p50_us", "rtt_p99_us", "throughput_per_s", "queue_p50_us"):
        ratio, ci, p = welch_on_logs(per_round("6.1", key), per_round("6.12", key))
        c = rs.metrics[key]
        assert c.ratio == pytest.approx(ratio, rel=1e-9) and not c.paired
        assert c.ci == pytest.approx(ci, rel=1e-9) and c.p_value == pytest.approx(p, rel=1e-9)
        for kernel, truth in (("6.1", 1.3), ("6.12", 1.6)):  # inside each boot: paired
            w = rs.within[kernel][key]
            assert w.paired and w.test == "paired-t-log", (kernel, key)
            expected = truth if key != "throughput_per_s" else 1 / truth
            assert w.ci[0] <= expected <= w.ci[1], (kernel, key, w.ci)
        assert c.estimate_a == pytest.approx(rs.within["6.1"][key].ratio, rel=1e-9)
    for key in ("rtt_p50_us", "rtt_p99_us", "send_syscall_p50_us", "throughput_per_s"):
        c = rs.metrics[key]  # kthread lost ground against callback on 6.12: 1.6 / 1.3
        truth = 1.6 / 1.3 if key != "throughput_per_s" else 1.3 / 1.6
        assert c.significant and c.verdict == "slower", (key, c)
        assert c.ci[0] <= truth <= c.ci[1], (key, c.ci)
    # kthread's own wakeup has no callback counterpart: no ratio; nor do counts
    assert "kthread_wakeup_p50_us" not in rs.metrics and "ctx_switches_per_msg" not in rs.metrics


def test_an_unchanged_ratio_is_no_change_whatever_the_boot_speed(tmp_path: Path) -> None:
    run = analysis.analyze(kernel_run(tmp_path, "same", kthread=(1.3, 1.3),
                                      boot_speed=(1.0, 2.5), reps=5))
    ac = boot_ratios.across(run, "kernel", compare.options())
    assert ac is not None
    (rs,) = ac.shifts
    for key in ("rtt_p50_us", "rtt_p99_us", "throughput_per_s"):
        c = rs.metrics[key]
        assert not c.significant and c.ci[0] <= 1.0 <= c.ci[1], (key, c)
    assert rs.metrics["rtt_p50_us"].verdict == "no change"  # CI inside ±2 %
    # while the absolute figures carry the boot's 2.5×, which says nothing about the kernel
    absolute = compare.along(run, "kernel", compare.options())
    assert absolute is not None
    for g in absolute.groups:
        c = g.comparisons[0].metrics["rtt_p50_us"]
        assert c.ratio == pytest.approx(2.5, rel=0.1) and c.verdict != "no change"


def test_no_within_boot_ratio_without_rounds_or_a_second_model(tmp_path: Path) -> None:
    o = compare.options()
    sequential = analysis.analyze(kernel_run(tmp_path, "seq", (1.3, 1.6), order="sequential"))
    ac = boot_ratios.across(sequential, "kernel", o)
    assert ac is not None and ac.shifts == [] and "no rounds" in ac.why_none
    only_kernel = [Spec(f"kernel={k}", {"kernel": k}, reps=3, loss={}) for k in RELEASES]
    alone = analysis.analyze(write_run(tmp_path, "alone", only_kernel, samples=False,
                                       histograms=False, order="round-robin",
                                       releases=RELEASES))
    ac = boot_ratios.across(alone, "kernel", o)
    assert ac is not None and (ac.inner, ac.shifts) == (None, [])
    assert ac.why_none == "only kernel varies: no two cases share a boot"
    # not a boot key, or one kernel: nothing to compare across
    models = analysis.analyze(write_run(tmp_path, "pm", processing_models(reps=3),
                                        samples=False, histograms=False))
    assert boot_ratios.across(models, "module.mode", o) is None
    assert boot_ratios.across(models, "kernel", o) is None


def test_compare_along_kernel_puts_the_within_boot_ratios_first(tmp_path: Path) -> None:
    run_dir = kernel_run(tmp_path, "k", kthread=(1.3, 1.6))
    procs = run_many({fmt: (["compare", run_dir, "--along", "kernel", "--format", fmt], None)
                      for fmt in ("md", "json", "csv")}
                     | {"mode": (["compare", run_dir, "--format", "json"], None)})
    for name, p in procs.items():
        assert p.returncode == 0, (name, p.stderr)
    md = procs["md"].stdout
    assert md.startswith("## Within-boot ratios across kernel\n\n**Within-boot ratios**: ")
    assert "### kthread ÷ callback: 6.12 vs 6.1" in md
    assert md.index("### kthread ÷ callback") < md.index(
        "## Absolute figures across kernel (confounded by the boot)") < md.index(
        "## kernel=6.12,mode=callback vs kernel=6.1,mode=callback: callback")
    doc = json.loads(procs["json"].stdout)
    within = doc["within_boot"]
    assert (within["along"], within["inner"], within["values"]) == (
        "kernel", "module.mode", ["6.1", "6.12"])
    (shift,) = within["comparisons"]
    rtt = next(m for m in shift["metrics"] if m["metric"] == "rtt_p50_us")
    assert (rtt["unit"], rtt["verdict"], rtt["paired"]) == ("ratio", "slower", False)
    assert set(rtt["within"]) == {"6.1", "6.12"} and rtt["within"]["6.1"]["paired"]
    assert {c["case"] for c in doc["comparisons"]} == {"callback", "kthread"}
    rows = list(csv.DictReader(io.StringIO(procs["csv"].stdout)))
    first = rows[0]
    assert (first["baseline"], first["candidate"], first["case"], first["unit"]) == (
        "6.1", "6.12", "kthread ÷ callback", "ratio")
    assert {r["case"] for r in rows if r["unit"] != "ratio"} == {"callback", "kthread"}
    # along the model (the default), inside each boot: no within_boot block
    assert "within_boot" not in json.loads(procs["mode"].stdout)


def test_the_report_has_a_kernels_section_only_with_several_kernels(tmp_path: Path) -> None:
    run = analysis.analyze(kernel_run(tmp_path, "k", kthread=(1.3, 1.6)))
    doc = build(run)
    titles = [s.title for s in doc.sections]
    assert titles[:3] == ["Verdict", "Kernels: what changed from 6.1 to 6.12",
                          "Where the time goes"]
    md = to_markdown(doc, tmp_path)
    section = md[md.index("## Kernels"):md.index("## Where the time goes")]
    assert ("Kernels compared: 6.1 = 6.1.0-56-amd64; 6.12 = 6.12.117+deb12-amd64 "
            "(accelerator tcg)") in section
    assert "confounded by the boot" in section and "up to 3×" in section
    lines = section.splitlines()
    ratio_row = next(line for line in lines
                     if line.startswith("| kthread ÷ callback, 6.12 vs 6.1 | round trip p50"))
    shift = boot_ratios.across(run, "kernel", compare.options()).shifts[0]  # type: ignore[union-attr]
    assert ratio_row == (
        "| kthread ÷ callback, 6.12 vs 6.1 | round trip p50 | "
        f"{compare.ratio_text(shift.within['6.1']['rtt_p50_us'])} | "
        f"{compare.ratio_text(shift.within['6.12']['rtt_p50_us'])} | "
        f"**{compare.cell(shift.metrics['rtt_p50_us'])}** |")
    assert "slower" in ratio_row
    assert section.index("within-boot ratio") < section.index("(unpaired)")
    absolute = next(line for line in lines if line.startswith("| callback | round trip p50"))
    assert "inconclusive" in absolute  # the boot's 2× is not a verdict
    models = analysis.analyze(write_run(tmp_path, "pm", processing_models(reps=3),
                                        samples=False, histograms=False))
    assert not any(s.title.startswith("Kernels") for s in build(models).sections)
