// SPDX-License-Identifier: GPL-2.0
/*
 * nlperf_echo - plain C echo client for the nlperf module, in the manner
 * of the Linux Journal "Kernel Korner: Why and How to Use Netlink Socket"
 * example: bind (the kernel assigns our port id), sendmsg() one message
 * with flags 0 to port id 0 (the kernel), recvmsg() the answer.
 *
 *   nlperf_echo [-p PROTO] [STRING]      echo STRING, exit 0 if it returns
 *   nlperf_echo [-p PROTO] -n N [-s SIZE] closed-loop benchmark, prints
 *       c_echo n=N size=S total_ns=T per_rtt_ns=X
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <linux/netlink.h>

#include "../nlperf_uapi.h"

#define DEFAULT_STRING	"Hello from nlperf_echo"

struct client {
	int fd;
	struct sockaddr_nl kernel;
	struct nlmsghdr *req;
	struct nlmsghdr *rep;
	size_t rep_cap;
	__u32 seq;
};

static void print_usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [-p PROTO] [STRING]\n"
		"       %s [-p PROTO] -n N [-s SIZE]\n", argv0, argv0);
	exit(2);
}

static __u64 now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void grow_buffers(int fd, size_t size)
{
	int want = (int)(2 * NLMSG_SPACE(size) + 65536);

	if (want < 212992)
		return;
	/* FORCE variants exceed wmem_max/rmem_max as root; else best effort */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof(want)))
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)))
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
}

static int client_open(struct client *c, int proto, size_t size)
{
	struct sockaddr_nl src;

	memset(c, 0, sizeof(*c));
	c->fd = socket(PF_NETLINK, SOCK_RAW, proto);
	if (c->fd < 0) {
		perror("socket(PF_NETLINK)");
		return -1;
	}
	memset(&src, 0, sizeof(src));
	src.nl_family = AF_NETLINK;
	src.nl_pid = 0;		/* let the kernel assign our port id */
	if (bind(c->fd, (struct sockaddr *)&src, sizeof(src))) {
		perror("bind");
		return -1;
	}
	grow_buffers(c->fd, size);

	c->kernel.nl_family = AF_NETLINK;
	c->kernel.nl_pid = 0;	/* the kernel */
	c->kernel.nl_groups = 0;	/* unicast */

	c->req = calloc(1, NLMSG_SPACE(size));
	c->rep_cap = NLMSG_SPACE(size) + 4096;
	c->rep = calloc(1, c->rep_cap);
	if (!c->req || !c->rep) {
		fprintf(stderr, "out of memory\n");
		return -1;
	}
	return 0;
}

/* Sends one echo request whose payload is the first @len bytes of req. */
static int echo_send(struct client *c, size_t len)
{
	struct iovec iov = { c->req, NLMSG_LENGTH(len) };
	struct msghdr msg = {
		.msg_name = &c->kernel,
		.msg_namelen = sizeof(c->kernel),
		.msg_iov = &iov,
		.msg_iovlen = 1,
	};

	c->req->nlmsg_len = NLMSG_LENGTH(len);
	c->req->nlmsg_type = NLPERF_MSG_ECHO;
	c->req->nlmsg_flags = 0;
	c->req->nlmsg_seq = ++c->seq;
	c->req->nlmsg_pid = 0;
	if (sendmsg(c->fd, &msg, 0) < 0) {
		perror("sendmsg");
		return -1;
	}
	return 0;
}

/* Receives the echo of the last request; returns its payload length. */
static long echo_recv(struct client *c)
{
	struct sockaddr_nl from;
	struct iovec iov = { c->rep, c->rep_cap };
	struct msghdr msg = {
		.msg_name = &from,
		.msg_namelen = sizeof(from),
		.msg_iov = &iov,
		.msg_iovlen = 1,
	};
	ssize_t n;

	n = recvmsg(c->fd, &msg, 0);
	if (n < 0) {
		perror("recvmsg");
		return -1;
	}
	if (msg.msg_flags & MSG_TRUNC) {
		fprintf(stderr, "reply truncated\n");
		return -1;
	}
	if (!NLMSG_OK(c->rep, (size_t)n)) {
		fprintf(stderr, "malformed reply (%zd bytes)\n", n);
		return -1;
	}
	if (c->rep->nlmsg_type == NLMSG_ERROR) {
		struct nlmsgerr *e = NLMSG_DATA(c->rep);

		fprintf(stderr, "error reply: %s\n", strerror(-e->error));
		return -1;
	}
	if (c->rep->nlmsg_type != NLPERF_MSG_ECHO ||
	    c->rep->nlmsg_seq != c->seq) {
		fprintf(stderr, "unexpected reply type %u seq %u\n",
			c->rep->nlmsg_type, c->rep->nlmsg_seq);
		return -1;
	}
	return (long)(c->rep->nlmsg_len - NLMSG_HDRLEN);
}

static int run_string(struct client *c, const char *s)
{
	size_t len = strlen(s) + 1;
	long got;

	memcpy(NLMSG_DATA(c->req), s, len);
	printf("Sending message to kernel: %s\n", s);
	if (echo_send(c, len))
		return 1;
	got = echo_recv(c);
	if (got < 0)
		return 1;
	printf("Received message payload: %.*s\n", (int)got,
	       (char *)NLMSG_DATA(c->rep));
	return (size_t)got == len &&
	       !memcmp(NLMSG_DATA(c->rep), s, len) ? 0 : 1;
}

static int run_bench(struct client *c, unsigned long n, size_t size)
{
	__u64 t0, t1;
	unsigned long i;

	memset(NLMSG_DATA(c->req), 'x', size);
	t0 = now_ns();
	for (i = 0; i < n; i++) {
		if (echo_send(c, size) || echo_recv(c) != (long)size)
			return 1;
	}
	t1 = now_ns();
	printf("c_echo n=%lu size=%zu total_ns=%llu per_rtt_ns=%llu\n", n, size,
	       (unsigned long long)(t1 - t0),
	       (unsigned long long)((t1 - t0) / (n ? n : 1)));
	return 0;
}

int main(int argc, char **argv)
{
	int proto = NLPERF_PROTO_DEFAULT;
	unsigned long n = 0;
	size_t size = 64;
	struct client c;
	const char *s;
	int opt;

	while ((opt = getopt(argc, argv, "p:n:s:h")) != -1) {
		switch (opt) {
		case 'p':
			proto = atoi(optarg);
			break;
		case 'n':
			n = strtoul(optarg, NULL, 0);
			break;
		case 's':
			size = strtoul(optarg, NULL, 0);
			break;
		default:
			print_usage(argv[0]);
		}
	}
	if (optind < argc - 1 || (n && optind < argc))
		print_usage(argv[0]);
	s = optind < argc ? argv[optind] : DEFAULT_STRING;
	if (!n)
		size = strlen(s) + 1;

	if (client_open(&c, proto, size))
		return 1;
	return n ? run_bench(&c, n, size) : run_string(&c, s);
}
