// SPDX-License-Identifier: GPL-2.0
/*
 * nlperf probe suite (BCC dialect): netlink send paths, drops, deliveries, scheduling and the
 * module's own tracepoints, all aggregated in kernel maps. nlperf/probes.py compiles this file
 * once per run with -D defines and attaches each program as fentry/fexit where that loads, else
 * as kprobe/kretprobe, and the module's tracepoints as raw tracepoints. No kernel struct headers
 * are included (they cost tens of seconds of emulated clang in the lab VM): struct fields are
 * read with bpf_probe_read_kernel() at byte offsets that the loader takes from
 * /sys/kernel/btf/vmlinux.
 *
 * Required defines:
 *   PROTO              netlink protocol number of the lab
 *   OFF_SK_PROTOCOL    offsetof(struct sock, sk_protocol), a u16
 *   OFF_SK_SOCKET      offsetof(struct sock, sk_socket)
 *   OFF_SOCKET_INO     offsetof(struct socket_alloc, vfs_inode) + offsetof(struct inode, i_ino):
 *                      the socket inode number, counted from the struct socket pointer
 *   OFF_NLK_FLAGS      offsetof(struct netlink_sock, flags) (struct sock is its first member)
 *   OFF_TASK_PID       offsetof(struct task_struct, pid)
 *   LIN_STEP_NS        width of a linear histogram bucket
 *   LIN_SLOTS          linear buckets; one more bucket collects everything above
 *   TIMING             1: time calls (entry programs, histograms); 0: count only, from the exit
 *                      programs alone (fexit sees the arguments and the return value)
 *   BY_PROCESS         1: also count calls per tgid (a per-CPU hash); 0: no per-process counts
 *   TASK_STORAGE       1: per-thread entry stacks in task local storage (5.12+); 0: LRU hash
 *   SWITCH_STATE_ARG   1: sched_switch passes prev_state as args[3] (5.18+); 0: read it at
 *                      OFF_TASK_STATE from the task
 * and the shared tables, generated from nlperf/probe_table.py (defined nowhere else):
 *   P_*, NPROBES       histogram rows per probe; NCOUNTED: the first probes, calls counted by
 *                      direction and result; NTIMED: the first probes, timed from entry to exit
 *   D_*, NDIRS         direction of a call; D_NONE: the row of a probe without direction
 *   ROLE_*             watch map value, and the scheduler rows' direction slot
 *   R_*, NRESULTS      result classes; RESULT_OF_ERRNO(e): the class of a positive errno
 *   LOG2_SLOTS         log2 histogram buckets
 *
 * Hot-path rules: the protocol filter comes first; counters live in per-CPU arrays indexed by
 * small integers (no hash update per call); with fentry/fexit only lab calls touch the entry
 * stack, so a counting-only exit program needs no entry program at all.
 */
#include <uapi/linux/ptrace.h>

#define NLK_F_KERNEL_SOCKET	0x1
#define MAXDEPTH	4	/* nesting levels timed per thread and function */

/* One histogram row: count, sum and max, log2 and linear buckets (one lookup per record). */
struct row {
	u64 count;
	u64 sum;
	u64 max;
	u64 log2[LOG2_SLOTS];
	u64 lin[LIN_SLOTS + 1];
};
BPF_PERCPU_ARRAY(hist, struct row, NPROBES * NDIRS);

/* calls: index (probe * NDIRS + dir) * NRESULTS + result */
BPF_PERCPU_ARRAY(calls, u64, NCOUNTED * NDIRS * NRESULTS);
#if BY_PROCESS
struct pkey { u32 tgid; u32 probe; };
BPF_PERCPU_HASH(by_proc, struct pkey, u64, 4096);
#endif

/* Per-thread entry stacks, one per timed function: in callback mode the reply's netlink_unicast
 * runs inside the request's, on the same thread. */
struct frame { u64 ts; u32 dir; u32 lab; };
struct tstack { u32 depth[NTIMED]; u32 pad; struct frame f[NTIMED][MAXDEPTH]; };
#if TASK_STORAGE
BPF_TASK_STORAGE(tstacks, struct tstack);
#else
BPF_TABLE("lru_hash", u32, struct tstack, tstacks, 8192);
#endif

BPF_PERCPU_HASH(overruns, u64, u64, 4096);	/* socket inode -> netlink_overrun calls */
BPF_PERCPU_HASH(deliveries, u64, u64, 4096);	/* socket inode -> __netlink_sendskb calls */

