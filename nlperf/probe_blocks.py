"""The probes block and the raw histograms, from a snapshot of the probe suite's maps.

Pure functions over plain data: :class:`MapSnapshot` holds what the BPF maps of
bpf/netlink.bpf.c contained (per-CPU values kept per CPU, as BCC returns them), and
:func:`probes_block` / :func:`histograms_block` turn it into the ``probes`` block of
summary.json (results/schema.json) and the rows of probe-histograms.json. No kernel needed:
tests build snapshots by hand.

Percentiles come from the histograms by linear interpolation within the bucket that holds the
rank: from the linear histogram (``lin_step_ns`` wide buckets) when the rank falls below its
overflow bucket, else from the log2 histogram's samples at or above the overflow bound; never
below that bound then, never above the recorded maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nlperf.probe_table import (
    D_NONE,
    DIRS,
    LOG2_SLOTS,
    PROBES,
    RESULTS,
    ROLE_KTHREAD,
    ROLE_LAB,
    ROLES,
    calls_index,
    hist_index,
)

QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))
SCHED_COUNTS = ("voluntary", "involuntary", "wakeups")
MODULE_FUNCS = ("nlperf_input", "nlperf_process")


class HistCell(NamedTuple):
    """One CPU's copy of a ``hist`` row (``struct row`` in the C)."""

    count: int
    sum: int
    max: int
    log2: list[int]  # LOG2_SLOTS buckets
    lin: list[int]  # linear buckets and, last, the overflow bucket


@dataclass
class MapSnapshot:
    """What the maps held, keyed as in the C; per-CPU maps as one list entry per CPU."""

    hist: dict[int, list[HistCell]] = field(default_factory=dict)  # hist_index -> per CPU
    calls: dict[int, list[int]] = field(default_factory=dict)  # calls_index -> per CPU
    by_proc: dict[tuple[int, int], list[int]] | None = None  # (tgid, probe) -> per CPU
    overruns: dict[int, list[int]] = field(default_factory=dict)  # socket inode -> per CPU
    deliveries: dict[int, list[int]] = field(default_factory=dict)  # socket inode -> per CPU
    sched_cnt: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # pid -> counts
    # kretprobe'd function -> returns missed since the last reset (kprobe_profile); None: unknown
    nmissed: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class BlockSettings:
    """How the session was set up and what it watches: everything the block needs but maps."""

    which: tuple[str, ...]
    timing: bool
    by_process: bool
    deliveries: bool
    lin_step_ns: int
    attach_kinds: dict[str, str]
    notes: tuple[str, ...] = ()
    compile_s: float = 0.0
    attach_s: float = 0.0
    pids: tuple[int, ...] = ()
    kthread_pid: int | None = None
    workqueue_measured: bool = True  # False: the work function's address is unknown


class Row(NamedTuple):
    """A ``hist`` row summed over CPUs."""

    log2: list[int]
    linear: list[int]
    count: int
    sum_ns: int
    max_ns: int


Rows = dict[tuple[int, int], Row]


# --- percentiles ----------------------------------------------------------------------------------


def log2_bounds(slot: int) -> tuple[int, int]:
    """[lo, hi) of log2 slot ``slot``: slot 0 holds 0, slot s ≥ 1 holds [2^(s-1), 2^s)."""
    return (0, 1) if slot == 0 else (1 << (slot - 1), 1 << slot)


def _interpolate(buckets: Sequence[tuple[float, float, int]], rank: float) -> float | None:
    """Value at ``rank`` (0 < rank ≤ total) over ordered (lo, hi, count) buckets."""
    cum = 0
    for lo, hi, n in buckets:
        if n and cum + n >= rank:
            return lo + (hi - lo) * (rank - cum) / n
        cum += n
    return None


def _overflow_buckets(log2: Sequence[int], in_range: int,
                      bound: int) -> list[tuple[float, float, int]]:
    """The log2 buckets' share of the samples at or above ``bound`` (the linear overflow).

    Samples are counted in ascending order: the first ``in_range`` of them are the ones below
    ``bound``, the rest lie in [max(lo, bound), hi) of their log2 bucket.
    """
    out: list[tuple[float, float, int]] = []
    below = in_range
    for s, n in enumerate(log2):
        lo, hi = log2_bounds(s)
        under = min(below, n)
        below -= under
        if n > under:
            start = max(lo, bound)
            out.append((start, max(hi, start), n - under))
    return out


