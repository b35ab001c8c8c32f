// SPDX-License-Identifier: GPL-2.0
/*
 * nlperf probe suite (BCC dialect): netlink send paths, drops, deliveries, scheduling and the
 * module's own functions, all aggregated in kernel maps. nlperf/probes.py compiles this file
 * once per run with -D defines and attaches each program as fentry/fexit where that loads, else
 * as kprobe/kretprobe. No kernel struct headers are included (they cost tens of seconds of
 * emulated clang in the lab VM): struct fields are read with bpf_probe_read_kernel() at byte
 * offsets that the loader takes from /sys/kernel/btf/vmlinux.
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
 *   TIMING             1: time calls (entry timestamps, histograms); 0: counts only
 *   SWITCH_STATE_ARG   1: sched_switch passes prev_state as args[3] (5.18+); 0: read it at
 *                      OFF_TASK_STATE from the task
 */
#include <uapi/linux/ptrace.h>

/* Histogram rows: probe x direction (or role, for the scheduler rows). */
#define P_UNICAST	0
#define P_BROADCAST	1
#define P_BCAST_FILT	2
#define P_INPUT		3
#define P_PROCESS	4
#define P_WORK		5
#define P_WAKEUP	6	/* wakeup -> running, per role */
#define P_OFFCPU	7	/* blocked: switch-out (voluntary) -> switch-in, per role */
#define NPROBES		8

#define D_TO_KERNEL	0	/* unicast to port 0: a user socket sends to the kernel */
#define D_TO_USER	1	/* sending socket is a kernel socket */
#define D_USER_USER	2	/* user socket to a user port (or user multicast) */
#define NDIRS		3

#define ROLE_LAB	1	/* watch map: sender / receiver processes */
#define ROLE_KTHREAD	2	/* watch map: the module's worker kthread */

#define R_OK		0
#define R_EAGAIN	1
#define R_ENOBUFS	2
#define R_ESRCH		3
#define R_ECONNREFUSED	4
#define R_OTHER		5

#define NLK_F_KERNEL_SOCKET	0x1
#define LOG2_SLOTS	65

struct row_log2 { u64 slot[LOG2_SLOTS]; };
struct row_lin { u64 slot[LIN_SLOTS + 1]; };
struct row_stat { u64 count; u64 sum; u64 max; };

BPF_PERCPU_ARRAY(hist_log2, struct row_log2, NPROBES * NDIRS);
BPF_PERCPU_ARRAY(hist_lin, struct row_lin, NPROBES * NDIRS);
BPF_PERCPU_ARRAY(stat, struct row_stat, NPROBES * NDIRS);

/* calls by (process, probe, direction, result class) */
struct ckey { u32 tgid; u16 probe; u8 dir; u8 result; };
BPF_HASH(calls, struct ckey, u64, 4096);

/* Nesting: in callback mode the reply's netlink_unicast runs inside the request's, on the same
 * thread, so start times are keyed by (thread, probe, depth). */
struct dkey { u32 tid; u32 probe; };
struct skey { u32 tid; u32 probe; u32 depth; u32 pad; };
struct sval { u64 ts; u32 dir; u32 tgid; };
BPF_HASH(depth, struct dkey, u32, 4096);
BPF_HASH(start, struct skey, struct sval, 8192);

BPF_HASH(overruns, u64, u64, 4096);	/* socket inode -> netlink_overrun calls */
BPF_HASH(deliveries, u64, u64, 4096);	/* socket inode -> __netlink_sendskb calls */

/* Scheduler */
struct scnt { u64 voluntary; u64 involuntary; u64 wakeups; };
BPF_HASH(watch, u32, u32, 1024);	/* pid -> ROLE_* (filled by user space) */
BPF_HASH(sched_cnt, u32, struct scnt, 1024);
BPF_HASH(wake_ts, u32, u64, 1024);
BPF_HASH(off_ts, u32, u64, 1024);
BPF_ARRAY(work_fn, u64, 1);		/* address of nlperf_work_fn, 0: none */
BPF_HASH(work_ts, u32, u64, 1024);

