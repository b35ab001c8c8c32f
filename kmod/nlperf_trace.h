/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nlperf tracepoints: where a message is in the module, as events of the
 * system "nlperf" (/sys/kernel/tracing/events/nlperf/). The probe suite
 * (bpf/netlink.bpf.c) attaches to them as raw tracepoints, whose arguments
 * are the TP_PROTO arguments in their order, so that order is an interface.
 * Each pair of start and end events fires on one thread, with nothing of
 * the pair's kind nested between them.
 *
 * Built from nlperf.c with CREATE_TRACE_POINTS; Kbuild adds -I$(src) so
 * that trace/define_trace.h finds this file through TRACE_INCLUDE_PATH.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM nlperf

#if !defined(_NLPERF_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _NLPERF_TRACE_H

#include <linux/tracepoint.h>

DECLARE_EVENT_CLASS(nlperf_datagram,
		    TP_PROTO(u32 len, u32 portid),
		    TP_ARGS(len, portid),
		    TP_STRUCT__entry(__field(u32, len)
				     __field(u32, portid)),
		    TP_fast_assign(__entry->len = len;
				   __entry->portid = portid;),
		    TP_printk("len=%u portid=%u", __entry->len, __entry->portid)
);

/* input() starts on a datagram of @len bytes, in the sender's sendmsg(). */
DEFINE_EVENT(nlperf_datagram, nlperf_datagram_start,
	     TP_PROTO(u32 len, u32 portid),
	     TP_ARGS(len, portid)
);

/* input() is done with the datagram: every message served or queued. */
DEFINE_EVENT(nlperf_datagram, nlperf_datagram_end,
	     TP_PROTO(u32 len, u32 portid),
	     TP_ARGS(len, portid)
);

/*
 * A message with an intact header arrives in input(): its type, its
 * length (nlmsg_len), the sender's port id and whether the sender may
 * have it served (CAP_NET_ADMIN, or allow_unpriv for what it allows).
 */
TRACE_EVENT(nlperf_input,
	    TP_PROTO(u16 type, u32 len, u32 portid, bool capable),
	    TP_ARGS(type, len, portid, capable),
	    TP_STRUCT__entry(__field(u16, type)
			     __field(bool, capable)
			     __field(u32, len)
			     __field(u32, portid)),
	    TP_fast_assign(__entry->type = type;
			   __entry->capable = capable;
			   __entry->len = len;
			   __entry->portid = portid;),
	    TP_printk("type=0x%x len=%u portid=%u capable=%d", __entry->type,
		      __entry->len, __entry->portid, __entry->capable)
);

/*
 * A workload message was offered to the deferred queue: @result 0 (queued)
 * or the negative errno it was answered with (-ENOBUFS: full, -ENOMEM);
 * @depth: the entries held (queued or being processed) afterwards.
 */
TRACE_EVENT(nlperf_enqueue,
	    TP_PROTO(u32 depth, int result),
	    TP_ARGS(depth, result),
	    TP_STRUCT__entry(__field(u32, depth)
			     __field(int, result)),
	    TP_fast_assign(__entry->depth = depth;
			   __entry->result = result;),
	    TP_printk("depth=%u result=%d", __entry->depth, __entry->result)
);

/* A workload message's processing starts, in the model's context. */
TRACE_EVENT(nlperf_process_start,
	    TP_PROTO(u16 type),
	    TP_ARGS(type),
	    TP_STRUCT__entry(__field(u16, type)),
	    TP_fast_assign(__entry->type = type;),
	    TP_printk("type=0x%x", __entry->type)
);

/*
 * Its processing ends, replies sent: @result is the handler's, a negative
 * errno (answered as an error) or 0 (no reply of its own), 1 (a data
 * reply) or 2 (acknowledged).
 */
TRACE_EVENT(nlperf_process_end,
	    TP_PROTO(u16 type, int result),
	    TP_ARGS(type, result),
	    TP_STRUCT__entry(__field(u16, type)
			     __field(int, result)),
	    TP_fast_assign(__entry->type = type;
			   __entry->result = result;),
	    TP_printk("type=0x%x result=%d", __entry->type, __entry->result)
);

/*
 * A unicast of @bytes (netlink header included) to a user socket: data
 * reply, error, ack or refusal. @result: 0, or the negative errno of the
 * send (-ECONNREFUSED also for an orphan's reply, never sent).
 */
TRACE_EVENT(nlperf_reply,
	    TP_PROTO(u32 bytes, int result),
	    TP_ARGS(bytes, result),
	    TP_STRUCT__entry(__field(u32, bytes)
			     __field(int, result)),
	    TP_fast_assign(__entry->bytes = bytes;
			   __entry->result = result;),
	    TP_printk("bytes=%u result=%d", __entry->bytes, __entry->result)
);

#endif /* _NLPERF_TRACE_H */

#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE nlperf_trace
#include <trace/define_trace.h>
