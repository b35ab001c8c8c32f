"""Bounded-memory latency samples and the latency block of the results contract.

A sender may time a million messages; storing every sample as a Python int would grow without
bound. Records go into a preallocated int64 array; past its capacity the log keeps a uniform
reservoir (Vitter's algorithm R).
"""

from __future__ import annotations

import random

import numpy as np

from nlperf.models import Latency

DEFAULT_CAPACITY = 1 << 20
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def latency_block(values: np.ndarray | list[int], scale: float = 1.0, *, count: int | None = None,
                  total: int | None = None,
                  maximum: int | None = None) -> Latency:
    arr = np.asarray(values, dtype=np.float64)
    n = int(count if count is not None else arr.size)
    if arr.size == 0:
        return Latency(count=n, mean=None, p50=None, p90=None, p99=None, p999=None, max=None)
    mean = (total / n) if total is not None and n else float(arr.mean())
    pct = {key: round(float(np.percentile(arr, q)) / scale, 3) for key, q in PERCENTILES.items()}
    return Latency(count=n, mean=round(mean / scale, 3), **pct,
                   max=round((maximum if maximum is not None else float(arr.max())) / scale, 3))


class StampLog:
    """Fixed-capacity log of per-message timestamps, filled from the hot loop by slice copies.

    A record is five int64: user send, kernel receive, processing start, kernel send, user
    receive (ns). The sender copies the four kernel-stamped fields straight from the receive
    buffer, so recording costs two memory copies and no Python objects. Past capacity, records
    replace random earlier ones (reservoir), keeping memory bounded and the sample uniform.
    """

    RECORD = 40
    FIELDS = ("user_send", "kern_recv", "proc_start", "kern_send", "user_recv")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, seed: int = 0) -> None:
        self.capacity = capacity
        # np.empty maps memory without touching it: allocating a million records is instant
        # and pages are only faulted in as records arrive (a zeroed bytearray would cost
        # hundreds of ms under emulation, inside the measured window).
        self._arr = np.empty(capacity * 5, dtype=np.int64)
        self.buf = memoryview(self._arr).cast("B")
        self.count = 0
        self._rng = random.Random(seed)

    def reset(self) -> None:
        self.count = 0

    def slot(self) -> int | None:
        """Byte offset for the next record, or None when the reservoir skips it."""
        n = self.count
        self.count = n + 1
        if n < self.capacity:
            return n * self.RECORD
        j = self._rng.randrange(n + 1)
        return j * self.RECORD if j < self.capacity else None

    def array(self) -> np.ndarray:
        kept = min(self.count, self.capacity)
        return self._arr[: kept * 5].reshape(kept, 5).copy()


def components(records: np.ndarray, timed: bool = True) -> dict[str, np.ndarray]:
    """Per-message latency components in ns from StampLog records."""
    us, kr, ps, ks, ur = (records[:, i] for i in range(5))
    out = {"rtt": ur - us}
    if timed:
        out |= {"user_to_kernel": kr - us, "queue": ps - kr, "processing": ks - ps,
                "kernel_to_user": ur - ks}
    return out
