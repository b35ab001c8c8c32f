// SPDX-License-Identifier: GPL-2.0
/*
 * nlperf - netlink performance lab module.
 *
 * Serves one netlink protocol with a choice of processing models
 * (callback, kthread, workqueue), echoes, relays to multicast groups,
 * runs a multicast generator and keeps counters. The wire format is
 * defined in nlperf_uapi.h.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/build_bug.h>
#include <linux/capability.h>
#include <linux/delay.h>
#include <linux/errno.h>
#include <linux/hrtimer.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/netlink.h>
#include <linux/refcount.h>
#include <linux/sched.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <net/net_namespace.h>
#include <net/netlink.h>
#include <net/sock.h>

#include "nlperf_uapi.h"

#define CREATE_TRACE_POINTS
#include "nlperf_trace.h"

/*
 * Parameter bounds, NLPERF_<PARAM>_MIN and _MAX (an unsigned parameter
 * without _MIN starts at 0). nlperf/kmod.py's PARAMS repeats them for
 * user space and a test compares the two.
 */
#define NLPERF_PROTO_MIN	16
#define NLPERF_PROTO_MAX	31
#define NLPERF_QUEUE_LEN_MIN	1U
#define NLPERF_QUEUE_LEN_MAX	1048576U
#define NLPERF_QUEUE_BYTES_MIN	65536U
#define NLPERF_QUEUE_BYTES_MAX	1073741824U
#define NLPERF_WORK_NS_MAX	NSEC_PER_SEC
#define NLPERF_WORK_SLEEP_US_MAX	USEC_PER_SEC

#define NLPERF_GEN_SIZE_MAX	65536U
/*
 * A queued message holds the datagram's skb while the skb's truesize is at
 * most twice the message and this much more; past that it holds a copy of
 * the message alone.
 */
#define NLPERF_HOLD_SLACK	4096U
/* NLMSG_DONE at the end of a coalesced reply: a header and an int */
#define NLPERF_DONE_LEN		NLMSG_SPACE(sizeof(int))
#define NLPERF_WQ_NAME		"nlperf_wq"

/*
 * Handler results besides a negative errno (answered with that error,
 * which is also the ack). After DONE and REPLIED a request with NLM_F_ACK
 * is acknowledged, after its data reply if any, as netlink_rcv_skb() does.
 */
#define NLPERF_DONE		0	/* no reply of its own */
#define NLPERF_REPLIED		1	/* sent a data reply */
#define NLPERF_ACK		2	/* always acknowledge with error 0 */

/* ---- parameters ---- */

static int proto = NLPERF_PROTO_DEFAULT;
module_param(proto, int, 0444);
MODULE_PARM_DESC(proto, "netlink protocol number, 16..31 (default 31)");

/* Names of enum nlperf_mode, for the mode parameter. */
static const char * const nlperf_mode_names[] = {
	[NLPERF_MODE_CALLBACK] = "callback",
	[NLPERF_MODE_KTHREAD] = "kthread",
	[NLPERF_MODE_WORKQUEUE] = "workqueue",
};

static char *mode = "callback";
module_param(mode, charp, 0444);
MODULE_PARM_DESC(mode, "processing model: callback, kthread or workqueue");

static unsigned int queue_len = 1024;
module_param(queue_len, uint, 0444);
MODULE_PARM_DESC(queue_len, "deferred queue bound, 1..1048576 (default 1024)");

static unsigned int queue_bytes = 16777216;
module_param(queue_bytes, uint, 0444);
MODULE_PARM_DESC(queue_bytes, "deferred queue bound in bytes held, 65536..1073741824 (default 16777216)");

static unsigned long work_ns;
module_param(work_ns, ulong, 0444);
MODULE_PARM_DESC(work_ns, "busy-wait per message in ns, max 1 s (default 0)");

static unsigned int work_sleep_us;
module_param(work_sleep_us, uint, 0444);
MODULE_PARM_DESC(work_sleep_us, "sleep per message in us, max 1 s (default 0)");

static bool allow_unpriv;
module_param(allow_unpriv, bool, 0444);
MODULE_PARM_DESC(allow_unpriv, "serve workload and stats reads without CAP_NET_ADMIN, let anyone join groups");

/* ---- state ---- */

/*
 * The coalesced reply of one run (NLPERF_F_COALESCE, nlperf_uapi.h): the
 * parts built so far. Only the thread processing the run's messages adds
 * or sends parts; in the deferred models input()'s walk and each queued
 * message of the run hold a reference, and whoever drops the last sends
 * what is left. In callback mode it lives on the walk's stack.
 */
struct nlperf_batch {
	refcount_t ref;
	struct sk_buff *skb;		/* parts not yet sent, or NULL */
	unsigned int parts;		/* in skb */
	u32 seq;			/* of the last part: NLMSG_DONE's */
	bool orphan;			/* its socket was released: not sent */
};

/* One netlink message to process; on the stack or queued. */
struct nlperf_msg {
	struct list_head node;
	struct sk_buff *skb;		/* our reference (deferred), or NULL */
	void *copy;			/* the message alone (deferred), or NULL */
	const struct nlmsghdr *nlh;	/* inside skb's data or copy */
	struct nlperf_batch *batch;	/* its run's coalesced reply, or NULL */
	unsigned int rest;		/* bytes of the run's parts after it */
	unsigned int charge;		/* bytes counted against queue_bytes */
	struct sock *sk;		/* our kernel socket, skb->sk in input() */
	u64 recv_ns;			/* input() entry */
	u64 proc_ns;			/* processing start */
	u32 portid;			/* sender, from NETLINK_CB in input() */
	u32 epoch;			/* counting period it was received in */
	bool control;			/* a control message (the instrument) */
	bool orphan;			/* its socket was released: no reply */
};

/*
 * Counters: one atomic per field of struct nlperf_stats_counters and of
 * struct nlperf_group_stats, in field order, so that the stats reply is a
 * copy and a new counter is a new field (nlperf_uapi.h).
 */
#define NLPERF_NR_CTRS	(sizeof(struct nlperf_stats_counters) / sizeof(u64))
#define NLPERF_NR_GCTRS	(sizeof(struct nlperf_group_stats) / sizeof(u64))
#define NLPERF_CTR_IDX(field)	\
	(offsetof(struct nlperf_stats_counters, field) / sizeof(u64))
#define NLPERF_GCTR_IDX(field)	\
	(offsetof(struct nlperf_group_stats, field) / sizeof(u64))

/* The atomic behind a module-wide counter, or a group's counter. */
#define nlperf_ctr(field)	(&nlperf_cnt[NLPERF_CTR_IDX(field)])
#define nlperf_gctr(group, field) \
	(&nlperf_gcnt[(group) - 1][NLPERF_GCTR_IDX(field)])

/* Entries held: queued or being processed. */
struct nlperf_queue {
	spinlock_t lock;		/* protects list, depth, bytes, hwm */
	struct list_head list;
	unsigned int depth;
	unsigned int hwm;
	size_t bytes;			/* sum of the entries' charges */
};

