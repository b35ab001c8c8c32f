"""Python mirror of kmod/nlperf_uapi.h, wire format v3.

The C header is the definition; this module repeats each struct once, as a table of
(field name, struct format) pairs in declaration order, and derives sizes, offsets and packers
from it. ``tests/test_wire.py`` compiles a program that prints the size, offset, width and
signedness of every field of every table here from the C headers, so the two cannot drift apart
silently.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

WIRE_VERSION = 3
PROTO_DEFAULT = 31
MAX_GROUPS = 32

# linux/netlink.h
NLMSG_HDRLEN = 16
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
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
# dumps (rtnetlink style): request and object messages share the type
MSG_DUMP_GET = 0x20
NLMSG_DONE = 0x3
NLM_F_MULTI = 0x2
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
DUMP_OBJECTS_MAX = 1048576
DUMP_SIZE_MAX = 2048

STAMP_F_END = 0x0001

# Coalesced replies (kmod/nlperf_uapi.h): an echo or timed echo request with F_COALESCE (and
# without NLM_F_ACK) gets its reply as a part (NLM_F_MULTI) of a datagram of at most
# COALESCE_MAX bytes that ends with one NLMSG_DONE, when the reply fits one (coalescable()).
F_COALESCE = 0x100
COALESCE_MAX = 3072

MODE_CALLBACK = 0
MODE_KTHREAD = 1
MODE_WORKQUEUE = 2
MODES = {"callback": MODE_CALLBACK, "kthread": MODE_KTHREAD, "workqueue": MODE_WORKQUEUE}
MODE_NAMES = {v: k for k, v in MODES.items()}

ALLOC_KERNEL = 0
ALLOC_ATOMIC = 1
ALLOCS = {"kernel": ALLOC_KERNEL, "atomic": ALLOC_ATOMIC}


@dataclass(frozen=True)
class Member:
    """One scalar field of a C struct: its C member path (``msg.nlmsg_seq`` inside a nested
    struct), struct format and byte offset."""

    path: str
    fmt: str
    offset: int

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]


class Layout:
    """A C struct declared as (field name, struct format or nested Layout) pairs, in order.

    Packed native ("="): the C structs are laid out without padding, which the layout test
    proves. Nested structs are flattened, so ``pack``/``unpack_from`` take and give the scalar
    fields in declaration order, exactly like the equivalent ``struct.Struct`` (whose bound
    methods these are: no cost over using one directly).
    """

    def __init__(self, c_name: str, fields: Sequence[tuple[str, str | Layout]]) -> None:
        self.c_name = c_name
        self.fields = tuple(fields)
        members: list[Member] = []
        pos = 0
        for name, kind in self.fields:
            if isinstance(kind, Layout):
                members += [Member(f"{name}.{m.path}", m.fmt, pos + m.offset)
                            for m in kind.members]
                pos += kind.size
            else:
                members.append(Member(name, kind, pos))
                pos += struct.calcsize("=" + kind)
        self.members = tuple(members)
        self.names = tuple(m.name for m in members)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"struct {c_name}: a field name repeats: {self.names}")
        self._by_name = {m.name: m for m in members}
        self.struct = struct.Struct("=" + "".join(m.fmt for m in members))
        self.format = self.struct.format
        self.size = self.struct.size
        assert self.size == pos
        self.pack = self.struct.pack
        self.pack_into = self.struct.pack_into
        self.unpack = self.struct.unpack
        self.unpack_from = self.struct.unpack_from

    def offset(self, name: str) -> int:
        return self._by_name[name].offset

    def _run(self, first: str, last: str) -> list[Member]:
        i, j = self.names.index(first), self.names.index(last)
        if j < i:
            raise ValueError(f"struct {self.c_name}: {last} comes before {first}")
        return list(self.members[i:j + 1])

    def struct_of(self, first: str, last: str | None = None) -> struct.Struct:
        """The consecutive fields ``first``..``last`` as one struct, to pack them in one call
        at ``offset(first)``."""
        return struct.Struct("=" + "".join(m.fmt for m in self._run(first, last or first)))

    def span(self, first: str, last: str, base: int = 0) -> slice:
        """The bytes of fields ``first``..``last``, in a buffer where the struct starts at
        ``base``."""
        run = self._run(first, last)
        end = run[-1].offset + struct.calcsize("=" + run[-1].fmt)
        return slice(base + run[0].offset, base + end)

    def __repr__(self) -> str:
        return f"Layout(struct {self.c_name}, {self.format!r}, {self.size} bytes)"


# linux/netlink.h
NLMSGHDR = Layout("nlmsghdr", (
    ("nlmsg_len", "I"),
    ("nlmsg_type", "H"),
    ("nlmsg_flags", "H"),
    ("nlmsg_seq", "I"),
    ("nlmsg_pid", "I"),
))
NLMSGERR = Layout("nlmsgerr", (
    ("error", "i"),
    ("msg", NLMSGHDR),  # the offending request's header
))

STAMP = Layout("nlperf_stamp", (
    ("version", "H"),
    ("size", "H"),
    ("flags", "H"),
    ("group", "H"),
    ("seq", "Q"),
    ("user_send_ns", "Q"),
    ("kern_recv_ns", "Q"),
    ("proc_start_ns", "Q"),
    ("kern_send_ns", "Q"),
))
RELAY_REQ = Layout("nlperf_relay_req", (
    ("groups", "I"),
    ("reserved", "I"),
))
GEN_REQ = Layout("nlperf_gen_req", (
    ("groups", "I"),
    ("size", "I"),
    ("count", "Q"),
    ("duration_ns", "Q"),
    ("rate", "I"),
    ("alloc", "I"),
))
DUMP_REQ = Layout("nlperf_dump_req", (
    ("objects", "I"),
    ("size", "I"),
    ("interrupt_after", "I"),
    ("reserved", "I"),
))
DUMP_OBJ = Layout("nlperf_dump_obj", (
    ("index", "I"),
    ("generation", "I"),
))
# Counters: "Q" counts events since load or reset, "q" is a level a reset leaves alone. A new
# module counter is one line here (and one field in the C struct of the same name).
GROUP_STATS = Layout("nlperf_group_stats", (
    ("relay_sent", "Q"),
    ("gen_sent", "Q"),
    ("bcast_ok", "Q"),
    ("bcast_esrch", "Q"),
    ("bcast_enobufs", "Q"),
    ("bcast_other", "Q"),
))
STATS_COUNTERS_LAYOUT = Layout("nlperf_stats_counters", (
    ("received", "Q"),
    ("processed", "Q"),
    ("replied", "Q"),
    ("queue_overflows", "Q"),
    ("err_perm", "Q"),
    ("err_inval", "Q"),
    ("err_notsupp", "Q"),
    ("err_truncated", "Q"),
    ("err_nomem", "Q"),
    ("err_reply", "Q"),
    ("skbs_held", "q"),
    ("gen_runs", "Q"),
    ("control_received", "Q"),
    ("control_replied", "Q"),
    ("control_errors", "Q"),
))
STATS = Layout("nlperf_stats", (
    ("version", "H"),
    ("size", "H"),
    ("mode", "I"),
    ("proto", "I"),
    ("kthread_pid", "I"),
    ("gen_pid", "I"),
    ("queue_len", "I"),
    ("queue_depth", "I"),
    ("queue_hwm", "I"),
    ("counters", STATS_COUNTERS_LAYOUT),
    ("wq_name", "32s"),
    ("groups", f"{MAX_GROUPS * GROUP_STATS.size}s"),  # struct nlperf_group_stats[MAX_GROUPS]
))

# Derived views used across the code base.
STATS_SIZE = STATS.size
STATS_HEAD = STATS.struct_of("version", "wq_name")  # everything before groups[]
STATS_FIELDS = STATS.names[:STATS.names.index("wq_name") + 1]
# module-wide event counts, which add up over repetitions (levels such as skbs_held do not)
STATS_COUNTERS = tuple(m.name for m in STATS_COUNTERS_LAYOUT.members if m.fmt == "Q")
GROUP_STATS_FIELDS = GROUP_STATS.names


def pad4(n: int) -> int:
    """NLMSG_ALIGN."""
    return (n + 3) & ~3


DONE_LEN = pad4(NLMSG_HDRLEN + 4)  # the NLMSG_DONE closing a datagram of parts: header + int


def coalescable(nlmsg_len: int) -> bool:
    """Whether the reply to a flagged echo of this length can be a part of a coalesced reply
    (else it comes alone, as without the flag)."""
    return pad4(nlmsg_len) + DONE_LEN <= COALESCE_MAX


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


def dump_request(objects: int, size: int, interrupt_after: int = 0) -> bytes:
    return DUMP_REQ.pack(objects, size, interrupt_after, 0)


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


_GROUPS_AT = STATS.offset("groups")


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
            values = GROUP_STATS.unpack_from(buf, _GROUPS_AT + i * GROUP_STATS.size)
            if any(values):
                groups[i + 1] = dict(zip(GROUP_STATS_FIELDS, values, strict=True))
        return cls(fields, groups)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {k: v for k, v in self.fields.items()
                                  if k not in ("version", "size")}
        out["groups"] = {str(g): v for g, v in self.groups.items()}
        return out
