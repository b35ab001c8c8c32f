"""Probe-suite logic that needs no kernel: the shared tables and their BPF defines, result
classes, histogram percentiles, the probes block from a synthetic map snapshot."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from nlperf import btf, probe_build, probe_kernel, probe_pool, probe_table, probes, results
from nlperf import probe_blocks as pb
from nlperf.errors import RunFailed
from nlperf.probe_blocks import BlockSettings, HistCell, MapSnapshot
from nlperf.probe_table import calls_index, hist_index


@pytest.mark.parametrize(("ret", "name"), [
    (0, "ok"), (64, "ok"), (1 << 20, "ok"), (-11, "EAGAIN"), (-105, "ENOBUFS"), (-3, "ESRCH"),
    (-111, "ECONNREFUSED"), (-22, "other"), (-12, "other"), (-1, "other"),
])
def test_classify_result(ret: int, name: str) -> None:
    assert probe_table.classify_result(ret) == name
    assert name in probe_table.RESULTS


# --- the shared tables reach the C as defines, and only that way ---

# Macros of BCC and the kernel's ptrace header that the C uses (not ours to define).
BCC_MACROS = {"BPF_ARRAY", "BPF_HASH", "BPF_PERCPU_ARRAY", "BPF_PERCPU_HASH", "BPF_TABLE",
              "BPF_TASK_STORAGE", "KFUNC_PROBE", "KRETFUNC_PROBE", "RAW_TRACEPOINT_PROBE",
              "TRACEPOINT_PROBE", "PT_REGS_PARM1", "PT_REGS_PARM3", "PT_REGS_RC"}


def c_source() -> str:
    """bpf/netlink.bpf.c without its comments."""
    text = probes.BPF_SRC.read_text()
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


def c_defines(src: str) -> set[str]:
    return set(re.findall(r"^\s*#\s*define\s+(\w+)", src, re.M))


def define_names(flags: list[str]) -> set[str]:
    return {re.match(r"-D(\w+)", f)[1] for f in flags}  # type: ignore[index]


def test_generated_defines_cover_every_name_the_c_uses() -> None:
    src = c_source()
    used = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", src))
    given = define_names(probe_build.cflags(31, OFFSETS, "6.1.0-56-amd64"))
    missing = used - c_defines(src) - BCC_MACROS - given
    assert not missing, f"the C uses names no -D define gives: {sorted(missing)}"
    # every table name the C relies on comes from the generated defines
    assert {"P_UNICAST", "P_OFFCPU", "NPROBES", "NCOUNTED", "NTIMED", "D_TO_KERNEL", "D_NONE",
            "NDIRS", "R_OK", "NRESULTS", "RESULT_OF_ERRNO", "LOG2_SLOTS"} <= used


def test_the_c_defines_no_table_name() -> None:
    src = c_source()
    own = {d for d in c_defines(src) if d.startswith(probe_table.TABLE_NAMES)}
    assert not own, f"a literal table is back in bpf/netlink.bpf.c: {sorted(own)}"
    assert not re.search(r"\bcase\s+\d+\s*:", src), "errno classes belong in probe_table.py"


def test_bpf_defines_values() -> None:
    d = dict(f[2:].split("=", 1) for f in probe_table.bpf_defines())
    assert (d["P_UNICAST"], d["P_BCAST_FILT"], d["P_WORK"], d["P_OFFCPU"], d["P_SEND"]) == (
        "0", "2", "5", "7", "8")
    assert (d["NPROBES"], d["NCOUNTED"], d["NTIMED"]) == ("9", "3", "5")
    assert (d["D_TO_KERNEL"], d["D_TO_USER"], d["D_USER_USER"], d["NDIRS"]) == ("0", "1", "2",
                                                                               "3")
    assert (d["ROLE_LAB"], d["ROLE_KTHREAD"], d["D_NONE"]) == ("0", "1", "0")
    assert (d["R_OK"], d["R_ECONNREFUSED"], d["R_OTHER"], d["NRESULTS"]) == ("0", "4", "5", "6")
    assert d["LOG2_SLOTS"] == "65"
    assert d["RESULT_OF_ERRNO(e)"] == ("((e) == 11 ? R_EAGAIN : (e) == 105 ? R_ENOBUFS : "
                                       "(e) == 3 ? R_ESRCH : (e) == 111 ? R_ECONNREFUSED : "
                                       "R_OTHER)")
    assert probe_table.PROBES[probe_table.NCOUNTED - 1] == "netlink_broadcast_filtered"
    assert probe_table.PROBES[probe_table.NTIMED - 1] == "nlperf_process"
    assert calls_index(1, 2, 3) == (1 * 3 + 2) * 6 + 3 and hist_index(7, 1) == 22


# --- percentiles ---


def test_log2_bounds() -> None:
    assert pb.log2_bounds(0) == (0, 1)
    assert pb.log2_bounds(1) == (1, 2)
    assert pb.log2_bounds(11) == (1024, 2048)


def log2_of(values: list[int]) -> list[int]:
    h = [0] * probe_table.LOG2_SLOTS
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
    assert pb.percentile(log2, lin, 1000, 0.5) == pytest.approx(1500)
    assert pb.percentile(log2, lin, 1000, 0.9) == pytest.approx(1900)
    assert pb.percentile(log2, lin, 1000, 1.0) == pytest.approx(2000)
    assert pb.percentile(log2, lin, 1000, 1.0, max_ns=1990) == 1990


def test_percentile_falls_back_to_log2_beyond_the_linear_range() -> None:
    values = [500] * 90 + [100_000] * 10  # the tail lies past 10 x 1000 ns
    log2, lin = log2_of(values), linear_of(values, 1000, 10)
    # rank 50 of the 90 in linear bucket [0, 1000): 1000 * 50 / 90
    assert pb.percentile(log2, lin, 1000, 0.5) == pytest.approx(5000 / 9)
    # rank 99 is the 9th of the 10 in 100000's log2 bucket [65536, 131072)
    assert pb.percentile(log2, lin, 1000, 0.99) == pytest.approx(65536 + 65536 * 9 / 10)
    assert pb.percentile(log2, lin, 1000, 0.99, max_ns=100_000) == 100_000



def test_percentile_in_the_overflow_bucket_is_not_below_its_bound() -> None:
    # 98 samples at 1 us, 2 at 210 us; linear 1 us steps to 200 us. The p99 rank lies in the
    # overflow bucket (>= 200 us); the log2 bucket [131072, 262144) holds only those 2 samples,
    # so the value is interpolated over [200000, 262144), not over the whole log2 bucket
    # (which gave 196608: below every sample it stands for).
    values = [1000] * 98 + [210_000] * 2
    log2, lin = log2_of(values), linear_of(values, 1000, 200)
    assert lin[-1] == 2
    assert pb.percentile(log2, lin, 1000, 0.99) == pytest.approx(200_000 + 62_144 * 0.5)
    assert pb.percentile(log2, lin, 1000, 0.99, max_ns=210_000) == 210_000
    s = pb.latency_summary(log2, lin, 1000, 100, sum(values), 210_000)
    assert (s["p50"], s["p90"], s["p99"], s["p999"]) == (1510.2, 1918.4, 210000.0, 210000.0)
    # a log2 bucket that straddles the bound: its linear-range samples are not overflow
    values = [150_000] * 50 + [250_000] * 50  # both in log2 bucket [131072, 262144)
    log2, lin = log2_of(values), linear_of(values, 1000, 200)
    assert pb.percentile(log2, lin, 1000, 0.5) == pytest.approx(151_000)
    assert pb.percentile(log2, lin, 1000, 0.75) == pytest.approx(200_000 + 62_144 * 0.5)
    assert pb.percentile(log2, lin, 1000, 1.0) == pytest.approx(262_144)

def test_percentile_without_linear_and_empty() -> None:
    assert pb.percentile([0] * 65, [0] * 11, 1000, 0.5) is None
    log2 = log2_of([3, 3, 3, 3])  # slot 2 = [2, 4)
    assert pb.percentile(log2, [], 1000, 0.5) == pytest.approx(3)
    assert pb.percentile(log2, [], 1000, 0.25) == pytest.approx(2.5)


def test_latency_summary() -> None:
    values = [1000 + 10 * i for i in range(100)]
    s = pb.latency_summary(log2_of(values), linear_of(values, 1000, 10), 1000, 100,
                           sum(values), max(values))
    assert s["count"] == 100 and s["mean"] == pytest.approx(1495)
    assert (s["p50"], s["p90"], s["p99"], s["max"]) == (1500.0, 1900.0, 1990.0, 1990)
    assert s["p999"] == 1990.0  # 1999 interpolated, capped at the recorded maximum
    empty = pb.latency_summary([0] * 65, [0] * 11, 1000, 0, 0, 0)
    assert empty["count"] == 0 and empty["p50"] is None and empty["max"] is None


# --- the probes block from a snapshot of the maps ---

LIN_SLOTS = 200
P = {name: i for i, name in enumerate(probe_table.PROBES)}
TO_KERNEL, TO_USER = 0, 1
R = {name: i for i, name in enumerate(probe_table.RESULTS)}


def cell(values: list[int]) -> HistCell:
    """One CPU's hist row holding ``values`` (1000 ns linear steps, as the C records them)."""
    return HistCell(len(values), sum(values), max(values), log2_of(values),
                    linear_of(values, 1000, LIN_SLOTS))


