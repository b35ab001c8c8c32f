"""report.md / report.html: the verdict first, every section, self-contained HTML that a
browser (headless Chromium) shows without console errors."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nlperf import results
from nlperf.models import Case, Repetition, SendSpacing, Status, Unicast
from nlperf.report import write_report
from nlperf.reportdoc import Document, Para, Section, Span, Table, to_html, to_markdown
from nlperf.samples import latency_block
from tests.synthetic_runs import processing_models, write_run
from tests.test_analysis import fixture_run
from tests.test_cli import nlperf

SECTIONS = ("Verdict", "Where the time goes", "Can you trust it", "Unicast round trip",
            "Multicast", "Scheduling", "Probe-measured calls", "Environment", "Cases",
            "Every estimate")


def sections_of(md: str) -> list[str]:
    return [line[3:] for line in md.splitlines() if line.startswith("## ")]


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!doctype html>")
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert re.findall(r'(?:src|href)="(?!data:|#)', page) == []
    assert "http://" not in page and "https://" not in page


def test_a_real_summary_gets_every_section(tmp_path: Path) -> None:
    run = fixture_run(tmp_path)
    md_path = write_report(run)
    md, page = md_path.read_text(), (run / "report.html").read_text()
    assert sections_of(md) == list(SECTIONS)
    for title in SECTIONS:
        assert f">{title}</h2>" in page
    assert "software emulation (TCG)" in md and "software emulation (TCG)" in page
    # what a browser showed before: Markdown syntax in HTML, <NA> cells, an empty CDF
    assert "**" not in page and "<NA>" not in page and "<NA>" not in md
    assert not re.search(r"\b(nan|None)\b", md)
    assert "No round-trip CDF" in md  # no samples.parquet in a run of that time
    # the observer effect, flagged: the fixture's callback p50s are 220.888 and 284.694 µs
    # probed, 117.615 and 120.534 µs probes-off; ratio of geometric means
    # √(220.888 · 284.694 / (117.615 · 120.534)) = 2.106: +111 %
    callback = results.read_summary(run).cases[0]
    assert callback.control is not None
    probed, control = ([r.unicast.rtt_us.p50 for r in reps]  # type: ignore[union-attr]
                       for reps in (callback.repetitions, callback.control.repetitions))
    assert (probed, control) == ([220.888, 284.694], [117.615, 120.534])
    ratio = math.sqrt(probed[0] * probed[1] / (control[0] * control[1]))
    assert f"{100 * (ratio - 1):+.0f} %" == "+111 %"
    assert "probes moved round trip p50 by +111 %" in page
    # probes-off pass: geometric mean √(117.615 · 120.534) = 119.07, CI with one degree of
    # freedom exp(± 12.706 · ln(120.534 / 117.615) / 2) = × [0.856, 1.169]: [102, 139]
    assert "| unicast | 2 | 119 [102, 139] |" in md
    for png in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (run / png).stat().st_size > 1000
    assert page.count("data:image/svg+xml;base64,") == len(re.findall(r"!\[", md)) >= 5
    assert_self_contained(page)


def make_run(parent: Path, name: str, rtt_ns: list[int]) -> Path:
    """Two cases of one repetition each (what tests/test_cli.py used to build)."""
    run_dir = results.create_run_dir(name, out=parent / name)
    summary = results.new_summary(name, "vm", "tcg", "6.1.0-56-amd64", "tsc")
    for cid, scale in (("mode=callback", 1), ("mode=kthread", 3)):
        u = Unicast(sent=len(rtt_ns), received=len(rtt_ns), errors=0, throughput_per_s=1000.0,
                    rtt_us=latency_block([x * scale for x in rtt_ns], 1000.0))
        summary.cases.append(Case(id=cid, params={"module.mode": cid.split("=")[1]},
                                  status=Status.complete,
                                  repetitions=[Repetition(index=0, unicast=u)], unicast=u))
    summary.status = Status.complete
    results.write_summary(run_dir, summary)
    return run_dir


def test_nlperf_report_never_changes_results_and_says_no_ci(tmp_path: Path) -> None:
    run = make_run(tmp_path, "alpha", [10_000, 20_000, 30_000])
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    p = nlperf("report", run)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(run / "report.md")
    md = (run / "report.md").read_text()
    assert "| callback | 1 | 20.0 (no CI) |" in md and "| kthread | 1 | 60.0 (no CI) |" in md
    assert "One repetition: no CI and no verdict" in md
    assert "| kthread ÷ callback |" in md and "no CI" in md.split("## Where")[0]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name in before} == before


def test_the_verdict_comes_first_and_names_the_winner(tmp_path: Path) -> None:
    faster = processing_models(reps=5, slow={"callback": 1.0, "kthread": 0.8, "workqueue": 1.5})
    run = write_run(tmp_path, "pm", faster)
    md = write_report(run).read_text()
    body = md.split("## Verdict", 1)[1]
    table = [line for line in body.split("## ", 1)[0].splitlines() if line.startswith("|")]
    assert table[0] == ("| cases | metric | callback (baseline) | kthread ÷ callback | "
                        "workqueue ÷ callback | winner |")
    rtt = next(line for line in table if "| round trip p50 (µs) |" in line)
    assert re.fullmatch(r" \*\*kthread \(0\.[78]\d*× callback\)\*\* ", rtt.split("|")[-2])
    assert re.search(r"\*\*0\.[78]\d*× \[0\.\d+, 0\.\d+\] faster\*\*", rtt)
    assert re.search(r"\*\*1\.[45]\d*× \[1\.\d+, 1\.\d+\] slower\*\*", rtt)
    switches = next(line for line in table if "| context switches (per msg) |" in line)
    assert switches.split("|")[-2].strip() == "**callback**"  # 0.05 against 1 a message
    assert "Unpaired: the cases did not run in shared rounds" in body  # no order recorded
    for figure in ("fig-breakdown", "fig-rtt-cdf", "fig-mc-cdf", "fig-mc-loss",
                   "fig-kthread-wakeup", "fig-call-durations", "fig-probe-overhead",
                   "fig-ctx-switches", "fig-rtt-percentiles"):
        assert f"]({figure}.png)" in md and (run / f"{figure}.png").exists(), figure
    assert_self_contained((run / "report.html").read_text())
    # rewritten without per-message samples: no CDFs, and no stale figure left behind
    (run / "samples.parquet").unlink()
    md = write_report(run).read_text()
    assert "No round-trip CDF" in md and not (run / "fig-rtt-cdf.png").exists()
    assert not (run / "fig-mc-cdf.png").exists() and (run / "fig-breakdown.png").exists()


def test_the_verdict_of_a_run_in_rounds_is_paired(tmp_path: Path) -> None:
    drift = (1.0, 1.4, 0.8, 1.2, 0.9)  # the boot drifts 40 % between rounds
    specs = [replace(s, drift=drift, rep_noise=0.005)
             for s in processing_models(reps=5, slow={"callback": 1.0, "kthread": 1.25})]
    run = write_run(tmp_path, "pm", specs, samples=False, order="round-robin")
    md = write_report(run).read_text()
    body = md.split("## Verdict", 1)[1].split("## ", 1)[0]
    assert "Paired: the cases ran in the same rounds of one boot" in body
    rtt = next(line for line in body.splitlines() if "| round trip p50 (µs) |" in line)
    assert re.search(r"\*\*1\.2\d*× \[1\.2\d*, 1\.2\d*\] slower\*\*", rtt), rtt
    assert rtt.split("|")[-2].strip() == "**callback**"


def test_a_run_without_cases_still_gets_a_report(tmp_path: Path) -> None:
    run = results.create_run_dir("empty", out=tmp_path / "empty")
    summary = results.new_summary("empty", "vm", "kvm", None, None)
    summary.status, summary.error = Status.failed, "the lab VM did not boot"
    results.write_summary(run, summary)
    md = write_report(run).read_text()
    assert "No case finished" in md and "Run failed: the lab VM did not boot" in md
    assert "TCG" not in md


def test_renderers_escape_and_never_mix_markup(tmp_path: Path) -> None:
    doc = Document("a <b> & c", [Span("ok", "strong")], [], [Section("S", [
        Para(["x | y ", Span("faster", "faster")]),
        Table(["h|1", "h2"], [["<i>", [Span("1.2×", "slower"), " a|b"]]], numeric=[1])])])
    md, page = to_markdown(doc, tmp_path), to_html(doc)
    assert "| <i> | **1.2×** a\\|b |" in md and "**faster**" in md
    assert "&lt;i&gt;" in page and '<span class="slower">1.2×</span>' in page
    assert "**" not in page and "<b>" not in page


# --- the page in a browser -----------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("CI must open the report in a browser, but chromium is missing")
    pytest.skip("no chromium here; `make setup-test` installs it")


def screenshot(page: Path, out: Path) -> tuple[np.ndarray, list[str]]:
    """Open ``page`` headless; the screenshot's pixels and the console's messages."""
    shot = out / f"{page.parent.name}.png"
    p = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={out / 'profile'}", "--enable-logging=stderr",
         "--v=0", f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists(), p.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    return pixels, [line for line in p.stderr.splitlines() if ":CONSOLE" in line]


def test_the_html_report_opens_in_a_browser(tmp_path: Path) -> None:
    chromium()
    runs = [fixture_run(tmp_path / "real"),
            write_run(tmp_path, "pm", processing_models(reps=3))]
    for run in runs:
        write_report(run)
        pixels, console = screenshot(run / "report.html", tmp_path)
        assert console == [], (run, console)
        colours = np.unique(pixels.reshape(-1, 3), axis=0)
        inked = float(np.mean(pixels.min(axis=2) < 200))
        assert len(colours) > 200 and inked > 0.03, (run, len(colours), inked)
    # the check itself: a page with console errors is caught
    bad = tmp_path / "bad" / "report.html"
    bad.parent.mkdir()
    bad.write_text("<!doctype html><p>x</p><script>console.error('oops'); nope();</script>")
    _, console = screenshot(bad, tmp_path)
    assert len(console) == 2 and "oops" in console[0]


def test_the_multicast_section_lists_the_send_spacing_of_the_measured_pass(
        tmp_path: Path) -> None:
    run = write_run(tmp_path, "spacing", processing_models(reps=2), samples=False,
                    histograms=False)
    summary = results.read_summary(run)
    for case in summary.cases:
        if case.multicast is None or case.control is None:
            continue
        # the pooled passes differ: the table takes the measured one (the probes-off control)
        case.control.multicast = case.multicast.model_copy(deep=True)
        for block, p50 in ((case.multicast, 1e9), (case.control.multicast, 500_000.0)):
            block.send_spacing_by_group = {
                "2": SendSpacing(count=3998, p50_ns=p50, p99_ns=2_500_000.0),
                "10": SendSpacing(count=0, p50_ns=None, p99_ns=None)}
    results.write_summary(run, summary)
    md = write_report(run).read_text()
    assert "send spacing p50 (µs)" in md
    lines = md.splitlines()
    for mode in ("callback", "kthread", "workqueue"):
        at = lines.index(f"| {mode} · multicast | 2 | 3998 | 500 | 2500 |")  # groups in order
        assert lines[at + 1] == f"| {mode} · multicast | 10 | 0 | – | – |"