def percentile(log2: Sequence[int], linear: Sequence[int], step_ns: int, q: float,
               max_ns: int | None = None) -> float | None:
    """The q-quantile (0 < q ≤ 1) in ns, interpolated within buckets.

    ``linear`` has len-1 buckets of ``step_ns`` and an overflow bucket at the end; when the rank
    falls in the overflow bucket, the log2 histogram answers, from its samples at or above the
    overflow bound only (never below it). Both histograms count the same events; None if they
    are empty. Capped at ``max_ns`` when given.
    """
    total = sum(log2)
    if total == 0:
        return None
    rank = max(q * total, 1e-9)
    value: float | None = None
    if linear:
        in_range = sum(linear[:-1])
        bound = (len(linear) - 1) * step_ns
        if rank <= in_range:
            value = _interpolate([(i * step_ns, (i + 1) * step_ns, n)
                                  for i, n in enumerate(linear[:-1])], rank)
        else:
            value = _interpolate(_overflow_buckets(log2, in_range, bound), rank - in_range)
            if value is None:  # maps read while probes run can disagree by a few counts
                value = float(bound)
    else:
        value = _interpolate([(*log2_bounds(s), n) for s, n in enumerate(log2)], rank)
    if value is not None and max_ns is not None:
        value = min(value, float(max_ns))
    return value


def latency_summary(log2: Sequence[int], linear: Sequence[int], step_ns: int, count: int,
                    total_ns: int, max_ns: int) -> dict[str, Any]:
    """{count, mean, p50, p90, p99, p999, max} in ns from one histogram row."""
    out: dict[str, Any] = {"count": count, "mean": round(total_ns / count, 1) if count else None}
    for name, q in QUANTILES:
        p = percentile(log2, linear, step_ns, q, max_ns)
        out[name] = round(p, 1) if p is not None else None
    out["max"] = max_ns if count else None
    return out


# --- rows and blocks ------------------------------------------------------------------------------


def summed_rows(snap: MapSnapshot) -> Rows:
    """(probe, dir) -> the row summed over CPUs, for the non-empty rows."""
    out: Rows = {}
    for p in range(len(PROBES)):
        for d in range(len(DIRS)):
            cells = snap.hist.get(hist_index(p, d), [])
            count = sum(c.count for c in cells)
            if not count:
                continue
            out[(p, d)] = Row([sum(c.log2[k] for c in cells) for k in range(LOG2_SLOTS)],
                              [sum(c.lin[k] for c in cells) for k in range(len(cells[0].lin))],
                              count, sum(c.sum for c in cells), max(c.max for c in cells))
    return out


def _latency(rows: Rows, step_ns: int, probe: int,
             dirs: Sequence[int] | None = None) -> dict[str, Any] | None:
    picked = [rows[(probe, d)] for d in (dirs if dirs is not None else range(len(DIRS)))
              if (probe, d) in rows]
    if not picked:
        return None
    log2 = [sum(r.log2[k] for r in picked) for k in range(LOG2_SLOTS)]
    linear = [sum(r.linear[k] for r in picked) for k in range(len(picked[0].linear))]
    return latency_summary(log2, linear, step_ns, sum(r.count for r in picked),
                           sum(r.sum_ns for r in picked), max(r.max_ns for r in picked))


def _calls_block(snap: MapSnapshot, rows: Rows, s: BlockSettings, name: str) -> dict[str, Any]:
    probe = PROBES.index(name)
    mine = []  # (dir, result, calls) summed over CPUs
    for d in range(len(DIRS)):
        for r in range(len(RESULTS)):
            n = sum(snap.calls.get(calls_index(probe, d, r), []))
            if n:
                mine.append((d, r, n))
    results = {res: 0 for res in RESULTS}
    by_dir: dict[str, dict[str, Any]] = {}
    for d, r, n in mine:
        results[RESULTS[r]] += n
        entry = by_dir.setdefault(DIRS[d], {"calls": 0, "results": {}})
        entry["calls"] += n
        entry["results"][RESULTS[r]] = entry["results"].get(RESULTS[r], 0) + n
    if s.timing:
        for dname, entry in by_dir.items():
            entry["latency_ns"] = _latency(rows, s.lin_step_ns, probe, [DIRS.index(dname)])
    by_proc = None
    if s.by_process:
        procs = {(tgid, p): sum(v) for (tgid, p), v in (snap.by_proc or {}).items()}
        by_proc = {str(tgid): n for (tgid, p), n in sorted(procs.items()) if p == probe and n}
    return {"calls": sum(n for *_, n in mine), "results": results, "by_direction": by_dir,
            "by_process": by_proc,
            "latency_ns": _latency(rows, s.lin_step_ns, probe) if s.timing else None}


def _per_socket(counts: dict[int, list[int]]) -> dict[str, Any]:
    by_sock = {str(ino): sum(v) for ino, v in counts.items()}
    return {"total": sum(by_sock.values()), "by_socket": by_sock}