def snapshot() -> MapSnapshot:
    return MapSnapshot(
        hist={hist_index(P["netlink_unicast"], TO_KERNEL): [cell([1500, 1500]), cell([2500])],
              hist_index(P["netlink_unicast"], TO_USER): [cell([3000])],
              hist_index(P["nlperf_input"], 0): [cell([4000])],
              hist_index(P["offcpu"], probe_table.ROLE_LAB): [cell([1_000_000])],
              hist_index(P["wakeup"], probe_table.ROLE_KTHREAD): [cell([7000])]},
        calls={calls_index(P["netlink_unicast"], TO_KERNEL, R["ok"]): [2, 1],
               calls_index(P["netlink_unicast"], TO_KERNEL, R["EAGAIN"]): [0, 2],
               calls_index(P["netlink_unicast"], TO_USER, R["ok"]): [1, 0],
               calls_index(P["netlink_broadcast"], TO_USER, R["ESRCH"]): [0, 3]},
        by_proc={(100, 0): [4, 1], (101, 0): [0, 1], (100, 1): [3, 0]},
        overruns={7001: [1, 2]},
        deliveries={7001: [5, 0], 7002: [0, 4]},
        sched_cnt={100: (3, 1, 4), 101: (0, 2, 0), 555: (9, 9, 9)})