static __always_inline void record(u32 probe, u32 dir, u64 ns)
{
	u32 row = probe * NDIRS + dir;
	struct row_stat *st = stat.lookup(&row);
	if (st) {
		st->count++;
		st->sum += ns;
		if (ns > st->max)
			st->max = ns;
	}
	u32 s = ns ? bpf_log2l(ns) : 0;	/* slot s holds [2^(s-1), 2^s) */
	struct row_log2 *lg = hist_log2.lookup(&row);
	if (lg && s < LOG2_SLOTS)
		lg->slot[s]++;
	u64 l = ns / LIN_STEP_NS;
	if (l > LIN_SLOTS)
		l = LIN_SLOTS;
	struct row_lin *ln = hist_lin.lookup(&row);
	if (ln && l <= LIN_SLOTS)
		ln->slot[l]++;
}

static __always_inline u32 classify(long ret)
{
	if (ret >= 0)
		return R_OK;
	switch (-ret) {
	case 11: return R_EAGAIN;
	case 105: return R_ENOBUFS;
	case 3: return R_ESRCH;
	case 111: return R_ECONNREFUSED;
	}
	return R_OTHER;
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

/* Entry of a timed function: every call moves the depth (nesting stays right), only wanted
 * calls leave a start record. */
static __always_inline void fn_enter(u32 probe, u32 dir, bool wanted)
{
	u64 pt = bpf_get_current_pid_tgid();
	struct dkey dk = { .tid = (u32)pt, .probe = probe };
	u32 *dp = depth.lookup(&dk);
	u32 d = dp ? *dp : 0;
	u32 nd = d + 1;
	depth.update(&dk, &nd);
	if (!wanted)
		return;
	struct skey sk = { .tid = (u32)pt, .probe = probe, .depth = d };
	struct sval v = { .ts = TIMING ? bpf_ktime_get_ns() : 0, .dir = dir, .tgid = pt >> 32 };
	start.update(&sk, &v);
}

static __always_inline void fn_exit(u32 probe, long ret, bool counted)
{
	u64 now = TIMING ? bpf_ktime_get_ns() : 0;
	u64 pt = bpf_get_current_pid_tgid();
	struct dkey dk = { .tid = (u32)pt, .probe = probe };
	u32 *dp = depth.lookup(&dk);
	if (!dp || *dp == 0)
		return;		/* the entry ran before we attached */
	u32 d = *dp - 1;
	if (d == 0)
		depth.delete(&dk);
	else
		depth.update(&dk, &d);
	struct skey sk = { .tid = (u32)pt, .probe = probe, .depth = d };
	struct sval *vp = start.lookup(&sk);
	if (!vp)
		return;		/* not a lab call */
	struct sval v = *vp;
	start.delete(&sk);
	if (counted) {
		struct ckey ck = { .tgid = v.tgid, .probe = probe, .dir = v.dir,
				   .result = classify(ret) };
		calls.increment(ck);
	}
	if (TIMING && v.ts && now > v.ts)
		record(probe, v.dir, now - v.ts);
}

/* ---- netlink_unicast(ssk, skb, portid, nonblock) -> bytes or -errno ---- */

static __always_inline void unicast_enter(void *ssk, u32 portid)
{
	bool lab = sk_proto(ssk) == PROTO;
	u32 dir = portid == 0 ? D_TO_KERNEL : (sk_is_kernel(ssk) ? D_TO_USER : D_USER_USER);
	fn_enter(P_UNICAST, dir, lab);
}

KFUNC_PROBE(netlink_unicast, void *ssk, void *skb, u32 portid, int nonblock)
{
	unicast_enter(ssk, portid);
	return 0;
}

KRETFUNC_PROBE(netlink_unicast, void *ssk, void *skb, u32 portid, int nonblock, int ret)
{
	fn_exit(P_UNICAST, ret, true);
	return 0;
}

int kp__netlink_unicast(struct pt_regs *ctx)
{
	unicast_enter((void *)PT_REGS_PARM1(ctx), (u32)PT_REGS_PARM3(ctx));
	return 0;
}

int krp__netlink_unicast(struct pt_regs *ctx)
{
	fn_exit(P_UNICAST, (int)PT_REGS_RC(ctx), true);
	return 0;
}

/* ---- netlink_broadcast(ssk, skb, portid, group, allocation) -> 0 or -errno ---- */

static __always_inline void bcast_enter(u32 probe, void *ssk)
{
	bool lab = sk_proto(ssk) == PROTO;
	fn_enter(probe, sk_is_kernel(ssk) ? D_TO_USER : D_USER_USER, lab);
}

KFUNC_PROBE(netlink_broadcast, void *ssk, void *skb, u32 portid, u32 group, u32 allocation)
{
	bcast_enter(P_BROADCAST, ssk);
	return 0;
}

KRETFUNC_PROBE(netlink_broadcast, void *ssk, void *skb, u32 portid, u32 group, u32 allocation,
	       int ret)
{
	fn_exit(P_BROADCAST, ret, true);
	return 0;
}

int kp__netlink_broadcast(struct pt_regs *ctx)
{
	bcast_enter(P_BROADCAST, (void *)PT_REGS_PARM1(ctx));
	return 0;
}

int krp__netlink_broadcast(struct pt_regs *ctx)
{
	fn_exit(P_BROADCAST, (int)PT_REGS_RC(ctx), true);
	return 0;
}

/* netlink_broadcast_filtered: same leading arguments; loaded only where kallsyms has it. */
int kp__netlink_broadcast_filtered(struct pt_regs *ctx)
{
	bcast_enter(P_BCAST_FILT, (void *)PT_REGS_PARM1(ctx));
	return 0;
}

int krp__netlink_broadcast_filtered(struct pt_regs *ctx)
{
	fn_exit(P_BCAST_FILT, (int)PT_REGS_RC(ctx), true);
	return 0;
}

/* ---- drops and deliveries, per receiving socket ---- */

static __always_inline void per_socket(void *sk, bool overrun)
{
	if (sk_proto(sk) != PROTO)
		return;
	u64 ino = sk_inode(sk);
	if (overrun)
		overruns.increment(ino);
	else
		deliveries.increment(ino);
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

/* ---- the module's functions (kprobes: out-of-tree modules have no BTF) ---- */

int kp__nlperf_input(struct pt_regs *ctx)
{
	fn_enter(P_INPUT, 0, true);
	return 0;
}

int krp__nlperf_input(struct pt_regs *ctx)
{
	fn_exit(P_INPUT, 0, false);
	return 0;
}

int kp__nlperf_process(struct pt_regs *ctx)
{
	fn_enter(P_PROCESS, 0, true);
	return 0;
}

int krp__nlperf_process(struct pt_regs *ctx)
{
	fn_exit(P_PROCESS, 0, false);
	return 0;
}

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
		u32 r = *role;
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
		(void)r;
	}
	role = watch.lookup(&next_pid);
	if (role) {
		u32 dir = *role == ROLE_KTHREAD ? 1 : 0;
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

/* ---- workqueue items running the module's work function ---- */

TRACEPOINT_PROBE(workqueue, workqueue_execute_start)
{
	u32 zero = 0;
	u64 *fn = work_fn.lookup(&zero);
	if (!fn || !*fn || (u64)args->function != *fn)
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 now = bpf_ktime_get_ns();
	work_ts.update(&tid, &now);
	return 0;
}

TRACEPOINT_PROBE(workqueue, workqueue_execute_end)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 *ts = work_ts.lookup(&tid);
	if (!ts)
		return 0;
	u64 now = bpf_ktime_get_ns();
	u64 t0 = *ts;
	work_ts.delete(&tid);
	if (now > t0)
		record(P_WORK, 0, now - t0);
	return 0;
}
