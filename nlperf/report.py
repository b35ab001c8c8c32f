"""report.md and report.html for a run directory: the verdict first, then the evidence.

A report is derived data: it can be rewritten at any time from the run directory
(nlperf/analysis.py reads it) and never changes the results it reads. Order of the page:
the verdict (which processing model wins each headline metric, by how much, CI, verdict),
where the time goes, whether to trust it (repetitions, instability, the observer effect),
then per-topic tables and plots, the environment and the cases (nlperf/report_sections.py).
"""

from __future__ import annotations

from pathlib import Path

from nlperf import plots, stats, verdict
from nlperf.analysis import RunAnalysis, ValueEstimate, analyze
from nlperf.catalog import fmt, fmt_ratio
from nlperf.compare import Along, along, cell, options
from nlperf.report_kernels import kernels_section
from nlperf.report_sections import (
    capacity_section,
    cases_section,
    details_section,
    dump_section,
    environment_section,
    estimate,
    estimate_cell,
    metric_label,
    multicast_section,
    probes_section,
    sched_section,
    unicast_section,
)
from nlperf.reportdoc import (
    Block,
    Cell,
    Document,
    Note,
    Para,
    Section,
    Span,
    Table,
    to_html,
    to_markdown,
    verdict_role,
)

BREAKDOWN = (("user_to_kernel_p50_us", "user → kernel"), ("queue_p50_us", "queue"),
             ("processing_p50_us", "processing"), ("kernel_to_user_p50_us", "kernel → user"))


# --------------------------------------------------------------------------- the verdict


def _winner(base_value: str, compared: list[tuple[str, verdict.Comparison]],
            higher_is_better: bool) -> Span:
    if not compared:
        return Span("–", "muted")
    better = [(v, c) for v, c in compared if c.verdict == "faster"]
    if better:
        def goodness(vc: tuple[str, verdict.Comparison]) -> float:
            r = vc[1].ratio if vc[1].ratio is not None else 1.0
            return r if higher_is_better else -r
        value, c = max(better, key=goodness)
        by = f" ({fmt_ratio(c.ratio)}× {base_value})" if c.ratio is not None else ""
        return Span(value + by, "faster")
    if any(c.verdict == "inconclusive" for _, c in compared):
        return Span("undecided", "inconclusive")
    ties = [v for v, c in compared if c.verdict == "no change"]
    if not ties:
        return Span(base_value, "faster")
    if len(ties) == len(compared):
        return Span("no difference", "no-change")
    return Span("tie: " + ", ".join([base_value, *ties]), "no-change")


def _along_table(al: Along) -> Table:
    others = al.values[1:]
    with_context = any(g.context for g in al.groups)
    rows: list[list[Cell]] = []
    for g in al.groups:
        base_value, base = g.cases[0]
        if base_value != al.values[0]:
            continue  # no baseline case here: said below the table
        first = True
        for m in base.metrics():
            if not m.headline:
                continue
            row: list[Cell] = [g.context if first else ""] if with_context else []
            first = False
            row += [metric_label(m), estimate_cell(estimate(base, m.key))]
            compared: list[tuple[str, verdict.Comparison]] = []
            for value in others:
                cc = next((cc for cc in g.comparisons if cc.candidate == value), None)
                c = cc.metrics.get(m.key) if cc is not None else None
                if c is None:
                    row.append(Span("–", "muted"))
                    continue
                compared.append((value, c))
                row.append(Span(cell(c), verdict_role(c.verdict)))
            row.append(_winner(base_value, compared, m.higher_is_better))
            rows.append(row)
    header = (["cases"] if with_context else []) + [
        "metric", f"{al.values[0]} (baseline)", *[f"{v} ÷ {al.values[0]}" for v in others],
        "winner"]
    numeric = [header.index(f"{al.values[0]} (baseline)")]
    return Table(header, rows, numeric=numeric)


def _single_table(run: RunAnalysis) -> Table:
    rows: list[list[Cell]] = []
    for c in run.cases:
        first = True
        for m in c.metrics():
            if not (m.headline or m.key == "throughput_per_s"):
                continue
            e = estimate(c, m.key)
            n = len(e.values) if isinstance(e, ValueEstimate) else len(e.per_rep)  # type: ignore[union-attr]
            rows.append([c.label if first else "", metric_label(m), estimate_cell(e), str(n)])
            first = False
    return Table(["case", "metric", "estimate [95 % CI]", "repetitions"], rows, numeric=[2, 3])


