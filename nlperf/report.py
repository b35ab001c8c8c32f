"""Reports (Markdown + HTML with a plot) and cross-run comparisons, from summary.json alone.

A report is derived data: it can be rewritten at any time from the run directory and never
changes the results it reads.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from nlperf import results
from nlperf.errors import BadInput

COLUMNS = ["run", "case", "status", "sent", "received", "errors", "throughput_per_s",
           "rtt_p50_us", "rtt_p99_us", "queue_p50_us", "processing_p50_us", "mc_sent",
           "mc_received", "mc_lost", "mc_sk_drops", "mc_latency_p50_us", "probe_tput_pct",
           "probe_p50_pct", "probe_mc_p50_pct"]


def load_summary(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir}: not a run directory")
    summary = results.read_json(run_dir / results.SUMMARY)
    problems = results.validation_errors(summary)
    if problems:
        raise BadInput(f"{run_dir / results.SUMMARY}: not a valid summary: {problems[0]}")
    return summary


def _p(block: dict[str, Any] | None, key: str) -> float | None:
    return None if not block else block.get(key)


def case_rows(run_dir: Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for case in summary["cases"]:
        u = case.get("unicast") or {}
        m = case.get("multicast") or {}
        recv = m.get("receivers", [])
        drops = [r["sk_drops"] for r in recv if r["sk_drops"] is not None]
        lat = [r["latency_us"]["p50"] for r in recv if r["latency_us"]["p50"] is not None]
        overhead = (case.get("probes") or {}).get("overhead") or {}
        rows.append({
            "run": run_dir.name, "case": case["id"], "status": case.get("status", "complete"),
            "sent": u.get("sent"), "received": u.get("received"), "errors": u.get("errors"),
            "throughput_per_s": u.get("throughput_per_s"),
            "rtt_p50_us": _p(u.get("rtt_us"), "p50"), "rtt_p99_us": _p(u.get("rtt_us"), "p99"),
            "queue_p50_us": _p(u.get("queue_us"), "p50"),
            "processing_p50_us": _p(u.get("processing_us"), "p50"),
            "mc_sent": sum(r["sent"] for r in recv) if recv else None,
            "mc_received": sum(r["received"] for r in recv) if recv else None,
            "mc_lost": sum(r["lost"] for r in recv) if recv else None,
            "mc_sk_drops": sum(drops) if drops else None,
            "mc_latency_p50_us": round(sum(lat) / len(lat), 3) if lat else None,
            # the observer effect: probed run against the probes-off control run
            "probe_tput_pct": overhead.get("throughput_pct"),
            "probe_p50_pct": overhead.get("p50_pct"),
            "probe_mc_p50_pct": overhead.get("multicast_latency_p50_pct"),
        })
    return rows


COUNT_COLUMNS = ("sent", "received", "errors", "mc_sent", "mc_received", "mc_lost",
                 "mc_sk_drops")


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    # counts stay integers next to the blanks of cases they do not apply to
    df = df.astype({c: "Int64" for c in COUNT_COLUMNS})
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
    summary = load_summary(run_dir)
    df = _frame(case_rows(run_dir, summary))
    head = (f"# nlperf report: {summary['scenario']}\n\n"
            f"status **{summary['status']}** · target {summary['target']} · accel "
            f"{summary['accel']} · kernel {summary['kernel']} · clocksource "
            f"{summary['clocksource']} · nlperf {summary['nlperf_version']} · "
            f"{summary['started']} → {summary['finished']}\n")
    note = ("\nMeasured under software emulation (TCG): compare ratios within this run, not "
            "absolute times.\n" if summary["accel"] == "tcg" else "")
    table = _markdown(df) if len(df) else "_no finished cases_"
    plotted = _plot(df, run_dir / "rtt.png")
    md = head + note + "\n## Cases\n\n" + table + "\n"
    if plotted:
        md += "\n![round trip per case](rtt.png)\n"
    (run_dir / "report.md").write_text(md)
    body = (f"<h1>nlperf report: {html.escape(summary['scenario'])}</h1>"
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