/* Scheduler */
struct scnt { u64 voluntary; u64 involuntary; u64 wakeups; };
BPF_HASH(watch, u32, u32, 1024);	/* pid -> ROLE_* (filled by user space) */
BPF_HASH(sched_cnt, u32, struct scnt, 1024);
BPF_HASH(wake_ts, u32, u64, 1024);
BPF_HASH(off_ts, u32, u64, 1024);
BPF_ARRAY(work_fn, u64, 1);		/* address of nlperf_work_fn, 0: none */
BPF_HASH(work_ts, u32, u64, 1024);
BPF_HASH(send_ts, u32, u64, 1024);	/* tid -> send syscall entry */

static __always_inline void record(u32 probe, u32 dir, u64 ns)
{
	u32 idx = probe * NDIRS + dir;
	struct row *r = hist.lookup(&idx);
	if (!r)
		return;
	r->count++;
	r->sum += ns;
	if (ns > r->max)
		r->max = ns;
	u64 s = ns ? bpf_log2l(ns) : 0;	/* slot s holds [2^(s-1), 2^s) */
	if (s < LOG2_SLOTS)
		r->log2[s]++;
	u64 l = ns / LIN_STEP_NS;
	if (l > LIN_SLOTS)
		l = LIN_SLOTS;
	if (l <= LIN_SLOTS)	/* again, for older verifiers */
		r->lin[l]++;
}

static __always_inline u32 classify(long ret)
{
	return ret >= 0 ? R_OK : RESULT_OF_ERRNO(-ret);
}

static __always_inline void count_call(u32 probe, u32 dir, long ret)
{
	u32 idx = (probe * NDIRS + dir) * NRESULTS + classify(ret);
	u64 *n = calls.lookup(&idx);
	if (n)
		(*n)++;
#if BY_PROCESS
	struct pkey pk = { .tgid = bpf_get_current_pid_tgid() >> 32, .probe = probe };
	u64 *c = by_proc.lookup(&pk);
	if (c) {
		(*c)++;
	} else {
		u64 one = 1;
		by_proc.update(&pk, &one);
	}
#endif
}

static __always_inline u16 sk_proto(void *sk)
{
	u16 proto = 0;
	bpf_probe_read_kernel(&proto, sizeof(proto), (char *)sk + OFF_SK_PROTOCOL);
	return proto;
}

static __always_inline bool sk_is_kernel(void *sk)
{
	u32 flags = 0;
	bpf_probe_read_kernel(&flags, sizeof(flags), (char *)sk + OFF_NLK_FLAGS);
	return flags & NLK_F_KERNEL_SOCKET;
}

static __always_inline u64 sk_inode(void *sk)
{
	void *sock = 0;
	u64 ino = 0;
	bpf_probe_read_kernel(&sock, sizeof(sock), (char *)sk + OFF_SK_SOCKET);
	if (!sock)
		return 0;
	bpf_probe_read_kernel(&ino, sizeof(ino), (char *)sock + OFF_SOCKET_INO);
	return ino;
}

static __always_inline struct tstack *my_stack(bool create)
{
#if TASK_STORAGE
	return tstacks.task_storage_get(bpf_get_current_task_btf(), 0, create ? 1 : 0);
#else
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct tstack *st = tstacks.lookup(&tid);
	if (st || !create)
		return st;
	struct tstack zero = {};
	tstacks.update(&tid, &zero);
	return tstacks.lookup(&tid);
#endif
}

/* Entry of a function whose exit program needs the entry: push a frame (a timestamp when
 * timing; with kprobes also the direction and whether it is a lab call, which the kretprobe
 * cannot see). Frames beyond MAXDEPTH only move the depth. */
static __always_inline void push(u32 probe, u32 dir, u32 lab)
{
	struct tstack *st = my_stack(true);
	if (!st || probe >= NTIMED)
		return;
	u32 d = st->depth[probe];
	st->depth[probe] = d + 1;
	if (d < MAXDEPTH) {
		struct frame *f = &st->f[probe][d];
		f->ts = TIMING ? bpf_ktime_get_ns() : 0;
		f->dir = dir;
		f->lab = lab;
	}
}

/* Exit: pop the frame; 0 if there is none (the entry ran before we attached, or too deep). */
static __always_inline int pop(u32 probe, struct frame *out)
{
	struct tstack *st = my_stack(false);
	if (!st || probe >= NTIMED)
		return 0;
	u32 d = st->depth[probe];
	if (d == 0)
		return 0;
	d--;
	st->depth[probe] = d;
	if (d >= MAXDEPTH)
		return 0;
	*out = st->f[probe][d];
	return 1;
}