def _sched_block(snap: MapSnapshot, rows: Rows, s: BlockSettings) -> dict[str, Any]:
    per_pid = snap.sched_cnt
    step = s.lin_step_ns
    wakeup, offcpu = PROBES.index("wakeup"), PROBES.index("offcpu")

    def total(sel: Sequence[int]) -> dict[str, int]:
        return {name: sum(per_pid.get(p, (0, 0, 0))[i] for p in sel)
                for i, name in enumerate(SCHED_COUNTS)}

    lab: dict[str, Any] = total(s.pids)
    lab["by_pid"] = {str(p): dict(zip(SCHED_COUNTS, per_pid[p], strict=True))
                     for p in s.pids if p in per_pid}
    lab["blocked_ns"] = _latency(rows, step, offcpu, [ROLE_LAB])
    lab["wakeup_to_run_ns"] = _latency(rows, step, wakeup, [ROLE_LAB])
    out: dict[str, Any] = {"lab": lab}
    if s.kthread_pid:
        k: dict[str, Any] = total([s.kthread_pid])
        k["pid"] = s.kthread_pid
        k["wakeup_to_run_ns"] = _latency(rows, step, wakeup, [ROLE_KTHREAD])
        k["blocked_ns"] = _latency(rows, step, offcpu, [ROLE_KTHREAD])
        out["kthread"] = k
    else:
        out["kthread"] = None
    if s.workqueue_measured:
        out["workqueue"] = _latency(rows, step, PROBES.index("work"), [D_NONE]) or {"count": 0}
    else:  # not 0: nothing could be counted (a note says why)
        out["workqueue"] = None
    return out


def probes_block(s: BlockSettings, snap: MapSnapshot | None) -> dict[str, Any]:
    """The ``probes`` block of a repetition; ``snap`` None: the session is closed."""
    out: dict[str, Any] = {"attach": dict(s.attach_kinds), "timing": s.timing,
                           "compile_s": round(s.compile_s, 2), "attach_s": round(s.attach_s, 2)}
    notes = list(s.notes)
    if snap is not None:
        notes += [f"{f}: {n} returns missed by the kretprobe: those calls are not counted, and "
                  "a thread that misses several is not counted again" for f, n in
                  snap.nmissed.items() if n]
    if notes:
        out["notes"] = notes
    if snap is None:
        return out
    if snap.nmissed:
        out["nmissed"] = dict(snap.nmissed)
    rows = summed_rows(snap)
    if "unicast" in s.which:
        out["netlink_unicast"] = _calls_block(snap, rows, s, "netlink_unicast")
    if "broadcast" in s.which:
        out["netlink_broadcast"] = _calls_block(snap, rows, s, "netlink_broadcast")
        if "netlink_broadcast_filtered" in s.attach_kinds:
            out["netlink_broadcast_filtered"] = _calls_block(snap, rows, s,
                                                             "netlink_broadcast_filtered")
    if "overrun" in s.which:
        out["netlink_overrun"] = _per_socket(snap.overruns)
        out["deliveries"] = _per_socket(snap.deliveries) if s.deliveries else None
    if "sched" in s.which:
        out["sched"] = _sched_block(snap, rows, s)
    if "send" in s.which and s.timing:
        out["send_syscall_ns"] = _latency(rows, s.lin_step_ns, PROBES.index("send_syscall"),
                                          [ROLE_LAB]) or {"count": 0}
    if "module" in s.which and not s.timing:
        out["module"] = {f: None for f in MODULE_FUNCS}
    elif "module" in s.which:
        out["module"] = {f: _latency(rows, s.lin_step_ns, PROBES.index(f), [D_NONE])
                         or {"count": 0} for f in MODULE_FUNCS}
    return out


def histograms_block(snap: MapSnapshot | None, lin_step_ns: int) -> dict[str, Any]:
    """Raw non-empty buckets per probe row: log2 as [lo, hi, count], linear as counts."""
    if snap is None:
        return {}
    out: dict[str, Any] = {"linear_step_ns": lin_step_ns, "rows": {}}
    for (p, d), row in sorted(summed_rows(snap).items()):
        # the scheduler and workqueue rows are per role, the netlink and module rows per direction
        label = DIRS[d] if p < PROBES.index("work") else ROLES[d] if d < len(ROLES) else str(d)
        out["rows"][f"{PROBES[p]}/{label}"] = {
            "count": row.count, "sum_ns": row.sum_ns, "max_ns": row.max_ns,
            "log2": [[*log2_bounds(s), n] for s, n in enumerate(row.log2) if n],
            "linear": row.linear}
    return out
