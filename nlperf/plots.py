"""The report's figures (matplotlib, Agg): each rendered once to PNG (beside report.md) and SVG
(embedded in report.html).

Horizontal bars throughout: case labels stay readable without rotation, and a case without a
metric has no slot at all (never an empty one). Functions take plain numbers; which numbers is
nlperf/report.py's business.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nlperf.catalog import fmt
from nlperf.reportdoc import Figure

WIDTH_IN = 8.6
DPI = 110
PALETTE = ("#3b6fb6", "#e08a1e", "#3a9b5c", "#c2423f", "#8161b3", "#8c6d31", "#d46fae",
           "#5f6b77", "#2aa1b3", "#b5b52e")
PARTS_COLORS = ("#3b6fb6", "#e0a100", "#c2423f", "#3a9b5c")


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9.5, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.titlesize": 10.5,
                         "axes.titleweight": "bold", "legend.frameon": False})
    return plt


def render(fig, name: str, caption: str) -> Figure:  # type: ignore[no-untyped-def]
    """PNG and SVG of a laid-out figure, which is closed afterwards."""
    plt = _plt()
    png, svg = io.BytesIO(), io.StringIO()
    fig.savefig(png, format="png", dpi=DPI, facecolor="white")
    fig.savefig(svg, format="svg", metadata={"Date": None}, facecolor="white")
    plt.close(fig)
    text = svg.getvalue()
    return Figure(name, caption, png.getvalue(), text[text.find("<svg"):])


@dataclass(frozen=True)
class Bar:
    series: str  # p50, p99, lost, …: one colour per series
    value: float
    ci: tuple[float, float] | None = None


def _wants_log(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > 30


def ci_bars(name: str, caption: str, title: str, xlabel: str,
            groups: Sequence[tuple[str, Sequence[Bar]]], *, percent: bool = False,
            reference: Sequence[float] = (), band: tuple[float, float] | None = None,
            ) -> Figure | None:
    """Horizontal bars with CI whiskers, one group per case (top to bottom), each group only
    as tall as the bars it has: a case without a series gets no empty slot."""
    groups = [(label, bars) for label, bars in groups if bars]
    if not any(b.value for _, bars in groups for b in bars):
        return None  # nothing but zeros: the table says it better
    plt = _plt()
    series = list(dict.fromkeys(b.series for _, bars in groups for b in bars))
    colors = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(series)}
    bar_h, gap = 0.36, 0.5
    n_bars = sum(len(bars) for _, bars in groups)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.95 + 0.3 * n_bars + 0.18 * len(groups)))
    scale = 100.0 if percent else 1.0
    values = [b.value * scale for _, bars in groups for b in bars]
    log = not percent and not reference and _wants_log(values)
    y, ticks, reach = 0.0, [], 0.0
    for _, bars in groups:
        start = y
        for b in bars:
            v = b.value * scale
            err, end = None, v
            if b.ci is not None and all(np.isfinite(b.ci)):
                lo, hi = b.ci[0] * scale, b.ci[1] * scale
                err, end = [[max(v - lo, 0.0)], [max(hi - v, 0.0)]], max(v, hi)
            reach = max(reach, end)
            ax.barh(y, v, height=bar_h * 0.9, color=colors[b.series], xerr=err,
                    error_kw={"ecolor": "#222", "elinewidth": 1.1, "capsize": 3},
                    label=b.series)
            text = fmt(v) + (" %" if percent else "") + ("" if b.ci else "  (no CI)")
            ax.annotate(text, (end, y), xytext=(5, 0), textcoords="offset points",
                        va="center", fontsize=8, color="#333")
            y += bar_h
        ticks.append((start + y - bar_h) / 2)
        y += gap
    ax.set_yticks(ticks, [label for label, _ in groups])
    ax.set_ylim(y - gap + bar_h / 2, -bar_h)
    if band is not None:
        ax.axvspan(*band, color="#e9edf2", zorder=0)
    for x in reference:
        ax.axvline(x, color="#666", linewidth=0.9, linestyle="--", zorder=0)
    if log:
        ax.set_xscale("log")
        ax.margins(x=0.14)
    else:  # room on the right for the value labels past the longest whisker
        left = min(0.0, *values)
        ax.set_xlim(left, max(reach, *reference, band[1] if band else 0.0) * 1.16 or 1.0)
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    if len(unique) > 1:
        ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.0, 1.0),
                  fontsize=8.5)
    ax.grid(axis="x", color="#eee")
    ax.set_axisbelow(True)
    fig.tight_layout()
    return render(fig, name, caption)


def stacked(name: str, caption: str, title: str, parts: Sequence[str],
            rows: Sequence[tuple[str, Sequence[float]]]) -> Figure | None:
    """One stacked horizontal bar per case: where its time goes."""
    if not rows:
        return None
    plt = _plt()
    height = 1.4 + 0.45 * len(rows)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, height))
    total = max(sum(v) for _, v in rows) or 1.0
    for i, (_, values) in enumerate(rows):
        left = 0.0
        for j, v in enumerate(values):
            ax.barh(i, v, left=left, height=0.62, color=PARTS_COLORS[j % len(PARTS_COLORS)],
                    label=parts[j] if i == 0 else None, edgecolor="white", linewidth=0.6)
            if v > 0.07 * total:
                ax.text(left + v / 2, i, fmt(v), ha="center", va="center", fontsize=8,
                        color="white", fontweight="bold")
            left += v
        ax.annotate(f"{fmt(left)} µs", (left, i), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8, color="#333")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.margins(x=0.1)
    ax.set_title(title, loc="left")
    ax.legend(ncol=len(parts), loc="upper left", bbox_to_anchor=(0.0, -0.08 - 0.5 / height),
              fontsize=8.5)
    ax.grid(axis="x", color="#eee")
    ax.set_axisbelow(True)
    fig.tight_layout()
    return render(fig, name, caption)


QUANTILE_GRID = np.concatenate([np.linspace(0.0, 0.99, 991), np.linspace(0.99, 1.0, 101)[1:]])


def cdf(name: str, caption: str, title: str, xlabel: str,
        lines: Sequence[tuple[str, np.ndarray]]) -> Figure | None:
    """Empirical CDFs on a log x axis, drawn from ≤ 1090 quantiles a line (small SVGs)."""
    lines = [(label, v[np.isfinite(v) & (v > 0)]) for label, v in lines]
    lines = [(label, v) for label, v in lines if v.size]
    if not lines:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.9))
    for i, (label, values) in enumerate(lines):
        q = np.quantile(values, QUANTILE_GRID)
        ax.step(q, QUANTILE_GRID, where="post", color=PALETTE[i % len(PALETTE)], linewidth=1.5,
                label=f"{label} (n={values.size})")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.01)
    for p in (0.5, 0.99):
        ax.axhline(p, color="#999", linewidth=0.7, linestyle=":")
        ax.annotate(f"p{int(p * 100)}", (1.0, p), xycoords=("axes fraction", "data"),
                    xytext=(2, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of messages ≤ x")
    ax.set_title(title, loc="left")
    ax.legend(loc="lower right", fontsize=8.5)
    ax.grid(color="#eee")
    fig.tight_layout()
    return render(fig, name, caption)


Buckets = dict[float, tuple[float, int]]  # lo (ns) → (hi, count), zero bucket left out


def histograms(name: str, caption: str, title: str,
               panels: Sequence[tuple[str, Sequence[tuple[str, Buckets]]]]) -> Figure | None:
    """log2 histograms, one panel per probe row, one line per case (fraction of events)."""
    panels = [(t, [(label, b) for label, b in lines if b]) for t, lines in panels]
    panels = [(t, lines) for t, lines in panels if lines]
    if not panels:
        return None
    plt = _plt()
    cols = 1 if len(panels) == 1 else 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 0.5 + 2.4 * rows), squeeze=False)
    labels = list(dict.fromkeys(label for _, lines in panels for label, _ in lines))
    for ax, (panel_title, lines) in zip(axes.flat, panels, strict=False):
        for label, buckets in lines:
            los = sorted(buckets)
            total = sum(n for _, n in buckets.values())
            edges = [lo / 1000 for lo in los] + [buckets[los[-1]][0] / 1000]
            heights = [buckets[lo][1] / total for lo in los]
            color = PALETTE[labels.index(label) % len(PALETTE)]
            ax.stairs(heights, edges, color=color, linewidth=1.4, label=label)
        ax.set_xscale("log")
        if len(panels) == 1:
            same = panel_title.lower() == title.lower()
            ax.set_title(title if same else f"{title}: {panel_title}", loc="left")
        else:
            ax.set_title(panel_title, loc="left", fontsize=9.5)
        ax.set_xlabel("µs (log2 buckets)")
        ax.set_ylabel("fraction")
        ax.grid(color="#eee")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, names = [], []
    for ax in list(axes.flat)[:len(panels)]:
        for h, n in zip(*ax.get_legend_handles_labels(), strict=True):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(0.77, 0.9), fontsize=8.5)
    if len(panels) > 1:
        fig.suptitle(title, x=0.01, ha="left", fontweight="bold", fontsize=10.5)
    fig.tight_layout(rect=(0, 0, 0.77, 0.97 if rows > 1 else 1.0))
    return render(fig, name, caption)


def loss_curves(name: str, caption: str, title: str,
                lines: Sequence[tuple[str, Sequence[tuple[float, float]]]]) -> Figure | None:
    """Loss fraction against rate (log x), one line per series of (rate, fraction) points;
    repeated rates (confirmation runs) are drawn as their mean, every run as a dot."""
    lines = [(label, pts) for label, pts in lines if pts]
    if not lines:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.9))
    for i, (label, pts) in enumerate(lines):
        color = PALETTE[i % len(PALETTE)]
        by_rate: dict[float, list[float]] = {}
        for rate, frac in pts:
            by_rate.setdefault(rate, []).append(frac)
        xs = sorted(by_rate)
        ax.plot(xs, [float(np.mean(by_rate[x])) for x in xs], color=color, linewidth=1.4,
                label=label)
        ax.scatter([r for r, _ in pts], [f for _, f in pts], color=color, s=12, zorder=3)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("generator rate (messages/s, log)")
    ax.set_ylabel("loss fraction (lost / sent)")
    ax.set_title(title, loc="left")
    ax.legend(loc="upper left", fontsize=8.5)
    ax.grid(color="#eee")
    fig.tight_layout()
    return render(fig, name, caption)
