"""The metrics a verdict is about, declared once: name, unit, direction, and how to read one
repetition's value off the results contract (nlperf/models.py).

Two kinds:

* value metrics — one number per repetition (a percentile of that repetition's messages, its
  throughput); estimates and comparisons resample repetitions (nlperf/stats.py, nlperf/verdict.py);
* count metrics — events out of an exposure per repetition (messages lost out of messages
  sent, context switches per message): pooled they get an exact Poisson CI, and their
  per-repetition rates are compared like values.

Per-receiver metrics are keyed ``base[receiver id]``. Where a metric is read from: the
workload's blocks (unicast, multicast, sched) or the probes block (``source="probes"``), whose
keys nlperf/probes.py owns — those are read only when present.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from nlperf.models import Blocks, Multicast, Unicast

Source = Literal["workload", "probes"]
Topic = Literal["unicast", "breakdown", "multicast", "sched", "probes"]


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    topic: Topic
    source: Source = "workload"
    higher_is_better: bool = False
    latency: bool = True  # a time (a latency change scales it)
    count: bool = False  # events per exposure: exact Poisson CI when pooled
    headline: bool = False  # in the report's first table
    receiver: str | None = None  # per-receiver metric: whose

    @property
    def base(self) -> str:
        return self.key.split("[", 1)[0]


def _get(obj: Any, *path: str) -> Any:
    """obj.a.b… through models (attributes, extra keys included) and plain dicts; None if absent."""
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return obj


def _us(ns: Any) -> float | None:
    return None if ns is None else float(ns) / 1000.0


Read = Callable[[Blocks], float | None]


def _unicast(read: Callable[[Unicast], float | None]) -> Read:
    return lambda b: read(b.unicast) if b.unicast is not None else None


def _component(key: str, pct: str) -> Read:
    return _unicast(lambda u: _get(u, key, pct))


def _mc_mean(pct: str) -> Read:
    """Mean over receivers of each receiver's percentile (receivers with samples)."""
    def read(b: Blocks) -> float | None:
        if b.multicast is None:
            return None
        got = [getattr(r.latency_us, pct) for r in b.multicast.receivers]
        known = [v for v in got if v is not None]
        return sum(known) / len(known) if known else None
    return read


def _probe_ns(*path: str) -> Read:
    return lambda b: _us(_get(b.probes, *path))


def _send_syscall(pct: str) -> Read:
    return _probe_ns("send_syscall_ns", pct)


VALUES: tuple[tuple[Metric, Read], ...] = (
    (Metric("rtt_p50_us", "round trip p50", "µs", "unicast", headline=True),
     _component("rtt_us", "p50")),
    (Metric("rtt_p99_us", "round trip p99", "µs", "unicast", headline=True),
     _component("rtt_us", "p99")),
    (Metric("send_syscall_p50_us", "sender blocked in send p50", "µs", "unicast", "probes",
            headline=True), _send_syscall("p50")),
    (Metric("send_syscall_p99_us", "sender blocked in send p99", "µs", "unicast", "probes"),
     _send_syscall("p99")),
    (Metric("throughput_per_s", "throughput", "msg/s", "unicast", higher_is_better=True,
            latency=False), _unicast(lambda u: u.throughput_per_s)),
    (Metric("user_to_kernel_p50_us", "user → kernel p50", "µs", "breakdown"),
     _component("user_to_kernel_us", "p50")),
    (Metric("queue_p50_us", "queue p50", "µs", "breakdown"), _component("queue_us", "p50")),
    (Metric("processing_p50_us", "processing p50", "µs", "breakdown"),
     _component("processing_us", "p50")),
    (Metric("kernel_to_user_p50_us", "kernel → user p50", "µs", "breakdown"),
     _component("kernel_to_user_us", "p50")),
    (Metric("mc_latency_p50_us", "multicast latency p50, mean of receivers", "µs", "multicast",
            headline=True), _mc_mean("p50")),
    (Metric("mc_latency_p99_us", "multicast latency p99, mean of receivers", "µs", "multicast",
            headline=True), _mc_mean("p99")),
    (Metric("kthread_wakeup_p50_us", "kthread wakeup → run p50", "µs", "probes", "probes"),
     _probe_ns("sched", "kthread", "wakeup_to_run_ns", "p50")),
    (Metric("kthread_wakeup_p99_us", "kthread wakeup → run p99", "µs", "probes", "probes"),
     _probe_ns("sched", "kthread", "wakeup_to_run_ns", "p99")),
    (Metric("netlink_unicast_p50_us", "netlink_unicast() p50", "µs", "probes", "probes"),
     _probe_ns("netlink_unicast", "latency_ns", "p50")),
    (Metric("netlink_unicast_p99_us", "netlink_unicast() p99", "µs", "probes", "probes"),
     _probe_ns("netlink_unicast", "latency_ns", "p99")),
    (Metric("netlink_broadcast_p50_us", "netlink_broadcast() p50", "µs", "probes", "probes"),
     _probe_ns("netlink_broadcast", "latency_ns", "p50")),
    (Metric("netlink_broadcast_p99_us", "netlink_broadcast() p99", "µs", "probes", "probes"),
     _probe_ns("netlink_broadcast", "latency_ns", "p99")),
)

