"""BCC probe suite: where netlink time goes, what it drops and how the lab's tasks schedule.

Measures, all aggregated in kernel maps (no per-event output), from bpf/netlink.bpf.c:

- ``netlink_unicast(ssk, skb, portid, nonblock)``: duration per call (log2 and linear histograms)
  and calls by result class (ok / EAGAIN / ENOBUFS / ESRCH / ECONNREFUSED / other), direction and
  process (tgid of the calling task). Hooks: fentry/fexit, else kprobe/kretprobe.
- ``netlink_broadcast(ssk, skb, portid, group, allocation)`` and, where kallsyms has it,
  ``netlink_broadcast_filtered`` (6.8+, where nlmsg_multicast calls it directly): the same.
  Same hooks.
- ``netlink_overrun(sk)``: drops per receiving socket, keyed by socket inode (the Inode column of
  /proc/net/netlink); ``__netlink_sendskb(sk, skb)``: deliveries per receiving socket (unicast
  replies and every broadcast listener; do_one_broadcast is inlined on 6.1). Hooks: fentry, else
  kprobe.
- scheduler, for the pids given to :meth:`ProbeSession.watch` and the module's kthread: voluntary
  and involuntary switches and wakeups (raw tracepoints sched_switch, sched_wakeup), wakeup→run
  latency and blocked time (voluntary switch-out → switch-in) histograms; workqueue items running
  the module's ``nlperf_work_fn`` (tracepoints workqueue_execute_start/end): count and duration.
- the module's ``nlperf_input`` and ``nlperf_process``: duration per call. Hooks: kprobe/kretprobe
  only (an out-of-tree module has no BTF, so fentry cannot load), attached after each module
  load and detached before its unload.

kretprobes take ``maxactive`` = :data:`KRETPROBE_MAXACTIVE` instances (a call blocked inside
holds one; the kernel's default, max(10, 2 x CPUs), runs out under many blocked senders and
their returns go unseen). ``nmissed`` in the block: returns missed per kretprobe'd function since
the last reset, from kprobe_profile (None where the kretprobe had to be attached without a
tracefs event); any miss also adds a note. Entry kprobes' misses (recursion only) are not seen.

Timing off (``timing=False``, counters only): netlink_unicast/broadcast attach as fexit alone (the
exit program sees the arguments and the return value, so it filters, classifies and counts with
no entry program and no per-thread state), the module probes stay detached (they only time:
``attach`` says ``"off (timing=False)"``, ``module`` reads None) and calls are not counted per
process unless ``by_process=True`` (``by_process`` reads None), nor per receiving socket unless
``deliveries=True`` (the ``__netlink_sendskb`` fentry fires on every delivery; ``deliveries``
reads None; overruns are always counted: they only fire on drops). Counters are per-CPU arrays
indexed by (probe, direction, result class); per-socket counts are per-CPU hashes; timed entries
are a per-thread stack in task local storage (5.12+; an LRU hash by thread id before).

Only the lab's protocol counts: every netlink probe filters on ``ssk->sk_protocol == PROTO``,
first thing.
Direction of a call: destination port 0 is the kernel (``to_kernel``: a user socket's sendmsg);
otherwise a sending socket flagged NETLINK_F_KERNEL_SOCKET is the kernel sending
(``kernel_to_user``); anything else is ``user_to_user`` (user unicast to another port, or a user
socket's multicast). Calls nest in callback mode (the reply's netlink_unicast runs inside the
request's, on the same thread), so start times are a per-thread stack per probe.

The BPF C is compiled once per run with ``-D`` defines: struct field offsets come from
/sys/kernel/btf/vmlinux (no kernel struct headers: under TCG they cost tens of seconds of clang).
One object holds both the fentry and kprobe variants; each probe loads its fentry variant first
and falls back to kprobes when the load or attach fails (BCC's ``support_kfunc()`` says True on
kernels that refuse fentry), so a fallback never costs a second compile. The kind used is
recorded per probe in ``read()["attach"]``; ``"unavailable"`` when neither loads (then only the
tracepoints measure: say so).

The numbers the C and Python share (probe rows, directions, roles, result classes) are defined
once, in nlperf/probe_table.py, and reach the C as generated ``-D`` defines. This module compiles
and attaches; :meth:`ProbeSession.read` takes a snapshot of the maps and nlperf/probe_blocks.py
turns it into the probes block (percentiles included).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nlperf import btf
from nlperf.errors import RunFailed
from nlperf.paths import BPF_SRC as BPF_DIR
from nlperf.probe_blocks import (
    BlockSettings,
    HistCell,
    MapSnapshot,
    histograms_block,
    probes_block,
)
from nlperf.probe_build import LIN_STEP_NS, cflags, compile_bpf, import_bcc
from nlperf.probe_kernel import (
    bcc_kretprobe_event,
    kptr_restrict,
    ksym_addr,
    read_kprobe_misses,
)
from nlperf.probe_table import (
    DIRS,
    NCOUNTED,
    PROBES,
    RESULTS,
    ROLE_KTHREAD,
    ROLE_LAB,
    calls_index,
)

BPF_SRC = BPF_DIR / "netlink.bpf.c"
WHICH = ("unicast", "broadcast", "overrun", "sched", "module", "send")
SEND_SYSCALLS = ("sendto", "sendmsg")

# (struct, member) pairs the BPF C needs; netlink_sock.flags holds NETLINK_F_KERNEL_SOCKET.
BTF_MEMBERS = (("sock", "sk_protocol"), ("sock", "sk_socket"), ("socket_alloc", "vfs_inode"),
               ("inode", "i_ino"), ("netlink_sock", "flags"), ("task_struct", "pid"),
               ("task_struct", "__state"), ("task_struct", "state"))

KIND_FENTRY = "fentry/fexit"
KIND_KPROBE = "kprobe/kretprobe"
KIND_UNAVAILABLE = "unavailable"
KIND_OFF = "off (timing=False)"  # module probes only time: with timing off they stay detached

Attached = tuple[str, str, str]  # (kind, event, BPF function name)

# kretprobe instances: one per call in flight (a blocked sender holds one while it sleeps);
# the kernel's default is max(10, 2 x CPUs), 4096 the most a tracefs kprobe event takes.
KRETPROBE_MAXACTIVE = 4096


class ProbeSession:
    """The probe suite for one run: compiled once, attached for the whole run.

    Module probes follow the module: :meth:`attach_module` after each load,
    :meth:`detach_module` before each unload.
    """

    def __init__(self, proto: int, which: Sequence[str] = WHICH, *, timing: bool = True,
                 by_process: bool | None = None, deliveries: bool | None = None,
                 lin_step_ns: int = LIN_STEP_NS, src: Path = BPF_SRC,
                 fentry: bool = True) -> None:
        unknown = [w for w in which if w not in WHICH]
        if unknown:
            raise RunFailed(f"probes: unknown probe set {', '.join(unknown)}")
        self.proto = proto
        self.which = list(which)
        self.timing = timing
        self.by_process = timing if by_process is None else by_process
        self.deliveries = timing if deliveries is None else deliveries
        self.lin_step_ns = lin_step_ns
        self.attach_kinds: dict[str, str] = {}
        self.notes: list[str] = []
        self.compile_s = 0.0
        self.attach_s = 0.0
        self.fentry = fentry  # False: kprobes only (the fallback, as where fentry is refused)
        self._bpf: Any = None
        self._attached: list[Attached] = []
        self._module_attached: list[Attached] = []
        self._pids: list[int] = []  # what watch() was given
        # kretprobe'd function -> its tracefs event (None: attached without one, misses unseen)
        self._kret_events: dict[str, str | None] = {}
        self._missed_base: dict[str, int] = {}  # misses per function at the last reset
        self._workqueue_measured = True  # False: nlperf_work_fn's address is unknown
        self._kthread_pid: int | None = None
        self._fentry_refused = False
        bcc = import_bcc()
        t0 = time.monotonic()
        try:
            offsets = btf.vmlinux_member_offsets(BTF_MEMBERS)
        except (OSError, ValueError) as e:
            raise RunFailed(f"probes: cannot read {btf.VMLINUX_BTF}: {e}") from None
        flags = cflags(proto, offsets, platform.release(), timing=timing,
                       by_process=self.by_process, lin_step_ns=lin_step_ns)
        self._bpf = compile_bpf(bcc, src, flags)
        self.compile_s = time.monotonic() - t0
        t1 = time.monotonic()
        try:
            self._attach_core()
        except BaseException:
            self.close()
            raise
        self.attach_s = time.monotonic() - t1

    # --- attaching ---

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
        for tp in ("sched_switch", "sched_wakeup"):
            try:
                self._bpf.attach_raw_tracepoint(tp=tp.encode(),
                                                fn_name=f"raw_tracepoint__{tp}".encode())
            except Exception as e:
                raise RunFailed(f"probes: raw tracepoint {tp} did not attach: {e}") from None
            self._attached.append(("raw_tracepoint", tp, f"raw_tracepoint__{tp}"))
            self.attach_kinds[tp] = "raw_tracepoint"
        for ev in ("workqueue_execute_start", "workqueue_execute_end"):
            try:
                self._bpf.attach_tracepoint(tp=f"workqueue:{ev}".encode(),
                                            fn_name=f"tracepoint__workqueue__{ev}".encode())
            except Exception as e:
                raise RunFailed(f"probes: tracepoint workqueue:{ev} did not attach: {e}")\
                    from None
            self._attached.append(("tracepoint", f"workqueue:{ev}",
                                   f"tracepoint__workqueue__{ev}"))
            self.attach_kinds[ev] = "tracepoint"

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

    def attach_module(self) -> None:
        """Attach the module-function probes and arm the work-function filter (after insmod)."""
        if self._bpf is None:
            return
        self.detach_module()
        if "module" in self.which and not self.timing:
            for func in ("nlperf_input", "nlperf_process"):
                self.attach_kinds[func] = KIND_OFF
        elif "module" in self.which:
            for func in ("nlperf_input", "nlperf_process"):
                if self._try_kprobe(func, True, self._module_attached):
                    self.attach_kinds[func] = KIND_KPROBE
                else:
                    self.attach_kinds[func] = KIND_UNAVAILABLE
        if "sched" in self.which:
            # the workqueue tracepoint names the work function by address only
            addr = ksym_addr("nlperf_work_fn", "nlperf")
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

    def watch(self, pids: Sequence[int], kthread_pid: int | None) -> None:
        """Scheduler probes follow these pids (threads) and the module's kthread, replacing any
        previous set."""
        if self._bpf is None:
            return
        w = self._bpf[b"watch"]
        w.clear()
        for pid in pids:
            w[w.Key(pid)] = w.Leaf(ROLE_LAB)
        if kthread_pid:
            w[w.Key(kthread_pid)] = w.Leaf(ROLE_KTHREAD)
        self._kthread_pid = kthread_pid or None
        self._pids = list(pids)

    def reset(self) -> None:
        """Zero every counter and histogram (after warm-up); in-flight start times stay."""
        if self._bpf is None:
            return
        names = ["overruns", "deliveries", "sched_cnt"] + (["by_proc"] if self.by_process else [])
        for name in names:
            self._bpf[name.encode()].clear()
        for name, n in (("hist", len(PROBES) * len(DIRS)),
                        ("calls", NCOUNTED * len(DIRS) * len(RESULTS))):
            t = self._bpf[name.encode()]
            for i in range(n):
                t.clearitem(t.Key(i))
        if self._kret_events:
            misses = read_kprobe_misses() or {}
            self._missed_base = {f: misses.get(ev, 0)
                                 for f, ev in self._kret_events.items() if ev}

    def _nmissed(self) -> dict[str, int | None]:
        """Per kretprobe'd function, returns not seen since the last reset (None: unknown)."""
        if not self._kret_events:
            return {}
        misses = read_kprobe_misses() or {}
        out: dict[str, int | None] = {}
        for func, ev in self._kret_events.items():
            now = misses.get(ev) if ev else None
            out[func] = None if now is None else max(0, now - self._missed_base.get(func, 0))
        return out

    # --- reading: a snapshot of the maps, made into blocks by nlperf/probe_blocks.py ---

    def _snapshot(self) -> MapSnapshot | None:
        """The maps' contents as plain data; None once closed."""
        b = self._bpf
        if b is None:
            return None
        snap = MapSnapshot()
        h = b[b"hist"]
        for i in range(len(PROBES) * len(DIRS)):
            # CPUs that recorded nothing add nothing: skip copying their empty buckets
            snap.hist[i] = [HistCell(int(r.count), int(r.sum), int(r.max), list(r.log2),
                                     list(r.lin)) for r in h.getvalue(h.Key(i)) if r.count]
        t = b[b"calls"]
        for i in range(calls_index(NCOUNTED, 0, 0)):
            snap.calls[i] = [int(v) for v in t.getvalue(t.Key(i))]
        if self.by_process:
            snap.by_proc = {(int(k.tgid), int(k.probe)): [int(x) for x in v]
                            for k, v in b[b"by_proc"].items()}
        snap.overruns = {int(k.value): [int(x) for x in v] for k, v in b[b"overruns"].items()}
        snap.deliveries = {int(k.value): [int(x) for x in v]
                           for k, v in b[b"deliveries"].items()}
        snap.sched_cnt = {int(k.value): (int(v.voluntary), int(v.involuntary), int(v.wakeups))
                          for k, v in b[b"sched_cnt"].items()}
        snap.nmissed = self._nmissed()
        return snap

    def _settings(self) -> BlockSettings:
        return BlockSettings(which=tuple(self.which), timing=self.timing,
                             by_process=self.by_process, deliveries=self.deliveries,
                             lin_step_ns=self.lin_step_ns, attach_kinds=dict(self.attach_kinds),
                             notes=tuple(self.notes), compile_s=self.compile_s,
                             attach_s=self.attach_s, pids=tuple(self._pids),
                             kthread_pid=self._kthread_pid,
                             workqueue_measured=self._workqueue_measured)

    def read(self) -> dict[str, Any]:
        """The summary block (counters since the last reset)."""
        return probes_block(self._settings(), self._snapshot())

    def histograms(self) -> dict[str, Any]:
        """Raw non-empty buckets per probe row: log2 as [lo, hi, count], linear as counts."""
        return histograms_block(self._snapshot(), self.lin_step_ns)

    def close(self) -> None:
        """Detach and unload everything; idempotent, also after a failed attach."""
        b, self._bpf = self._bpf, None
        if b is None:
            return
        while self._module_attached:
            item = self._module_attached.pop()
            self._bpf = b
            self._detach(item)
            self._bpf = None
        with contextlib.suppress(Exception):
            b.cleanup()
        self._attached.clear()
        self._kret_events.clear()

    def __enter__(self) -> ProbeSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
