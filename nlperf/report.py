"""Reports (Markdown + HTML with a plot) and cross-run comparisons, from summary.json alone.

A report is derived data: it can be rewritten at any time from the run directory and never
changes the results it reads. Its table is declared once, in ``COLUMNS``: a column's name,
how to read it off a case, and whether it is a count.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nlperf import results
from nlperf.models import Case, Latency, Receiver, Status, Summary


@dataclass(frozen=True)
class Row:
    run: str
    case: Case


@dataclass(frozen=True)
class Column:
    name: str
    value: Callable[[Row], Any]
    count: bool = False  # an integer count: stays an integer next to blanks


def _p(block: Latency | None, pct: str) -> float | None:
    return None if block is None else getattr(block, pct)


def _receivers(row: Row) -> list[Receiver]:
    return row.case.multicast.receivers if row.case.multicast else []


def _mc_sum(field: str) -> Callable[[Row], int | None]:
    def total(row: Row) -> int | None:
        values = [getattr(r, field) for r in _receivers(row)]
        known = [v for v in values if v is not None]
        return sum(known) if known else None
    return total


def _mc_latency_p50(row: Row) -> float | None:
    lat = [r.latency_us.p50 for r in _receivers(row) if r.latency_us.p50 is not None]
    return round(sum(lat) / len(lat), 3) if lat else None


def _overhead(field: str) -> Callable[[Row], float | None]:
    """The observer effect: probed run against the probes-off control run."""
    def pct(row: Row) -> float | None:
        probes = row.case.probes
        overhead = probes.overhead if probes else None
        return getattr(overhead, field) if overhead else None
    return pct


def _unicast(read: Callable[[Any], Any]) -> Callable[[Row], Any]:
    return lambda row: read(row.case.unicast) if row.case.unicast else None


COLUMNS: tuple[Column, ...] = (
    Column("run", lambda row: row.run),
    Column("case", lambda row: row.case.id),
    Column("status", lambda row: (row.case.status or Status.complete).value),
    Column("sent", _unicast(lambda u: u.sent), count=True),
    Column("received", _unicast(lambda u: u.received), count=True),
    Column("errors", _unicast(lambda u: u.errors), count=True),
    Column("throughput_per_s", _unicast(lambda u: u.throughput_per_s)),
    Column("rtt_p50_us", _unicast(lambda u: u.rtt_us.p50)),
    Column("rtt_p99_us", _unicast(lambda u: u.rtt_us.p99)),
    Column("queue_p50_us", _unicast(lambda u: _p(u.queue_us, "p50"))),
    Column("processing_p50_us", _unicast(lambda u: _p(u.processing_us, "p50"))),
    Column("mc_sent", _mc_sum("sent"), count=True),
    Column("mc_received", _mc_sum("received"), count=True),
    Column("mc_lost", _mc_sum("lost"), count=True),
    Column("mc_sk_drops", _mc_sum("sk_drops"), count=True),
    Column("mc_latency_p50_us", _mc_latency_p50),
    Column("probe_tput_pct", _overhead("throughput_pct")),
    Column("probe_p50_pct", _overhead("p50_pct")),
    Column("probe_mc_p50_pct", _overhead("multicast_latency_p50_pct")),
)


def load_summary(run_dir: Path) -> Summary:
    return results.read_summary(run_dir)


def case_rows(run_dir: Path, summary: Summary) -> list[dict[str, Any]]:
    rows = [Row(run_dir.name, case) for case in summary.cases]
    return [{c.name: c.value(row) for c in COLUMNS} for row in rows]


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=[c.name for c in COLUMNS])
    # counts stay integers next to the blanks of cases they do not apply to
    df = df.astype({c.name: "Int64" for c in COLUMNS if c.count})
    return df.dropna(axis=1, how="all")


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines)


def _plot(df: pd.DataFrame, path: Path) -> bool:
    if "rtt_p50_us" not in df or df["rtt_p50_us"].isna().all():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(df)), 3.2))
    ax.bar(df["case"], df["rtt_p50_us"], label="p50")
    if "rtt_p99_us" in df:
        ax.scatter(df["case"], df["rtt_p99_us"], color="black", marker="_", s=200, label="p99")
    ax.set_ylabel("round trip (µs)")
    ax.legend()
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(run_dir: Path) -> Path:
    s = load_summary(run_dir)
    df = _frame(case_rows(run_dir, s))
    head = (f"# nlperf report: {s.scenario}\n\n"
            f"status **{s.status.value}** · target {s.target} · accel {s.accel} · kernel "
            f"{s.kernel} · clocksource {s.clocksource} · nlperf {s.nlperf_version} · "
            f"{s.started} → {s.finished}\n")
    note = ("\nMeasured under software emulation (TCG): compare ratios within this run, not "
            "absolute times.\n" if s.accel == "tcg" else "")
    table = _markdown(df) if len(df) else "_no finished cases_"
    plotted = _plot(df, run_dir / "rtt.png")
    md = head + note + "\n## Cases\n\n" + table + "\n"
    if plotted:
        md += "\n![round trip per case](rtt.png)\n"
    (run_dir / "report.md").write_text(md)
    body = (f"<h1>nlperf report: {html.escape(s.scenario)}</h1>"
            f"<p>{html.escape(head.splitlines()[2])}</p><p>{html.escape(note.strip())}</p>"
            + df.to_html(index=False, na_rep="", border=0)
            + ('<p><img src="rtt.png" alt="round trip per case"></p>' if plotted else ""))
    (run_dir / "report.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>nlperf report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:4px 8px;border-bottom:1px solid #ccc;text-align:right}</style>"
        f"</head><body>{body}</body></html>\n")
    return run_dir / "report.md"


def compare_table(run_dirs: list[Path], fmt: str) -> str:
    rows: list[dict[str, Any]] = []
    for d in run_dirs:
        rows += case_rows(d, load_summary(d))
    df = _frame(rows)
    if fmt == "json":
        return json.dumps(json.loads(df.to_json(orient="records")), indent=2)
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    return _markdown(df)
