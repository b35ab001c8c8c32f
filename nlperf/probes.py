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

Percentiles come from the histograms by linear interpolation within the bucket that holds the
rank: from the linear histogram (``LIN_STEP_NS`` wide buckets) when the rank falls below its
overflow bucket, else from the log2 histogram; never above the recorded maximum.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nlperf import btf
from nlperf.errors import RunFailed
from nlperf.paths import BPF_SRC as BPF_DIR

BPF_SRC = BPF_DIR / "netlink.bpf.c"
KALLSYMS = Path("/proc/kallsyms")
WHICH = ("unicast", "broadcast", "overrun", "sched", "module")

# Mirrors of the #defines in bpf/netlink.bpf.c: row = probe * len(DIRS) + dir.
PROBES = ("netlink_unicast", "netlink_broadcast", "netlink_broadcast_filtered", "nlperf_input",
          "nlperf_process", "work", "wakeup", "offcpu")
DIRS = ("to_kernel", "kernel_to_user", "user_to_user")
ROLES = ("lab", "kthread")  # the scheduler rows use the direction index for the role
RESULTS = ("ok", "EAGAIN", "ENOBUFS", "ESRCH", "ECONNREFUSED", "other")
_RESULT_ERRNOS = {11: "EAGAIN", 105: "ENOBUFS", 3: "ESRCH", 111: "ECONNREFUSED"}
ROLE_LAB, ROLE_KTHREAD = 1, 2
NCOUNTED = 3  # the first NCOUNTED probes count calls by direction and result
LOG2_SLOTS = 65
LIN_STEP_NS = 1000
LIN_SLOTS = 200
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))

# (struct, member) pairs the BPF C needs; netlink_sock.flags holds NETLINK_F_KERNEL_SOCKET.
BTF_MEMBERS = (("sock", "sk_protocol"), ("sock", "sk_socket"), ("socket_alloc", "vfs_inode"),
               ("inode", "i_ino"), ("netlink_sock", "flags"), ("task_struct", "pid"),
               ("task_struct", "__state"), ("task_struct", "state"))

KIND_FENTRY = "fentry/fexit"
KIND_KPROBE = "kprobe/kretprobe"
KIND_UNAVAILABLE = "unavailable"
KIND_OFF = "off (timing=False)"  # module probes only time: with timing off they stay detached


# --- pure logic (unit-tested without a kernel) ----------------------------------------------------


def classify_result(ret: int) -> str:
    """The result class of a netlink_unicast/netlink_broadcast return value (as the BPF C does).

    netlink_unicast returns the byte count on success, netlink_broadcast 0: both are ``ok``.
    """
    if ret >= 0:
        return "ok"
    return _RESULT_ERRNOS.get(-ret, "other")


def log2_bounds(slot: int) -> tuple[int, int]:
    """[lo, hi) of log2 slot ``slot``: slot 0 holds 0, slot s ≥ 1 holds [2^(s-1), 2^s)."""
    return (0, 1) if slot == 0 else (1 << (slot - 1), 1 << slot)


def _interpolate(buckets: Sequence[tuple[float, float, int]], rank: float) -> float | None:
    """Value at ``rank`` (0 < rank ≤ total) over ordered (lo, hi, count) buckets."""
    cum = 0
    for lo, hi, n in buckets:
        if n and cum + n >= rank:
            return lo + (hi - lo) * (rank - cum) / n
        cum += n
    return None


def percentile(log2: Sequence[int], linear: Sequence[int], step_ns: int, q: float,
               max_ns: int | None = None) -> float | None:
    """The q-quantile (0 < q ≤ 1) in ns, interpolated within buckets.

    ``linear`` has len-1 buckets of ``step_ns`` and an overflow bucket at the end; when the rank
    falls in the overflow bucket, the log2 histogram answers. Both histograms count the same
    events; None if they are empty. Capped at ``max_ns`` when given.
    """
    total = sum(log2)
    if total == 0:
        return None
    rank = max(q * total, 1e-9)
    in_range = sum(linear[:-1]) if linear else 0
    value: float | None = None
    if linear and rank <= in_range:
        value = _interpolate([(i * step_ns, (i + 1) * step_ns, n)
                              for i, n in enumerate(linear[:-1])], rank)
    if value is None:
        value = _interpolate([(*log2_bounds(s), n) for s, n in enumerate(log2)], rank)
    if value is not None and max_ns is not None:
        value = min(value, float(max_ns))
    return value