def settings(**kw: object) -> BlockSettings:
    base: dict[str, object] = dict(
        which=("unicast", "broadcast", "overrun", "sched", "module"), timing=True,
        by_process=True, deliveries=True, lin_step_ns=1000,
        attach_kinds={"netlink_unicast": "fentry/fexit", "netlink_broadcast": "fentry/fexit"},
        notes=("a note",), compile_s=1.234, attach_s=0.5, pids=(100, 101), kthread_pid=None)
    base.update(kw)
    return BlockSettings(**base)  # type: ignore[arg-type]


def lat(count: int, mean: float, p50: float, p90: float, p99: float, p999: float,
        mx: int) -> dict[str, object]:
    return {"count": count, "mean": mean, "p50": p50, "p90": p90, "p99": p99, "p999": p999,
            "max": mx}


def test_probes_block_from_a_snapshot() -> None:
    block = pb.probes_block(settings(), snapshot())
    # to_kernel: 1500, 1500 | 2500 over two CPUs; kernel_to_user: 3000; capped at the maximum
    to_kernel = lat(3, 1833.3, 1750.0, 2500.0, 2500.0, 2500.0, 2500)
    to_user = lat(1, 3000.0, 3000.0, 3000.0, 3000.0, 3000.0, 3000)
    assert block == {
        "attach": {"netlink_unicast": "fentry/fexit", "netlink_broadcast": "fentry/fexit"},
        "timing": True, "compile_s": 1.23, "attach_s": 0.5, "notes": ["a note"],
        "netlink_unicast": {
            "calls": 6, "results": {"ok": 4, "EAGAIN": 2, "ENOBUFS": 0, "ESRCH": 0,
                                    "ECONNREFUSED": 0, "other": 0},
            "by_direction": {
                "to_kernel": {"calls": 5, "results": {"ok": 3, "EAGAIN": 2},
                              "latency_ns": to_kernel},
                "kernel_to_user": {"calls": 1, "results": {"ok": 1}, "latency_ns": to_user}},
            "by_process": {"100": 5, "101": 1},
            "latency_ns": lat(4, 2125.0, 2000.0, 3000.0, 3000.0, 3000.0, 3000)},
        "netlink_broadcast": {
            "calls": 3, "results": {"ok": 0, "EAGAIN": 0, "ENOBUFS": 0, "ESRCH": 3,
                                    "ECONNREFUSED": 0, "other": 0},
            "by_direction": {"kernel_to_user": {"calls": 3, "results": {"ESRCH": 3},
                                                "latency_ns": None}},
            "by_process": {"100": 3}, "latency_ns": None},
        "netlink_overrun": {"total": 3, "by_socket": {"7001": 3}},
        "deliveries": {"total": 9, "by_socket": {"7001": 5, "7002": 4}},
        "sched": {
            "lab": {"voluntary": 3, "involuntary": 3, "wakeups": 4,
                    "by_pid": {"100": {"voluntary": 3, "involuntary": 1, "wakeups": 4},
                               "101": {"voluntary": 0, "involuntary": 2, "wakeups": 0}},
                    # 1 ms lies past the linear range: the log2 bucket [2^19, 2^20) answers
                    "blocked_ns": lat(1, 1e6, 786432.0, 996147.2, 1e6, 1e6, 1_000_000),
                    "wakeup_to_run_ns": None},
            "kthread": None,
            "workqueue": {"count": 0}},
        "module": {"nlperf_input": lat(1, 4000.0, 4000.0, 4000.0, 4000.0, 4000.0, 4000),
                   "nlperf_process": {"count": 0}},
    }
    assert list(block["sched"]["lab"]["by_pid"]) == ["100", "101"]  # in watch() order


