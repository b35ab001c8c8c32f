"""The report's per-topic sections: narrow tables (one topic each, only the cases it applies
to) with their plots, the environment, the cases, and every estimate in detail."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nlperf import plots
from nlperf.analysis import CaseAnalysis, CountEstimate, RunAnalysis, ValueEstimate
from nlperf.capacity import knee_text
from nlperf.catalog import Metric, fmt, fmt_metric
from nlperf.reportdoc import Block, Cell, Details, Para, Section, Span, Table


def estimate_cell(e: ValueEstimate | CountEstimate | None) -> str:
    """'221 [213, 229]', '221 (no CI)', or a rate with its exact Poisson CI."""
    if e is None:
        return "–"
    if isinstance(e, CountEstimate):
        lo, hi = e.ci
        if e.metric.unit == "of sent":
            hi = min(hi, 1.0)  # a fraction of what was sent
        return (f"{fmt_metric(e.metric, e.rate)} [{fmt_metric(e.metric, lo)}, "
                f"{fmt_metric(e.metric, hi)}]")
    s = e.summary
    if s.ci is None:
        return f"{fmt(s.estimate)} (no CI)"
    return f"{fmt(s.estimate)} [{fmt(s.ci[0])}, {fmt(s.ci[1])}]"


def metric_label(m: Metric) -> str:
    return f"{m.label} ({m.unit})"


def estimate(case: CaseAnalysis, key: str) -> ValueEstimate | CountEstimate | None:
    return case.values.get(key) or case.counts.get(key)


def bar(series: str, e: ValueEstimate | CountEstimate | None) -> list[plots.Bar]:
    if e is None:
        return []
    if isinstance(e, CountEstimate):
        lo, hi = e.ci
        return [plots.Bar(series, e.rate, (lo, min(hi, 1.0) if e.metric.unit == "of sent"
                                           else hi))]
    return [plots.Bar(series, e.summary.estimate, e.summary.ci)]


def _topic_table(cases: list[CaseAnalysis], keys: list[str], caption: str = "") -> Table | None:
    """One row per case that has any of ``keys``; one column per key some case has."""
    present = [k for k in keys if any(estimate(c, k) for c in cases)]
    rows_of = [c for c in cases if any(estimate(c, k) for k in present)]
    if not rows_of:
        return None
    first = {k: next(e for c in rows_of if (e := estimate(c, k)) is not None) for k in present}
    header = ["case", "reps", *[metric_label(first[k].metric) for k in present]]
    rows: list[list[Cell]] = [[c.label, str(c.repetitions),
                               *[estimate_cell(estimate(c, k)) for k in present]]
                              for c in rows_of]
    return Table(header, rows, numeric=range(1, len(header)), caption=caption)


def _samples_of(run: RunAnalysis, case: CaseAnalysis) -> pd.DataFrame | None:
    """The case's message samples from the pass that measured its workload."""
    df = run.samples
    if df is None or "case" not in df:
        return None
    mine = df[df["case"] == case.id]
    if "control" in mine:
        same_pass = mine[mine["control"].astype(bool) == (case.workload_pass == "control")]
        mine = same_pass if len(same_pass) else mine
    return mine


def _cdf_lines(run: RunAnalysis, column: str, unicast: bool
               ) -> list[tuple[str, np.ndarray]]:
    lines: list[tuple[str, np.ndarray]] = []
    for c in run.cases:
        df = _samples_of(run, c)
        if df is None or column not in df or "source" not in df:
            continue
        if unicast:
            groups = [(c.label, df[df["source"] == "unicast"])]
        else:
            mc = df[df["source"] != "unicast"]
            groups = [(f"{c.label} · {src}", g) for src, g in mc.groupby("source", sort=True)]
        for label, g in groups:
            values = pd.to_numeric(g[column], errors="coerce").dropna().to_numpy(float) / 1000
            if values.size:
                lines.append((label, values))
    return lines


