"""Where a run's wall-clock time goes: named phases, in seconds.

Each repetition records its own (``Repetition.phases_s``), in the order they happen:

- ``load``: insmod with the case's parameters (unless the last run's load is kept: see
  ``ModuleSlot`` in nlperf/measure.py), every probe of other runs detached and this run's
  attached (a probes-off run detaches them all: ~1 s under TCG when they were on);
- ``start``: the worker processes forked, their sockets made, until every one is ready;
- ``warmup``: the senders' warm-up traffic, the counters reset, the probes told whom to watch;
- ``measure``: the measured window (generator included), until every worker has reported;
- ``read``: the probes' maps and the module's stats read, the repetition's blocks built;
- ``unload``: workers reaped, module probes detached, rmmod (unless the module is kept).

A group of cases adds what it spent once (``GroupResult.phases_s``): ``bpf_compile`` (bcc's
import included) and ``bpf_attach`` (one compile per probe set), ``teardown`` (the probes closed,
the module unloaded after the last run), and in the lab VM ``setup`` (the inner run reading its
hand-off until the first run) and ``inner_run`` (the inner run's own wall time). The outer
run adds ``module_build`` and ``vm`` (the whole VM, boot to power-off) and, once the report is
written, ``report``. The summary's ``phases_s`` (:func:`of_run`) sums them
over the run; ``vm_boot`` is the VM's time outside the inner run (qemu start, guest boot,
nlperf's start-up in the guest, power-off) and ``total`` the run's wall time. Whatever is not
listed (scheduling, imports, writing results, the progress bar) is ``other``: ``total`` minus
the rest.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

REPETITION = ("load", "start", "warmup", "measure", "read", "unload")
ONCE = ("module_build", "vm_boot", "setup", "bpf_compile", "bpf_attach")
ORDER = (*ONCE, *REPETITION, "teardown", "report", "other", "total")


class Laps:
    """A stopwatch for phases that follow one another: each lap ends the phase it names."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        add(self.seconds, {name: now - self._t})
        self._t = now


def add(into: dict[str, float], more: Mapping[str, float]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0.0) + v


def of_run(outer: Mapping[str, float], groups: Iterable[Mapping[str, float]],
           repetitions: Iterable[Mapping[str, float]], total: float | None) -> dict[str, float]:
    """The run's phases: the outer run's, every group's, every repetition's (summed)."""
    out: dict[str, float] = {}
    add(out, outer)
    for g in groups:
        add(out, g)
    for r in repetitions:
        add(out, r)
    vm, inner = out.pop("vm", None), out.pop("inner_run", None)
    if vm is not None:
        out["vm_boot"] = max(0.0, vm - (inner or 0.0))
    if total is not None:
        # scheduling, imports, writing results, the progress bar: what no phase names
        out["other"] = max(0.0, total - sum(out.values()))
        out["total"] = total
    known = [k for k in ORDER if k in out]
    return {k: round(out[k], 3) for k in known + sorted(set(out) - set(known))}


def lines(phases: Mapping[str, float]) -> list[str]:
    """One line per phase, with its share of the total when there is one."""
    total = phases.get("total")
    width = max((len(k) for k in phases), default=0)
    out = []
    for k, v in phases.items():
        share = f"  {v / total:6.1%}" if total and k != "total" else ""
        out.append(f"{k:<{width}}  {v:9.2f} s{share}")
    return out
