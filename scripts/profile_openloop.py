"""Where the batched open-loop Python sender's time goes, against the C client, in one boot.

Run inside the lab VM (docs/python-driver.md, "Batched throughput"):

    flock /tmp/nlperf-vm.lock .venv/bin/nlperf vm exec --kernel 6.12.117+deb12-amd64 \
        --timeout 900 -- $PWD/.venv/bin/python $PWD/scripts/profile_openloop.py

Loads the module in callback mode, then in interleaved rounds runs the C client's
single-message closed loop and each variant below: the whole Sender (as ``make bench`` runs
it) and trimmed loops that add one piece of the sender's work at a time to a bare
send + receive of coalesced batches. Prints messages per second and the ratio to the C
client's single-message rate in the same round (medians over rounds), then a cProfile of the
Sender.
"""

from __future__ import annotations

import cProfile
import io
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable

from nlperf import bench, kmod
from nlperf.measure import clocksource
from nlperf.targets.vm import running_under
from nlperf.workloads.common import PartsReader
from nlperf.workloads.unicast import Sender, SenderConfig

N = 20_000
ROUNDS = 3
BATCH = 32


def sender(batch: int = BATCH, coalesce: bool = True, kind: str = "timed") -> Sender:
    return Sender(SenderConfig(kind=kind, message_size=64, pattern="open", rate=1e9,
                               batch=batch, coalesce=coalesce, count=N))


def whole(s: Sender, n: int) -> float:
    res = s.run(n, None)
    assert res.received == n, (res.received, res.timeouts, res.errors)
    return res.received / (res.elapsed_ns / 1e9)


def floor(s: Sender, n: int, stamp: bool = False, parse: bool = False) -> float:
    """Blocking send of the batch, then receive its coalesced reply; optionally with the
    sender's per-batch stamping and per-part recording."""
    sock, buf, rbuf, log = s.sock, s.dgram.buf, s.rbuf, s.log
    record = PartsReader(rbuf).record
    log.reset()
    send, recv_into, mono = sock.send, sock.recv_into, time.monotonic_ns
    sock.settimeout(None)
    got = 0
    t0 = mono()
    for _ in range(n // BATCH):
        if stamp:
            s._stamp_batch(mono(), BATCH)
        send(buf)
        k = recv_into(rbuf)
        if parse:
            got += record(k, mono(), log, None)
        else:
            got += BATCH
    dt = mono() - t0
    assert got == n // BATCH * BATCH, got
    return got / (dt / 1e9)


VARIANTS: dict[str, Callable[[Sender, int], float]] = {
    "Sender, open loop, coalesced": whole,
    "floor: send + recv_into": floor,
    "floor + stamp per batch": lambda s, n: floor(s, n, stamp=True),
    "floor + record parts": lambda s, n: floor(s, n, parse=True),
    "floor + stamp + record parts": lambda s, n: floor(s, n, stamp=True, parse=True),
}


def main() -> None:
    release = platform.release()
    ko = kmod.build(release)
    binary = bench.c_client()
    print(f"# kernel {release}, clocksource {clocksource()}, accel {running_under()}, "
          f"batch {BATCH}, {N} messages")
    kmod.load(ko, {"mode": "callback"})
    try:
        s = sender()
        s.run(2000, None, record=False)
        rows: dict[str, list[float]] = {k: [] for k in ["C single-message", *VARIANTS]}
        ratios: dict[str, list[float]] = {k: [] for k in VARIANTS}
        names = list(VARIANTS)
        for r in range(ROUNDS):
            c = 1e9 / bench.c_rtt_ns(binary)
            rows["C single-message"].append(c)
            for name in names[r % len(names):] + names[:r % len(names)]:
                v = VARIANTS[name](s, N)
                rows[name].append(v)
                ratios[name].append(v / c)
        for name, vals in rows.items():
            ratio = f"{statistics.median(ratios[name]):.2f}x C" if name in ratios else "1.00x"
            print(f"{name:<34} {statistics.median(vals):>10,.0f} msg/s  {ratio}  "
                  f"(rounds: {', '.join(f'{v:,.0f}' for v in vals)})")
        prof = cProfile.Profile()
        prof.enable()
        whole(s, N)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        print(out.getvalue())
        s.close()
    finally:
        kmod.unload()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