struct nlperf_gen {
	struct task_struct *task;
	struct sock *sk;		/* sends from: the starter's skb->sk */
	struct nlperf_gen_req req;
	u64 seq[NLPERF_MAX_GROUPS];
	bool done;			/* stream over, waiting to be reaped */
};

/*
 * Our kernel socket, for unload only. The protocol is live inside
 * netlink_kernel_create(), before this is stored, so everything that
 * sends uses the socket input() was called for (skb->sk) instead.
 */
static struct sock *nlperf_sk;
static enum nlperf_mode nlperf_mode;
static bool nlperf_stopping;

/*
 * Counting periods: a stats reset starts a new one. A message counts only
 * in the period it was received in, so a message queued before a reset and
 * processed after it shows in neither period's processed or replied, and
 * processed never exceeds received.
 */
static atomic_t nlperf_epoch;
static atomic64_t nlperf_cnt[NLPERF_NR_CTRS];
static atomic64_t nlperf_gcnt[NLPERF_MAX_GROUPS][NLPERF_NR_GCTRS];

static struct nlperf_queue nlperf_q;
static DECLARE_WAIT_QUEUE_HEAD(nlperf_worker_wait);
static struct task_struct *nlperf_worker;
static struct workqueue_struct *nlperf_wq;
static struct work_struct nlperf_work;

static DEFINE_MUTEX(nlperf_gen_lock);	/* protects nlperf_gen_cur */
static struct nlperf_gen *nlperf_gen_cur;
static u32 nlperf_gen_pid;

/* ---- counters ---- */

/*
 * Counts an event on behalf of @m if @m belongs to the current counting
 * period; @m NULL (the generator) counts always.
 */
static void nlperf_inc(const struct nlperf_msg *m, atomic64_t *c)
{
	if (!m || m->epoch == (u32)atomic_read(&nlperf_epoch))
		atomic64_inc(c);
}

/* Counts @n events on behalf of @m, if @m belongs to the current period. */
static void nlperf_add(const struct nlperf_msg *m, atomic64_t *c,
		       unsigned int n)
{
	if (m->epoch == (u32)atomic_read(&nlperf_epoch))
		atomic64_add(n, c);
}

static void nlperf_count_bcast(const struct nlperf_msg *m, unsigned int group,
			       int err)
{
	atomic64_t *c;

	if (!err)
		c = nlperf_gctr(group, bcast_ok);
	else if (err == -ESRCH)
		c = nlperf_gctr(group, bcast_esrch);
	else if (err == -ENOBUFS)
		c = nlperf_gctr(group, bcast_enobufs);
	else
		c = nlperf_gctr(group, bcast_other);
	nlperf_inc(m, c);
}

/* Counts a message answered with @err: control ones apart from the rest. */
static void nlperf_count_error(const struct nlperf_msg *m, int err)
{
	if (m->control) {
		atomic64_inc(nlperf_ctr(control_errors));
		return;
	}
	switch (err) {
	case -EPERM:
		nlperf_inc(m, nlperf_ctr(err_perm));
		break;
	case -EINVAL:
		nlperf_inc(m, nlperf_ctr(err_inval));
		break;
	case -EOPNOTSUPP:
		nlperf_inc(m, nlperf_ctr(err_notsupp));
		break;
	default:
		break;
	}
}

/* Counts the outcome of handing a reply to @m's sender. */
static void nlperf_count_reply(const struct nlperf_msg *m, int err)
{
	if (m->control)
		atomic64_inc(err < 0 ? nlperf_ctr(control_errors) :
				       nlperf_ctr(control_replied));
	else
		nlperf_inc(m, err < 0 ? nlperf_ctr(err_reply) :
					nlperf_ctr(replied));
}

/* Starts a new counting period with every count at 0. */
static void nlperf_reset_counters(void)
{
	unsigned int i, g;

	atomic_inc(&nlperf_epoch);
	for (i = 0; i < NLPERF_NR_CTRS; i++)
		if (i != NLPERF_CTR_IDX(skbs_held))	/* a level, not a count */
			atomic64_set(&nlperf_cnt[i], 0);
	for (g = 0; g < NLPERF_MAX_GROUPS; g++)
		for (i = 0; i < NLPERF_NR_GCTRS; i++)
			atomic64_set(&nlperf_gcnt[g][i], 0);

	spin_lock_bh(&nlperf_q.lock);
	nlperf_q.hwm = nlperf_q.depth;
	spin_unlock_bh(&nlperf_q.lock);
}

/* ---- sending ---- */

/*
 * Hands a reply to the sender; consumes @skb whatever happens. An orphan's
 * port id may belong to another socket by now: its reply fails as it would
 * have to the closed socket.
 */
static void nlperf_unicast(const struct nlperf_msg *m, struct sk_buff *skb)
{
	u32 bytes = skb->len;
	int err;

	if (m->orphan) {
		nlmsg_free(skb);
		err = -ECONNREFUSED;
	} else {
		err = nlmsg_unicast(m->sk, skb, m->portid);
	}
	trace_nlperf_reply(bytes, err);
	nlperf_count_reply(m, err);
}

/*
 * Broadcasts @skb from @sk to @group (1..32) and counts the result on
 * behalf of @m (NULL: the generator); consumes @skb.
 */
static void nlperf_multicast(struct sock *sk, const struct nlperf_msg *m,
			     struct sk_buff *skb, unsigned int group, gfp_t gfp)
{
	nlperf_count_bcast(m, group, nlmsg_multicast(sk, skb, 0, group, gfp));
}

/* Allocates a message of @type with @len payload bytes; NULL: no memory. */
static struct sk_buff *nlperf_msg_new(u32 portid, u32 seq, u16 type,
				      size_t len, u16 flags, gfp_t gfp,
				      void **data)
{
	struct nlmsghdr *nlh;
	struct sk_buff *skb;

	skb = nlmsg_new(len, gfp);
	if (!skb)
		return NULL;
	nlh = nlmsg_put(skb, portid, seq, type, len, flags);
	if (!nlh) {
		nlmsg_free(skb);
		return NULL;
	}
	*data = nlmsg_data(nlh);
	return skb;
}

/* Allocates a reply of @type with @len payload bytes addressed to @m. */
static struct sk_buff *nlperf_reply_new(const struct nlperf_msg *m, u16 type,
					size_t len, u16 flags, void **data)
{
	struct sk_buff *skb;

	skb = nlperf_msg_new(m->portid, m->nlh->nlmsg_seq, type, len, flags,
			     GFP_KERNEL, data);
	if (!skb)
		nlperf_inc(m, nlperf_ctr(err_nomem));
	return skb;
}

/*
 * Multicasts NLPERF_MSG_MCAST_DATA with sequence @seq to @group: @st, then
 * @len - sizeof(*st) bytes of @tail (zeros if NULL). kern_send_ns is
 * stamped last. Counts the outcome, a failed allocation included, on
 * behalf of @m (a relay request; NULL: the generator).
 */
