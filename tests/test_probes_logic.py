"""Probe-suite logic that needs no kernel: result classes, histogram percentiles, BPF defines."""

from __future__ import annotations

import re
import struct

import pytest

from nlperf import btf, probes
from nlperf.errors import RunFailed


@pytest.mark.parametrize(("ret", "name"), [
    (0, "ok"), (64, "ok"), (1 << 20, "ok"), (-11, "EAGAIN"), (-105, "ENOBUFS"), (-3, "ESRCH"),
    (-111, "ECONNREFUSED"), (-22, "other"), (-12, "other"), (-1, "other"),
])
def test_classify_result(ret: int, name: str) -> None:
    assert probes.classify_result(ret) == name
    assert name in probes.RESULTS


def test_codes_match_the_bpf_source() -> None:
    defines = dict(re.findall(r"^#define\s+(\w+)\s+(\d+)", probes.BPF_SRC.read_text(), re.M))
    for i, name in enumerate(probes.RESULTS):
        assert defines[f"R_{name.upper()}"] == str(i), name
    assert defines["NPROBES"] == str(len(probes.PROBES))
    assert defines["NDIRS"] == str(len(probes.DIRS))
    assert defines["NRESULTS"] == str(len(probes.RESULTS))
    assert defines["NCOUNTED"] == str(probes.NCOUNTED)
    assert defines["LOG2_SLOTS"] == str(probes.LOG2_SLOTS)
    assert (defines["ROLE_LAB"], defines["ROLE_KTHREAD"]) == (str(probes.ROLE_LAB),
                                                              str(probes.ROLE_KTHREAD))


def test_log2_bounds() -> None:
    assert probes.log2_bounds(0) == (0, 1)
    assert probes.log2_bounds(1) == (1, 2)
    assert probes.log2_bounds(11) == (1024, 2048)


def log2_of(values: list[int]) -> list[int]:
    h = [0] * probes.LOG2_SLOTS
    for v in values:
        h[v.bit_length()] += 1  # what bpf_log2l(v) gives for v >= 1, and slot 0 for 0
    return h


