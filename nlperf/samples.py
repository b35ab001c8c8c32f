"""Bounded-memory latency samples and the latency block of the results contract.

A sender may time a million messages; storing every sample as a Python int would grow without
bound. Records go into a preallocated int64 array; past its capacity the log keeps a uniform
reservoir (Vitter's algorithm R).
"""

from __future__ import annotations

import os
import random
import sys
from functools import cache
from pathlib import Path
from typing import Any

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
        self._rows = self._arr.reshape(capacity, 5)
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

    def extend(self, stamps: np.ndarray, user_recv: list[int] | int) -> None:
        """Records for a block of messages at once: ``stamps`` their four stamp times (user
        send to kernel send, one row each), ``user_recv`` their receive times (one per row of
        ``stamps`` it covers, or one time for every row: the parts of one datagram). Exactly
        what ``slot()`` and a copy per message would leave, reservoir draws included, for a
        few numpy calls per block instead of several Python calls per message."""
        same = isinstance(user_recv, int)
        k, n = len(stamps) if same else len(user_recv), self.count  # type: ignore[arg-type]
        fit = max(0, min(k, self.capacity - n))
        if fit:
            self._rows[n:n + fit, :4] = stamps if fit == len(stamps) else stamps[:fit]
            self._rows[n:n + fit, 4] = user_recv if same else user_recv[:fit]  # type: ignore[index]
            self.count = n + fit
        for i in range(fit, k):
            off = self.slot()
            if off is not None:
                row = self._rows[off // self.RECORD]
                row[:4] = stamps[i]
                row[4] = user_recv if same else user_recv[i]  # type: ignore[index]

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


# --- samples.parquet: the per-message samples behind the percentiles ---------------------------
#
# One row per message sample the reservoirs kept (results/README.md is the contract). ``source``
# is "unicast" for the senders' round trips, else the multicast receiver's id; the timed-echo
# columns are null for receiver rows, ``latency_ns`` is null for unicast rows. Each repetition
# becomes one part file (written where it ran: in the lab VM, into the hand-off); the outer run
# alone merges the parts into samples.parquet. pyarrow is imported on first use (cases.py asks
# for the schema before the first repetition, so every repetition runs with it loaded).

SAMPLES = "samples.parquet"
UNICAST_SOURCE = "unicast"
STAMP_COLUMNS = ("rtt_ns", "user_to_kernel_ns", "queue_ns", "processing_ns",
                 "kernel_to_user_ns")
# column -> pandas dtype on reading; the arrow type follows from it (samples_schema)
SAMPLE_COLUMNS: dict[str, str] = {"case": "str", "repetition": "int64", "control": "bool",
                                  "source": "str", **dict.fromkeys(STAMP_COLUMNS, "Int64"),
                                  "latency_ns": "Int64"}


def arrow_without_pandas() -> None:
    """Tell pyarrow, once, that pandas is absent, in a process that never gives it pandas
    objects (the lab VM's inner run writes its parts with pyarrow alone).

    pyarrow imports pandas on its first array conversion, to recognise pandas types: ~10 s
    of emulated CPU in the lab VM. Blocking the import for that one check makes pyarrow
    remember that pandas is missing; ``import pandas`` itself works afterwards.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    class _NoPandas:
        @staticmethod
        def find_spec(name: str, *_args: object) -> None:
            if name == "pandas":
                raise ImportError("pandas is not imported here (nlperf.samples)")

    sys.meta_path.insert(0, _NoPandas)  # type: ignore[arg-type]
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(_NoPandas)  # type: ignore[arg-type]


@cache
def part_schema() -> Any:
    """The arrow schema of a part (pyarrow only: the lab VM need not import pandas)."""
    import pyarrow as pa

    types = {"str": pa.string(), "int64": pa.int64(), "bool": pa.bool_(), "Int64": pa.int64()}
    return pa.schema([pa.field(c, types[d], nullable=d == "Int64")
                      for c, d in SAMPLE_COLUMNS.items()])


@cache
def samples_schema() -> Any:
    """samples.parquet's schema: the part schema with the pandas metadata that makes
    ``pd.read_parquet`` give the dtypes of SAMPLE_COLUMNS (nullable Int64 included)."""
    import pandas as pd
    import pyarrow as pa

    empty = pd.DataFrame({c: pd.Series([], dtype=d) for c, d in SAMPLE_COLUMNS.items()})
    return part_schema().with_metadata(pa.Schema.from_pandas(empty, preserve_index=False)
                                       .metadata)


def sample_table(case: str, repetition: int, control: bool, unicast: np.ndarray | None,
                 timed: bool, receivers: dict[str, np.ndarray]) -> Any:
    """One repetition's rows: StampLog records of its senders, latencies of its receivers."""
    import pyarrow as pa

    schema = part_schema()
    parts: list[Any] = []

    def rows(source: str, n: int, values: dict[str, np.ndarray]) -> None:
        cols = {"case": pa.array([case] * n, pa.string()),
                "repetition": pa.array(np.full(n, repetition, dtype=np.int64)),
                "control": pa.array(np.full(n, control, dtype=bool)),
                "source": pa.array([source] * n, pa.string())}
        for name in (*STAMP_COLUMNS, "latency_ns"):
            v = values.get(name)
            cols[name] = pa.array(v.astype(np.int64)) if v is not None else pa.nulls(n, pa.int64())
        parts.append(pa.table(cols, schema=schema))

    if unicast is not None and len(unicast):
        rows(UNICAST_SOURCE, len(unicast),
             {f"{k}_ns": v for k, v in components(unicast, timed).items()})
    for rid, latency in receivers.items():
        if len(latency):
            rows(rid, len(latency), {"latency_ns": latency})
    return pa.concat_tables(parts) if parts else schema.empty_table()


def part_name(run_index: int) -> str:
    return f"{run_index:06d}.parquet"


def write_part(parts_dir: Path, run_index: int, table: Any) -> None:
    """One repetition's samples, renamed into place whole.

    Encoded in memory and written in one call: in the lab VM the parts directory is a 9p
    share, where each of the parquet writer's small writes is a round trip to the host
    (~55 ms a part under TCG, ~20 ms this way)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts_dir.mkdir(exist_ok=True)
    final = parts_dir / part_name(run_index)
    tmp = final.with_name(f".{final.name}.tmp")
    encoded = pa.BufferOutputStream()
    pq.write_table(table, encoded)
    tmp.write_bytes(encoded.getvalue())  # type: ignore[arg-type]  # a buffer
    os.replace(tmp, final)


def merge_parts(sources: list[tuple[Path, set[int]]], out: Path) -> int:
    """Write ``out`` from the parts of each (directory, run indices to keep), in that order.

    Only the repetitions a group's result holds are kept (a part written just before the VM
    stopped has no repetition in the summary). Streams part by part; returns the row count.
    """
    import pyarrow.parquet as pq

    schema = samples_schema()
    tmp = out.with_name(f".{out.name}.tmp")
    rows = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for parts_dir, keep in sources:
            for run_index in sorted(keep):
                part = parts_dir / part_name(run_index)
                if not part.exists():
                    continue
                table = pq.read_table(part).cast(schema)
                rows += table.num_rows
                writer.write_table(table)
        if rows == 0:
            writer.write_table(schema.empty_table())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return rows