static void nlperf_mcast_stamped(struct sock *sk, const struct nlperf_msg *m,
				 struct nlperf_stamp *st, const void *tail,
				 size_t len, u32 seq, unsigned int group,
				 gfp_t gfp)
{
	struct sk_buff *skb;
	void *data;

	skb = nlperf_msg_new(0, seq, NLPERF_MSG_MCAST_DATA, len, 0, gfp,
			     &data);
	if (!skb) {
		nlperf_count_bcast(m, group, -ENOMEM);
		return;
	}
	if (tail)
		memcpy(data + sizeof(*st), tail, len - sizeof(*st));
	else
		memset(data + sizeof(*st), 0, len - sizeof(*st));
	st->kern_send_ns = ktime_get_ns();
	memcpy(data, st, sizeof(*st));
	nlperf_multicast(sk, m, skb, group, gfp);
}

/*
 * An NLMSG_ERROR reply carrying @err and a copy of the request header (no
 * payload, hence NLM_F_CAPPED), like netlink_ack() but built only from
 * what was captured in input(). @err 0 acknowledges. NULL: no memory.
 */
static struct sk_buff *nlperf_error_new(const struct nlperf_msg *m, int err)
{
	struct nlmsgerr *e;
	struct sk_buff *skb;

	skb = nlperf_msg_new(m->portid, m->nlh->nlmsg_seq, NLMSG_ERROR,
			     sizeof(*e), NLM_F_CAPPED, GFP_KERNEL, (void **)&e);
	if (skb) {
		e->error = err;
		e->msg = *m->nlh;
	}
	return skb;
}

/* An error reply or ack to @m, counted as @m's reply. */
static void nlperf_send_error(const struct nlperf_msg *m, int err)
{
	struct sk_buff *skb = nlperf_error_new(m, err);

	if (!skb) {
		nlperf_inc(m, nlperf_ctr(err_nomem));
		return;
	}
	nlperf_unicast(m, skb);
}

/* ---- coalesced replies ---- */

/*
 * Sends the parts of @b built so far, closed by NLMSG_DONE, to the sender
 * of @m (a message of the run), and counts one reply per part on its
 * behalf. A released socket's parts are not sent, as its single replies
 * would not be.
 */
static void nlperf_batch_send(const struct nlperf_msg *m,
			      struct nlperf_batch *b)
{
	struct sk_buff *skb = b->skb;
	unsigned int parts = b->parts;
	struct nlmsghdr *nlh;
	u32 bytes;
	int err;

	if (!skb)
		return;
	b->skb = NULL;
	b->parts = 0;
	/* nlperf_batch_part() left room for it */
	nlh = nlmsg_put(skb, m->portid, b->seq, NLMSG_DONE, sizeof(int),
			NLM_F_MULTI);
	if (WARN_ON_ONCE(!nlh)) {
		nlmsg_free(skb);
		nlperf_add(m, nlperf_ctr(err_reply), parts);
		return;
	}
	memset(nlmsg_data(nlh), 0, sizeof(int));
	bytes = skb->len;
	if (READ_ONCE(b->orphan)) {
		nlmsg_free(skb);
		err = -ECONNREFUSED;
	} else {
		err = nlmsg_unicast(m->sk, skb, m->portid);
	}
	trace_nlperf_reply(bytes, err);
	nlperf_add(m, err < 0 ? nlperf_ctr(err_reply) : nlperf_ctr(replied),
		   parts);
}

/* Drops a reference to @b for @m; the last one sends what is left. */
static void nlperf_batch_put(const struct nlperf_msg *m,
			     struct nlperf_batch *b)
{
	if (!refcount_dec_and_test(&b->ref))
		return;
	nlperf_batch_send(m, b);
	kfree(b);
}

/*
 * Room for @m's reply of @len payload bytes as the next part of its run:
 * the parts before it are sent first if it would not fit with them, and a
 * new skb is sized for it and the rest of the run (at most
 * NLPERF_COALESCE_MAX, NLMSG_DONE included). Returns the part's payload;
 * NULL: no skb, the reply goes alone.
 */
static void *nlperf_batch_part(const struct nlperf_msg *m, size_t len)
{
	size_t need = nlmsg_total_size(len) + NLPERF_DONE_LEN;
	struct nlperf_batch *b = m->batch;
	struct nlmsghdr *nlh;

	/* the walk lets no bigger reply into a run */
	if (WARN_ON_ONCE(need > NLPERF_COALESCE_MAX))
		return NULL;
	if (b->skb && (b->skb->len + need > NLPERF_COALESCE_MAX ||
		       skb_tailroom(b->skb) < need))
		nlperf_batch_send(m, b);
	if (!b->skb) {
		b->skb = alloc_skb(min_t(size_t, need + m->rest,
					 NLPERF_COALESCE_MAX), GFP_KERNEL);
		if (!b->skb)
			return NULL;
	}
	nlh = nlmsg_put(b->skb, m->portid, m->nlh->nlmsg_seq,
			m->nlh->nlmsg_type, len, NLM_F_MULTI);
	b->parts++;
	b->seq = m->nlh->nlmsg_seq;
	return nlmsg_data(nlh);
}

/*
 * Room for @m's echo reply of @len payload bytes: a part of its run's
 * coalesced reply, else a reply of its own in *@skb. NULL: no memory.
 */
static void *nlperf_echo_start(const struct nlperf_msg *m, size_t len,
			       struct sk_buff **skb)
{
	void *data;

	*skb = NULL;
	if (m->batch) {
		data = nlperf_batch_part(m, len);
		if (data)
			return data;
	}
	*skb = nlperf_reply_new(m, m->nlh->nlmsg_type, len, 0, &data);
	return *skb ? data : NULL;
}

/* ---- message handlers ---- */

static bool nlperf_stamp_ok(const struct nlperf_stamp *st)
{
	return st->size == sizeof(*st) && st->version == NLPERF_WIRE_VERSION;
}

static int nlperf_do_echo(const struct nlperf_msg *m)
{
	size_t len = nlmsg_len(m->nlh);
	struct sk_buff *skb;
	void *data;

	data = nlperf_echo_start(m, len, &skb);
	if (!data)
		return -ENOMEM;
	memcpy(data, nlmsg_data(m->nlh), len);
	if (skb)	/* else a part: sent with its run */
		nlperf_unicast(m, skb);
	return NLPERF_REPLIED;
}

static int nlperf_do_timed_echo(const struct nlperf_msg *m)
{
	size_t len = nlmsg_len(m->nlh);
	struct nlperf_stamp st;
	struct sk_buff *skb;
	void *data;

	if (len < sizeof(st))
		return -EINVAL;
	memcpy(&st, nlmsg_data(m->nlh), sizeof(st));
	if (!nlperf_stamp_ok(&st))
		return -EINVAL;

	data = nlperf_echo_start(m, len, &skb);
	if (!data)
		return -ENOMEM;
	memcpy(data, nlmsg_data(m->nlh), len);
	st.kern_recv_ns = m->recv_ns;
	st.proc_start_ns = m->proc_ns;
	st.kern_send_ns = ktime_get_ns();
	memcpy(data, &st, sizeof(st));
	if (skb)	/* else a part: sent with its run */
		nlperf_unicast(m, skb);
	return NLPERF_REPLIED;
}

