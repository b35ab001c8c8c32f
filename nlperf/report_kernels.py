"""The report's kernels section, for a run with more than one kernel (a ``kernel`` matrix).

Each kernel runs in its own VM boot, and under emulation a boot's speed moves the absolute
figures by up to 3× (LAB-NOTES): so the section's verdict is read on the within-boot ratios
(nlperf/boot_ratios.py: kthread ÷ callback inside each kernel's boot, compared across
kernels), and the absolute figures follow, unpaired and marked as confounded by the boot.
"""

from __future__ import annotations

from nlperf import boot_ratios, verdict
from nlperf.analysis import RunAnalysis, varying_keys
from nlperf.catalog import Metric
from nlperf.compare import Across, Along, along, cell, ratio_text
from nlperf.report_sections import estimate, estimate_cell, metric_label
from nlperf.reportdoc import Block, Cell, Note, Para, Section, Span, Table, verdict_role

KEY = "kernel"
CONFOUND = ("Each kernel ran in its own VM boot. Under software emulation the same case's "
            "absolute timing differs from boot to boot by up to 3× (seen: a callback round "
            "trip p50 of 19.8 µs in one boot, 62.7 µs in another), so a difference in absolute "
            "figures between kernels is confounded by the boot. The verdict below is read on "
            "within-boot ratios: two processing models that ran in the same rounds of one "
            "boot share its speed, and their ratio (paired round by round) does not. A change "
            "that moves every model alike leaves the ratios alone; only the absolute figures "
            "(last table) could show it, and across boots they cannot tell it from the boot.")


def shown(m: Metric) -> bool:
    """The section's metrics: the headline ones, throughput and the round trip's parts."""
    return m.headline or m.key == "throughput_per_s" or m.topic == "breakdown"


def releases(run: RunAnalysis) -> dict[str, list[str]]:
    """Each ``kernel`` matrix value → the kernel release(s) its cases ran on (env.json: one
    group per boot, whose module parameters name its cases)."""
    env = run.env
    groups = [env, *(env.more or [])] if env is not None else []
    out: dict[str, list[str]] = {}
    for c in run.cases:
        value = str(c.case.params.get(KEY))
        for g in groups:
            if c.id in g.module_params and g.kernel not in out.setdefault(value, []):
                out[value].append(g.kernel)
    return out


def _ratio_table(ac: Across) -> Table:
    first, later = ac.values[0], ac.values[1:]
    rows: list[list[Cell]] = []
    for rs in ac.shifts:
        lead = True
        for key, c in rs.metrics.items():
            m = rs.info[key]
            if not shown(m):
                continue
            rows.append([f"{rs.case}, {rs.candidate} vs {first}" if lead else "", m.label,
                         ratio_text(rs.within[first][key]),
                         ratio_text(rs.within[rs.candidate][key]),
                         Span(cell(c), verdict_role(c.verdict))])
            lead = False
    later_name = later[0] if len(later) == 1 else "the later kernel"
    return Table(["within-boot ratio", "metric", f"on {first} [CI]", f"on {later_name} [CI]",
                  f"{later_name} ÷ {first} [CI] verdict"], rows,
                 caption="inside each boot: candidate ÷ baseline model, geometric mean of the "
                 "per-round ratios with its paired 95 % t-interval; across kernels: Welch's t "
                 "on the per-round log ratios, Holm over each ratio's metrics")


def _absolute_table(al: Along) -> Table:
    first = al.values[0]
    rows: list[list[Cell]] = []
    for g in al.groups:
        by_value = dict(g.cases)
        base = by_value.get(first)
        if base is None:
            continue
        lead = True
        for m in base.metrics():
            if not (m.headline or m.key == "throughput_per_s"):
                continue
            row: list[Cell] = [g.context if lead else "", metric_label(m),
                               estimate_cell(estimate(base, m.key))]
            for value in al.values[1:]:
                case = by_value.get(value)
                cc = next((cc for cc in g.comparisons if cc.candidate == value), None)
                c = cc.metrics.get(m.key) if cc is not None else None
                row.append(estimate_cell(estimate(case, m.key)) if case else "–")
                row.append(Span(cell(c), verdict_role(c.verdict)) if c else Span("–", "muted"))
            rows.append(row)
            lead = False
    header = ["cases", "metric", f"{first} [95 % CI]"]
    for value in al.values[1:]:
        header += [f"{value} [95 % CI]", f"{value} ÷ {first} [CI] (unpaired)"]
    return Table(header, rows, numeric=[2, *range(3, len(header), 2)],
                 caption="absolute figures, each kernel in its own boot: unpaired (Welch's t "
                 "on logs) and confounded by the boot's speed — not the verdict")


def kernels_section(run: RunAnalysis, o: verdict.CompareOptions) -> Section:
    """Empty (left out of the report) unless the run has more than one kernel."""
    if KEY not in varying_keys([c.case for c in run.cases]):
        return Section("Kernels")
    ac = boot_ratios.across(run, KEY, o)
    al = along(run, KEY, o)
    assert ac is not None and al is not None
    s = Section(f"Kernels: what changed from {ac.values[0]} to {', '.join(ac.values[1:])}")
    found = releases(run)
    ran = "; ".join(f"{v} = {', '.join(found.get(v, [])) or 'release unknown'}"
                    for v in ac.values)
    blocks: list[Block] = [Para([f"Kernels compared: {ran} (accelerator {run.summary.accel}). "
                                 "The first is the baseline."]), Note(CONFOUND, "warn")]
    if ac.shifts:
        blocks += [Para([f"What changed, read inside each boot: the {ac.inner} ratios per "
                         "kernel and their ratio across kernels. “slower”: the candidate "
                         "model lost ground against the baseline model on the later kernel "
                         "(a latency ratio that grew, a throughput ratio that shrank); "
                         "“faster”: it gained; “no change”: the whole CI within ±"
                         f"{100 * o.threshold:g} %."]), _ratio_table(ac)]
    else:
        blocks.append(Note(f"No within-boot ratio to compare: {ac.why_none}.", "warn"))
    blocks.append(_absolute_table(al))
    s.blocks += blocks
    return s
