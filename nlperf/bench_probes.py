"""``make bench``, the observer effect: what each probe costs the C echo client, in one boot.

The C reference client (kmod/tools/nlperf_echo.c, article-style, 64 B, closed loop) echoes
through the module in callback mode with no probes, with one probe set at a time, with the
counters-only set and with the full timing set. Each configuration is compiled and attached
afresh in every round (the BPF compile is the same for every set of one timing mode; only what
attaches differs), and the configurations take turns within a round, so slow drift of the
emulated machine spreads over all of them. The figure is the client's mean round trip; each
cell is the median over the rounds; the cost is that median over the no-probes median.

The client's pid is watched as a lab sender's would be (the scheduler and send-syscall probes
only do their full work for watched pids): it is started held at a shell ``read`` and released
once the probes watch it (``exec`` keeps the pid).

Targets (issue #10): full set ≤ +10 %, counters-only ≤ +3 %.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from nlperf import kmod
from nlperf.probes import WHICH, ProbeSession
from nlperf.wire import PROTO_DEFAULT

N = 30000
ROUNDS = 3
TARGETS = {"full": 0.10, "counters-only": 0.03}

# name -> how to make its session (None: no probes)
Config = Callable[[], ProbeSession | None]
CONFIGS: dict[str, Config] = {
    "none": lambda: None,
    **{f"only {w}": (lambda w=w: ProbeSession(PROTO_DEFAULT, [w])) for w in WHICH},  # type: ignore[misc]
    # the module timed the old way: kprobe/kretprobe, what a module without tracepoints costs
    "module kprobes": lambda: ProbeSession(PROTO_DEFAULT, ["module"], module_tracepoints=False),
    "counters-only": lambda: ProbeSession(PROTO_DEFAULT, WHICH, timing=False),
    "full": lambda: ProbeSession(PROTO_DEFAULT, WHICH),
}


def echo_once(binary: Path, probes: ProbeSession | None, n: int = N) -> float:
    """One closed-loop run of the C client; its mean round trip in ns."""
    cmd = f'read _ && exec "{binary}" -n {n} -s 64'
    p = subprocess.Popen(["sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdin is not None
    if probes is not None:
        probes.watch([p.pid], None)
        probes.reset()
    out, _ = p.communicate("go\n")
    if p.returncode:
        raise RuntimeError(f"nlperf_echo exited {p.returncode}")
    return per_rtt_ns(out)


def per_rtt_ns(out: str) -> float:
    """The mean round trip from nlperf_echo's summary line (``c_echo n=.. per_rtt_ns=..``)."""
    fields = dict(f.split("=") for f in out.split()[1:])
    return float(fields["per_rtt_ns"])


def measure(binary: Path, rounds: int = ROUNDS) -> tuple[dict[str, float], dict[str, str]]:
    """Median mean round trip per configuration, and how the module probes attached."""
    cells: dict[str, list[float]] = {name: [] for name in CONFIGS}
    kinds: dict[str, str] = {}
    for _ in range(rounds):
        for name, make in CONFIGS.items():
            probes = make()
            try:
                if probes is not None:
                    probes.attach_module()
                    for func in ("nlperf_input", "nlperf_process"):
                        if func in probes.attach_kinds:
                            kinds[func] = probes.attach_kinds[func]
                cells[name].append(echo_once(binary, probes))
            finally:
                if probes is not None:
                    probes.close()
    return {name: statistics.median(v) for name, v in cells.items()}, kinds


def report(medians: dict[str, float], kinds: dict[str, str]) -> list[str]:
    """The per-probe cost table, with the targets judged."""
    base = medians["none"]
    lines = [f"probe cost, C echo, callback, 64 B, mean round trip, median of {ROUNDS} "
             f"interleaved rounds of {N} (module probes: "
             f"{', '.join(f'{k} {v}' for k, v in sorted(kinds.items())) or 'n/a'})",
             f"{'probes':>16} | {'µs/rtt':>8} | cost"]
    for name, v in medians.items():
        cost = v / base - 1
        target = TARGETS.get(name)
        verdict = "" if target is None else \
            f"  (target ≤ +{target:.0%}: {'met' if cost <= target else 'NOT met'})"
        lines.append(f"{name:>16} | {v / 1000:8.2f} | {cost:+7.1%}{verdict}")
    return lines


def main(ko: Path, binary: Path) -> None:
    kmod.load(ko, {"mode": "callback"})
    try:
        t0 = time.monotonic()
        medians, kinds = measure(binary)
        for line in report(medians, kinds):
            print(line)
        print(f"(measured in {time.monotonic() - t0:.0f} s, compiles included)")
    finally:
        kmod.unload()


if __name__ == "__main__":
    import platform

    from nlperf.bench import c_client

    main(kmod.build(platform.release()), c_client())