def latency_summary(log2: Sequence[int], linear: Sequence[int], step_ns: int, count: int,
                    total_ns: int, max_ns: int) -> dict[str, Any]:
    """{count, mean, p50, p90, p99, p999, max} in ns from one histogram row."""
    out: dict[str, Any] = {"count": count, "mean": round(total_ns / count, 1) if count else None}
    for name, q in QUANTILES:
        p = percentile(log2, linear, step_ns, q, max_ns)
        out[name] = round(p, 1) if p is not None else None
    out["max"] = max_ns if count else None
    return out


def ksym_addr(name: str, module: str | None = None, text: str | None = None) -> int | None:
    """Address of ``name`` in /proc/kallsyms (of ``module`` if given); None if absent or hidden."""
    if text is None:
        text = KALLSYMS.read_text()
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3 and f[2] == name:
            mod = f[3].strip("[]") if len(f) > 3 else None
            if module is not None and mod != module:
                continue
            addr = int(f[0], 16)
            return addr or None
    return None


def cflags(proto: int, offsets: dict[tuple[str, str], int], release: str, *, timing: bool = True,
           by_process: bool | None = None, lin_step_ns: int = LIN_STEP_NS,
           lin_slots: int = LIN_SLOTS) -> list[str]:
    """The -D defines of bpf/netlink.bpf.c; RunFailed names a field BTF did not give."""
    need = [("sock", "sk_protocol"), ("sock", "sk_socket"), ("socket_alloc", "vfs_inode"),
            ("inode", "i_ino"), ("netlink_sock", "flags"), ("task_struct", "pid")]
    missing = [f"{s}.{m}" for s, m in need if (s, m) not in offsets]
    state = offsets.get(("task_struct", "__state"), offsets.get(("task_struct", "state")))
    m = re.match(r"(\d+)\.(\d+)", release)
    version = (int(m[1]), int(m[2])) if m else (0, 0)
    switch_state_arg = version >= (5, 18)
    task_storage = version >= (5, 12)  # task local storage for kprobes and fentry
    if not switch_state_arg and state is None:
        missing.append("task_struct.__state")
    if missing:
        raise RunFailed(f"probes: kernel BTF lacks {', '.join(missing)} (needed as byte offsets)")
    sock_ino = offsets[("socket_alloc", "vfs_inode")] + offsets[("inode", "i_ino")]
    return [f"-DPROTO={proto}",
            f"-DOFF_SK_PROTOCOL={offsets[('sock', 'sk_protocol')]}",
            f"-DOFF_SK_SOCKET={offsets[('sock', 'sk_socket')]}",
            f"-DOFF_SOCKET_INO={sock_ino}",
            f"-DOFF_NLK_FLAGS={offsets[('netlink_sock', 'flags')]}",
            f"-DOFF_TASK_PID={offsets[('task_struct', 'pid')]}",
            f"-DOFF_TASK_STATE={state or 0}",
            f"-DSWITCH_STATE_ARG={int(switch_state_arg)}",
            f"-DTIMING={int(timing)}",
            f"-DLIN_STEP_NS={lin_step_ns}ULL",
            f"-DLIN_SLOTS={lin_slots}",
            f"-DBY_PROCESS={int(timing if by_process is None else by_process)}",
            f"-DTASK_STORAGE={int(task_storage)}"]


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send fd 2 to a file: libbcc prints clang's diagnostics there, not in the exception."""
    saved = os.dup(2)
    try:
        with open(path, "wb") as f:
            os.dup2(f.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no diagnostics"


# --- the session ----------------------------------------------------------------------------------


def _bcc() -> Any:
    try:
        import bcc  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except Exception as e:
        raise RunFailed(f"probes need BCC: import bcc fails: {e}",
                        hint="use the project venv, or --no-probes") from None
    return bcc


class ProbeSession:
    """The probe suite for one run: compiled once, attached for the whole run.

    Module probes follow the module: :meth:`attach_module` after each load,
    :meth:`detach_module` before each unload.
    """

    def __init__(self, proto: int, which: Sequence[str] = WHICH, *, timing: bool = True,
                 by_process: bool | None = None, deliveries: bool | None = None,
                 lin_step_ns: int = LIN_STEP_NS, src: Path = BPF_SRC) -> None:
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
        self._bpf: Any = None
        self._attached: list[tuple[str, str, str]] = []  # (kind, event, fn_name)
        self._module_attached: list[tuple[str, str, str]] = []
        self._fentry_refused = False
        bcc = _bcc()
        t0 = time.monotonic()
        try:
            offsets = btf.vmlinux_member_offsets(BTF_MEMBERS)
        except (OSError, ValueError) as e:
            raise RunFailed(f"probes: cannot read {btf.VMLINUX_BTF}: {e}") from None
        flags = cflags(proto, offsets, platform.release(), timing=timing,
                       by_process=self.by_process, lin_step_ns=lin_step_ns)

        class _NoAutoload(bcc.BPF):  # type: ignore[misc, name-defined]
            # Autoload would attach every kfunc__ variant and fail on kernels refusing fentry.
            def _trace_autoload(self) -> None:
                pass

        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "bcc-stderr"
            try:
                with _stderr_to(log):
                    self._bpf = _NoAutoload(src_file=str(src).encode(), cflags=flags)
            except Exception as e:
                diag = log.read_text(errors="replace") if log.exists() else ""
                raise RunFailed(f"probes: BPF compile failed: {_first_error(diag) or e}",
                                hint="--no-probes runs without them") from None
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
        if self._fentry_refused:
            return False
        done: list[tuple[str, str, str]] = []
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

    def _try_kprobe(self, func: str, exit_too: bool,
                    into: list[tuple[str, str, str]]) -> bool:
        done: list[tuple[str, str, str]] = []
        try:
            self._bpf.attach_kprobe(event=func.encode(), fn_name=f"kp__{func}".encode())
            done.append(("kprobe", func, f"kp__{func}"))
            if exit_too:
                self._bpf.attach_kretprobe(event=func.encode(), fn_name=f"krp__{func}".encode())
                done.append(("kretprobe", func, f"krp__{func}"))
        except Exception as e:
            for item in done:
                self._detach(item)
            self.notes.append(f"{func}: kprobe failed ({e})")
            return False
        into += done
        return True

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
            if ksym_addr("netlink_broadcast_filtered") is not None:
                # 6.8+: nlmsg_multicast calls it directly, not through netlink_broadcast
                self._attach_func("netlink_broadcast_filtered", True)
        if "overrun" in self.which:
            self._attach_func("netlink_overrun", False)
            if self.deliveries:
                self._attach_func("__netlink_sendskb", False)
            else:  # one more fentry on every delivery: not in the cheap counting set
                self.attach_kinds["__netlink_sendskb"] = KIND_OFF
        if "sched" in self.which:
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
        funcs = [k for k, v in self.attach_kinds.items() if v == KIND_UNAVAILABLE]
        if funcs:
            self.notes.append(f"no fentry and no kprobes for {', '.join(funcs)}: only the "
                              "tracepoints measure")

    def _detach(self, item: tuple[str, str, str]) -> None:
        kind, event, fn = item
        b = self._bpf
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
            addr = ksym_addr("nlperf_work_fn", "nlperf")
            t = self._bpf[b"work_fn"]
            t[t.Key(0)] = t.Leaf(addr or 0)
            if addr is None:
                self.notes.append("nlperf_work_fn not in /proc/kallsyms: workqueue items "
                                  "not counted")

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

    # --- reading ---

    def _rows(self) -> dict[tuple[int, int], tuple[list[int], list[int], int, int, int]]:
        """(probe, dir) -> (log2, linear, count, sum_ns, max_ns), summed over CPUs, non-empty."""
        out = {}
        h = self._bpf[b"hist"]
        for p in range(len(PROBES)):
            for d in range(len(DIRS)):
                rows = h.getvalue(h.Key(p * len(DIRS) + d))
                count = sum(int(r.count) for r in rows)
                if not count:
                    continue
                log2 = [sum(int(r.log2[k]) for r in rows) for k in range(LOG2_SLOTS)]
                linear = [sum(int(r.lin[k]) for r in rows) for k in range(LIN_SLOTS + 1)]
                out[(p, d)] = (log2, linear, count, sum(int(r.sum) for r in rows),
                               max(int(r.max) for r in rows))
        return out

    def _latency(self, rows: dict[tuple[int, int], Any], probe: int,
                 dirs: Sequence[int] | None = None) -> dict[str, Any] | None:
        picked = [rows[(probe, d)] for d in (dirs if dirs is not None else range(len(DIRS)))
                  if (probe, d) in rows]
        if not picked:
            return None
        log2 = [sum(r[0][k] for r in picked) for k in range(LOG2_SLOTS)]
        linear = [sum(r[1][k] for r in picked) for k in range(LIN_SLOTS + 1)]
        return latency_summary(log2, linear, self.lin_step_ns, sum(r[2] for r in picked),
                               sum(r[3] for r in picked), max(r[4] for r in picked))

    def _calls_block(self, rows: dict[tuple[int, int], Any], probe: int,
                     calls: dict[tuple[int, int, int], int],
                     procs: dict[tuple[int, int], int] | None) -> dict[str, Any]:
        mine = [(d, r, n) for (p, d, r), n in calls.items() if p == probe and n]
        results = {name: 0 for name in RESULTS}
        by_dir: dict[str, dict[str, Any]] = {}
        for d, r, n in mine:
            results[RESULTS[r]] += n
            entry = by_dir.setdefault(DIRS[d], {"calls": 0, "results": {}})
            entry["calls"] += n
            entry["results"][RESULTS[r]] = entry["results"].get(RESULTS[r], 0) + n
        if self.timing:
            for name, entry in by_dir.items():
                entry["latency_ns"] = self._latency(rows, probe, [DIRS.index(name)])
        by_proc = None if procs is None else {
            str(tgid): n for (tgid, p), n in sorted(procs.items()) if p == probe and n}
        return {"calls": sum(n for *_, n in mine), "results": results, "by_direction": by_dir,
                "by_process": by_proc,
                "latency_ns": self._latency(rows, probe) if self.timing else None}

    def _calls(self) -> dict[tuple[int, int, int], int]:
        """(probe, dir, result) -> calls, summed over CPUs."""
        t = self._bpf[b"calls"]
        out = {}
        for p in range(NCOUNTED):
            for d in range(len(DIRS)):
                for r in range(len(RESULTS)):
                    i = (p * len(DIRS) + d) * len(RESULTS) + r
                    out[(p, d, r)] = sum(int(v) for v in t.getvalue(t.Key(i)))
        return out

    def _procs(self) -> dict[tuple[int, int], int] | None:
        """(tgid, probe) -> calls, or None when per-process counting is off."""
        if not self.by_process:
            return None
        return {(int(k.tgid), int(k.probe)): sum(int(x) for x in v)
                for k, v in self._bpf[b"by_proc"].items()}

    def read(self) -> dict[str, Any]:
        """The summary block (counters since the last reset)."""
        out: dict[str, Any] = {"attach": dict(self.attach_kinds), "timing": self.timing,
                               "compile_s": round(self.compile_s, 2),
                               "attach_s": round(self.attach_s, 2)}
        if self.notes:
            out["notes"] = list(self.notes)
        if self._bpf is None:
            return out
        rows = self._rows()
        calls, procs = self._calls(), self._procs()
        if "unicast" in self.which:
            out["netlink_unicast"] = self._calls_block(rows, PROBES.index("netlink_unicast"),
                                                       calls, procs)
        if "broadcast" in self.which:
            out["netlink_broadcast"] = self._calls_block(
                rows, PROBES.index("netlink_broadcast"), calls, procs)
            if "netlink_broadcast_filtered" in self.attach_kinds:
                out["netlink_broadcast_filtered"] = self._calls_block(
                    rows, PROBES.index("netlink_broadcast_filtered"), calls, procs)
        if "overrun" in self.which:
            by_sock = {str(int(k.value)): sum(int(x) for x in v)
                       for k, v in self._bpf[b"overruns"].items()}
            out["netlink_overrun"] = {"total": sum(by_sock.values()), "by_socket": by_sock}
            dl = {str(int(k.value)): sum(int(x) for x in v)
                  for k, v in self._bpf[b"deliveries"].items()}
            out["deliveries"] = ({"total": sum(dl.values()), "by_socket": dl}
                                 if self.deliveries else None)
        if "sched" in self.which:
            out["sched"] = self._sched_block(rows)
        if "module" in self.which and not self.timing:
            out["module"] = {f: None for f in ("nlperf_input", "nlperf_process")}
        elif "module" in self.which:
            out["module"] = {
                f: self._latency(rows, PROBES.index(f), [0]) or {"count": 0}
                for f in ("nlperf_input", "nlperf_process")}
        return out

    def _sched_block(self, rows: dict[tuple[int, int], Any]) -> dict[str, Any]:
        per_pid = {int(k.value): (int(v.voluntary), int(v.involuntary), int(v.wakeups))
                   for k, v in self._bpf[b"sched_cnt"].items()}
        kpid = getattr(self, "_kthread_pid", None)
        pids = getattr(self, "_pids", [])

        def total(sel: list[int]) -> dict[str, int]:
            return {name: sum(per_pid.get(p, (0, 0, 0))[i] for p in sel)
                    for i, name in enumerate(("voluntary", "involuntary", "wakeups"))}

        lab = total(pids)
        lab["by_pid"] = {str(p): dict(zip(("voluntary", "involuntary", "wakeups"),
                                          per_pid[p], strict=True))
                         for p in pids if p in per_pid}
        lab["blocked_ns"] = self._latency(rows, PROBES.index("offcpu"), [0])
        lab["wakeup_to_run_ns"] = self._latency(rows, PROBES.index("wakeup"), [0])
        out: dict[str, Any] = {"lab": lab}
        if kpid:
            k = total([kpid])
            k["pid"] = kpid
            k["wakeup_to_run_ns"] = self._latency(rows, PROBES.index("wakeup"), [1])
            k["blocked_ns"] = self._latency(rows, PROBES.index("offcpu"), [1])
            out["kthread"] = k
        else:
            out["kthread"] = None
        w = self._latency(rows, PROBES.index("work"), [0])
        out["workqueue"] = w or {"count": 0}
        return out

    def histograms(self) -> dict[str, Any]:
        """Raw non-empty buckets per probe row: log2 as [lo, hi, count], linear as counts."""
        if self._bpf is None:
            return {}
        out: dict[str, Any] = {"linear_step_ns": self.lin_step_ns, "rows": {}}
        for (p, d), (log2, linear, count, sum_ns, max_ns) in sorted(self._rows().items()):
            label = DIRS[d] if p < PROBES.index("work") else ROLES[d] if d < 2 else str(d)
            out["rows"][f"{PROBES[p]}/{label}"] = {
                "count": count, "sum_ns": sum_ns, "max_ns": max_ns,
                "log2": [[*log2_bounds(s), n] for s, n in enumerate(log2) if n],
                "linear": linear}
        return out

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

    def __enter__(self) -> ProbeSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