static __always_inline void time_exit(u32 probe, u32 dir, u64 ts)
{
#if TIMING
	u64 now = bpf_ktime_get_ns();
	if (ts && now > ts)
		record(probe, dir, now - ts);
#endif
}

static __always_inline u32 unicast_dir(void *ssk, u32 portid)
{
	if (portid == 0)
		return D_TO_KERNEL;
	return sk_is_kernel(ssk) ? D_TO_USER : D_USER_USER;
}

static __always_inline u32 bcast_dir(void *ssk)
{
	return sk_is_kernel(ssk) ? D_TO_USER : D_USER_USER;
}

/* ---- fentry/fexit: the filter decides the same at entry and exit, so only lab calls push ---- */

static __always_inline void fexit_counted(u32 probe, u32 dir, long ret)
{
	count_call(probe, dir, ret);
#if TIMING
	struct frame f;
	if (pop(probe, &f))
		time_exit(probe, dir, f.ts);
#endif
}

/* netlink_unicast(ssk, skb, portid, nonblock) -> bytes or -errno */
#if TIMING
KFUNC_PROBE(netlink_unicast, void *ssk, void *skb, u32 portid, int nonblock)
{
	if (sk_proto(ssk) != PROTO)
		return 0;
	push(P_UNICAST, D_NONE, 1);
	return 0;
}
#endif

KRETFUNC_PROBE(netlink_unicast, void *ssk, void *skb, u32 portid, int nonblock, int ret)
{
	if (sk_proto(ssk) != PROTO)
		return 0;
	fexit_counted(P_UNICAST, unicast_dir(ssk, portid), ret);
	return 0;
}

/* netlink_broadcast(ssk, skb, portid, group, allocation) -> 0 or -errno */
#if TIMING
KFUNC_PROBE(netlink_broadcast, void *ssk, void *skb, u32 portid, u32 group, u32 allocation)
{
	if (sk_proto(ssk) != PROTO)
		return 0;
	push(P_BROADCAST, D_NONE, 1);
	return 0;
}
#endif

KRETFUNC_PROBE(netlink_broadcast, void *ssk, void *skb, u32 portid, u32 group, u32 allocation,
	       int ret)
{
	if (sk_proto(ssk) != PROTO)
		return 0;
	fexit_counted(P_BROADCAST, bcast_dir(ssk), ret);
	return 0;
}

/* netlink_broadcast_filtered(ssk, skb, portid, group, allocation, filter, filter_data): 6.8+,
 * where nlmsg_multicast calls it directly; attached only where kallsyms has it. */
#if TIMING
KFUNC_PROBE(netlink_broadcast_filtered, void *ssk, void *skb, u32 portid, u32 group,
	    u32 allocation, void *filter, void *filter_data)
{
	if (sk_proto(ssk) != PROTO)
		return 0;
	push(P_BCAST_FILT, D_NONE, 1);
	return 0;
}
#endif

KRETFUNC_PROBE(netlink_broadcast_filtered, void *ssk, void *skb, u32 portid, u32 group,
	       u32 allocation, void *filter, void *filter_data, int ret)
{
	if (sk_proto(ssk) != PROTO)
		return 0;
	fexit_counted(P_BCAST_FILT, bcast_dir(ssk), ret);
	return 0;
}

/* ---- kprobe/kretprobe fallback: the kretprobe sees neither the arguments nor the filter, so
 * every call pushes a frame that carries them ---- */

static __always_inline void krp_exit(u32 probe, long ret)
{
	struct frame f;
	if (!pop(probe, &f) || !f.lab)
		return;
	count_call(probe, f.dir, ret);
	time_exit(probe, f.dir, f.ts);
}

int kp__netlink_unicast(struct pt_regs *ctx)
{
	void *ssk = (void *)PT_REGS_PARM1(ctx);
	if (sk_proto(ssk) != PROTO) {
		push(P_UNICAST, D_NONE, 0);
		return 0;
	}
	push(P_UNICAST, unicast_dir(ssk, (u32)PT_REGS_PARM3(ctx)), 1);
	return 0;
}

int krp__netlink_unicast(struct pt_regs *ctx)
{
	krp_exit(P_UNICAST, (int)PT_REGS_RC(ctx));
	return 0;
}

static __always_inline void kp_bcast(u32 probe, void *ssk)
{
	if (sk_proto(ssk) != PROTO) {
		push(probe, D_NONE, 0);
		return;
	}
	push(probe, bcast_dir(ssk), 1);
}

