"""A case's probe counters: the probed repetitions' ``probes`` blocks pooled (models.CaseProbes).

Counts are summed (calls by result and direction, overruns, deliveries, scheduler events,
kretprobe misses: unknown in one repetition, unknown for the case);
latency blocks are computed from the repetitions' histograms (probe-histograms.json rows)
added bucket by bucket, and left out where no repetition has the row. Per-process and
per-socket detail is not pooled: every repetition has new processes and sockets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nlperf.models import CaseProbes, Latency
from nlperf.probe_blocks import MODULE_FUNCS, SCHED_COUNTS, latency_summary
from nlperf.probe_table import D_NONE, DIRS, LOG2_SLOTS, PROBES, ROLES

COUNTED = ("netlink_unicast", "netlink_broadcast", "netlink_broadcast_filtered")
PER_SOCKET = ("netlink_overrun", "deliveries")


def row_label(probe: str, slot: int) -> str:
    """The name of a histogram row, as nlperf.probe_blocks.histograms_block writes it.

    The netlink and module rows are per direction, the scheduler and workqueue rows per role
    (tests/test_samples_metrics.py holds this equal to histograms_block for every row).
    """
    if PROBES.index(probe) < PROBES.index("work"):
        return f"{probe}/{DIRS[slot]}"
    return f"{probe}/{ROLES[slot] if slot < len(ROLES) else slot}"


@dataclass
class _Row:
    count: int
    sum_ns: int
    max_ns: int
    log2: list[int]
    linear: list[int]


def _log2_slot(hi: int) -> int:
    """The slot of a log2 bucket [lo, hi): slot 0 is [0, 1), slot s ≥ 1 is [2^(s-1), 2^s)."""
    return max(int(hi).bit_length() - 1, 0)


def pooled_rows(histograms: Iterable[Mapping[str, Any]]) -> tuple[dict[str, _Row], int]:
    """Rows added over repetitions; linear buckets only while every repetition has the same
    step and bucket count (else the log2 buckets answer alone)."""
    rows: dict[str, _Row] = {}
    step: int | None = None
    linear_ok = True
    for h in histograms:
        if not h or "rows" not in h:
            continue
        if step is None:
            step = int(h["linear_step_ns"])
        linear_ok = linear_ok and int(h["linear_step_ns"]) == step
        for label, r in h["rows"].items():
            row = rows.get(label)
            if row is None:
                row = rows[label] = _Row(0, 0, 0, [0] * LOG2_SLOTS, [0] * len(r["linear"]))
            row.count += int(r["count"])
            row.sum_ns += int(r["sum_ns"])
            row.max_ns = max(row.max_ns, int(r["max_ns"]))
            for lo_hi_n in r["log2"]:
                row.log2[_log2_slot(lo_hi_n[1])] += int(lo_hi_n[2])
            if len(r["linear"]) != len(row.linear):
                linear_ok = False
            else:
                row.linear = [a + int(b) for a, b in zip(row.linear, r["linear"], strict=True)]
    if not linear_ok:
        for row in rows.values():
            row.linear = []
    return rows, step or 1


def _latency(rows: dict[str, _Row], step: int, labels: Iterable[str]) -> Latency | None:
    picked = [rows[label] for label in labels if label in rows and rows[label].count]
    if not picked:
        return None
    log2 = [sum(r.log2[k] for r in picked) for k in range(LOG2_SLOTS)]
    linear = [sum(col) for col in zip(*(r.linear for r in picked), strict=True)] \
        if all(r.linear for r in picked) else []
    return Latency.model_validate(latency_summary(
        log2, linear, step, sum(r.count for r in picked), sum(r.sum_ns for r in picked),
        max(r.max_ns for r in picked)))


def _add_counts(into: dict[str, int], counts: Mapping[str, Any]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + int(n)


def _calls(blocks: list[Mapping[str, Any]], name: str, rows: dict[str, _Row], step: int,
           timing: bool) -> dict[str, Any] | None:
    got = [b[name] for b in blocks if isinstance(b.get(name), Mapping)]
    if not got:
        return None
    results: dict[str, int] = {}
    by_dir: dict[str, dict[str, Any]] = {}
    for g in got:
        _add_counts(results, g.get("results", {}))
        for d, e in g.get("by_direction", {}).items():
            acc = by_dir.setdefault(d, {"calls": 0, "results": {}})
            acc["calls"] += int(e["calls"])
            _add_counts(acc["results"], e.get("results", {}))
    out: dict[str, Any] = {"calls": sum(int(g["calls"]) for g in got), "results": results,
                           "by_direction": by_dir}
    if timing:
        for d, acc in by_dir.items():
            lat = _latency(rows, step, [row_label(name, DIRS.index(d))])
            if lat is not None:
                acc["latency_ns"] = lat
        lat = _latency(rows, step, [row_label(name, i) for i in range(len(DIRS))])
        if lat is not None:
            out["latency_ns"] = lat
    return out


def _sched(blocks: list[Mapping[str, Any]], rows: dict[str, _Row], step: int
           ) -> dict[str, Any] | None:
    got = [b["sched"] for b in blocks if isinstance(b.get("sched"), Mapping)]
    if not got:
        return None
    out: dict[str, Any] = {}
    for slot, role in enumerate(ROLES):
        mine = [g[role] for g in got if isinstance(g.get(role), Mapping)]
        if not mine:
            continue
        block: dict[str, Any] = {k: sum(int(m.get(k, 0)) for m in mine) for k in SCHED_COUNTS}
        for key, probe in (("blocked_ns", "offcpu"), ("wakeup_to_run_ns", "wakeup")):
            lat = _latency(rows, step, [row_label(probe, slot)])
            if lat is not None:
                block[key] = lat
        out[role] = block
    work = _latency(rows, step, [row_label("work", D_NONE)])
    if any("workqueue" in g and g["workqueue"] is None for g in got):
        out["workqueue"] = None  # unknown, not absent: a repetition could not measure it
    elif work is not None:
        out["workqueue"] = work
    return out


def _nmissed(blocks: list[Mapping[str, Any]]) -> dict[str, int | None] | None:
    """Returns missed per kretprobe'd function, summed; None (unknown) if any repetition that
    had the kretprobe did not know its misses."""
    got = [b["nmissed"] for b in blocks if isinstance(b.get("nmissed"), Mapping)]
    if not got:
        return None
    out: dict[str, int | None] = {}
    for g in got:
        for func, n in g.items():
            before = out.get(func, 0)
            out[func] = None if n is None or before is None else before + int(n)
    return out


def pool_probes(attach: dict[str, str], blocks: list[Mapping[str, Any]],
                histograms: list[Mapping[str, Any] | None]) -> CaseProbes:
    """The case's probes block from its probed repetitions' blocks and histograms."""
    rows, step = pooled_rows(h for h in histograms if h)
    timing = any(b.get("timing") for b in blocks)
    out: dict[str, Any] = {"attach": dict(attach)}
    for name in COUNTED:
        calls = _calls(blocks, name, rows, step, timing)
        if calls is not None:
            out[name] = calls
    for name in PER_SOCKET:
        got = [b[name] for b in blocks if isinstance(b.get(name), Mapping)]
        if got:
            out[name] = {"total": sum(int(g["total"]) for g in got)}
    sched = _sched(blocks, rows, step)
    if sched is not None:
        out["sched"] = sched
    if timing and any(isinstance(b.get("send_syscall_ns"), Mapping) for b in blocks):
        send = _latency(rows, step, [row_label("send_syscall", ROLES.index("lab"))])
        if send is not None:
            out["send_syscall_ns"] = send
    if timing and any(isinstance(b.get("module"), Mapping) for b in blocks):
        module = {f: lat for f in MODULE_FUNCS
                  if (lat := _latency(rows, step, [row_label(f, D_NONE)])) is not None}
        if module:
            out["module"] = module
    nmissed = _nmissed(blocks)
    if nmissed is not None:
        out["nmissed"] = nmissed
    return CaseProbes.model_validate(out)