def linear_of(values: list[int], step: int, slots: int) -> list[int]:
    h = [0] * (slots + 1)
    for v in values:
        h[min(v // step, slots)] += 1
    return h


def test_percentile_interpolates_within_a_linear_bucket() -> None:
    # 100 values spread evenly over [1000, 2000): the median is ~1500
    values = [1000 + 10 * i for i in range(100)]
    log2, lin = log2_of(values), linear_of(values, 1000, 10)
    assert probes.percentile(log2, lin, 1000, 0.5) == pytest.approx(1500)
    assert probes.percentile(log2, lin, 1000, 0.9) == pytest.approx(1900)
    assert probes.percentile(log2, lin, 1000, 1.0) == pytest.approx(2000)
    assert probes.percentile(log2, lin, 1000, 1.0, max_ns=1990) == 1990


def test_percentile_falls_back_to_log2_beyond_the_linear_range() -> None:
    values = [500] * 90 + [100_000] * 10  # the tail lies past 10 x 1000 ns
    log2, lin = log2_of(values), linear_of(values, 1000, 10)
    assert probes.percentile(log2, lin, 1000, 0.5) == pytest.approx(500 * 0 + 500, abs=500)
    p99 = probes.percentile(log2, lin, 1000, 0.99)
    assert p99 is not None and 65536 <= p99 <= 131072  # inside 100000's log2 bucket
    assert probes.percentile(log2, lin, 1000, 0.99, max_ns=100_000) <= 100_000


def test_percentile_without_linear_and_empty() -> None:
    assert probes.percentile([0] * 65, [0] * 11, 1000, 0.5) is None
    log2 = log2_of([3, 3, 3, 3])  # slot 2 = [2, 4)
    assert probes.percentile(log2, [], 1000, 0.5) == pytest.approx(3)
    assert probes.percentile(log2, [], 1000, 0.25) == pytest.approx(2.5)


def test_latency_summary() -> None:
    values = [1000 + 10 * i for i in range(100)]
    s = probes.latency_summary(log2_of(values), linear_of(values, 1000, 10), 1000, 100,
                               sum(values), max(values))
    assert s["count"] == 100 and s["mean"] == pytest.approx(1495)
    assert s["p50"] == pytest.approx(1500) and s["max"] == 1990
    assert s["p50"] <= s["p90"] <= s["p99"] <= s["p999"] <= s["max"]
    empty = probes.latency_summary([0] * 65, [0] * 11, 1000, 0, 0, 0)
    assert empty["count"] == 0 and empty["p50"] is None and empty["max"] is None


def test_ksym_addr() -> None:
    text = ("ffffffff81000000 T netlink_unicast\n"
            "ffffffffc0001000 t nlperf_work_fn\t[nlperf]\n"
            "0000000000000000 t hidden_fn\n")
    assert probes.ksym_addr("netlink_unicast", text=text) == 0xFFFFFFFF81000000
    assert probes.ksym_addr("nlperf_work_fn", "nlperf", text=text) == 0xFFFFFFFFC0001000
    assert probes.ksym_addr("nlperf_work_fn", "other", text=text) is None
    assert probes.ksym_addr("hidden_fn", text=text) is None  # kptr_restrict zeroes addresses
    assert probes.ksym_addr("missing", text=text) is None


OFFSETS = {("sock", "sk_protocol"): 516, ("sock", "sk_socket"): 624,
           ("socket_alloc", "vfs_inode"): 128, ("inode", "i_ino"): 64,
           ("netlink_sock", "flags"): 776, ("task_struct", "pid"): 2416,
           ("task_struct", "__state"): 24}


def test_cflags_are_defines() -> None:
    flags = probes.cflags(31, OFFSETS, "6.1.0-56-amd64")
    assert all(f.startswith("-D") for f in flags)
    d = dict(f[2:].split("=", 1) for f in flags)
    assert d["PROTO"] == "31" and d["OFF_SOCKET_INO"] == "192" and d["SWITCH_STATE_ARG"] == "1"
    assert probes.cflags(31, OFFSETS, "5.10.0-1-amd64")[7] == "-DSWITCH_STATE_ARG=0"
    off = probes.cflags(31, OFFSETS, "6.1.0", timing=False)
    assert "-DTIMING=0" in off and "-DBY_PROCESS=0" in off  # per-process counts follow timing
    assert "-DBY_PROCESS=1" in probes.cflags(31, OFFSETS, "6.1.0", timing=False, by_process=True)
    assert d["BY_PROCESS"] == "1" and d["TASK_STORAGE"] == "1"
    assert "-DTASK_STORAGE=0" in probes.cflags(31, OFFSETS, "5.10.0-1-amd64")


def test_cflags_name_missing_fields() -> None:
    bad = {k: v for k, v in OFFSETS.items() if k != ("netlink_sock", "flags")}
    with pytest.raises(RunFailed, match=r"netlink_sock\.flags"):
        probes.cflags(31, bad, "6.1.0")


def synthetic_struct_btf() -> bytes:
    """struct outer { int a; union { int b; struct inner c; }; int d:3; }; struct inner {x}."""
    strings = b"\0int\0outer\0a\0b\0c\0d\0inner\0x\0"
    off = {s: strings.index(b"\0" + s.encode() + b"\0") + 1 for s in
           ("int", "outer", "a", "b", "c", "d", "inner", "x")}
    types = b""
    types += struct.pack("<III", off["int"], 1 << 24, 4) + struct.pack("<I", 32)  # 1: int
    # 2: struct outer, kind_flag (bitfield d), 3 members
    types += struct.pack("<III", off["outer"], (1 << 31) | (4 << 24) | 3, 16)
    types += struct.pack("<III", off["a"], 1, 0)
    types += struct.pack("<III", 0, 3, 32)  # anonymous union at byte 4
    types += struct.pack("<III", off["d"], 1, (3 << 24) | 96)
    # 3: anonymous union { int b; struct inner c; }
    types += struct.pack("<III", 0, (5 << 24) | 2, 8)
    types += struct.pack("<III", off["b"], 1, 0)
    types += struct.pack("<III", off["c"], 4, 0)
    # 4: struct inner { int pad; int x; }
    types += struct.pack("<III", off["inner"], (4 << 24) | 1, 8)
    types += struct.pack("<III", off["x"], 1, 32)
    hdr = struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types),
                      len(strings))
    return hdr + types + strings


def test_btf_member_offsets_synthetic() -> None:
    blob = synthetic_struct_btf()
    got = btf.btf_member_offsets(blob, [("outer", "a"), ("outer", "b"), ("outer", "c"),
                                        ("inner", "x"), ("outer", "d"), ("outer", "zz"),
                                        ("missing", "a")])
    assert got == {("outer", "a"): 0, ("outer", "b"): 4, ("outer", "c"): 4, ("inner", "x"): 4}
    with pytest.raises(ValueError):
        btf.btf_member_offsets(b"\0" * 32, [("a", "b")])


def test_btf_member_offsets_real_vmlinux() -> None:
    if not btf.VMLINUX_BTF.exists():
        pytest.skip("no vmlinux BTF")
    got = btf.vmlinux_member_offsets(probes.BTF_MEMBERS)
    for need in [("sock", "sk_protocol"), ("sock", "sk_socket"), ("socket_alloc", "vfs_inode"),
                 ("inode", "i_ino"), ("netlink_sock", "flags"), ("task_struct", "pid")]:
        assert need in got, need
    assert got[("socket_alloc", "vfs_inode")] > 0
