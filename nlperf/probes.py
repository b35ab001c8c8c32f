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
  the module's ``nlperf_work_fn`` (raw tracepoints workqueue_execute_start/end): count and duration.
- the module's ``nlperf_input`` (one datagram) and ``nlperf_process`` (one message): duration per
  call. Hooks: the module's tracepoints (kmod/nlperf_trace.h) as raw tracepoints, a start/end
  pair each (``probe_attach.MODULE_TRACEPOINTS``); kprobe/kretprobe on the functions only where
  those do not attach (a module built without them; an out-of-tree module has no BTF, so no
  fentry). Attached after each module load and detached before its unload: an attached raw
  tracepoint holds a reference on the module, so rmmod says "in use" until then.

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
once, in nlperf/probe_table.py, and reach the C as generated ``-D`` defines. This module compiles;
nlperf/probe_attach.py attaches and detaches (:class:`ProbeSession` inherits it);
:meth:`ProbeSession.read` takes a snapshot of the maps and nlperf/probe_blocks.py turns it into the
probes block (percentiles included).
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nlperf import btf
from nlperf.errors import RunFailed
from nlperf.paths import BPF_SRC as BPF_DIR
from nlperf.probe_attach import Attached, ProbeAttaching
from nlperf.probe_blocks import (
    BlockSettings,
    HistCell,
    MapSnapshot,
    histograms_block,
    probes_block,
)
from nlperf.probe_build import LIN_STEP_NS, cflags, compile_bpf, import_bcc
from nlperf.probe_kernel import ModuleSymbol, read_kprobe_misses
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

# (struct, member) pairs the BPF C needs; netlink_sock.flags holds NETLINK_F_KERNEL_SOCKET.
BTF_MEMBERS = (("sock", "sk_protocol"), ("sock", "sk_socket"), ("socket_alloc", "vfs_inode"),
               ("inode", "i_ino"), ("netlink_sock", "flags"), ("task_struct", "pid"),
               ("task_struct", "__state"), ("task_struct", "state"), ("work_struct", "func"))


class ProbeSession(ProbeAttaching):
    """The probe suite for one run: compiled once, attached for the whole run.

    Module probes follow the module: :meth:`attach_module` after each load,
    :meth:`detach_module` before each unload.
    """

    def __init__(self, proto: int, which: Sequence[str] = WHICH, *, timing: bool = True,
                 by_process: bool | None = None, deliveries: bool | None = None,
                 lin_step_ns: int = LIN_STEP_NS, src: Path = BPF_SRC,
                 fentry: bool = True, module_tracepoints: bool = True) -> None:
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
        # False: the module's functions by kprobes (the fallback, as for a module without them)
        self.module_tracepoints = module_tracepoints
        self._bpf: Any = None
        self._attached: list[Attached] = []
        self._module_attached: list[Attached] = []
        self._work_fn = ModuleSymbol("nlperf_work_fn", "nlperf")
        self._pids: list[int] = []  # what watch() was given
        # kretprobe'd function -> its tracefs event (None: attached without one, misses unseen)
        self._kret_events: dict[str, str | None] = {}
        self._missed_base: dict[str, int] = {}  # misses per function at the last reset
        self._workqueue_measured = True  # False: nlperf_work_fn's address is unknown
        self._kthread_pid: int | None = None
        self._fentry_refused = False
        self._suspended = False  # core probes detached by suspend()
        t0 = time.monotonic()
        bcc = import_bcc()  # ~5.5 s under TCG: counted as part of the compile
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