int kp__netlink_broadcast(struct pt_regs *ctx)
{
	kp_bcast(P_BROADCAST, (void *)PT_REGS_PARM1(ctx));
	return 0;
}

int krp__netlink_broadcast(struct pt_regs *ctx)
{
	krp_exit(P_BROADCAST, (int)PT_REGS_RC(ctx));
	return 0;
}

/* netlink_broadcast_filtered: same leading arguments; loaded only where kallsyms has it. */
int kp__netlink_broadcast_filtered(struct pt_regs *ctx)
{
	kp_bcast(P_BCAST_FILT, (void *)PT_REGS_PARM1(ctx));
	return 0;
}

int krp__netlink_broadcast_filtered(struct pt_regs *ctx)
{
	krp_exit(P_BCAST_FILT, (int)PT_REGS_RC(ctx));
	return 0;
}

/* ---- drops and deliveries, per receiving socket ---- */

static __always_inline void per_socket(void *sk, bool overrun)
{
	if (sk_proto(sk) != PROTO)
		return;
	u64 ino = sk_inode(sk);
	u64 *n = overrun ? overruns.lookup(&ino) : deliveries.lookup(&ino);
	if (n) {
		(*n)++;
		return;
	}
	u64 one = 1;
	if (overrun)
		overruns.update(&ino, &one);
	else
		deliveries.update(&ino, &one);
}

KFUNC_PROBE(netlink_overrun, void *sk)
{
	per_socket(sk, true);
	return 0;
}

int kp__netlink_overrun(struct pt_regs *ctx)
{
	per_socket((void *)PT_REGS_PARM1(ctx), true);
	return 0;
}

KFUNC_PROBE(__netlink_sendskb, void *sk, void *skb)
{
	per_socket(sk, false);
	return 0;
}

int kp____netlink_sendskb(struct pt_regs *ctx)
{
	per_socket((void *)PT_REGS_PARM1(ctx), false);
	return 0;
}

/* ---- the module: its tracepoints (kmod/nlperf_trace.h), attached as raw tracepoints, else
 * kprobes on its functions (a module built without tracepoints; out-of-tree modules have no
 * BTF, so no fentry). Timing only; both pairs fire on one thread and do not nest. ---- */

#if TIMING
static __always_inline void module_enter(u32 probe)
{
	push(probe, D_NONE, 1);
}

static __always_inline void module_exit(u32 probe)
{
	struct frame f;
	if (pop(probe, &f))
		time_exit(probe, D_NONE, f.ts);
}

/* nlperf_input(): nlperf_datagram_start/_end(len, portid) around the walk of one datagram */
RAW_TRACEPOINT_PROBE(nlperf_datagram_start)
{
	module_enter(P_INPUT);
	return 0;
}

RAW_TRACEPOINT_PROBE(nlperf_datagram_end)
{
	module_exit(P_INPUT);
	return 0;
}

/* nlperf_process(): nlperf_process_start(type) ... nlperf_process_end(type, result) */
RAW_TRACEPOINT_PROBE(nlperf_process_start)
{
	module_enter(P_PROCESS);
	return 0;
}

RAW_TRACEPOINT_PROBE(nlperf_process_end)
{
	module_exit(P_PROCESS);
	return 0;
}

int kp__nlperf_input(struct pt_regs *ctx)
{
	module_enter(P_INPUT);
	return 0;
}

int krp__nlperf_input(struct pt_regs *ctx)
{
	module_exit(P_INPUT);
	return 0;
}

int kp__nlperf_process(struct pt_regs *ctx)
{
	module_enter(P_PROCESS);
	return 0;
}

int krp__nlperf_process(struct pt_regs *ctx)
{
	module_exit(P_PROCESS);
	return 0;
}
#endif

/* ---- scheduler ---- */

static __always_inline u32 task_pid(void *task)
{
	int pid = 0;
	bpf_probe_read_kernel(&pid, sizeof(pid), (char *)task + OFF_TASK_PID);
	return pid;
}

static __always_inline struct scnt *sched_counters(u32 pid)
{
	struct scnt zero = {};
	return sched_cnt.lookup_or_try_init(&pid, &zero);
}

/* sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next
 *              [, unsigned int prev_state]) */