/* Multicasts the relayed stamp and what follows it (@len bytes) to @group. */
static void nlperf_relay_one(const struct nlperf_msg *m, unsigned int group,
			     const u8 *payload, size_t len)
{
	struct nlperf_stamp st;

	nlperf_inc(m, nlperf_gctr(group, relay_sent));
	memcpy(&st, payload, sizeof(st));
	st.group = group;
	st.kern_recv_ns = m->recv_ns;
	st.proc_start_ns = m->proc_ns;
	nlperf_mcast_stamped(m->sk, m, &st, payload + sizeof(st), len,
			     m->nlh->nlmsg_seq, group, GFP_KERNEL);
}

static int nlperf_do_relay(const struct nlperf_msg *m)
{
	size_t len = nlmsg_len(m->nlh);
	struct nlperf_relay_req req;
	struct nlperf_stamp st;
	const u8 *payload;
	unsigned int g;

	if (len < sizeof(req) + sizeof(st))
		return -EINVAL;
	payload = nlmsg_data(m->nlh);
	memcpy(&req, payload, sizeof(req));
	memcpy(&st, payload + sizeof(req), sizeof(st));
	if (!req.groups || req.reserved || !nlperf_stamp_ok(&st))
		return -EINVAL;

	for (g = 1; g <= NLPERF_MAX_GROUPS; g++)
		if (req.groups & BIT(g - 1))
			nlperf_relay_one(m, g, payload + sizeof(req),
					 len - sizeof(req));
	return NLPERF_DONE;
}

/* Copies @n counters into the @n 64-bit fields of a stats struct at @dst. */
static void nlperf_read_counters(void *dst, const atomic64_t *c, size_t n)
{
	u64 *out = dst;
	size_t i;

	for (i = 0; i < n; i++)
		out[i] = atomic64_read(&c[i]);
}

static void nlperf_fill_stats(struct nlperf_stats *s)
{
	unsigned int g;

	memset(s, 0, sizeof(*s));
	s->version = NLPERF_WIRE_VERSION;
	s->size = sizeof(*s);
	s->mode = nlperf_mode;
	s->proto = proto;
	if (nlperf_worker)
		s->kthread_pid = task_pid_nr(nlperf_worker);
	s->gen_pid = READ_ONCE(nlperf_gen_pid);
	s->queue_len = queue_len;
	spin_lock_bh(&nlperf_q.lock);
	s->queue_depth = nlperf_q.depth;
	s->queue_hwm = nlperf_q.hwm;
	spin_unlock_bh(&nlperf_q.lock);

	nlperf_read_counters(&s->counters, nlperf_cnt, NLPERF_NR_CTRS);
	if (nlperf_mode == NLPERF_MODE_WORKQUEUE)
		strscpy(s->wq_name, NLPERF_WQ_NAME, sizeof(s->wq_name));

	for (g = 0; g < NLPERF_MAX_GROUPS; g++)
		nlperf_read_counters(&s->groups[g], nlperf_gcnt[g],
				     NLPERF_NR_GCTRS);
}

static int nlperf_do_stats_get(const struct nlperf_msg *m)
{
	struct nlperf_stats *s;
	struct sk_buff *skb;

	skb = nlperf_reply_new(m, NLPERF_MSG_STATS_GET, sizeof(*s), 0,
			       (void **)&s);
	if (!skb)
		return -ENOMEM;
	nlperf_fill_stats(s);
	nlperf_unicast(m, skb);
	return NLPERF_REPLIED;
}

/* ---- generator ---- */

/* Emits one generator message to @group; @flags go into the stamp. */
static void nlperf_gen_emit(struct nlperf_gen *gen, unsigned int group,
			    u16 flags)
{
	gfp_t gfp = gen->req.alloc == NLPERF_ALLOC_ATOMIC ? GFP_ATOMIC :
							      GFP_KERNEL;
	size_t len = gen->req.size;
	struct nlperf_stamp st = {
		.version = NLPERF_WIRE_VERSION,
		.size = sizeof(st),
		.flags = flags,
		.group = group,
		.seq = gen->seq[group - 1]++,
	};

	atomic64_inc(nlperf_gctr(group, gen_sent));
	nlperf_mcast_stamped(gen->sk, NULL, &st, NULL, len, (u32)st.seq, group,
			     gfp);
}

static void nlperf_gen_round(struct nlperf_gen *gen, u16 flags)
{
	unsigned int g;

	for (g = 1; g <= NLPERF_MAX_GROUPS; g++)
		if (gen->req.groups & BIT(g - 1))
			nlperf_gen_emit(gen, g, flags);
}

/* Sleeps until @when (CLOCK_MONOTONIC ns) or until told to stop. */
static void nlperf_gen_sleep_until(u64 when, u64 slack)
{
	ktime_t expires = ns_to_ktime(when);

	set_current_state(TASK_INTERRUPTIBLE);
	if (kthread_should_stop()) {
		__set_current_state(TASK_RUNNING);
		return;
	}
	schedule_hrtimeout_range(&expires, slack, HRTIMER_MODE_ABS);
	__set_current_state(TASK_RUNNING);
}

static void nlperf_gen_stream(struct nlperf_gen *gen)
{
	const struct nlperf_gen_req *req = &gen->req;
	u64 interval = req->rate ? div_u64(NSEC_PER_SEC, req->rate) : 0;
	u64 slack = min_t(u64, interval / 10, 50 * NSEC_PER_USEC);
	u64 start = ktime_get_ns();
	u64 round;

	for (round = 0; !req->count || round < req->count; round++) {
		if (kthread_should_stop())
			break;
		if (interval)
			nlperf_gen_sleep_until(start + round * interval, slack);
		/* the sleep does not schedule when behind schedule */
		cond_resched();
		if (kthread_should_stop())
			break;
		if (req->duration_ns && ktime_get_ns() - start >= req->duration_ns)
			break;
		nlperf_gen_round(gen, 0);
	}
}

static int nlperf_gen_thread(void *data)
{
	struct nlperf_gen *gen = data;

	nlperf_gen_stream(gen);
	nlperf_gen_round(gen, NLPERF_STAMP_F_END);
	WRITE_ONCE(nlperf_gen_pid, 0);
	WRITE_ONCE(gen->done, true);

	/* Stay until reaped so kthread_stop() never sees a dead task. */
	set_current_state(TASK_INTERRUPTIBLE);
	while (!kthread_should_stop()) {
		schedule();
		set_current_state(TASK_INTERRUPTIBLE);
	}
	__set_current_state(TASK_RUNNING);
	return 0;
}

/* Stops and frees the current generator. Caller holds nlperf_gen_lock. */
static void nlperf_gen_reap(void)
{
	struct nlperf_gen *gen = nlperf_gen_cur;

	if (!gen)
		return;
	kthread_stop(gen->task);
	WRITE_ONCE(nlperf_gen_pid, 0);
	WRITE_ONCE(nlperf_gen_cur, NULL);
	kfree(gen);
}

static int nlperf_gen_check(const struct nlperf_gen_req *req)
{
	if (!req->groups)
		return -EINVAL;
	if (req->size < sizeof(struct nlperf_stamp) ||
	    req->size > NLPERF_GEN_SIZE_MAX)
		return -EINVAL;
	if (!req->count && !req->duration_ns)
		return -EINVAL;
	if (req->alloc != NLPERF_ALLOC_KERNEL &&
	    req->alloc != NLPERF_ALLOC_ATOMIC)
		return -EINVAL;
	return 0;
}