# per receiver: (metric template, read one receiver's value)
RECEIVER_VALUES: tuple[tuple[Metric, str], ...] = (
    (Metric("mc_latency_p50_us", "multicast latency p50", "µs", "multicast"), "p50"),
    (Metric("mc_latency_p99_us", "multicast latency p99", "µs", "multicast"), "p99"),
)

LOSS = Metric("mc_loss", "multicast loss, all receivers", "of sent", "multicast", latency=False,
              count=True, headline=True)
CTX = Metric("ctx_switches_per_msg", "context switches", "per msg", "sched",
             latency=False, count=True, headline=True)
# relays the module refused (full deferred queue): never broadcast, so in no receiver's loss
RELAY_REFUSED = Metric("relay_refused", "relays refused by the module", "of requested",
                       "multicast", latency=False, count=True, headline=True)
RECEIVER_LOST = Metric("mc_lost", "lost", "of sent", "multicast", latency=False, count=True)
RECEIVER_DROPS = Metric("mc_sk_drops", "sk_drops", "of sent", "multicast", latency=False,
                        count=True)

Count = tuple[int, int]  # (events, exposure)


def _messages(b: Blocks) -> int:
    """What a context switch is per: unicast round trips, else the module's broadcasts."""
    if b.unicast is not None:
        return b.unicast.received
    if b.multicast is not None:
        return sum(b.multicast.sent_by_group.values())
    return 0


def _switches(b: Blocks) -> int | None:
    if b.sched is None:
        return None
    roles = [b.sched.senders, b.sched.receivers, b.sched.relay_sender, b.sched.kthread]
    known = [r for r in roles if r is not None]
    return sum(r.voluntary + r.involuntary for r in known) if known else None


def _receivers(mc: Multicast | None) -> Iterator[Any]:
    return iter(mc.receivers if mc is not None else [])


def per_receiver(template: Metric, receiver: str) -> Metric:
    return replace(template, key=f"{template.key}[{receiver}]",
                   label=f"{template.label} ({receiver})", receiver=receiver, headline=False)


def values_of(b: Blocks, source: Source) -> dict[str, tuple[Metric, float]]:
    """Every value metric one repetition's blocks have, from the given source, catalog order."""
    out: dict[str, tuple[Metric, float]] = {}
    for metric, read in VALUES:
        value = read(b) if metric.source == source else None
        if value is not None:
            out[metric.key] = (metric, float(value))
    if source == "workload":
        for r in _receivers(b.multicast):
            for template, pct in RECEIVER_VALUES:
                value = getattr(r.latency_us, pct)
                if value is not None:
                    m = per_receiver(template, r.id)
                    out[m.key] = (m, float(value))
    return out


def counts_of(b: Blocks) -> dict[str, tuple[Metric, Count]]:
    """Every count metric of one repetition's workload blocks: (events, exposure)."""
    out: dict[str, tuple[Metric, Count]] = {}
    mc = b.multicast
    if mc is not None and mc.receivers:
        sent = sum(r.sent for r in mc.receivers)
        if sent > 0:
            out[LOSS.key] = (LOSS, (sum(max(r.lost, 0) for r in mc.receivers), sent))
    if mc is not None and mc.relay_requested:
        out[RELAY_REFUSED.key] = (RELAY_REFUSED, (mc.relay_errors or 0, mc.relay_requested))
    switches, messages = _switches(b), _messages(b)
    if switches is not None and messages > 0:
        out[CTX.key] = (CTX, (switches, messages))
    for r in _receivers(mc):
        if r.sent <= 0:
            continue
        m = per_receiver(RECEIVER_LOST, r.id)
        out[m.key] = (m, (max(r.lost, 0), r.sent))
        if r.sk_drops is not None:
            m = per_receiver(RECEIVER_DROPS, r.id)
            out[m.key] = (m, (max(r.sk_drops, 0), r.sent))
    return out


_ORDER = [m.key for m, _ in VALUES] + [LOSS.key, CTX.key] + [
    m.key for m, _ in RECEIVER_VALUES] + [RECEIVER_LOST.key, RECEIVER_DROPS.key]


def sort_key(metric: Metric) -> tuple[int, str, int]:
    """Catalog order; per-receiver metrics after the case-wide ones, grouped by receiver."""
    rank = _ORDER.index(metric.base) if metric.base in _ORDER else len(_ORDER)
    if metric.receiver is None:
        return (0, "", rank)
    return (1, metric.receiver, rank)


# --------------------------------------------------------------------------- numbers as text


def fmt(x: float | None) -> str:
    """About four significant digits, never scientific notation for lab-sized numbers."""
    if x is None:
        return "–"
    a = abs(x)
    if a >= 100 or a == 0:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_metric(metric: Metric, x: float | None) -> str:
    if x is not None and metric.unit == "of sent":
        return f"{fmt(100 * x)} %"
    return fmt(x)


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "–"
    return "∞" if x == float("inf") else f"{x:.3g}"
