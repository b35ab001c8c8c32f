"""From what the workloads and the module counted to the contract's metric blocks.

Pure functions over plain data, so the arithmetic (pooling, loss accounting, percentiles) is
tested without a kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nlperf.models import Blocks, Latency, McSource, Multicast, Overhead, Receiver, Unicast
from nlperf.samples import components, latency_block

# a latency component (nlperf.samples.components) → its key in the unicast block
COMPONENT_KEYS = {"rtt": "rtt_us", "user_to_kernel": "user_to_kernel_us", "queue": "queue_us",
                  "processing": "processing_us", "kernel_to_user": "kernel_to_user_us"}


def _records(parts: list[np.ndarray | None]) -> np.ndarray:
    arrays = [p for p in parts if p is not None and len(p)]
    return np.concatenate(arrays) if arrays else np.empty((0, 5), dtype=np.int64)


def _latencies(records: np.ndarray, timed: bool) -> dict[str, Latency]:
    """The unicast block's latency keys: the round trip always, its stamp parts when timed."""
    out = {COMPONENT_KEYS[name]: latency_block(values, 1000.0)
           for name, values in components(records, timed).items()}
    out.setdefault("rtt_us", latency_block([], 1000.0))
    return out


def _pool_own_queues(into: Unicast, parts: list[Any]) -> None:
    """The senders' own receive queues over senders side by side or over repetitions (both
    carry sk_drops, reply_truesize, rcvbuf): drops summed, unknown if any part could not tell;
    the largest charge per reply and the smallest queue."""
    drops = [p.sk_drops for p in parts]
    if parts and None not in drops:
        into.sk_drops = sum(d for d in drops if d is not None)
    sized = [p for p in parts if p.rcvbuf is not None]
    if sized:
        into.reply_truesize = max(p.reply_truesize or 0 for p in sized)
        into.rcvbuf = min(p.rcvbuf for p in sized)


def unicast_block(senders: list[Any], timed: bool) -> Unicast:
    """Pool sender results (SenderResult-like) that ran side by side."""
    sent = sum(s.sent for s in senders)
    received = sum(s.received for s in senders)
    elapsed = max((s.elapsed_ns for s in senders), default=0)
    block = Unicast(
        sent=sent,
        received=received,
        errors=sum(s.errors for s in senders),
        timeouts=sum(s.timeouts for s in senders),
        foreign=sum(getattr(s, "foreign", 0) for s in senders),
        throughput_per_s=round(received / (elapsed / 1e9), 1) if elapsed and received
        else (round(sent / (elapsed / 1e9), 1) if elapsed else 0.0),
        elapsed_s=round(elapsed / 1e9, 6),
        **_latencies(_records([s.records for s in senders]), timed),
    )
    errnos: dict[str, int] = {}
    for s in senders:
        for k, v in s.errnos.items():
            errnos[k] = errnos.get(k, 0) + v
    if errnos:
        block.errnos = errnos
    _pool_own_queues(block, senders)
    rates = [s.achieved_rate for s in senders if s.achieved_rate is not None]
    if rates:
        block.achieved_rate_per_s = round(sum(rates), 1)
        block.max_backlog = max(s.max_backlog for s in senders)
    return block


def pool_unicast(blocks: list[Unicast], records: list[np.ndarray], timed: bool) -> Unicast:
    """Case-level unicast block over repetitions: sums of counts, percentiles of all samples."""
    received = sum(b.received for b in blocks)
    elapsed = sum(b.elapsed_s for b in blocks)
    out = Unicast(sent=sum(b.sent for b in blocks), received=received,
                  errors=sum(b.errors for b in blocks),
                  timeouts=sum(b.timeouts for b in blocks),
                  foreign=sum(b.foreign for b in blocks),
                  throughput_per_s=round(received / elapsed, 1) if elapsed else 0.0,
                  elapsed_s=round(elapsed, 6),
                  **_latencies(_records(list(records)), timed))
    _pool_own_queues(out, blocks)
    return out


def sent_to(groups: list[int], sent_by_group: dict[int, int]) -> int:
    return sum(sent_by_group.get(g, 0) for g in groups)


def multicast_block(source: McSource, sent_by_group: dict[int, int],
                    receivers: list[Any]) -> Multicast:
    """Receivers' view against the module's count of what it broadcast to each group."""
    out_receivers = []
    for r in receivers:
        sent = sent_to(r.groups, sent_by_group)
        lat = (r.records[:, 4] - r.records[:, 3]) if r.records is not None and len(r.records) \
            else np.empty(0)
        out_receivers.append(Receiver(
            id=r.id, groups=list(r.groups), sent=sent, received=r.received,
            lost=sent - r.received, enobufs=r.enobufs, sk_drops=r.sk_drops,
            seq_gaps=r.seq_gaps, foreign=getattr(r, "foreign", 0),
            latency_us=latency_block(lat, 1000.0)))
    return Multicast(source=source, sent_by_group={str(g): n for g, n in sent_by_group.items()},
                     receivers=out_receivers)


def pool_multicast(blocks: list[Multicast], latencies: dict[str, list[np.ndarray]]
                   ) -> Multicast:
    sent_by_group: dict[str, int] = {}
    for b in blocks:
        for g, n in b.sent_by_group.items():
            sent_by_group[g] = sent_by_group.get(g, 0) + n
    receivers = []
    for i, first in enumerate(blocks[0].receivers):
        rs = [b.receivers[i] for b in blocks]
        drops = [r.sk_drops for r in rs]
        lat = [a for a in latencies.get(first.id, []) if len(a)]
        receivers.append(Receiver(
            id=first.id, groups=first.groups, sent=sum(r.sent for r in rs),
            received=sum(r.received for r in rs), lost=sum(r.lost for r in rs),
            enobufs=sum(r.enobufs for r in rs), seq_gaps=sum(r.seq_gaps for r in rs),
            foreign=sum(r.foreign for r in rs),
            sk_drops=None if None in drops else sum(d for d in drops if d is not None),
            latency_us=latency_block(np.concatenate(lat) if lat else [], 1000.0)))
    out = Multicast(source=blocks[0].source, sent_by_group=sent_by_group, receivers=receivers)
    for name in ("relay_requested", "relay_errors"):  # relays only: left out for the generator
        known = [n for b in blocks if (n := getattr(b, name)) is not None]
        if known:
            setattr(out, name, sum(known))
    return out


def _pct(probed: float | None, control: float | None) -> float | None:
    if probed is None or not control:
        return None
    return round((probed - control) / control * 100.0, 2)


def _mc_p50(block: Multicast) -> float | None:
    p50s = [r.latency_us.p50 for r in block.receivers if r.latency_us.p50 is not None]
    return sum(p50s) / len(p50s) if p50s else None


def observer_effect(probed: Blocks, control: Blocks) -> Overhead:
    """What the probes cost: case-level probed blocks against the probes-off control run.

    Positive ``p50_pct`` means the probed run was slower; negative ``throughput_pct`` means
    it moved fewer messages per second.
    """
    out = Overhead()
    pu, cu = probed.unicast, control.unicast
    if pu and cu:
        out.throughput_pct = _pct(pu.throughput_per_s, cu.throughput_per_s)
        out.p50_pct = _pct(pu.rtt_us.p50, cu.rtt_us.p50)
    pm, cm = probed.multicast, control.multicast
    if pm and cm:
        out.multicast_latency_p50_pct = _pct(_mc_p50(pm), _mc_p50(cm))
    return out