def test_probes_block_counters_only_with_a_kthread() -> None:
    s = settings(timing=False, by_process=False, deliveries=False, notes=(), kthread_pid=555,
                 which=("unicast", "overrun", "sched", "module"),
                 attach_kinds={"netlink_unicast": "fexit",
                               "netlink_broadcast_filtered": "fexit"})
    snap = snapshot()
    snap.by_proc = None
    block = pb.probes_block(s, snap)
    assert "notes" not in block and "netlink_broadcast" not in block
    uc = block["netlink_unicast"]
    assert uc["by_process"] is None and uc["latency_ns"] is None
    assert uc["by_direction"]["to_kernel"] == {"calls": 5, "results": {"ok": 3, "EAGAIN": 2}}
    assert block["deliveries"] is None
    assert block["module"] == {"nlperf_input": None, "nlperf_process": None}
    assert block["sched"]["kthread"] == {
        "voluntary": 9, "involuntary": 9, "wakeups": 9, "pid": 555,
        "wakeup_to_run_ns": lat(1, 7000.0, 7000.0, 7000.0, 7000.0, 7000.0, 7000),
        "blocked_ns": None}
    # the filtered broadcast appears when attached (6.8+), even with no calls
    both = pb.probes_block(settings(attach_kinds={"netlink_broadcast_filtered": "fexit"}),
                           snapshot())
    assert both["netlink_broadcast_filtered"]["calls"] == 0


def test_probes_block_when_the_work_function_is_unseen() -> None:
    block = pb.probes_block(settings(workqueue_measured=False), snapshot())
    assert block["sched"]["workqueue"] is None  # not {"count": 0}
    assert pb.probes_block(settings(), snapshot())["sched"]["workqueue"] == {"count": 0}
    # pooled over a case: unknown in one repetition is unknown (null) for the case, not absent
    pooled = probe_pool.pool_probes({}, [block, pb.probes_block(settings(), snapshot())], [])
    assert pooled.document()["sched"]["workqueue"] is None
    summary = results.new_summary("t", "vm", "tcg", "6.1.0", "tsc").document()
    summary["cases"] = [{"id": "c", "params": {}, "repetitions": [{"index": 0, "probes": block}],
                         "probes": pooled.document()}]
    assert results.validation_errors(summary) == []


