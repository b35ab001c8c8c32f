"""Python mirror of kmod/nlperf_uapi.h, wire format v1.

The C header is the definition; this module repeats it for the workloads. ``tests/test_wire.py``
compiles a program that prints every size and offset from the header and compares them with the
structs below, so the two cannot drift apart silently.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

WIRE_VERSION = 1
PROTO_DEFAULT = 31
MAX_GROUPS = 32

# linux/netlink.h
NLMSG_HDRLEN = 16
NLMSG_ERROR = 0x2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
NETLINK_BROADCAST_ERROR = 4
NETLINK_NO_ENOBUFS = 5

MSG_ECHO = 0x10
MSG_TIMED_ECHO = 0x11
MSG_SINK = 0x12
MSG_RELAY = 0x13
MSG_GEN_START = 0x14
MSG_GEN_STOP = 0x15
MSG_STATS_GET = 0x16
MSG_STATS_RESET = 0x17
MSG_MCAST_DATA = 0x18

STAMP_F_END = 0x0001

MODE_CALLBACK = 0
MODE_KTHREAD = 1
MODE_WORKQUEUE = 2
MODES = {"callback": MODE_CALLBACK, "kthread": MODE_KTHREAD, "workqueue": MODE_WORKQUEUE}
MODE_NAMES = {v: k for k, v in MODES.items()}

ALLOC_KERNEL = 0
ALLOC_ATOMIC = 1
ALLOCS = {"kernel": ALLOC_KERNEL, "atomic": ALLOC_ATOMIC}

# struct nlmsghdr: len, type, flags, seq, pid
NLMSGHDR = struct.Struct("=IHHII")
# struct nlmsgerr: int error + the offending struct nlmsghdr
NLMSGERR = struct.Struct("=iIHHII")
# struct nlperf_stamp
STAMP = struct.Struct("=HHHHQQQQQ")
# struct nlperf_relay_req
RELAY_REQ = struct.Struct("=II")
# struct nlperf_gen_req
GEN_REQ = struct.Struct("=IIQQII")
# struct nlperf_group_stats
GROUP_STATS = struct.Struct("=QQQQQQ")
# struct nlperf_stats, without the trailing groups[] array
STATS_HEAD = struct.Struct("=HHIIIIIIIQQQQQQQQQQqQ32s")
STATS_SIZE = STATS_HEAD.size + MAX_GROUPS * GROUP_STATS.size

# Field names in declaration order: the layout test checks offsets by these names.
STAMP_FIELDS = ("version", "size", "flags", "group", "seq", "user_send_ns", "kern_recv_ns",
                "proc_start_ns", "kern_send_ns")
RELAY_REQ_FIELDS = ("groups", "reserved")
GEN_REQ_FIELDS = ("groups", "size", "count", "duration_ns", "rate", "alloc")
GROUP_STATS_FIELDS = ("relay_sent", "gen_sent", "bcast_ok", "bcast_esrch", "bcast_enobufs",
                      "bcast_other")
STATS_FIELDS = ("version", "size", "mode", "proto", "kthread_pid", "gen_pid", "queue_len",
                "queue_depth", "queue_hwm", "received", "processed", "replied",
                "queue_overflows", "err_perm", "err_inval", "err_notsupp", "err_truncated",
                "err_nomem", "err_reply", "skbs_held", "gen_runs", "wq_name")


def pad4(n: int) -> int:
    """NLMSG_ALIGN."""
    return (n + 3) & ~3


def nlmsg(msg_type: int, payload: bytes = b"", *, flags: int = NLM_F_REQUEST, seq: int = 0,
          pid: int = 0) -> bytes:
    """One netlink message, padded to the 4-byte alignment the kernel walks by."""
    length = NLMSG_HDRLEN + len(payload)
    body = NLMSGHDR.pack(length, msg_type, flags, seq, pid) + payload
    return body + b"\0" * (pad4(length) - length)


def stamp(seq: int, user_send_ns: int = 0, *, flags: int = 0, group: int = 0) -> bytes:
    return STAMP.pack(WIRE_VERSION, STAMP.size, flags, group, seq, user_send_ns, 0, 0, 0)


def relay_payload(groups_mask: int, seq: int, user_send_ns: int, pad: int = 0,
                  flags: int = 0) -> bytes:
    return (RELAY_REQ.pack(groups_mask, 0) + stamp(seq, user_send_ns, flags=flags)
            + b"\0" * pad)


def gen_request(groups_mask: int, size: int, count: int = 0, duration_ns: int = 0,
                rate: int = 0, alloc: str = "kernel") -> bytes:
    return GEN_REQ.pack(groups_mask, size, count, duration_ns, rate, ALLOCS[alloc])


def groups_mask(groups: list[int] | tuple[int, ...]) -> int:
    """Group numbers 1..32 to the bitmask the relay and generator requests carry."""
    mask = 0
    for g in groups:
        if not 1 <= g <= MAX_GROUPS:
            raise ValueError(f"multicast group {g} is outside 1..{MAX_GROUPS}")
        mask |= 1 << (g - 1)
    return mask


@dataclass(frozen=True)
class Stamp:
    version: int
    size: int
    flags: int
    group: int
    seq: int
    user_send_ns: int
    kern_recv_ns: int
    proc_start_ns: int
    kern_send_ns: int

    @classmethod
    def unpack_from(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> Stamp:
        return cls(*STAMP.unpack_from(buf, offset))


@dataclass(frozen=True)
class Stats:
    """struct nlperf_stats, decoded."""

    GROUP_KEYS: ClassVar[tuple[str, ...]] = GROUP_STATS_FIELDS
    fields: dict[str, int | str]
    groups: dict[int, dict[str, int]]

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> Stats:
        if len(buf) < STATS_HEAD.size:
            raise ValueError(f"stats reply of {len(buf)} bytes, expected {STATS_SIZE}")
        head = STATS_HEAD.unpack_from(buf, 0)
        fields: dict[str, int | str] = dict(zip(STATS_FIELDS, head, strict=True))
        if fields["version"] != WIRE_VERSION or fields["size"] != STATS_SIZE:
            raise ValueError(f"stats version {fields['version']} size {fields['size']}, "
                             f"expected version {WIRE_VERSION} size {STATS_SIZE}")
        raw_name = fields["wq_name"]
        assert isinstance(raw_name, bytes)
        fields["wq_name"] = raw_name.split(b"\0", 1)[0].decode()
        fields["mode"] = MODE_NAMES.get(int(fields["mode"]), str(fields["mode"]))
        groups: dict[int, dict[str, int]] = {}
        for i in range(MAX_GROUPS):
            values = GROUP_STATS.unpack_from(buf, STATS_HEAD.size + i * GROUP_STATS.size)
            if any(values):
                groups[i + 1] = dict(zip(GROUP_STATS_FIELDS, values, strict=True))
        return cls(fields, groups)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {k: v for k, v in self.fields.items()
                                  if k not in ("version", "size")}
        out["groups"] = {str(g): v for g, v in self.groups.items()}
        return out
