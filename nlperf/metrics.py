"""From what the workloads and the module counted to the contract's metric blocks.

Pure functions over plain data, so the arithmetic (pooling, loss accounting, percentiles) is
tested without a kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nlperf.models import (
    Blocks,
    Dump,
    Latency,
    McSource,
    Multicast,
    Overhead,
    Receiver,
    SendSpacing,
    Unicast,
)
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


def send_spacings(group: np.ndarray, seq: np.ndarray, kern_send_ns: np.ndarray
                  ) -> dict[int, np.ndarray]:
    """Each group's inter-send spacings (ns) from the stamps its receivers got.

    Rows are one received message each: its group, sequence number and kernel send stamp.
    Consecutive sends of a group have consecutive sequence numbers, so only pairs (seq, seq+1)
    give a spacing: a lost message (or a relay the module refused) leaves a gap in seq, never
    a long false spacing. Rows of one (group, seq) from several receivers are one send with
    one stamp: each counts once. Spacings come out in send order.
    """
    out: dict[int, np.ndarray] = {}
    for g in np.unique(group):
        mine = group == g
        seqs, first = np.unique(seq[mine], return_index=True)  # sorted, each send once
        stamps = kern_send_ns[mine][first]
        out[int(g)] = np.diff(stamps)[np.diff(seqs) == 1]
    return out


def send_spacing_of(receivers: list[Any]) -> dict[int, np.ndarray]:
    """``send_spacings`` over the messages of all ``receivers`` (ReceiverResult-like: those
    without ``send_ids`` are left out)."""
    got = [(r.send_ids, r.records) for r in receivers
           if getattr(r, "send_ids", None) is not None and r.records is not None]
    if not got:
        return {}
    ids = np.concatenate([i for i, _ in got])
    stamps = np.concatenate([rec[:, 3] for _, rec in got])
    return send_spacings(ids[:, 0], ids[:, 1], stamps)


def spacing_block(values: list[np.ndarray]) -> SendSpacing:
    arr = np.concatenate(values) if values else np.empty(0)
    if arr.size == 0:
        return SendSpacing(count=0, p50_ns=None, p99_ns=None)
    p50, p99 = np.percentile(arr, [50.0, 99.0])
    return SendSpacing(count=int(arr.size), p50_ns=round(float(p50), 1),
                       p99_ns=round(float(p99), 1))


def _set_spacing(block: Multicast, by_group: list[dict[int, np.ndarray]]) -> None:
    """Per group, and all groups pooled, over ``by_group`` (one mapping per repetition)."""
    groups = sorted({int(g) for g in block.sent_by_group} | {g for m in by_group for g in m})
    block.send_spacing = spacing_block([a for m in by_group for a in m.values()])
    block.send_spacing_by_group = {str(g): spacing_block([m[g] for m in by_group if g in m])
                                   for g in groups}


def multicast_block(source: McSource, sent_by_group: dict[int, int],
                    receivers: list[Any],
                    send_spacing: dict[int, np.ndarray] | None = None) -> Multicast:
    """Receivers' view against the module's count of what it broadcast to each group;
    with ``send_spacing`` (``send_spacing_of(receivers)``), the achieved spacing too."""
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
    out = Multicast(source=source, sent_by_group={str(g): n for g, n in sent_by_group.items()},
                    receivers=out_receivers)
    if send_spacing is not None:
        _set_spacing(out, [send_spacing])
    return out


def pool_multicast(blocks: list[Multicast], latencies: dict[str, list[np.ndarray]],
                   send_spacing: list[dict[int, np.ndarray]] | None = None) -> Multicast:
    """Case-level block over repetitions; ``send_spacing``: each repetition's
    ``send_spacing_of``, whose spacings are pooled per group and over all groups."""
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
    if send_spacing is not None:
        _set_spacing(out, send_spacing)
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


def dump_block(res: Any) -> Dump:
    """One repetition's dump reader (a DumpResult) as the contract's block."""
    return _dump(res.dumps, res.attempts, res.interrupted, res.retries, res.objects, res.recvs,
                 res.messages, res.bytes, res.elapsed_ns, res.durations_ns)


def pool_dump(reps: list[Any]) -> Dump:
    """Dump readers of several repetitions (DumpResults): counts and time summed, so the rates
    are over all of them, and the durations of every dump in one distribution."""
    def total(key: str) -> int:
        return sum(getattr(r, key) for r in reps)
    return _dump(total("dumps"), total("attempts"), total("interrupted"), total("retries"),
                 total("objects"), total("recvs"), total("messages"), total("bytes"),
                 total("elapsed_ns"), [d for r in reps for d in r.durations_ns])


def _dump(dumps: int, attempts: int, interrupted: int, retries: int, objects: int, recvs: int,
          messages: int, nbytes: int, elapsed_ns: int, durations_ns: list[int]) -> Dump:
    secs = elapsed_ns / 1e9
    return Dump(dumps=dumps, attempts=attempts, interrupted=interrupted, retries=retries,
                objects_read=objects, recvs=recvs, bytes=nbytes, elapsed_s=round(secs, 6),
                objects_per_s=round(objects / secs, 1) if secs else 0.0,
                bytes_per_s=round(nbytes / secs, 1) if secs else 0.0,
                msgs_per_recv=round(messages / recvs, 3) if recvs else 0.0,
                duration_ns=latency_block(durations_ns))