/* Creates and starts a generator. Caller holds nlperf_gen_lock. */
static int nlperf_gen_spawn(struct sock *sk, const struct nlperf_gen_req *req)
{
	struct task_struct *task;
	struct nlperf_gen *gen;

	gen = kzalloc(sizeof(*gen), GFP_KERNEL);
	if (!gen)
		return -ENOMEM;
	gen->req = *req;
	gen->sk = sk;
	task = kthread_create(nlperf_gen_thread, gen, "nlperf_gen");
	if (IS_ERR(task)) {
		kfree(gen);
		return PTR_ERR(task);
	}
	gen->task = task;
	WRITE_ONCE(nlperf_gen_cur, gen);
	WRITE_ONCE(nlperf_gen_pid, task_pid_nr(task));
	atomic64_inc(nlperf_ctr(gen_runs));
	wake_up_process(task);
	return 0;
}

static int nlperf_do_gen_start(const struct nlperf_msg *m)
{
	struct nlperf_gen_req req;
	int err;

	if (nlmsg_len(m->nlh) < sizeof(req))
		return -EINVAL;
	memcpy(&req, nlmsg_data(m->nlh), sizeof(req));
	err = nlperf_gen_check(&req);
	if (err)
		return err;

	mutex_lock(&nlperf_gen_lock);
	if (READ_ONCE(nlperf_stopping)) {
		err = -ESHUTDOWN;
	} else if (nlperf_gen_cur && !READ_ONCE(nlperf_gen_cur->done)) {
		err = -EBUSY;
	} else {
		nlperf_gen_reap();
		err = nlperf_gen_spawn(m->sk, &req);
	}
	mutex_unlock(&nlperf_gen_lock);
	return err ? err : NLPERF_ACK;
}

static void nlperf_gen_stop(void)
{
	mutex_lock(&nlperf_gen_lock);
	nlperf_gen_reap();
	mutex_unlock(&nlperf_gen_lock);
}

static int nlperf_do_gen_stop(const struct nlperf_msg *m)
{
	nlperf_gen_stop();
	return NLPERF_ACK;
}

/* ---- dumps ---- */

/*
 * A dump's state between its passes, in cb->ctx (there on 6.1 and 6.12).
 * The generation plays the part of rtnetlink's genid: cb->seq is set to
 * it at the start of every pass, and nl_dump_check_consistent() flags the
 * first message written after it changed.
 */
struct nlperf_dump_ctx {
	u32 objects;
	u32 size;
	u32 interrupt_after;
	u32 next;		/* next object to write */
	u32 generation;
};

static_assert(sizeof(struct nlperf_dump_ctx) <=
	      sizeof_field(struct netlink_callback, ctx));

static int nlperf_dump_check(const struct nlperf_dump_req *req)
{
	if (req->objects > NLPERF_DUMP_OBJECTS_MAX || req->reserved)
		return -EINVAL;
	if (req->size < sizeof(struct nlperf_dump_obj) ||
	    req->size > NLPERF_DUMP_SIZE_MAX)
		return -EINVAL;
	if (req->interrupt_after > req->objects)
		return -EINVAL;
	return 0;
}

/* The request was checked in input(); cb->nlh points into its held skb. */
static int nlperf_dump_start(struct netlink_callback *cb)
{
	struct nlperf_dump_ctx *c = (struct nlperf_dump_ctx *)cb->ctx;
	struct nlperf_dump_req req;

	memcpy(&req, nlmsg_data(cb->nlh), sizeof(req));
	c->objects = req.objects;
	c->size = req.size;
	c->interrupt_after = req.interrupt_after;
	c->next = 0;
	c->generation = 1;	/* nonzero: prev_seq 0 means "no pass yet" */
	return 0;
}

/*
 * One pass: as many object messages as fit in @skb. Returns skb->len
 * while objects remain, 0 when all are written (netlink_dump() then adds
 * NLMSG_DONE). The pass that writes object interrupt_after - 1 ends there
 * and changes the generation, so the change is seen by the next pass.
 */
static int nlperf_dump_fill(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct nlperf_dump_ctx *c = (struct nlperf_dump_ctx *)cb->ctx;
	u32 portid = NETLINK_CB(cb->skb).portid;
	struct nlperf_dump_obj *obj;
	struct nlmsghdr *nlh;

	cb->seq = c->generation;
	while (c->next < c->objects) {
		nlh = nlmsg_put(skb, portid, cb->nlh->nlmsg_seq,
				NLPERF_MSG_DUMP_GET, c->size, NLM_F_MULTI);
		if (!nlh)
			return skb->len;	/* full: the next pass goes on */
		nl_dump_check_consistent(cb, nlh);
		obj = nlmsg_data(nlh);
		obj->index = c->next;
		obj->generation = c->generation;
		memset(obj + 1, 0, c->size - sizeof(*obj));
		if (++c->next == c->interrupt_after) {
			c->generation++;
			return skb->len;
		}
	}
	return 0;
}

/*
 * Starts a dump for @m from input(), whatever the processing model: the
 * dump needs the request skb and the requester's socket, and its later
 * passes run in the requester's recvmsg(). Counted as received,
 * processed and, once started, replied; a refused request is answered
 * with its error like any other.
 */
static void nlperf_dump(struct nlperf_msg *m, struct sk_buff *skb)
{
	struct netlink_dump_control control = {
		.start = nlperf_dump_start,
		.dump = nlperf_dump_fill,
		.module = THIS_MODULE,	/* pinned while the dump runs */
	};
	struct nlperf_dump_req req;
	int err = -EINVAL;

	m->proc_ns = ktime_get_ns();
	nlperf_inc(m, nlperf_ctr(processed));
	if (nlmsg_len(m->nlh) >= sizeof(req)) {
		memcpy(&req, nlmsg_data(m->nlh), sizeof(req));
		err = nlperf_dump_check(&req);
	}
	if (!err)
		err = netlink_dump_start(m->sk, skb, m->nlh, &control);
	if (err == -EINTR) {	/* started: the dump is the reply */
		nlperf_inc(m, nlperf_ctr(replied));
		return;
	}
	nlperf_count_error(m, err);
	nlperf_send_error(m, err);
}

/* ---- processing ---- */

static void nlperf_simulate_work(void)
{
	if (work_ns) {
		u64 end = ktime_get_ns() + work_ns;

		while (ktime_get_ns() < end)
			cpu_relax();
	}
	if (work_sleep_us)
		usleep_range(work_sleep_us, work_sleep_us + work_sleep_us / 16);
}

static int nlperf_dispatch(const struct nlperf_msg *m)
{
	switch (m->nlh->nlmsg_type) {
	case NLPERF_MSG_ECHO:
		return nlperf_do_echo(m);
	case NLPERF_MSG_TIMED_ECHO:
		return nlperf_do_timed_echo(m);
	case NLPERF_MSG_SINK:
		return NLPERF_DONE;
	case NLPERF_MSG_RELAY:
		return nlperf_do_relay(m);
	case NLPERF_MSG_GEN_START:
		return nlperf_do_gen_start(m);
	case NLPERF_MSG_GEN_STOP:
		return nlperf_do_gen_stop(m);
	case NLPERF_MSG_STATS_GET:
		return nlperf_do_stats_get(m);
	case NLPERF_MSG_STATS_RESET:
		nlperf_reset_counters();
		return NLPERF_ACK;
	default:
		return -EOPNOTSUPP;
	}
}

