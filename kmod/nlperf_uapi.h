/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * nlperf wire format, version 2.
 *
 * The one definition of what crosses the netlink socket between the
 * nlperf module and user space. nlperf/wire.py mirrors it; a test compiles
 * a program that prints every size and offset below and compares them with
 * the Python mirror, so change both together and bump NLPERF_WIRE_VERSION.
 *
 * Every message is a struct nlmsghdr followed by a type-specific payload.
 * All integers are in host byte order; all times are CLOCK_MONOTONIC in
 * nanoseconds (what ktime_get_ns() and Python's time.monotonic_ns() read).
 */
#ifndef _UAPI_NLPERF_H
#define _UAPI_NLPERF_H

#include <linux/types.h>

#define NLPERF_WIRE_VERSION	3
#define NLPERF_PROTO_DEFAULT	31	/* 23..31 are unused by mainline */
#define NLPERF_MAX_GROUPS	32

/* Message types; all >= NLMSG_MIN_TYPE (0x10). */
enum nlperf_msg_type {
	NLPERF_MSG_ECHO		= 0x10,	/* payload returned verbatim */
	NLPERF_MSG_TIMED_ECHO	= 0x11,	/* nlperf_stamp [+ pad], stamped */
	NLPERF_MSG_SINK		= 0x12,	/* consumed, no reply */
	NLPERF_MSG_RELAY	= 0x13,	/* nlperf_relay_req + stamp [+ pad] */
	NLPERF_MSG_GEN_START	= 0x14,	/* nlperf_gen_req */
	NLPERF_MSG_GEN_STOP	= 0x15,	/* no payload */
	NLPERF_MSG_STATS_GET	= 0x16,	/* reply carries nlperf_stats */
	NLPERF_MSG_STATS_RESET	= 0x17,	/* no payload */
	NLPERF_MSG_MCAST_DATA	= 0x18,	/* kernel->user: stamp [+ pad] */
	NLPERF_MSG_MAX		= NLPERF_MSG_MCAST_DATA,
};

/*
 * Coalesced replies (opt-in). NLPERF_F_COALESCE in nlmsg_flags of an echo
 * or timed echo request (bit 8, which netlink leaves to each kind of
 * request, like NLM_F_ROOT for a get) asks for its reply to travel with
 * those of its neighbours. A run is a longest sequence of consecutive
 * messages of one datagram that each are an echo or timed echo with
 * NLPERF_F_COALESCE, without NLM_F_ACK, and whose reply fits a datagram of
 * parts: NLMSG_ALIGN(nlmsg_len) + NLMSG_SPACE(4) <= NLPERF_COALESCE_MAX.
 *
 * The replies to a run come back in request order as parts: each part is
 * the reply it would have been (type, seq, payload, a timed echo's own
 * stamps) with NLM_F_MULTI set, and a datagram of parts always ends with
 * one NLMSG_DONE (NLM_F_MULTI, a 4-byte 0, the seq of the last part), as
 * a dump does, so a receiver that reads NLM_F_MULTI messages until
 * NLMSG_DONE (libnl) stops at the end of each datagram. NLMSG_DONE
 * answers no request. A receiver can rely on: a datagram holds either one
 * reply without NLM_F_MULTI (as without the flag) or one or more parts and
 * then NLMSG_DONE, in at most NLPERF_COALESCE_MAX bytes (a receive buffer
 * that large never truncates one).
 *
 * A run whose parts do not fit one datagram continues in the next one,
 * each with its own NLMSG_DONE. An error found while processing a run's
 * message goes alone, after the parts before it; the run goes on after
 * it. A refusal in input() (queue full, no memory) goes at once, as it
 * always did: in the deferred models it can overtake the parts of messages
 * queued before it. The parts go out when the run's last message has been
 * processed or refused, or when the next part would not fit. A part's
 * kern_send_ns is taken when the part is written: the wait for the rest of
 * its datagram counts in the user receive time, not in the kernel stamps.
 * Each part counts as one reply.
 */
#define NLPERF_F_COALESCE	0x100
#define NLPERF_COALESCE_MAX	3072	/* bytes in one datagram of parts */

/*
 * A dump, served the way rtnetlink serves RTM_GET* with NLM_F_DUMP. Kept
 * apart from the enum above so other new types do not collide with it.
 * The request carries struct nlperf_dump_req; the answer is one message of
 * this type per object (NLM_F_MULTI, struct nlperf_dump_obj + zero
 * padding to size bytes), as many per datagram as fit, then NLMSG_DONE.
 */
#define NLPERF_MSG_DUMP_GET	0x20

#define NLPERF_DUMP_OBJECTS_MAX	1048576U
#define NLPERF_DUMP_SIZE_MAX	2048U	/* one object fits any dump skb */

/* NLPERF_MSG_DUMP_GET request payload. */
struct nlperf_dump_req {
	__u32	objects;	/* objects to dump, 0..NLPERF_DUMP_OBJECTS_MAX */
	__u32	size;		/* payload bytes per object, >= dump_obj */
	__u32	interrupt_after; /* 0: never, else 1..objects (below) */
	__u32	reserved;	/* must be 0 */
};

/*
 * NLPERF_MSG_DUMP_GET object payload. When the generation changes (after
 * interrupt_after objects) the datagram ends there, and the next message
 * (object interrupt_after, or NLMSG_DONE) carries NLM_F_DUMP_INTR.
 */
struct nlperf_dump_obj {
	__u32	index;		/* 0..objects - 1, in order */
	__u32	generation;	/* 1, then 2 after the change */
};

/* nlperf_stamp.flags */
#define NLPERF_STAMP_F_END	0x0001	/* last message of a stream */

/*
 * Timestamps carried by timed echoes, relays and multicast data. User
 * space fills version, size, seq and user_send_ns; the module fills the
 * kernel times at the points named, whatever the processing model.
 */
struct nlperf_stamp {
	__u16	version;	/* NLPERF_WIRE_VERSION */
	__u16	size;		/* sizeof(struct nlperf_stamp) */
	__u16	flags;		/* NLPERF_STAMP_F_* */
	__u16	group;		/* multicast group number 1..32, 0: unicast */
	__u64	seq;		/* sender's sequence (generator: per group) */
	__u64	user_send_ns;	/* user space, just before sendmsg() */
	__u64	kern_recv_ns;	/* module input() callback entry */
	__u64	proc_start_ns;	/* processing starts (after any queueing) */
	__u64	kern_send_ns;	/* just before nlmsg_unicast/multicast */
};

/* NLPERF_MSG_RELAY payload: this header, then the stamp to multicast. */
struct nlperf_relay_req {
	__u32	groups;		/* bitmask: bit (g - 1) selects group g */
	__u32	reserved;	/* must be 0 */
};

/* nlperf_gen_req.alloc: the only allocation modes user space may ask for */
enum nlperf_gen_alloc {
	NLPERF_ALLOC_KERNEL	= 0,
	NLPERF_ALLOC_ATOMIC	= 1,
};

/* NLPERF_MSG_GEN_START payload. The stream ends at count or duration. */
struct nlperf_gen_req {
	__u32	groups;		/* bitmask: bit (g - 1) selects group g */
	__u32	size;		/* payload bytes per message, >= stamp */
	__u64	count;		/* messages per group, 0: no limit */
	__u64	duration_ns;	/* 0: no limit (then count must be set) */
	__u32	rate;		/* messages/s per group, 0: as fast as possible */
	__u32	alloc;		/* enum nlperf_gen_alloc */
};

/* Processing models, nlperf_stats.mode */
enum nlperf_mode {
	NLPERF_MODE_CALLBACK	= 0,
	NLPERF_MODE_KTHREAD	= 1,
	NLPERF_MODE_WORKQUEUE	= 2,
};

/*
 * Counters. The module keeps one 64-bit atomic per field of
 * struct nlperf_group_stats and of struct nlperf_stats_counters, in field
 * order, and copies them into the stats reply as they are: a new counter
 * is one __u64 line in one of these structs (and one line in the matching
 * table of nlperf/wire.py, which a test compares with this header). __u64
 * fields count events since load or NLPERF_MSG_STATS_RESET; skbs_held, the
 * one __s64, is a level that a reset leaves alone.
 *
 * The workload counters count only what was received since the last reset
 * (a message queued before a reset and processed after it counts nowhere).
 * Control messages (NLPERF_MSG_GEN_START..NLPERF_MSG_STATS_RESET) touch
 * only the control_* counters.
 */

/* Per multicast group counters; index g - 1 for group g. */
struct nlperf_group_stats {
	__u64	relay_sent;	/* relay broadcasts issued */
	__u64	gen_sent;	/* generator broadcasts issued */
	__u64	bcast_ok;	/* netlink_broadcast() returned 0 */
	__u64	bcast_esrch;	/* -ESRCH: no listener, or all overran */
	__u64	bcast_enobufs;	/* -ENOBUFS: a BROADCAST_ERROR listener */
	__u64	bcast_other;	/* any other error, allocation included */
};

/* Module-wide counters and levels, inside struct nlperf_stats. */
struct nlperf_stats_counters {
	__u64	received;	/* workload messages accepted by input() */
	__u64	processed;	/* messages the processing function ran on */
	__u64	replied;	/* replies, errors and acks handed to netlink */
	__u64	queue_overflows; /* refused with -ENOBUFS: queue full */
	__u64	err_perm;	/* refused: sender lacks CAP_NET_ADMIN */
	__u64	err_inval;	/* intact header, inconsistent payload */
	__u64	err_notsupp;	/* unknown message type */
	__u64	err_truncated;	/* datagrams cut short by a bad header */
	__u64	err_nomem;	/* reply allocation failed */
	__u64	err_reply;	/* nlmsg_unicast() to the sender failed */
	__s64	skbs_held;	/* skb references the module holds now */
	__u64	gen_runs;	/* generator streams started */
	__u64	control_received; /* control messages accepted by input() */
	__u64	control_replied; /* their replies, errors and acks sent */
	__u64	control_errors;	/* control messages refused, replies lost */
};

/* NLPERF_MSG_STATS_GET reply payload. Counters since load or reset. */
struct nlperf_stats {
	__u16	version;	/* NLPERF_WIRE_VERSION */
	__u16	size;		/* sizeof(struct nlperf_stats) */
	__u32	mode;		/* enum nlperf_mode */
	__u32	proto;		/* netlink protocol number served */
	__u32	kthread_pid;	/* worker kthread (kthread mode), else 0 */
	__u32	gen_pid;	/* generator kthread while it runs, else 0 */
	__u32	queue_len;	/* queue bound (deferred modes) */
	__u32	queue_depth;	/* messages held: queued or in processing */
	__u32	queue_hwm;	/* queue depth high-water mark */
	struct nlperf_stats_counters counters;
	char	wq_name[32];	/* workqueue name (workqueue mode), else "" */
	struct nlperf_group_stats groups[NLPERF_MAX_GROUPS];
};

#endif /* _UAPI_NLPERF_H */
