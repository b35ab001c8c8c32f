"""The Python wire mirror agrees with kmod/nlperf_uapi.h, byte for byte."""

from __future__ import annotations

import dataclasses
import re
import shutil
import struct
import subprocess
from array import array
from pathlib import Path

import pytest

from nlperf import kmod, wire
from nlperf.samples import StampLog
from nlperf.workloads import common

KMOD = Path(__file__).resolve().parent.parent / "kmod"
UAPI = KMOD / "nlperf_uapi.h"

# Every struct table in nlperf/wire.py: a new one is covered without being listed here.
LAYOUTS = {v.c_name: v for v in vars(wire).values() if isinstance(v, wire.Layout)}

# C constant -> the Python value that mirrors it.
CONSTANTS = {
    "NLPERF_WIRE_VERSION": wire.WIRE_VERSION, "NLPERF_PROTO_DEFAULT": wire.PROTO_DEFAULT,
    "NLPERF_MAX_GROUPS": wire.MAX_GROUPS, "NLPERF_STAMP_F_END": wire.STAMP_F_END,
    "NLPERF_MSG_ECHO": wire.MSG_ECHO, "NLPERF_MSG_TIMED_ECHO": wire.MSG_TIMED_ECHO,
    "NLPERF_MSG_SINK": wire.MSG_SINK, "NLPERF_MSG_RELAY": wire.MSG_RELAY,
    "NLPERF_MSG_GEN_START": wire.MSG_GEN_START, "NLPERF_MSG_GEN_STOP": wire.MSG_GEN_STOP,
    "NLPERF_MSG_STATS_GET": wire.MSG_STATS_GET,
    "NLPERF_MSG_STATS_RESET": wire.MSG_STATS_RESET,
    "NLPERF_MSG_MCAST_DATA": wire.MSG_MCAST_DATA,
    "NLPERF_MSG_DUMP_GET": wire.MSG_DUMP_GET,
    "NLPERF_DUMP_OBJECTS_MAX": wire.DUMP_OBJECTS_MAX,
    "NLPERF_DUMP_SIZE_MAX": wire.DUMP_SIZE_MAX,
    "NLPERF_MODE_CALLBACK": wire.MODE_CALLBACK, "NLPERF_MODE_KTHREAD": wire.MODE_KTHREAD,
    "NLPERF_MODE_WORKQUEUE": wire.MODE_WORKQUEUE,
    "NLPERF_ALLOC_KERNEL": wire.ALLOC_KERNEL, "NLPERF_ALLOC_ATOMIC": wire.ALLOC_ATOMIC,
    "NLPERF_F_COALESCE": wire.F_COALESCE, "NLPERF_COALESCE_MAX": wire.COALESCE_MAX,
    # linux/netlink.h and sys/socket.h
    "NLMSG_HDRLEN": wire.NLMSG_HDRLEN, "NLMSG_ERROR": wire.NLMSG_ERROR,
    "NLMSG_DONE": wire.NLMSG_DONE, "NLMSG_SPACE(sizeof(int))": wire.DONE_LEN,
    "NLM_F_REQUEST": wire.NLM_F_REQUEST, "NLM_F_ACK": wire.NLM_F_ACK,
    "NLM_F_MULTI": wire.NLM_F_MULTI,
    "NLM_F_DUMP_INTR": wire.NLM_F_DUMP_INTR, "NLM_F_DUMP": wire.NLM_F_DUMP,
    "SOL_NETLINK": wire.SOL_NETLINK, "NETLINK_ADD_MEMBERSHIP": wire.NETLINK_ADD_MEMBERSHIP,
    "NETLINK_DROP_MEMBERSHIP": wire.NETLINK_DROP_MEMBERSHIP,
    "NETLINK_BROADCAST_ERROR": wire.NETLINK_BROADCAST_ERROR,
    "NETLINK_NO_ENOBUFS": wire.NETLINK_NO_ENOBUFS,
}


def _is_integer(fmt: str) -> bool:
    return fmt[-1] in "bBhHiIlLqQ"