/*
 * Control messages are the instrument, not the workload: they are served
 * inside input() in every mode, so a stats read neither queues behind nor
 * is refused by a full queue of simulated work, and carries no such work.
 * They touch only the control_* counters.
 */
static bool nlperf_is_control(u16 type)
{
	return type >= NLPERF_MSG_GEN_START && type <= NLPERF_MSG_STATS_RESET;
}

/*
 * Runs the handler of @m and answers with an error or ack as it says;
 * returns the handler's result.
 */
static int nlperf_serve(struct nlperf_msg *m)
{
	int ret = nlperf_dispatch(m);

	if (ret < 0) {
		if (m->batch)	/* after the run's replies before it */
			nlperf_batch_send(m, m->batch);
		nlperf_count_error(m, ret);
		nlperf_send_error(m, ret);
	} else if (ret == NLPERF_ACK || (m->nlh->nlmsg_flags & NLM_F_ACK)) {
		nlperf_send_error(m, 0);
	}
	return ret;
}

/* Serves a control message, inside input(). */
static void nlperf_control(struct nlperf_msg *m)
{
	atomic64_inc(nlperf_ctr(control_received));
	m->proc_ns = ktime_get_ns();
	nlperf_serve(m);
}

/* Processes one workload message in the context of the processing model. */
static noinline void nlperf_process(struct nlperf_msg *m)
{
	u16 type = m->nlh->nlmsg_type;
	int ret;

	trace_nlperf_process_start(type);
	m->proc_ns = ktime_get_ns();
	nlperf_inc(m, nlperf_ctr(processed));
	nlperf_simulate_work();
	ret = nlperf_serve(m);
	trace_nlperf_process_end(type, ret);
}

/* ---- deferred queue ---- */

/* Takes the oldest entry off the list; it is held until nlperf_msg_free(). */
static struct nlperf_msg *nlperf_dequeue(void)
{
	struct nlperf_msg *m;

	spin_lock_bh(&nlperf_q.lock);
	m = list_first_entry_or_null(&nlperf_q.list, struct nlperf_msg, node);
	if (m)
		list_del(&m->node);
	spin_unlock_bh(&nlperf_q.lock);
	return m;
}

static bool nlperf_queue_pending(void)
{
	bool pending;

	spin_lock_bh(&nlperf_q.lock);
	pending = !list_empty(&nlperf_q.list);
	spin_unlock_bh(&nlperf_q.lock);
	return pending;
}

/* Frees what an entry holds (not the entry): its skb reference or copy. */
static void nlperf_release(struct nlperf_msg *m, bool processed)
{
	if (m->skb) {
		if (processed)
			consume_skb(m->skb);
		else
			kfree_skb(m->skb);
		atomic64_dec(nlperf_ctr(skbs_held));
	}
	kvfree(m->copy);
}

/*
 * Drops a held entry: its run's coalesced reply goes out if it was the last
 * of the run, so a queue_depth of 0 means every reply sent; then uncharges
 * it from the queue and frees it.
 */
static void nlperf_msg_free(struct nlperf_msg *m, bool processed)
{
	if (m->batch)
		nlperf_batch_put(m, m->batch);
	spin_lock_bh(&nlperf_q.lock);
	nlperf_q.depth--;
	nlperf_q.bytes -= m->charge;
	spin_unlock_bh(&nlperf_q.lock);
	nlperf_release(m, processed);
	kfree(m);
}

/* Drops every queued message; returns how many there were. */
static unsigned int nlperf_purge(void)
{
	unsigned int purged = 0;
	struct nlperf_msg *m;

	while ((m = nlperf_dequeue())) {
		nlperf_msg_free(m, false);
		purged++;
	}
	return purged;
}

/*
 * Marks the queued messages of port @portid, whose socket is being
 * released, as orphans: they are still processed (and counted), but their
 * replies must not reach a new socket that reuses the port id. One being
 * processed right now is past reach.
 */
static void nlperf_orphan_port(u32 portid)
{
	struct nlperf_msg *m;

	spin_lock_bh(&nlperf_q.lock);
	list_for_each_entry(m, &nlperf_q.list, node) {
		if (m->portid != portid)
			continue;
		m->orphan = true;
		if (m->batch)
			WRITE_ONCE(m->batch->orphan, true);
	}
	spin_unlock_bh(&nlperf_q.lock);
}

static int nlperf_netlink_event(struct notifier_block *nb,
				unsigned long event, void *ptr)
{
	const struct netlink_notify *n = ptr;

	if (event == NETLINK_URELEASE && n->protocol == proto &&
	    net_eq(n->net, &init_net) && n->portid)
		nlperf_orphan_port(n->portid);
	return NOTIFY_DONE;
}

static struct notifier_block nlperf_netlink_notifier = {
	.notifier_call = nlperf_netlink_event,
};

static void nlperf_kick(void)
{
	if (nlperf_mode == NLPERF_MODE_KTHREAD)
		wake_up(&nlperf_worker_wait);
	else
		queue_work(nlperf_wq, &nlperf_work);
}

/*
 * Makes @m hold its message past input(): a reference on @skb when the
 * message is most of the datagram, else a copy of the message alone, so a
 * datagram of many small messages is not held once per message. Sets the
 * charge against queue_bytes. -ENOMEM: nothing held.
 */
static int nlperf_hold(struct nlperf_msg *m, struct sk_buff *skb)
{
	u32 len = m->nlh->nlmsg_len;

	if (skb->truesize <= 2 * (size_t)len + NLPERF_HOLD_SLACK) {
		m->skb = skb_get(skb);
		atomic64_inc(nlperf_ctr(skbs_held));
		m->charge = sizeof(*m) + skb->truesize;
		return 0;
	}
	m->copy = kvmalloc(len, GFP_KERNEL);
	if (!m->copy)
		return -ENOMEM;
	memcpy(m->copy, m->nlh, len);
	m->nlh = m->copy;
	m->charge = sizeof(*m) + len;
	return 0;
}

/*
 * Queues a copy of @tmpl holding its message; replies on failure. The
 * queue takes at most queue_len entries and queue_bytes of charges, and
 * one entry of any size when empty.
 */