def test_probes_block_of_a_closed_session() -> None:
    assert pb.probes_block(settings(notes=()), None) == {
        "attach": {"netlink_unicast": "fentry/fexit", "netlink_broadcast": "fentry/fexit"},
        "timing": True, "compile_s": 1.23, "attach_s": 0.5}
    assert pb.histograms_block(None, 1000) == {}


def test_histograms_block() -> None:
    h = pb.histograms_block(snapshot(), 1000)
    assert h["linear_step_ns"] == 1000
    assert list(h["rows"]) == ["netlink_unicast/to_kernel", "netlink_unicast/kernel_to_user",
                               "nlperf_input/to_kernel", "wakeup/kthread", "offcpu/lab"]
    row = h["rows"]["netlink_unicast/to_kernel"]
    assert (row["count"], row["sum_ns"], row["max_ns"]) == (3, 5500, 2500)
    assert row["log2"] == [[1024, 2048, 2], [2048, 4096, 1]]
    assert row["linear"] == [0, 2, 1] + [0] * (LIN_SLOTS - 2)
    assert h["rows"]["offcpu/lab"]["linear"][-1] == 1  # the overflow bucket


def test_probes_block_reports_kretprobe_misses() -> None:
    snap = snapshot()
    snap.nmissed = {"netlink_unicast": 3, "nlperf_input": 0, "nlperf_process": None}
    block = pb.probes_block(settings(notes=()), snap)
    assert block["nmissed"] == {"netlink_unicast": 3, "nlperf_input": 0, "nlperf_process": None}
    assert block["notes"] == ["netlink_unicast: 3 returns missed by the kretprobe: those calls "
                              "are not counted, and a thread that misses several is not "
                              "counted again"]
    assert "nmissed" not in pb.probes_block(settings(), snapshot())  # no kretprobe attached
    snap.nmissed = {"netlink_unicast": 2, "nlperf_input": 5, "nlperf_process": 1}
    other = pb.probes_block(settings(notes=()), snap)
    pooled = probe_pool.pool_probes({}, [block, other], [])
    # summed over the repetitions; unknown in one of them: unknown for the case
    assert pooled.document()["nmissed"] == {"netlink_unicast": 5, "nlperf_input": 5,
                                            "nlperf_process": None}
    assert "nmissed" not in probe_pool.pool_probes({}, [pb.probes_block(settings(), snapshot())],
                                                   []).document()
    summary = results.new_summary("t", "vm", "tcg", "6.1.0", "tsc").document()
    summary["cases"] = [{"id": "c", "params": {}, "repetitions": [
        {"index": 0, "probes": block}, {"index": 1, "probes": other}],
        "probes": pooled.document()}]
    assert results.validation_errors(summary) == []
    block["nmissed"]["netlink_unicast"] = -1
    assert [e.split(":")[0] for e in results.validation_errors(summary)] == [
        "cases/0/repetitions/0/probes/nmissed/netlink_unicast"]


def test_kprobe_profile_and_bcc_event_names() -> None:
    text = ("  r_netlink_unicast_bcc_812                         1200            14\n"
            "  p_other                                               5             0\n"
            "garbage line\n")
    assert probe_kernel.kprobe_misses(text) == {"r_netlink_unicast_bcc_812": 14, "p_other": 0}
    assert probe_kernel.bcc_kretprobe_event("nlperf_input", 812) == "r_nlperf_input_bcc_812"


def test_ksym_addr() -> None:
    text = ("ffffffff81000000 T netlink_unicast\n"
            "ffffffffc0001000 t nlperf_work_fn\t[nlperf]\n"
            "0000000000000000 t hidden_fn\n")
    assert probe_kernel.ksym_addr("netlink_unicast", text=text) == 0xFFFFFFFF81000000
    assert probe_kernel.ksym_addr("nlperf_work_fn", "nlperf", text=text) == 0xFFFFFFFFC0001000
    assert probe_kernel.ksym_addr("nlperf_work_fn", "other", text=text) is None
    # kptr_restrict zeroes addresses: listed (attach by name works), address unknown
    assert probe_kernel.ksym_addr("hidden_fn", text=text) == 0
    assert probe_kernel.ksym_addr("missing", text=text) is None