def python_layout(layout: wire.Layout) -> dict[str, int]:
    """What the C program prints for a struct, computed from the Python table alone."""
    out = {layout.c_name: layout.size}
    for m in layout.members:
        key = f"{layout.c_name}.{m.path}"
        out[f"{key}@"] = m.offset
        out[f"{key}#"] = struct.calcsize("=" + m.fmt)
        if _is_integer(m.fmt):
            out[f"{key}-"] = int(m.fmt.islower())
    return out


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """sizeof, and for each field its offset (@), width (#) and signedness (-), from the C
    headers, keyed like python_layout()."""
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    src = ["#include <stdio.h>", "#include <stddef.h>", "#include <sys/socket.h>",
           "#include <linux/netlink.h>", f'#include "{UAPI}"', "int main(void) {"]
    for name, layout in LAYOUTS.items():
        src.append(f'printf("{name} %zu\\n", sizeof(struct {name}));')
        for m in layout.members:
            key, field = f"{name}.{m.path}", f"((struct {name} *)0)->{m.path}"
            src.append(f'printf("{key}@ %zu\\n", offsetof(struct {name}, {m.path}));')
            src.append(f'printf("{key}# %zu\\n", sizeof({field}));')
            if _is_integer(m.fmt):
                src.append(f'printf("{key}- %d\\n", (__typeof__({field}))-1 < 0);')
    for c in CONSTANTS:
        src.append(f'printf("{c} %ld\\n", (long){c});')
    src.append("return 0; }")
    d = tmp_path_factory.mktemp("layout")
    (d / "layout.c").write_text("\n".join(src))
    subprocess.run(["cc", "-Wall", "-Werror", "-o", str(d / "layout"), str(d / "layout.c")],
                   check=True)
    out = subprocess.run([str(d / "layout")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_every_wire_struct_is_checked() -> None:
    assert {"nlmsghdr", "nlmsgerr", "nlperf_stamp", "nlperf_relay_req", "nlperf_gen_req",
            "nlperf_group_stats", "nlperf_stats_counters", "nlperf_stats", "nlperf_dump_req",
            "nlperf_dump_obj"} <= set(LAYOUTS)


@pytest.mark.parametrize("name", LAYOUTS)
def test_struct_layout_matches_header(c_layout: dict[str, int], name: str) -> None:
    """Size, and every field's offset, width and signedness, as the C compiler sees them."""
    expected = python_layout(LAYOUTS[name])
    assert {k: c_layout.get(k) for k in expected} == expected


def test_constants_match_header(c_layout: dict[str, int]) -> None:
    for name, value in CONSTANTS.items():
        assert c_layout[name] == value, name


def test_derived_views_of_the_tables() -> None:
    """The names the rest of the code uses, as the tables derive them."""
    assert wire.STATS_HEAD.size + wire.MAX_GROUPS * wire.GROUP_STATS.size == wire.STATS_SIZE
    assert wire.STATS_HEAD.format.startswith("=HHIIIIIIIQQQQQQQQQQqQ")
    assert wire.STATS_FIELDS[-1] == "wq_name" and "groups" not in wire.STATS_FIELDS
    # the module-wide counts that add up over repetitions (unsigned); skbs_held is a level
    unsigned = tuple(m.name for m in wire.STATS_COUNTERS_LAYOUT.members if m.fmt == "Q")
    assert unsigned == wire.STATS_COUNTERS
    assert wire.STATS_COUNTERS[:11] == (
        "received", "processed", "replied", "queue_overflows", "err_perm", "err_inval",
        "err_notsupp", "err_truncated", "err_nomem", "err_reply", "gen_runs")
    assert "skbs_held" not in wire.STATS_COUNTERS


@pytest.mark.parametrize("layout", [wire.STATS_COUNTERS_LAYOUT, wire.GROUP_STATS])
def test_counter_structs_hold_only_64_bit_values(layout: wire.Layout) -> None:
    """The module keeps these as arrays of atomic64_t and copies them out as arrays of u64."""
    assert {m.fmt for m in layout.members} <= {"Q", "q"}
    assert wire.NLMSGERR.format == "=iIHHII"
    assert wire.NLMSGHDR.offset("nlmsg_seq") == 8
    assert wire.STAMP.span("user_send_ns", "kern_send_ns", wire.NLMSG_HDRLEN) == slice(32, 64)
    assert wire.STAMP.struct_of("flags", "seq").format == "=HHQ"
    with pytest.raises(ValueError):
        wire.STAMP.struct_of("seq", "flags")
    assert [f.name for f in dataclasses.fields(wire.Stamp)] == list(wire.STAMP.names)


def stats_head(**values: int | bytes) -> bytes:
    """A stats reply's fixed part, by field name (unnamed fields 0), whatever the counters."""
    values = {"version": wire.WIRE_VERSION, "size": wire.STATS_SIZE, "wq_name": b"", **values}
    return wire.STATS_HEAD.pack(*(values.get(name, 0) for name in wire.STATS_FIELDS))


def test_stats_roundtrip_decodes_groups_and_name() -> None:
    head = stats_head(mode=wire.MODE_WORKQUEUE, proto=31, queue_len=1024, queue_depth=3,
                      queue_hwm=7, received=10, processed=9, replied=8, queue_overflows=1,
                      err_reply=2, skbs_held=3, wq_name=b"nlperf_wq")
    groups = bytearray(wire.MAX_GROUPS * wire.GROUP_STATS.size)
    wire.GROUP_STATS.pack_into(groups, 2 * wire.GROUP_STATS.size, 5, 0, 4, 1, 0, 0)
    stats = wire.Stats.unpack(head + bytes(groups))
    assert stats.fields["mode"] == "workqueue"
    assert stats.fields["wq_name"] == "nlperf_wq"
    assert stats.fields["skbs_held"] == 3
    assert (stats.fields["received"], stats.fields["err_reply"]) == (10, 2)
    assert stats.groups == {3: {"relay_sent": 5, "gen_sent": 0, "bcast_ok": 4, "bcast_esrch": 1,
                                "bcast_enobufs": 0, "bcast_other": 0}}


def test_stats_with_wrong_size_is_refused() -> None:
    head = stats_head(size=99, proto=31)
    with pytest.raises(ValueError, match="size 99"):
        wire.Stats.unpack(head + bytes(wire.MAX_GROUPS * wire.GROUP_STATS.size))


def test_nlmsg_pads_to_four_bytes_and_groups_mask() -> None:
    msg = wire.nlmsg(wire.MSG_ECHO, b"abcde", seq=7)
    assert len(msg) == 24
    assert wire.NLMSGHDR.unpack_from(msg) == (21, wire.MSG_ECHO, wire.NLM_F_REQUEST, 7, 0)
    assert wire.groups_mask([1, 3, 32]) == 0x80000005
    with pytest.raises(ValueError):
        wire.groups_mask([0])


def test_coalesce_flag_and_bound() -> None:
    """NLPERF_F_COALESCE sits in the request-kind bits (0x100..0x800), clear of netlink's own
    flags; a reply is a part only when it fits a datagram with NLMSG_DONE."""
    assert wire.F_COALESCE & 0xF00 and not wire.F_COALESCE & 0xFF
    assert wire.DONE_LEN == 20
    largest = wire.COALESCE_MAX - wire.DONE_LEN  # 3052: a 3036-byte payload
    assert wire.coalescable(largest) and wire.coalescable(largest - 3)
    assert not wire.coalescable(largest + 1)  # padded to 3056
    assert not wire.coalescable(wire.NLMSG_HDRLEN + 4096)


def coalesced(parts: list[bytes], *, done_seq: int = 9) -> bytes:
    """A datagram of parts as the module sends it: each with NLM_F_MULTI, then NLMSG_DONE."""
    return b"".join(parts) + wire.nlmsg(wire.NLMSG_DONE, b"\0" * 4, flags=wire.NLM_F_MULTI,
                                         seq=done_seq)


def test_record_parts_takes_every_timed_part_up_to_done() -> None:
    stamps = [(10 * i + 1, 10 * i + 2, 10 * i + 3, 10 * i + 4) for i in range(3)]
    parts = [wire.nlmsg(wire.MSG_TIMED_ECHO,
                        wire.STAMP.pack(wire.WIRE_VERSION, wire.STAMP.size, 0, 0, i, *st)
                        + b"pad" * i, flags=wire.NLM_F_MULTI, seq=i)
             for i, st in enumerate(stamps)]
    rbuf = bytearray(1 << 12)
    data = coalesced(parts) + wire.nlmsg(wire.MSG_TIMED_ECHO, bytes(48))  # past DONE: ignored
    rbuf[:len(data)] = data
    log = StampLog(8)
    assert common.PartsReader(rbuf).record(len(data), 777, log, None) == 3
    assert log.array().tolist() == [[*st, 777] for st in stamps]
    # past the log's capacity, parts are still counted and sampled by the reservoir
    small = StampLog(2)
    assert common.PartsReader(rbuf).record(len(data), 777, small, None) == 3
    assert small.count == 3 and len(small.array()) == 2
    # a datagram cut short of its NLMSG_DONE still yields the whole parts it holds
    log.reset()
    assert common.PartsReader(rbuf).record(len(parts[0]) + 8, 5, log, None) == 1


def test_record_parts_finds_a_raw_part_send_time_by_seq() -> None:
    raw_sent = array("q", [0] * 16)
    raw_sent[3], raw_sent[4] = 1000, 2000
    parts = [wire.nlmsg(wire.MSG_ECHO, b"x" * 5, flags=wire.NLM_F_MULTI, seq=s) for s in (19, 20)]
    data = coalesced(parts)
    log = StampLog(2)
    assert common.PartsReader(bytearray(data)).record(len(data), 3000, log, raw_sent) == 2
    assert log.array()[:, [0, 4]].tolist() == [[1000, 3000], [2000, 3000]]


def _timed_parts(count: int, extra: int = 0) -> list[bytes]:
    return [wire.nlmsg(wire.MSG_TIMED_ECHO,
                       wire.STAMP.pack(wire.WIRE_VERSION, wire.STAMP.size, 0, 0, i,
                                       100 * i + 1, 100 * i + 2, 100 * i + 3, 100 * i + 4)
                       + bytes(extra), flags=wire.NLM_F_MULTI, seq=i)
            for i in range(count)]


@pytest.mark.parametrize("capacity", [64, 7])
def test_record_parts_of_a_batch_as_one_by_one(capacity: int) -> None:
    """A batch of equal parts (the vectorized path) leaves exactly what reading them one by
    one leaves, the reservoir's draws past the log's capacity included."""
    data = coalesced(_timed_parts(32, extra=40))
    fast, slow = StampLog(capacity, seed=3), StampLog(capacity, seed=3)
    reader = common.PartsReader(bytearray(data))
    for t in (777, 778):  # twice: the second datagram meets a full log when capacity is 7
        assert reader.record(len(data), t, fast, None) == 32
        assert common.record_parts_one_by_one(bytearray(data), len(data), t, slow, None) == 32
    assert fast.count == slow.count == 64
    assert fast.array().tolist() == slow.array().tolist()
    if capacity == 64:
        assert fast.array()[[0, 1, 32]].tolist() == [[1, 2, 3, 4, 777], [101, 102, 103, 104, 777],
                                                     [1, 2, 3, 4, 778]]


def test_record_parts_reads_an_unusual_batch_one_by_one() -> None:
    """Cut short of its NLMSG_DONE, or with a part of another length, a datagram still yields
    the whole parts it holds, read one by one."""
    parts = _timed_parts(8)
    data = coalesced(parts)
    log = StampLog(16)
    cut = len(parts[0]) * 6 + 8
    assert common.PartsReader(bytearray(data)).record(cut, 5, log, None) == 6
    odd = coalesced(parts[:3] + _timed_parts(1, extra=4) + parts[4:])
    assert common.PartsReader(bytearray(odd)).record(len(odd), 5, log, None) == 8
    # one part 4 bytes short and the next 4 long: the same total, read by the same reader
    rbuf = bytearray(data)
    reader = common.PartsReader(rbuf)
    assert reader.record(len(data), 6, log, None) == 8
    short = wire.nlmsg(wire.MSG_TIMED_ECHO, bytes(len(parts[0]) - 4 - wire.NLMSG_HDRLEN))
    evened = coalesced([*parts[:3], short, *_timed_parts(1, extra=4), *parts[5:]])
    assert len(evened) == len(data)
    rbuf[:] = evened
    got, want = StampLog(8), StampLog(8)
    assert reader.record(len(evened), 7, got, None) == 8
    assert common.record_parts_one_by_one(bytearray(evened), len(evened), 7, want, None) == 8
    assert got.array().tolist() == want.array().tolist()


@pytest.mark.parametrize("batch", [2, 32])
def test_a_datagram_is_stamped_with_consecutive_seqs_and_one_time(batch: int) -> None:
    """The vectorized stamping (batch 32) writes exactly what one struct call per message
    writes (batch 2): nlmsg_seq the low 32 bits of stamp.seq, across the 32-bit wrap."""
    d = common.Datagram(wire.MSG_TIMED_ECHO, 64, batch)
    seq = (1 << 32) - 1
    d.stamp(seq, 123_456_789, batch)
    for i, off in enumerate(d.offsets):
        head = wire.NLMSGHDR.unpack_from(d.buf, off)
        stamp = wire.STAMP.unpack_from(d.buf, off + common.STAMP_AT)
        assert (head[0], head[3], stamp[4], stamp[5]) == (80, (seq + i) & 0xFFFFFFFF, seq + i,
                                                          123_456_789)
    d.stamp(7, 9, 1)  # a last, shorter datagram: only its messages change
    assert [wire.NLMSGHDR.unpack_from(d.buf, off)[3] for off in d.offsets[:2]] == [7, 0]
    if batch >= common.STAMP_VECTOR_MIN:  # a shorter datagram that still takes the numpy path
        d.stamp(100, 5, 20)
        seqs = [wire.STAMP.unpack_from(d.buf, off + common.STAMP_AT)[4:6] for off in d.offsets]
        assert seqs[:20] == [(100 + i, 5) for i in range(20)]
        assert seqs[20] == (seq + 20, 123_456_789)


def test_a_datagram_carries_the_flags_asked_for() -> None:
    d = common.Datagram(wire.MSG_TIMED_ECHO, 64, 3, wire.NLM_F_REQUEST | wire.F_COALESCE)
    heads = [wire.NLMSGHDR.unpack_from(d.buf, off) for off in d.offsets]
    assert heads == [(80, wire.MSG_TIMED_ECHO, 0x101, 0, 0)] * 3
    assert wire.NLMSGHDR.unpack_from(common.Datagram(wire.MSG_ECHO, 8, 1).buf)[2] == 1


# --- module parameters: kmod.PARAMS against the module_param declarations of nlperf.c ----------

# Kernel constants the module's bounds may name.
KERNEL_CONSTANTS = {"NSEC_PER_SEC": 1_000_000_000, "USEC_PER_SEC": 1_000_000}
C_PARAM = re.compile(  # the definition, module_param() and MODULE_PARM_DESC() of a parameter
    r"^static (?P<ctype>[\w ]+?) \*?(?P<name>\w+)(?: = (?P<default>[^;]+))?;\n"
    r"module_param\((?P=name), (?P<kind>\w+), 0\d+\);\n"
    r'MODULE_PARM_DESC\((?P=name), "(?P<desc>[^"]*)"\);', re.M)


def c_defines() -> dict[str, int]:
    """Numeric #defines of nlperf.c and its header, with the names they use resolved."""
    raw = dict(re.findall(r"^#define\s+(NLPERF_\w+)\s+(\w+)", UAPI.read_text()
                          + (KMOD / "nlperf.c").read_text(), re.M))

    def value(token: str) -> int:
        if token in KERNEL_CONSTANTS:
            return KERNEL_CONSTANTS[token]
        if token in raw:
            return value(raw[token])
        return int(token.rstrip("UL"), 0)

    return {k: value(v) for k, v in raw.items() if re.fullmatch(r"\w+", v)
            and (v in raw or v in KERNEL_CONSTANTS or v.rstrip("UL").isdigit())}


@pytest.fixture(scope="module")
def c_params() -> dict[str, dict[str, str]]:
    found = {m["name"]: m.groupdict() for m in C_PARAM.finditer((KMOD / "nlperf.c").read_text())}
    assert found, "no module_param() found in nlperf.c"
    return found


def test_module_params_are_the_same_names(c_params: dict[str, dict[str, str]]) -> None:
    assert set(c_params) == set(kmod.PARAMS)


@pytest.mark.parametrize("name", list(kmod.PARAMS))
def test_module_param_matches_c(c_params: dict[str, dict[str, str]], name: str) -> None:
    """Type, default and bounds of each parameter agree with nlperf.c, and the module checks
    the bounds it names (NLPERF_<NAME>_MIN/_MAX; an unsigned parameter without _MIN starts
    at 0)."""
    source = (KMOD / "nlperf.c").read_text()
    c, param, defines = c_params[name], kmod.PARAMS[name], c_defines()
    if c["kind"] == "charp":
        assert param.kind is str
        assert c["default"] == f'"{param.default}"'
        table = re.search(r"nlperf_mode_names\[\] = \{(.*?)\};", source, re.S)
        assert table is not None
        names = {wire.MODES[m.lower()]: n for m, n in
                 re.findall(r'\[NLPERF_MODE_(\w+)\] = "(\w+)"', table[1])}
        assert names == {i: n for i, n in enumerate(param.choices)}
        return
    if c["kind"] == "bool":
        assert (param.kind, param.lo, param.hi) == (bool, 0, 1)
        assert (c["default"] == "true") is param.default
        return
    assert param.kind is int and c["kind"] in ("int", "uint", "ulong")
    default = c["default"] or "0"  # a static without initialiser is 0
    assert (defines[default] if default in defines else int(default)) == param.default
    upper = f"NLPERF_{name.upper()}"
    lo = defines.get(f"{upper}_MIN", 0 if c["kind"] != "int" else None)
    assert (lo, defines[f"{upper}_MAX"]) == (param.lo, param.hi)
    assert re.search(rf"\b{name} > {upper}_MAX\b", source), f"{name} is not checked"
    if f"{upper}_MIN" in defines:
        assert re.search(rf"\b{name} < {upper}_MIN\b", source), f"{name} is not checked"
    # the description tells the same range
    for lo_hi in re.findall(r"(\d+)\.\.(\d+)", c["desc"]):
        assert tuple(map(int, lo_hi)) == (param.lo, param.hi), c["desc"]
    for dflt in re.findall(r"default (\d+)", c["desc"]):
        assert int(dflt) == param.default, c["desc"]


# --- the workloads' hot-loop constants, derived from the tables -------------------------------


def test_hot_loop_constants_are_the_offsets_they_name() -> None:
    """The values the workloads' loops used as literals, now derived from the tables."""
    assert (common.TYPE_AT, common.SEQ_AT, common.SEQ.format) == (4, 8, "=I")
    assert (common.PAYLOAD_AT, common.STAMP_AT) == (wire.NLMSG_HDRLEN, wire.NLMSG_HDRLEN)
    assert (common.ERRNO_AT, common.ERRNO.format, common.ERROR_MIN) == (16, "=i", 20)
    assert common.STAMP_SEQ_TS.format == "=QQ" and wire.STAMP.offset("seq") == 8
    assert common.STAMP_FLAGS_GROUP_SEQ.format == "=HHQ" and wire.STAMP.offset("flags") == 4
    assert (common.STAMP_TIMES.start, common.STAMP_TIMES.stop) == (32, 64)
    # a timed reply is recorded from the fast path once it holds the whole stamp
    assert common.STAMPED_MIN == wire.NLMSG_HDRLEN + wire.STAMP.size == 64


def test_a_log_record_is_the_four_stamp_times_then_the_receive_time() -> None:
    copied = wire.STAMP.names[wire.STAMP.names.index("user_send_ns"):]
    assert [f"{n}_ns" for n in StampLog.FIELDS[:4]] == list(copied)
    assert StampLog.FIELDS[4] == "user_recv"
    assert common.LOG_RECV_AT == 4 * common.TS.size == 32
    assert common.LOG_RECORD == common.LOG_RECV_AT + common.TS.size == 40


def test_a_send_budget_ends_at_the_count_or_the_deadline() -> None:
    by_count = common.Budget.begin(5, None)
    assert (by_count.limit, by_count.deadline) == (5, None)
    assert by_count.more(4) and not by_count.more(5)
    assert not by_count.expired()  # no deadline: never, and the clock is not read
    by_time = common.Budget(start=1_000, limit=common.NO_LIMIT, deadline=3_000)
    assert by_time.more(10**9, now=2_999) and not by_time.more(0, now=3_000)
    assert by_time.expired(3_000) and not by_time.expired(2_999)
    begun = common.Budget.begin(None, 2.5)
    assert begun.deadline is not None and begun.deadline - begun.start == 2_500_000_000