static void nlperf_enqueue(const struct nlperf_msg *tmpl, struct sk_buff *skb)
{
	struct nlperf_msg *m;
	unsigned int depth;
	bool full;

	m = kmalloc(sizeof(*m), GFP_KERNEL);
	if (!m)
		goto nomem;
	*m = *tmpl;
	if (nlperf_hold(m, skb)) {
		kfree(m);
		goto nomem;
	}

	spin_lock_bh(&nlperf_q.lock);
	full = nlperf_q.depth >= queue_len ||
	       (nlperf_q.depth && nlperf_q.bytes + m->charge > queue_bytes);
	if (!full) {
		if (m->batch)	/* before the worker can see it */
			refcount_inc(&m->batch->ref);
		list_add_tail(&m->node, &nlperf_q.list);
		nlperf_q.bytes += m->charge;
		if (++nlperf_q.depth > nlperf_q.hwm)
			nlperf_q.hwm = nlperf_q.depth;
	}
	depth = nlperf_q.depth;
	spin_unlock_bh(&nlperf_q.lock);

	if (full) {
		trace_nlperf_enqueue(depth, -ENOBUFS);
		nlperf_release(m, false);
		kfree(m);
		nlperf_inc(tmpl, nlperf_ctr(queue_overflows));
		nlperf_send_error(tmpl, -ENOBUFS);
		return;
	}
	trace_nlperf_enqueue(depth, 0);
	nlperf_kick();
	return;

nomem:
	trace_nlperf_enqueue(READ_ONCE(nlperf_q.depth), -ENOMEM);
	nlperf_inc(tmpl, nlperf_ctr(err_nomem));
	nlperf_send_error(tmpl, -ENOMEM);
}

/* Processes queued messages until the queue is empty or @stop says so. */
static void nlperf_drain(bool (*stop)(void))
{
	struct nlperf_msg *m;

	while (!stop() && (m = nlperf_dequeue())) {
		nlperf_process(m);
		nlperf_msg_free(m, true);
		cond_resched();
	}
}

static bool nlperf_worker_stop(void)
{
	return kthread_should_stop();
}

static int nlperf_worker_fn(void *unused)
{
	while (!kthread_should_stop()) {
		wait_event_interruptible(nlperf_worker_wait,
					 nlperf_queue_pending() ||
					 kthread_should_stop());
		nlperf_drain(nlperf_worker_stop);
	}
	return 0;
}

static bool nlperf_work_stop(void)
{
	return READ_ONCE(nlperf_stopping);
}

static void nlperf_work_fn(struct work_struct *work)
{
	nlperf_drain(nlperf_work_stop);
}

/* ---- input ---- */

/*
 * Refuses a message from a sender without CAP_NET_ADMIN: answered -EPERM
 * at once, counted in err_perm (control_errors for a control message) and
 * nowhere else. It is not received: it takes no queue slot, no simulated
 * work and no workload counter, so a local user (any may send to port 0)
 * can neither crowd out the lab's senders nor skew what they measure.
 */
static void nlperf_refuse(const struct nlperf_msg *m)
{
	struct sk_buff *skb = nlperf_error_new(m, -EPERM);
	u32 bytes;
	int err;

	atomic64_inc(m->control ? nlperf_ctr(control_errors) :
				  nlperf_ctr(err_perm));
	if (!skb)
		return;
	bytes = skb->len;
	err = nlmsg_unicast(m->sk, skb, m->portid);
	trace_nlperf_reply(bytes, err);
}

/* Whether @nlh may be part of a run (nlperf_uapi.h, NLPERF_F_COALESCE). */
static bool nlperf_coalescable(const struct nlmsghdr *nlh)
{
	return (nlh->nlmsg_type == NLPERF_MSG_ECHO ||
		nlh->nlmsg_type == NLPERF_MSG_TIMED_ECHO) &&
	       (nlh->nlmsg_flags & (NLPERF_F_COALESCE | NLM_F_ACK)) ==
			NLPERF_F_COALESCE &&
	       NLMSG_ALIGN(nlh->nlmsg_len) + NLPERF_DONE_LEN <=
			NLPERF_COALESCE_MAX;
}

/*
 * Bytes of the replies to the run that starts at @pos (@rem bytes left in
 * the datagram), found as nlperf_walk() will walk it, to size its skb.
 */
static unsigned int nlperf_run_bytes(const u8 *pos, unsigned int rem)
{
	unsigned int bytes = 0;

	while (rem >= NLMSG_HDRLEN) {
		const struct nlmsghdr *nlh = (const struct nlmsghdr *)pos;
		unsigned int adv;

		if (nlh->nlmsg_len < NLMSG_HDRLEN || nlh->nlmsg_len > rem ||
		    !nlperf_coalescable(nlh))
			break;
		adv = NLMSG_ALIGN(nlh->nlmsg_len);
		bytes += adv;	/* an echo reply is as long as its request */
		if (adv >= rem)
			break;
		pos += adv;
		rem -= adv;
	}
	return bytes;
}

/*
 * A new run's coalesced reply: @local in callback mode, else allocated,
 * with the walk's reference. NULL: no memory, the run's replies go alone.
 */
static struct nlperf_batch *nlperf_run_begin(struct nlperf_batch *local)
{
	struct nlperf_batch *b = local;

	if (nlperf_mode == NLPERF_MODE_CALLBACK)
		memset(b, 0, sizeof(*b));
	else
		b = kzalloc(sizeof(*b), GFP_KERNEL);
	if (b)
		refcount_set(&b->ref, 1);
	return b;
}

/* Ends the walk's part in run @b: sends its parts, or drops its reference. */
static void nlperf_run_end(const struct nlperf_msg *m, struct nlperf_batch *b)
{
	if (nlperf_mode == NLPERF_MODE_CALLBACK)
		nlperf_batch_send(m, b);
	else
		nlperf_batch_put(m, b);
}

/* Walks one datagram that arrived at @recv_ns. */
static void nlperf_walk(struct sk_buff *skb, u64 recv_ns)
{
	struct nlperf_msg m = {
		.sk = skb->sk,
		.recv_ns = recv_ns,
		.portid = NETLINK_CB(skb).portid,
		.epoch = atomic_read(&nlperf_epoch),
	};
	struct nlperf_batch local, *run = NULL;
	const u8 *pos = skb->data;
	unsigned int rem = skb->len;
	unsigned int run_left = 0;	/* bytes of the run's parts to come */
	bool admin, capable, member;

	/* decided here, before anything is queued or worked on */
	admin = netlink_capable(skb, CAP_NET_ADMIN);

	while (rem) {
		const struct nlmsghdr *nlh = (const struct nlmsghdr *)pos;
		unsigned int adv;

		if (rem < NLMSG_HDRLEN || nlh->nlmsg_len < NLMSG_HDRLEN ||
		    nlh->nlmsg_len > rem) {
			atomic64_inc(nlperf_ctr(err_truncated));
			break;
		}
		m.nlh = nlh;
		m.control = nlperf_is_control(nlh->nlmsg_type);
		/* what changes the lab's state stays behind CAP_NET_ADMIN */
		capable = admin || (allow_unpriv &&
				    (!m.control ||
				     nlh->nlmsg_type == NLPERF_MSG_STATS_GET));
		trace_nlperf_input(nlh->nlmsg_type, nlh->nlmsg_len, m.portid,
				   capable);
		/* a run's replies go before any other reply that follows it */
		member = capable && nlperf_coalescable(nlh);
		if (!member)
			run_left = 0;
		if (run && !run_left) {
			nlperf_run_end(&m, run);
			run = NULL;
		}
		if (member && !run_left) {
			run_left = nlperf_run_bytes(pos, rem);
			run = nlperf_run_begin(&local);
		}
		if (member)
			run_left -= min(run_left, NLMSG_ALIGN(nlh->nlmsg_len));
		m.batch = member ? run : NULL;
		m.rest = run_left;
		if (nlh->nlmsg_type < NLMSG_MIN_TYPE) {
			/* netlink's own types (noop, error, done): skipped */
		} else if (!capable) {
			nlperf_refuse(&m);
		} else if (m.control) {
			nlperf_control(&m);
		} else if (nlh->nlmsg_type == NLPERF_MSG_DUMP_GET) {
			nlperf_inc(&m, nlperf_ctr(received));
			nlperf_dump(&m, skb);
		} else {
			nlperf_inc(&m, nlperf_ctr(received));
			if (nlperf_mode == NLPERF_MODE_CALLBACK)
				nlperf_process(&m);
			else
				nlperf_enqueue(&m, skb);
		}

		adv = NLMSG_ALIGN(nlh->nlmsg_len);
		if (adv >= rem)
			break;
		pos += adv;
		rem -= adv;
		/*
		 * One datagram may carry thousands of messages, each with
		 * simulated work: let the CPU go between them (the sender's
		 * syscall context may sleep).
		 */
		cond_resched();
	}
	if (run)
		nlperf_run_end(&m, run);
}