OFFSETS = {("sock", "sk_protocol"): 516, ("sock", "sk_socket"): 624,
           ("socket_alloc", "vfs_inode"): 128, ("inode", "i_ino"): 64,
           ("netlink_sock", "flags"): 776, ("task_struct", "pid"): 2416,
           ("task_struct", "__state"): 24, ("work_struct", "func"): 24}


def test_cflags_are_defines() -> None:
    flags = probe_build.cflags(31, OFFSETS, "6.1.0-56-amd64")
    assert all(f.startswith("-D") for f in flags)
    d = dict(f[2:].split("=", 1) for f in flags)
    assert d["PROTO"] == "31" and d["OFF_SOCKET_INO"] == "192" and d["SWITCH_STATE_ARG"] == "1"
    assert "-DSWITCH_STATE_ARG=0" in probe_build.cflags(31, OFFSETS, "5.10.0-1-amd64")
    off = probe_build.cflags(31, OFFSETS, "6.1.0", timing=False)
    assert "-DTIMING=0" in off and "-DBY_PROCESS=0" in off  # per-process counts follow timing
    assert "-DBY_PROCESS=1" in probe_build.cflags(31, OFFSETS, "6.1.0", timing=False,
                                                  by_process=True)
    assert d["BY_PROCESS"] == "1" and d["TASK_STORAGE"] == "1"
    assert "-DTASK_STORAGE=0" in probe_build.cflags(31, OFFSETS, "5.10.0-1-amd64")


def test_cflags_name_missing_fields() -> None:
    bad = {k: v for k, v in OFFSETS.items() if k != ("netlink_sock", "flags")}
    with pytest.raises(RunFailed, match=r"netlink_sock\.flags"):
        probe_build.cflags(31, bad, "6.1.0")


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


def test_a_module_symbol_is_read_from_kallsyms_once_then_from_its_sections_base(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kallsyms costs ~0.4 s under emulation; the symbol's offset in its section does not move
    between loads of one .ko."""
    kallsyms = tmp_path / "kallsyms"
    sections = tmp_path / "sys" / "nlperf" / "sections"
    sections.mkdir(parents=True)
    monkeypatch.setattr(probe_kernel, "KALLSYMS", kallsyms)
    monkeypatch.setattr(probe_kernel, "SYS_MODULE", tmp_path / "sys")
    reads: list[int] = []
    real_read = probe_kernel.ksym_addr

    def counting(name: str, module: str | None = None, text: str | None = None) -> int | None:
        reads.append(1)
        return real_read(name, module, text)

    monkeypatch.setattr(probe_kernel, "ksym_addr", counting)

    def load(text_base: int, init_base: int) -> None:  # what a load shows
        (sections / ".text").write_text(f"0x{text_base:x}\n")
        (sections / ".init.text").write_text(f"0x{init_base:x}\n")
        (sections / ".rodata").write_text(f"0x{text_base + 0x9000:x}\n")
        kallsyms.write_text(f"ffffffff81000000 T netlink_unicast\n"
                            f"{text_base + 0x1234:x} t nlperf_work_fn\t[nlperf]\n")

    sym = probe_kernel.ModuleSymbol("nlperf_work_fn", "nlperf")
    load(0xFFFFFFFFC0100000, 0xFFFFFFFFC0000000)
    assert sym.address() == 0xFFFFFFFFC0101234 and len(reads) == 1
    load(0xFFFFFFFFC0700000, 0xFFFFFFFFC0800000)  # reloaded elsewhere
    assert sym.address() == 0xFFFFFFFFC0701234 and len(reads) == 1  # from .text's new base
    # not root: sections read 0, and every lookup reads kallsyms again
    for f in sections.iterdir():
        f.write_text("0x0\n")
    assert sym.address() == 0xFFFFFFFFC0701234 and len(reads) == 2
    # a module not loaded: no sections, no symbol
    for f in sections.iterdir():
        f.unlink()
    kallsyms.write_text("ffffffff81000000 T netlink_unicast\n")
    assert sym.address() is None