RAW_TRACEPOINT_PROBE(sched_switch)
{
	bool preempt = ctx->args[0];
	void *prev = (void *)ctx->args[1];
	void *next = (void *)ctx->args[2];
	u32 prev_pid = (u32)bpf_get_current_pid_tgid();
	u32 next_pid = task_pid(next);
	u64 now = bpf_ktime_get_ns();
	u32 *role = watch.lookup(&prev_pid);

	if (role) {
#if SWITCH_STATE_ARG
		unsigned long state = ctx->args[3];
#else
		unsigned long state = 0;
		bpf_probe_read_kernel(&state, sizeof(u32), (char *)prev + OFF_TASK_STATE);
#endif
		struct scnt *c = sched_counters(prev_pid);
		/* as /proc/<pid>/status counts them: nvcsw when the task gave up the CPU in a
		 * sleeping state, nivcsw otherwise (preempted, or yielded while runnable) */
		if (!preempt && state) {
			if (c)
				__sync_fetch_and_add(&c->voluntary, 1);
			off_ts.update(&prev_pid, &now);
		} else if (c) {
			__sync_fetch_and_add(&c->involuntary, 1);
		}
		/* A wakeup stamped while the task was still on the CPU (ttwu_runnable: woken
		 * between setting its sleeping state and leaving) is no wakeup from sleep: it must
		 * not time the next switch-in. A real wakeup comes after this switch-out. */
		wake_ts.delete(&prev_pid);
	}
	role = watch.lookup(&next_pid);
	if (role) {
		u32 dir = *role;	/* ROLE_*: the row's direction slot */
		u64 *ts = wake_ts.lookup(&next_pid);
		if (ts) {
			if (now > *ts)
				record(P_WAKEUP, dir, now - *ts);
			wake_ts.delete(&next_pid);
		}
		ts = off_ts.lookup(&next_pid);
		if (ts) {
			if (now > *ts)
				record(P_OFFCPU, dir, now - *ts);
			off_ts.delete(&next_pid);
		}
	}
	return 0;
}

/* sched_wakeup(struct task_struct *p) */
RAW_TRACEPOINT_PROBE(sched_wakeup)
{
	u32 pid = task_pid((void *)ctx->args[0]);
	u32 *role = watch.lookup(&pid);
	if (!role)
		return 0;
	u64 now = bpf_ktime_get_ns();
	struct scnt *c = sched_counters(pid);
	if (c)
		__sync_fetch_and_add(&c->wakeups, 1);
	wake_ts.update(&pid, &now);
	return 0;
}

/* ---- the lab senders' send syscalls: how long sendto()/sendmsg() holds the sender ---- */

#if TIMING
/* In callback mode the module processes the message inside this call; a deferring model
 * returns once the message is queued. Watched pids only (one map lookup for the others). */
static __always_inline int send_enter(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u32 *role = watch.lookup(&tid);
	if (!role || *role != ROLE_LAB)
		return 0;
	u64 now = bpf_ktime_get_ns();
	send_ts.update(&tid, &now);
	return 0;
}

static __always_inline int send_exit(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 *ts = send_ts.lookup(&tid);
	if (!ts)
		return 0;
	u64 now = bpf_ktime_get_ns();
	u64 t0 = *ts;
	send_ts.delete(&tid);
	if (now > t0)
		record(P_SEND, ROLE_LAB, now - t0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
	return send_enter();
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendto)
{
	return send_exit();
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
	return send_enter();
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg)
{
	return send_exit();
}
#endif

/* ---- workqueue items running the module's work function ---- */

/*
 * Raw tracepoints, not perf-event ones: they detach in ~1 ms where a perf event waits for
 * an RCU grace period (~80 ms under TCG), and a probes-off run detaches them all.
 * args[0] is the work item; its function is read at OFF_WORK_FUNC (BTF).
 */
RAW_TRACEPOINT_PROBE(workqueue_execute_start)
{
	u32 zero = 0;
	u64 *fn = work_fn.lookup(&zero);
	u64 func = 0;
	if (!fn || !*fn)
		return 0;
	bpf_probe_read_kernel(&func, sizeof(func), (void *)ctx->args[0] + OFF_WORK_FUNC);
	if (func != *fn)
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 now = bpf_ktime_get_ns();
	work_ts.update(&tid, &now);
	return 0;
}

RAW_TRACEPOINT_PROBE(workqueue_execute_end)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 *ts = work_ts.lookup(&tid);
	if (!ts)
		return 0;
	u64 now = bpf_ktime_get_ns();
	u64 t0 = *ts;
	work_ts.delete(&tid);
	if (now > t0)
		record(P_WORK, D_NONE, now - t0);
	return 0;
}
