"""Attaching the probe suite: fentry first, kprobes as the fallback, module probes per load
(the module's tracepoints as raw tracepoints, kprobes where they do not attach).

The attaching half of :class:`nlperf.probes.ProbeSession` (which compiles the BPF object, sets every
attribute below in its ``__init__`` and reads the maps). Each kernel function tries its fentry/fexit
variant first and falls back to kprobe/kretprobe when the load or attach fails; the kind used is
recorded per function in ``attach_kinds`` (``"unavailable"`` when neither attaches). kretprobes take
``maxactive`` = :data:`KRETPROBE_MAXACTIVE` instances through a tracefs event, whose misses
nlperf/probes.py reads back.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from nlperf.errors import RunFailed
from nlperf.probe_kernel import ModuleSymbol, bcc_kretprobe_event, kptr_restrict, ksym_addr

SEND_SYSCALLS = ("sendto", "sendmsg")

KIND_FENTRY = "fentry/fexit"
KIND_RAW_TP = "raw_tracepoint"
KIND_KPROBE = "kprobe/kretprobe"
KIND_UNAVAILABLE = "unavailable"
KIND_OFF = "off (timing=False)"  # module probes only time: with timing off they stay detached

Attached = tuple[str, str, str]  # (kind, event, BPF function name)

# Module function timed -> its (start, end) tracepoints in kmod/nlperf_trace.h, attached as raw
# tracepoints; kprobe/kretprobe on the function where they do not attach.
MODULE_TRACEPOINTS = {"nlperf_input": ("nlperf_datagram_start", "nlperf_datagram_end"),
                      "nlperf_process": ("nlperf_process_start", "nlperf_process_end")}

# kretprobe instances: one per call in flight (a blocked sender holds one while it sleeps);
# the kernel's default is max(10, 2 x CPUs), 4096 the most a tracefs kprobe event takes.
KRETPROBE_MAXACTIVE = 4096


class ProbeAttaching:
    """Attach and detach the compiled object's programs (the state is set in ProbeSession's
    ``__init__``)."""

    which: list[str]
    timing: bool
    deliveries: bool
    fentry: bool
    module_tracepoints: bool
    attach_kinds: dict[str, str]
    notes: list[str]
    _bpf: Any
    _attached: list[Attached]
    _module_attached: list[Attached]
    _kret_events: dict[str, str | None]
    _missed_base: dict[str, int]
    _workqueue_measured: bool
    _fentry_refused: bool
    _suspended: bool
    _work_fn: ModuleSymbol

    def _try_fentry(self, func: str, entry: bool, exit_too: bool) -> bool:
        if self._fentry_refused or not self.fentry:
            return False
        done: list[Attached] = []
        try:
            if entry:
                self._bpf.attach_kfunc(fn_name=f"kfunc__{func}".encode())
                done.append(("kfunc", func, f"kfunc__{func}"))
            if exit_too:
                self._bpf.attach_kretfunc(fn_name=f"kretfunc__{func}".encode())
                done.append(("kretfunc", func, f"kretfunc__{func}"))
        except Exception as e:
            for item in done:
                self._detach(item)
            if "Need super-user" in str(e) or "Operation not permitted" in str(e):
                self._fentry_refused = True  # the kernel refuses every fentry: stop trying
            self.notes.append(f"{func}: fentry refused ({e}); kprobes used")
            return False
        self._attached += done
        return True

    def _try_kprobe(self, func: str, exit_too: bool, into: list[Attached]) -> bool:
        done: list[Attached] = []
        try:
            self._bpf.attach_kprobe(event=func.encode(), fn_name=f"kp__{func}".encode())
            done.append(("kprobe", func, f"kp__{func}"))
            if exit_too:
                self._attach_kretprobe(func)
                done.append(("kretprobe", func, f"krp__{func}"))
        except Exception as e:
            for item in done:
                self._detach(item)
            self.notes.append(f"{func}: kprobe failed ({e})")
            return False
        into += done
        return True

    def _try_module_tracepoints(self, func: str) -> bool:
        if not self.module_tracepoints:
            return False
        done: list[Attached] = []
        try:
            for tp in MODULE_TRACEPOINTS[func]:
                fn = f"raw_tracepoint__{tp}"
                self._bpf.attach_raw_tracepoint(tp=tp.encode(), fn_name=fn.encode())
                done.append(("raw_tracepoint", tp, fn))
        except Exception as e:
            for item in done:
                self._detach(item)
            self._note(f"{func}: the module's tracepoints did not attach ({e}); kprobes used")
            return False
        self._module_attached += done
        return True

    def _attach_kretprobe(self, func: str) -> None:
        fn = f"krp__{func}".encode()
        try:  # through a tracefs event, which takes maxactive and shows the misses
            self._bpf.attach_kretprobe(event=func.encode(), fn_name=fn,
                                       maxactive=KRETPROBE_MAXACTIVE)
            self._kret_events[func] = bcc_kretprobe_event(func, os.getpid())
        except Exception as e:
            # no tracefs, or another session of this process holds the event's name
            self._bpf.attach_kretprobe(event=func.encode(), fn_name=fn)
            self._kret_events[func] = None
            self._note(f"{func}: kretprobe with the kernel's default instances (max(10, 2 x "
                       f"CPUs)), misses not counted ({e})")
        self._missed_base[func] = 0

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def _attach_func(self, func: str, exit_too: bool) -> None:
        # Counting alone needs only fexit (it sees the arguments and the return value); timing
        # needs the entry too. The kprobe fallback always needs both: a kretprobe sees no
        # arguments.
        entry = self.timing or not exit_too
        kind = KIND_FENTRY if entry and exit_too else "fexit" if exit_too else "fentry"
        if self._try_fentry(func, entry, exit_too):
            self.attach_kinds[func] = kind
        elif self._try_kprobe(func, exit_too, self._attached):
            self.attach_kinds[func] = KIND_KPROBE if exit_too else "kprobe"
        else:
            self.attach_kinds[func] = KIND_UNAVAILABLE

    def _attach_core(self) -> None:
        if "unicast" in self.which:
            self._attach_func("netlink_unicast", True)
        if "broadcast" in self.which:
            self._attach_func("netlink_broadcast", True)
            if ksym_addr("netlink_broadcast_filtered") is not None:  # listed, maybe hidden
                # 6.8+: nlmsg_multicast calls it directly, not through netlink_broadcast
                self._attach_func("netlink_broadcast_filtered", True)
        if "overrun" in self.which:
            self._attach_func("netlink_overrun", False)
            if self.deliveries:
                self._attach_func("__netlink_sendskb", False)
            else:  # one more fentry on every delivery: not in the cheap counting set
                self.attach_kinds["__netlink_sendskb"] = KIND_OFF
        if "sched" in self.which:
            self._attach_sched()
        if "send" in self.which:
            self._attach_send()
        funcs = [k for k, v in self.attach_kinds.items() if v == KIND_UNAVAILABLE]
        if funcs:
            self.notes.append(f"no fentry and no kprobes for {', '.join(funcs)}: only the "
                              "tracepoints measure")

    def _attach_sched(self) -> None:
        # all raw tracepoints: cheap to detach for a probes-off run (a perf-event tracepoint
        # waits ~80 ms under TCG)
        for tp in ("sched_switch", "sched_wakeup", "workqueue_execute_start",
                   "workqueue_execute_end"):
            try:
                self._bpf.attach_raw_tracepoint(tp=tp.encode(),
                                                fn_name=f"raw_tracepoint__{tp}".encode())
            except Exception as e:
                raise RunFailed(f"probes: raw tracepoint {tp} did not attach: {e}") from None
            self._attached.append(("raw_tracepoint", tp, f"raw_tracepoint__{tp}"))
            self.attach_kinds[tp] = "raw_tracepoint"

    def _attach_send(self) -> None:
        """The lab senders' send syscalls, timed entry to exit (timing only). A kernel without
        syscall tracepoints (CONFIG_FTRACE_SYSCALLS) loses this one measurement, and says so."""
        if not self.timing:
            self.attach_kinds["send_syscall"] = KIND_OFF
            return
        done: list[Attached] = []
        try:
            for call in SEND_SYSCALLS:
                for edge in ("enter", "exit"):
                    ev = f"sys_{edge}_{call}"
                    fn = f"tracepoint__syscalls__{ev}"
                    self._bpf.attach_tracepoint(tp=f"syscalls:{ev}".encode(), fn_name=fn.encode())
                    done.append(("tracepoint", f"syscalls:{ev}", fn))
        except Exception as e:
            for item in done:
                self._detach(item)
            self.attach_kinds["send_syscall"] = KIND_UNAVAILABLE
            self.notes.append(f"syscall tracepoints did not attach ({e}): the senders' time "
                              "blocked in send is not measured")
            return
        self._attached += done
        self.attach_kinds["send_syscall"] = "tracepoint"

    def _detach(self, item: Attached) -> None:
        kind, event, fn = item
        b = self._bpf
        if kind == "kretprobe":
            self._kret_events.pop(event, None)
        with contextlib.suppress(Exception):
            if kind == "kfunc":
                b.detach_kfunc(fn_name=fn.encode())
            elif kind == "kretfunc":
                b.detach_kretfunc(fn_name=fn.encode())
            elif kind == "kprobe":
                b.detach_kprobe(event=event.encode(), fn_name=fn.encode())
            elif kind == "kretprobe":
                b.detach_kretprobe(event=event.encode(), fn_name=fn.encode())
            elif kind == "raw_tracepoint":
                b.detach_raw_tracepoint(tp=event.encode())
            elif kind == "tracepoint":
                b.detach_tracepoint(tp=event.encode())

    def suspend(self) -> None:
        """Detach the core probes, so nothing of this session fires (a probes-off control run,
        or a run that another session probes); the compiled object and its maps stay. Module
        probes are attached per probed run and are off between runs already. Each detach
        waits in the kernel for its hook to quiesce (a trampoline rewrite, an RCU grace
        period): ~1 s for the whole suite under TCG, the waits serialized by the kernel."""
        if self._bpf is None or self._suspended:
            return
        for item in self._attached:
            self._detach(item)
        self._suspended = True

    def resume(self) -> None:
        """Attach again exactly what ``suspend()`` detached (same kinds, same events)."""
        if self._bpf is None or not self._suspended:
            return
        b = self._bpf
        for kind, event, fn in self._attached:
            try:
                if kind == "kfunc":
                    b.attach_kfunc(fn_name=fn.encode())
                elif kind == "kretfunc":
                    b.attach_kretfunc(fn_name=fn.encode())
                elif kind == "kprobe":
                    b.attach_kprobe(event=event.encode(), fn_name=fn.encode())
                elif kind == "kretprobe":
                    self._attach_kretprobe(event)
                elif kind == "raw_tracepoint":
                    b.attach_raw_tracepoint(tp=event.encode(), fn_name=fn.encode())
                elif kind == "tracepoint":
                    b.attach_tracepoint(tp=event.encode(), fn_name=fn.encode())
            except Exception as e:
                raise RunFailed(f"probes: {event} did not attach again after a probes-off "
                                f"run: {e}") from None
        self._suspended = False

    def attach_module(self) -> None:
        """Attach the module-function probes and arm the work-function filter (after insmod)."""
        if self._bpf is None:
            return
        self.detach_module()
        if "module" in self.which and not self.timing:
            for func in ("nlperf_input", "nlperf_process"):
                self.attach_kinds[func] = KIND_OFF
        elif "module" in self.which:
            for func in MODULE_TRACEPOINTS:
                if self._try_module_tracepoints(func):
                    self.attach_kinds[func] = KIND_RAW_TP
                elif self._try_kprobe(func, True, self._module_attached):
                    self.attach_kinds[func] = KIND_KPROBE
                else:
                    self.attach_kinds[func] = KIND_UNAVAILABLE
        if "sched" in self.which:
            # the workqueue tracepoint names the work function by address only
            addr = self._work_fn.address()  # one sysfs read after the first lookup
            t = self._bpf[b"work_fn"]
            t[t.Key(0)] = t.Leaf(addr or 0)
            self._workqueue_measured = bool(addr)
            if addr is None:
                self._warn("nlperf_work_fn is not in /proc/kallsyms: workqueue items not "
                           "measured")
            elif not addr:
                who = "" if os.geteuid() == 0 else ", run as root"
                self._warn(f"nlperf_work_fn's address is hidden in /proc/kallsyms "
                           f"(kernel.kptr_restrict={kptr_restrict()}{who}): workqueue items "
                           "not measured")

    def _warn(self, note: str) -> None:
        """A note in the probes block, and once on stderr: a probe measures nothing."""
        if note not in self.notes:
            print(f"nlperf: warning: probes: {note}", file=sys.stderr)
        self._note(note)

    def detach_module(self) -> None:
        """Detach the module-function probes (before rmmod); safe to call twice."""
        while self._module_attached:
            self._detach(self._module_attached.pop())
        if self._bpf is not None and "sched" in self.which:
            t = self._bpf[b"work_fn"]
            t[t.Key(0)] = t.Leaf(0)