def unicast_section(run: RunAnalysis) -> Section:
    s = Section("Unicast round trip")
    table = _topic_table(run.cases, ["rtt_p50_us", "rtt_p99_us", "throughput_per_s"],
                         "geometric mean over repetitions [95 % CI]")
    blocked = _topic_table(run.cases, ["send_syscall_p50_us", "send_syscall_p99_us"],
                           "the sender's time blocked in send syscalls (probes): geometric mean "
                           "over repetitions [95 % CI]")
    s.blocks += [t for t in (table, blocked) if t is not None]
    if table is None:
        return s
    fig = plots.ci_bars("fig-rtt-percentiles", "Round trip p50 and p99 per case, whiskers: "
                        "95 % CI over repetitions", "Round trip percentiles (µs)", "µs",
                        [(c.label, bar("p50", c.values.get("rtt_p50_us"))
                          + bar("p99", c.values.get("rtt_p99_us"))) for c in run.cases])
    s.blocks += [fig] if fig else []
    lines = _cdf_lines(run, "rtt_ns", unicast=True)
    fig = plots.cdf("fig-rtt-cdf", "Round-trip distribution per case (all messages of the "
                    "measured pass, log x)", "Round trip CDF", "round trip (µs, log)", lines)
    s.blocks.append(fig if fig else Para([Span(
        "No round-trip CDF: this run has no per-message samples (samples.parquet).", "muted")]))
    return s


def multicast_section(run: RunAnalysis) -> Section:
    s = Section("Multicast")
    cases = [c for c in run.cases if c.receivers()]
    if not cases:
        return s
    latency_rows: list[list[Cell]] = []
    loss_rows: list[list[Cell]] = []
    loss_bars, latency_bars = [], []
    for c in cases:
        for rid, groups, enobufs in c.receivers():
            def e(base: str, case: CaseAnalysis = c, rid: str = rid
                  ) -> ValueEstimate | CountEstimate | None:
                return estimate(case, f"{base}[{rid}]")
            where = [c.label, rid, ",".join(map(str, groups))]
            latency_rows.append([*where, estimate_cell(e("mc_latency_p50_us")),
                                 estimate_cell(e("mc_latency_p99_us"))])
            loss_rows.append([*where, estimate_cell(e("mc_lost")),
                              estimate_cell(e("mc_sk_drops")), str(enobufs)])
            label = f"{c.label} · {rid}"
            loss_bars.append((label, bar("lost", e("mc_lost")) + bar("sk_drops", e("mc_sk_drops"))))
            latency_bars.append((label, bar("p50", e("mc_latency_p50_us"))
                                 + bar("p99", e("mc_latency_p99_us"))))
    s.blocks.append(Table(["case", "receiver", "groups", "lost (of sent)", "sk_drops (of sent)",
                           "ENOBUFS seen"], loss_rows, numeric=range(3, 6),
                          caption="what the module sent to a receiver's groups and it did not "
                          "get: pooled rate [exact Poisson 95 % CI]"))
    s.blocks.append(Table(["case", "receiver", "groups", "latency p50 (µs)", "latency p99 (µs)"],
                          latency_rows, numeric=range(3, 5),
                          caption="kernel send → user receive: geometric mean over repetitions "
                          "[95 % CI]"))
    spacing = _spacing_rows(cases)
    if spacing:
        s.blocks.append(Table(["case", "group", "spacings", "send spacing p50 (µs)",
                               "send spacing p99 (µs)"], spacing, numeric=range(2, 5),
                              caption="the source's achieved spacing between a group's "
                              "consecutive sends (kernel send stamps; pairs across a lost "
                              "message left out), all repetitions pooled: a p50 below the "
                              "schedule's interval shows bursts, a long p99 stalls"))
    for fig in (
        plots.ci_bars("fig-mc-loss", "Multicast loss and socket drops per receiver, % of what "
                      "the module sent to its groups (whiskers: exact Poisson 95 % CI)",
                      "Lost and dropped per receiver (% of sent)", "% of sent", loss_bars,
                      percent=True),
        plots.ci_bars("fig-mc-latency", "Multicast latency per receiver, p50 and p99 (whiskers:"
                      " 95 % CI over repetitions)", "Multicast latency per receiver (µs)", "µs",
                      latency_bars),
        plots.cdf("fig-mc-cdf", "Multicast latency distribution per receiver (log x)",
                  "Multicast latency CDF", "latency (µs, log)",
                  _cdf_lines(run, "latency_ns", unicast=False))):
        s.blocks += [fig] if fig else []
    return s