def _pairing(al: Along | None) -> str:
    """How the along comparisons were made: round by round (paired) or not."""
    every = [c for g in (al.groups if al else []) for cc in g.comparisons
             for c in cc.metrics.values() if c.statistic != "rate"]
    if not every:
        return ""
    if all(c.paired for c in every):
        return ("Paired: the cases ran in the same rounds of one boot, so each comparison is "
                "round by round (paired t on the per-round log ratios) and the "
                "boot's drift between rounds cancels.")
    if not any(c.paired for c in every):
        return ("Unpaired: the cases did not run in shared rounds (order sequential, or "
                "different boots), so the CI includes the drift between repetitions.")
    return ("Paired where both cases have the same rounds (round by round, drift cancels), "
            "else unpaired.")


def verdict_section(run: RunAnalysis, al: Along | None, o: verdict.CompareOptions) -> Section:
    s = Section("Verdict")
    if not run.cases:
        s.blocks.append(Para(["No case finished: nothing to judge."]))
        return s
    how = (f"Ratio = model ÷ baseline, geometric means of per-repetition values, "
           f"{100 * o.confidence:.0f} % t-interval on the log ratio; verdict: the t-test's "
           f"Holm-adjusted p < {o.alpha:g} and the CI "
           f"outside a ±{100 * o.threshold:g} % noise band, else “no change” (CI inside the band) "
           "or “inconclusive”. Lower is better except throughput. " + _pairing(al))
    if al is not None:
        s.blocks += [Para(["Cases compared along ", Span(al.key, "code"), ": baseline ",
                           Span(al.values[0], "strong"), ", against ",
                           ", ".join(al.values[1:]) + ". " + how]), _along_table(al)]
        alone = [g.context or "the run" for g in al.groups if g.cases[0][0] != al.values[0]]
        if alone:
            s.blocks.append(Note(f"No {al.values[0]} case to compare with for: "
                                 + "; ".join(alone), "warn"))
    else:
        s.blocks += [Para(["No matrix key with several values to compare along: each case's "
                           "headline metrics with a 95 % CI over its repetitions (",
                           Span("nlperf compare", "code"), " compares runs)."]),
                     _single_table(run)]
    return s


# --------------------------------------------------------------------------- where the time goes


def breakdown_section(run: RunAnalysis) -> Section:
    s = Section("Where the time goes")
    rows = [(c, [c.values[k].summary.estimate for k, _ in BREAKDOWN])
            for c in run.cases if all(k in c.values for k, _ in BREAKDOWN)]
    if not rows:
        s.blocks.append(Para(["No case with stamped unicast echoes (timed messages): no "
                              "breakdown of the round trip."]))
        return s
    s.blocks.append(Para(["The round trip split at the module's stamps: the user sender to the "
                          "module's input(), waiting for the processing model (queue), the "
                          "processing itself, and the reply back to user space. Each part is "
                          "the geometric mean over repetitions of the per-repetition p50; the "
                          "parts' p50s need not add up to the round trip's p50."]))
    s.blocks.append(Table(
        ["case", *[name for _, name in BREAKDOWN], "sum of parts", "round trip p50"],
        [[c.label, *[fmt(v) for v in parts], fmt(sum(parts)),
          estimate_cell(c.values.get("rtt_p50_us"))] for c, parts in rows],
        numeric=range(1, len(BREAKDOWN) + 3), caption="p50, µs"))
    fig = plots.stacked("fig-breakdown", "Where the round trip's time goes (p50 of each part)",
                        "Round trip by part, p50 (µs)", [name for _, name in BREAKDOWN],
                        [(c.label, parts) for c, parts in rows])
    if fig is not None:
        s.blocks.append(fig)
    return s


# --------------------------------------------------------------------------- can you trust it