/* Serves one datagram; runs in the sender's sendmsg() context. */
static void nlperf_input(struct sk_buff *skb)
{
	u64 recv_ns = ktime_get_ns();

	trace_nlperf_datagram_start(skb->len, NETLINK_CB(skb).portid);
	if (!READ_ONCE(nlperf_stopping))
		nlperf_walk(skb, recv_ns);
	trace_nlperf_datagram_end(skb->len, NETLINK_CB(skb).portid);
}

/* ---- load and unload ---- */

static int nlperf_parse_params(void)
{
	int m;

	if (proto < NLPERF_PROTO_MIN || proto > NLPERF_PROTO_MAX) {
		pr_err("invalid proto=%d (allowed %d..%d)\n", proto,
		       NLPERF_PROTO_MIN, NLPERF_PROTO_MAX);
		return -EINVAL;
	}
	m = mode ? sysfs_match_string(nlperf_mode_names, mode) : -EINVAL;
	if (m < 0) {
		pr_err("invalid mode=%s (callback, kthread or workqueue)\n",
		       mode ? mode : "");
		return -EINVAL;
	}
	nlperf_mode = m;
	if (queue_len < NLPERF_QUEUE_LEN_MIN ||
	    queue_len > NLPERF_QUEUE_LEN_MAX) {
		pr_err("invalid queue_len=%u (allowed %u..%u)\n", queue_len,
		       NLPERF_QUEUE_LEN_MIN, NLPERF_QUEUE_LEN_MAX);
		return -EINVAL;
	}
	if (queue_bytes < NLPERF_QUEUE_BYTES_MIN ||
	    queue_bytes > NLPERF_QUEUE_BYTES_MAX) {
		pr_err("invalid queue_bytes=%u (allowed %u..%u)\n", queue_bytes,
		       NLPERF_QUEUE_BYTES_MIN, NLPERF_QUEUE_BYTES_MAX);
		return -EINVAL;
	}
	if (work_ns > NLPERF_WORK_NS_MAX) {
		pr_err("invalid work_ns=%lu (max %lu)\n", work_ns,
		       NLPERF_WORK_NS_MAX);
		return -EINVAL;
	}
	if (work_sleep_us > NLPERF_WORK_SLEEP_US_MAX) {
		pr_err("invalid work_sleep_us=%u (max %lu)\n", work_sleep_us,
		       NLPERF_WORK_SLEEP_US_MAX);
		return -EINVAL;
	}
	return 0;
}

static int nlperf_start_model(void)
{
	switch (nlperf_mode) {
	case NLPERF_MODE_KTHREAD:
		nlperf_worker = kthread_run(nlperf_worker_fn, NULL,
					    "nlperf_worker");
		if (IS_ERR(nlperf_worker)) {
			int err = PTR_ERR(nlperf_worker);

			nlperf_worker = NULL;
			return err;
		}
		return 0;
	case NLPERF_MODE_WORKQUEUE:
		nlperf_wq = alloc_ordered_workqueue(NLPERF_WQ_NAME, 0);
		return nlperf_wq ? 0 : -ENOMEM;
	default:
		return 0;
	}
}

static void nlperf_stop_model(void)
{
	if (nlperf_worker) {
		kthread_stop(nlperf_worker);
		nlperf_worker = NULL;
	}
	if (nlperf_wq) {
		flush_workqueue(nlperf_wq);
		destroy_workqueue(nlperf_wq);
		nlperf_wq = NULL;
	}
}

static int __init nlperf_init(void)
{
	struct netlink_kernel_cfg cfg = {
		.groups = NLPERF_MAX_GROUPS,
		.input = nlperf_input,
	};
	int err;

	/* a datagram of coalesced parts is one page's skb head */
	BUILD_BUG_ON(NLPERF_COALESCE_MAX > NLMSG_GOODSIZE);
	err = nlperf_parse_params();
	if (err)
		return err;
	/* never NL_CFG_F_NONROOT_SEND: no user may send to the lab's groups */
	if (allow_unpriv)
		cfg.flags = NL_CFG_F_NONROOT_RECV;

	spin_lock_init(&nlperf_q.lock);
	INIT_LIST_HEAD(&nlperf_q.list);
	INIT_WORK(&nlperf_work, nlperf_work_fn);

	err = nlperf_start_model();
	if (err)
		return err;
	/* before the protocol is live: no socket released unseen */
	err = netlink_register_notifier(&nlperf_netlink_notifier);
	if (err) {
		nlperf_stop_model();
		return err;
	}

	nlperf_sk = netlink_kernel_create(&init_net, proto, &cfg);
	if (!nlperf_sk) {
		pr_err("invalid proto=%d: in use or cannot be registered\n",
		       proto);
		netlink_unregister_notifier(&nlperf_netlink_notifier);
		nlperf_stop_model();
		return -EINVAL;
	}

	pr_info("loaded: mode=%s proto=%d queue_len=%u queue_bytes=%u work_ns=%lu work_sleep_us=%u allow_unpriv=%d\n",
		nlperf_mode_names[nlperf_mode], proto, queue_len, queue_bytes,
		work_ns, work_sleep_us, allow_unpriv);
	return 0;
}

static void __exit nlperf_exit(void)
{
	unsigned int purged;

	WRITE_ONCE(nlperf_stopping, true);
	nlperf_gen_stop();
	nlperf_stop_model();
	netlink_unregister_notifier(&nlperf_netlink_notifier);
	purged = nlperf_purge();
	if (atomic64_read(nlperf_ctr(skbs_held)))
		pr_err("skbs_held=%lld after purge\n",
		       (long long)atomic64_read(nlperf_ctr(skbs_held)));
	netlink_kernel_release(nlperf_sk);
	pr_info("unloaded: proto=%d, %u queued messages dropped\n", proto,
		purged);
}

module_init(nlperf_init);
module_exit(nlperf_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nlperf: netlink performance lab module");
MODULE_AUTHOR("nlperf authors");