def _spacing_rows(cases: list[CaseAnalysis]) -> list[list[Cell]]:
    """Per case and group, the send spacing pooled over the measured pass's repetitions."""
    rows: list[list[Cell]] = []
    for c in cases:
        pooled = c.case.control if c.workload_pass == "control" else c.case
        mc = pooled.multicast if pooled is not None else None
        for group, sp in sorted(((mc and mc.send_spacing_by_group) or {}).items(),
                                key=lambda kv: int(kv[0])):
            rows.append([c.label, group, str(sp.count),
                         *[fmt(None if ns is None else ns / 1000.0)
                           for ns in (sp.p50_ns, sp.p99_ns)]])
    return rows


def _hist_buckets(run: RunAnalysis, case_id: str, row: str) -> plots.Buckets:
    out: dict[float, list[float]] = {}
    for rep in (run.histograms or {}).get(case_id, []):
        got = rep.get("rows", {}).get(row) if isinstance(rep, dict) else None
        for lo, hi, n in (got or {}).get("log2", []):
            if lo > 0 and n:
                out.setdefault(float(lo), [float(hi), 0])[1] += int(n)
    return {lo: (hi, int(n)) for lo, (hi, n) in out.items()}


def _hist_rows(run: RunAnalysis, prefixes: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for reps in (run.histograms or {}).values():
        for rep in reps if isinstance(reps, list) else []:
            rows = rep.get("rows", {}) if isinstance(rep, dict) else {}
            names += [n for n in rows if n.startswith(prefixes) and n not in names]
    return names


def _row_title(row: str) -> str:
    """'netlink_unicast/to_kernel' → 'netlink_unicast(), to kernel'; 'wakeup/kthread' → …"""
    what, _, where = row.partition("/")
    if what == "wakeup":
        return f"{where} wakeup → run"
    return f"{what}(), {where.replace('_', ' ')}" if where else f"{what}()"


def _hist_figure(run: RunAnalysis, name: str, caption: str, title: str,
                 prefixes: tuple[str, ...]) -> Block | None:
    panels = [(_row_title(row), [(c.label, _hist_buckets(run, c.id, row)) for c in run.cases])
              for row in _hist_rows(run, prefixes)]
    return plots.histograms(name, caption, title, panels)


def sched_section(run: RunAnalysis) -> Section:
    s = Section("Scheduling")
    table = _topic_table(run.cases, ["ctx_switches_per_msg", "kthread_wakeup_p50_us",
                                     "kthread_wakeup_p99_us"],
                         "context switches of the lab's processes (and the module's kthread) "
                         "per message: pooled rate [exact Poisson 95 % CI]")
    if table is None:
        return s
    s.blocks.append(table)
    for fig in (
        plots.ci_bars("fig-ctx-switches", "Context switches per message per case (whiskers: "
                      "exact Poisson 95 % CI)", "Context switches per message", "per message",
                      [(c.label, bar("switches", c.counts.get("ctx_switches_per_msg")))
                       for c in run.cases]),
        _hist_figure(run, "fig-kthread-wakeup", "The module kthread's wakeup → running "
                     "latency (probe histograms, all probed repetitions)",
                     "kthread wakeup → run", ("wakeup/kthread",))):
        s.blocks += [fig] if fig else []
    return s


def probes_section(run: RunAnalysis) -> Section:
    s = Section("Probe-measured calls")
    table = _topic_table(run.cases, ["netlink_unicast_p50_us", "netlink_unicast_p99_us",
                                     "netlink_broadcast_p50_us", "netlink_broadcast_p99_us"],
                         "duration of each call, entry → return, probed pass")
    if table is not None:
        s.blocks.append(table)
    fig = _hist_figure(run, "fig-call-durations", "netlink call durations per direction "
                       "(probe histograms, all probed repetitions)",
                       "Probe-measured call durations", ("netlink_",))
    s.blocks += [fig] if fig else []
    return s


# --------------------------------------------------------------------------- environment, cases


def _describe(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_describe(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return str(value)


def environment_section(run: RunAnalysis) -> Section:
    s = Section("Environment")
    summ, env = run.summary, run.env
    groups = [env, *(env.more or [])] if env is not None else []
    facts: list[tuple[str, list[str]]] = [
        ("kernel", [g.kernel for g in groups] or [summ.kernel or "unknown"]),
        ("target", [g.target for g in groups] or [summ.target]),
        ("accelerator", [g.accel for g in groups] or [summ.accel]),
        ("clocksource", [g.clocksource or "unknown" for g in groups]
         or [summ.clocksource or "unknown"]),
        ("CPUs", [str(g.cpus) if g.cpus else "unknown" for g in groups] or ["unknown"]),
        ("nlperf", [g.nlperf_version for g in groups] or [summ.nlperf_version]),
        ("Python", [g.python for g in groups] or ["unknown"])]
    width = max(len(v) for _, v in facts)
    header = ["", *(["value"] if width == 1 else [f"group {i + 1}" for i in range(width)])]
    s.blocks.append(Table(header, [[k, *v] for k, v in facts]))
    attach = dict(env.probes.attach) if env is not None else {}
    for c in run.summary.cases:
        if not attach and c.probes is not None:
            attach = dict(c.probes.attach)
    if attach:
        s.blocks.append(Table(["probe", "attached as"], [[k, v] for k, v in attach.items()],
                              caption="how each probe attached"))
    spent = summ.phases_s or {}
    if spent:
        total = spent.get("total")
        s.blocks.append(Table(
            ["phase", "seconds", "share"],
            [[k, f"{v:.2f}", f"{v / total:.1%}" if total and k != "total" else ""]
             for k, v in spent.items()], numeric=(1, 2),
            caption="where the run's wall-clock time went (repetition phases summed over every "
                    "repetition, control runs included; the report's own time is not in it)"))
    return s


PASS_NAMES = {"control": "probes-off pass", "probed": "probed pass", "only": "its only pass"}


def cases_section(run: RunAnalysis) -> Section:
    s = Section("Cases")
    rows: list[list[Cell]] = []
    for c in run.cases:
        case = c.case
        control = len(case.control.repetitions) if case.control is not None else 0
        notes = [case.error] if case.error else []
        auto = getattr(case, "repetitions_auto", None)
        if auto is not None:
            notes.append(f"repetitions auto: {_describe(auto)}")
        status = (case.status.value if case.status is not None else "complete")
        rows.append([Span(case.id, "code"), c.label, status,
                     f"{len(case.repetitions)}" + (f" + {control} off" if control else ""),
                     PASS_NAMES[c.workload_pass], "; ".join(notes)])
    s.blocks.append(Table(["id", "label", "status", "repetitions", "measured by", "notes"],
                          rows, caption="“measured by”: the pass the workload metrics come from"))
    return s


def details_section(run: RunAnalysis) -> Section:
    s = Section("Every estimate")
    for c in run.cases:
        rows: list[list[Cell]] = []
        for m in c.metrics():
            e = estimate(c, m.key)
            if isinstance(e, ValueEstimate):
                sm = e.summary
                spread = f"{fmt(sm.min)}–{fmt(sm.max)}"
                cv = f"{100 * sm.cv:.1f} %" if sm.cv is not None else "–"
                warn = "; ".join(w for w in sm.warnings if not w.startswith("only "))
                rows.append([metric_label(m), estimate_cell(e), spread, cv, str(sm.n),
                             Span(warn, "warn") if warn else ""])
            elif isinstance(e, CountEstimate):
                rates = e.rates
                rows.append([metric_label(m), estimate_cell(e),
                             f"{fmt_metric(m, min(rates))}–{fmt_metric(m, max(rates))}", "–",
                             str(len(rates)), f"{e.events} of {e.exposure}"])
        if rows:
            s.blocks.append(Details(f"{c.label} — {c.id}", [Table(
                ["metric", "estimate [95 % CI]", "min–max over repetitions", "CV", "n", "notes"],
                rows, numeric=[1, 2, 3, 4])]))
    return s


def dump_section(run: RunAnalysis) -> Section:
    """Dumps read to NLMSG_DONE: the pooled block of each case that ran them."""
    s = Section("Dumps")
    rows: list[list[Cell]] = []
    for c in run.cases:
        d = c.case.dump
        if d is None:
            continue
        rows.append([c.label, str(len(c.workload_reps)), fmt(d.objects_per_s),
                     fmt(d.bytes_per_s / 1e6), fmt(d.msgs_per_recv),
                     fmt(d.duration_ns.p50 / 1e6) if d.duration_ns.p50 is not None else "–",
                     fmt(d.duration_ns.p99 / 1e6) if d.duration_ns.p99 is not None else "–",
                     str(d.dumps), str(d.interrupted), str(d.retries)])
    if rows:
        header = ["case", "reps", "objects/s", "MB/s", "messages per recv", "dump p50 (ms)",
                  "dump p99 (ms)", "dumps", "interrupted", "retries"]
        s.blocks.append(Table(header, rows, numeric=range(1, len(header)), caption=(
            "pooled over the measured repetitions: counts and time summed, durations per dump "
            "with its retries")))
    return s


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}/s"


def capacity_section(run: RunAnalysis) -> Section:
    """Issue #11: the knees of every case with a capacity sweep, the charge per queued
    message, the planning rule, and every probe point (drops against ENOBUFS)."""
    s = Section("Multicast capacity")
    swept = [c for c in run.summary.cases if c.capacity is not None and c.capacity.series]
    for n, case in enumerate(swept, 1):
        cap = case.capacity
        assert cap is not None
        rcvbufs = sorted({sr.rcvbuf for sr in cap.series})
        rows_of: dict[tuple[int, bool], dict[int, Any]] = {}
        for sr in cap.series:
            rows_of.setdefault((sr.delay_us, sr.no_enobufs), {})[sr.rcvbuf] = sr
        rows: list[list[Cell]] = []
        for (delay, ne), by_buf in sorted(rows_of.items()):
            cells: list[Cell] = [str(delay), "yes" if ne else "no"]
            for b in rcvbufs:
                sr = by_buf.get(b)
                cell = "–" if sr is None else knee_text(sr)
                cells.append(cell)
            rows.append(cells)
        s.blocks.append(Table(["delay_us", "NO_ENOBUFS", *[f"rcvbuf {b}" for b in rcvbufs]],
                              rows, numeric=range(2, 2 + len(rcvbufs)), caption=(
            f"{case.id}: highest generator rate with zero loss (the knee) for bursts of "
            f"{cap.messages} messages of {cap.size} bytes; –: not measured")))
        if cap.truesize:
            s.blocks.append(Table(["payload (B)", "queued", "charged per message (B)", "ratio"],
                                  [[str(t.size), str(t.queued), f"{t.truesize:.0f}",
                                    f"{t.ratio:.2f}×"] for t in cap.truesize],
                                  numeric=range(0, 4), caption=(
                "what the receive queue is charged per queued message (sk_rmem_alloc / "
                "messages queued: skb truesize), against the payload")))
        s.blocks += [Para([r]) for r in cap.rules[:1 + len(cap.truesize)]]
        fig = plots.loss_curves(
            f"fig-capacity-{n}", f"{case.id}: loss fraction per probe run against "
            "the generator's rate, one line per receiver cost × rcvbuf (dots: every run)",
            "Multicast loss against rate", [
                (f"delay {sr.delay_us} µs, rcvbuf {sr.rcvbuf}"
                 + (", NO_ENOBUFS" if sr.no_enobufs else ""),
                 [(p.rate_per_s, p.loss_fraction) for p in sr.points]) for sr in cap.series])
        s.blocks += [fig] if fig else []
        points: list[list[Cell]] = [
            [str(sr.delay_us), str(sr.rcvbuf), "yes" if sr.no_enobufs else "no",
             _rate(p.rate_per_s) + (" (confirm)" if p.confirm else ""),
             _rate(p.achieved_per_s), str(p.sent),
             str(p.lost), "–" if p.sk_drops is None else str(p.sk_drops), str(p.enobufs)]
            for sr in cap.series for p in sr.points]
        s.blocks.append(Details(f"{case.id}: every probe run", [Table(
            ["delay_us", "rcvbuf", "NO_ENOBUFS", "rate", "achieved", "sent", "lost",
             "sk_drops", "ENOBUFS seen"], points, numeric=range(3, 9), caption=(
                "achieved: 1e9 / the mean kernel send spacing (the generator may fall short "
                "of the rate asked); sk_drops counts every message the socket dropped; ENOBUFS "
                "is reported once per congestion episode, and never with NETLINK_NO_ENOBUFS"))]))
    return s