def _observer_blocks(run: RunAnalysis) -> list[Block]:
    cased = [c for c in run.cases if c.observer is not None]
    if not cased:
        return [Para(["No probes-off control pass in this run: the probes' cost is not "
                       "measured (scenario ", Span("probes: {control: true}", "code"), ")."])]
    rows: list[list[Cell]] = []
    bars = []
    out: list[Block] = [Para([
        "Observer effect: each case ran again with no probe attached; ratio = probed ÷ "
        "probes-off (the baseline). Where a case has that pass, its workload metrics in this "
        "report come from it; probe-measured ones always come from the probed pass."])]
    for c in cased:
        assert c.observer is not None
        case_bars = []
        for key, comp in c.observer.comparisons.items():
            m = c.observer.metrics[key]
            rows.append([c.label, metric_label(m), fmt(comp.estimate_a), fmt(comp.estimate_b),
                         Span(cell(comp), verdict_role(comp.verdict))])
            if comp.ratio is not None:
                case_bars.append(plots.Bar(m.label.split(" (")[0], comp.ratio, comp.ci))
        bars.append((c.label, case_bars))
        out += [Note(f"{c.label}: {w}", "warn") for w in c.observer.warnings()]
    out.append(Table(["case", "metric", "probes off", "probed", "probed ÷ off [CI]"], rows,
                     numeric=[2, 3]))
    fig = plots.ci_bars("fig-probe-overhead", "Probe overhead per case: probed ÷ probes-off "
                        "(1 = no effect; shaded ±10 %)", "Probe overhead (probed ÷ probes-off)",
                        "ratio", bars, reference=(1.0,), band=(0.9, 1.1))
    if fig is not None:
        out.append(fig)
    return out


def trust_section(run: RunAnalysis) -> Section:
    s = Section("Can you trust it")
    reps = sorted({c.repetitions for c in run.cases if c.repetitions})
    if reps:
        s.blocks.append(Para([
            "Repetitions per case: " + ", ".join(map(str, reps)) + ". A repetition (its own "
            "module load, processes and probes) is the independent unit; messages inside one "
            "are not."]))
    if reps and reps[0] == 1:
        s.blocks.append(Note("One repetition: no CI and no verdict (“no CI”); run with "
                             "repetitions ≥ 5 to compare.", "warn"))
    elif reps and reps[0] < stats.MIN_REPETITIONS:
        s.blocks.append(Note(
            f"Few repetitions ({reps[0]}): the 95 % CIs (t-intervals on log values, for the "
            "verdicts and for each case's geometric mean) keep their 95 % but are wide: "
            "small differences stay inconclusive.", "warn"))
    unstable = [[c.label, w] for c in run.cases for w in c.warnings()
                if not w.startswith("probes moved")]
    if unstable:
        s.blocks.append(Table(["case", "instability (pyperf's rules)"], unstable))
    s.blocks += _observer_blocks(run)
    return s


# --------------------------------------------------------------------------- the page


def build(run: RunAnalysis, along_key: str | None = None,
          o: verdict.CompareOptions | None = None) -> Document:
    o = o or options()
    s = run.summary
    al = along(run, along_key, o)
    facts: list[str | Span] = [
        Span(s.status.value, "strong" if s.status.value == "complete" else "warn"),
        f"{len(s.cases)} case{'s' if len(s.cases) != 1 else ''}", f"target {s.target}",
        f"accel {s.accel}", f"kernel {s.kernel or 'unknown'}",
        f"clocksource {s.clocksource or 'unknown'}", f"nlperf {s.nlperf_version}",
        f"{s.started} → {s.finished or '…'}"]
    notes: list[Note] = []
    if s.status.value != "complete":
        notes.append(Note(f"Run {s.status.value}" + (f": {s.error}" if s.error else "") +
                          " — the report shows what finished.", "warn"))
    if s.accel == "tcg":
        notes.append(Note("Measured under software emulation (TCG): absolute times are "
                          "emulated and move by tens of percent from boot to boot. Compare "
                          "ratios within this run, not absolute times.", "warn"))
    sections = [verdict_section(run, al, o), breakdown_section(run), trust_section(run),
                unicast_section(run), multicast_section(run), dump_section(run),
                capacity_section(run),
                sched_section(run),
                probes_section(run), environment_section(run), cases_section(run),
                details_section(run)]
    sections.insert(1, kernels_section(run, o))  # a kernel matrix's answer, after the verdict
    sections = [sec for sec in sections if sec.blocks]
    notes += [Note(n) for n in run.notes]  # after the sections: they add notes while reading
    return Document(f"nlperf report: {s.scenario}", facts, notes, sections)


def write_report(run_dir: Path, along_key: str | None = None) -> Path:
    """Write report.md (PNGs beside it) and report.html; returns report.md's path."""
    doc = build(analyze(run_dir), along_key)
    for old in run_dir.glob("fig-*.png"):  # an earlier report's figures: derived, rewritten
        old.unlink()
    (run_dir / "report.md").write_text(to_markdown(doc, run_dir))
    (run_dir / "report.html").write_text(to_html(doc))
    return run_dir / "report.md"

