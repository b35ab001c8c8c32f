"""The module's tracepoints, without a VM: the header, the module and the probe suite agree on
them, and the module built for each lab kernel carries them (tests/vm/test_tracepoints.py
watches them fire)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from nlperf import kmod
from nlperf.paths import BPF_SRC, KMOD_SRC
from nlperf.probe_attach import MODULE_TRACEPOINTS, ProbeAttaching
from nlperf.targets import vm

TRACE_HEADER = KMOD_SRC / "nlperf_trace.h"
_EVENT = re.compile(r"^(?:TRACE_EVENT\((\w+)|DEFINE_EVENT\(\w+,\s*(\w+)),\s*TP_PROTO\(([^)]*)\)",
                    re.MULTILINE)


def trace_events(text: str | None = None) -> dict[str, tuple[str, ...]]:
    """Event name -> its TP_PROTO argument names in order (a raw tracepoint's args[i]), from
    kmod/nlperf_trace.h."""
    text = TRACE_HEADER.read_text() if text is None else text
    return {m[1] or m[2]: tuple(a.split()[-1] for a in m[3].split(","))
            for m in _EVENT.finditer(text)}


def test_the_header_declares_the_events_and_their_arguments() -> None:
    assert trace_events() == {
        "nlperf_datagram_start": ("len", "portid"),
        "nlperf_datagram_end": ("len", "portid"),
        "nlperf_input": ("type", "len", "portid", "capable"),
        "nlperf_enqueue": ("depth", "result"),
        "nlperf_process_start": ("type",),
        "nlperf_process_end": ("type", "result"),
        "nlperf_reply": ("bytes", "result"),
    }


def test_the_module_fires_every_event_and_no_other() -> None:
    calls = set(re.findall(r"\btrace_(nlperf_\w+)\(", (KMOD_SRC / "nlperf.c").read_text()))
    assert calls == set(trace_events())


def test_the_probe_suite_times_the_module_from_its_events() -> None:
    bpf = (BPF_SRC / "netlink.bpf.c").read_text()
    assert set(MODULE_TRACEPOINTS) == {"nlperf_input", "nlperf_process"}
    for start, end in MODULE_TRACEPOINTS.values():
        for tp in (start, end):
            assert tp in trace_events()
            assert f"RAW_TRACEPOINT_PROBE({tp})" in bpf


def _lab_releases() -> list[str]:
    return [k.release for k in vm.lab_kernels()]


@pytest.mark.parametrize("release", _lab_releases())
def test_the_module_built_for_each_lab_kernel_carries_its_tracepoints(tmp_path: Path,
                                                                     release: str) -> None:
    """Kbuild finds the header again through TRACE_INCLUDE_PATH (-I$(src)), and the module has
    a tracepoint and a raw-tracepoint map entry (what BPF attaches by name) per event."""
    ko = kmod.build(release, build_dir=tmp_path / "build", log=tmp_path / "build.log")
    symbols = subprocess.run(["nm", str(ko)], capture_output=True, text=True, check=True).stdout
    have = set(re.findall(r" __tracepoint_(nlperf_\w+)$", symbols, re.MULTILINE))
    assert have == set(trace_events())
    sections = subprocess.run(["readelf", "-S", "--wide", str(ko)], capture_output=True,
                              text=True, check=True).stdout
    assert "__bpf_raw_tp_map" in sections


class FakeBPF:
    """Records attach/detach calls; raw tracepoints named in ``missing`` do not exist."""

    def __init__(self, missing: set[str]) -> None:
        self.missing = missing
        self.live: set[tuple[str, str]] = set()

    def attach_raw_tracepoint(self, tp: bytes, fn_name: bytes) -> None:
        if tp.decode() in self.missing:
            raise Exception(f"Failed to attach BPF to raw tracepoint {tp.decode()}")
        self.live.add(("raw_tracepoint", tp.decode()))

    def detach_raw_tracepoint(self, tp: bytes) -> None:
        self.live.remove(("raw_tracepoint", tp.decode()))

    def attach_kprobe(self, event: bytes, fn_name: bytes) -> None:
        self.live.add(("kprobe", event.decode()))

    def attach_kretprobe(self, event: bytes, fn_name: bytes, maxactive: int = 0) -> None:
        self.live.add(("kretprobe", event.decode()))

    def detach_kprobe(self, event: bytes, fn_name: bytes) -> None:
        self.live.remove(("kprobe", event.decode()))

    def detach_kretprobe(self, event: bytes, fn_name: bytes) -> None:
        self.live.remove(("kretprobe", event.decode()))


def attaching(bpf: FakeBPF, module_tracepoints: bool = True) -> ProbeAttaching:
    a = ProbeAttaching()
    a.which, a.timing, a.module_tracepoints = ["module"], True, module_tracepoints
    a.attach_kinds, a.notes, a._bpf = {}, [], bpf
    a._attached, a._module_attached, a._kret_events, a._missed_base = [], [], {}, {}
    return a


def test_module_timing_attaches_the_tracepoint_pairs_and_detaches_them() -> None:
    bpf = FakeBPF(missing=set())
    a = attaching(bpf)
    a.attach_module()
    assert a.attach_kinds == {"nlperf_input": "raw_tracepoint", "nlperf_process": "raw_tracepoint"}
    assert bpf.live == {("raw_tracepoint", tp) for pair in MODULE_TRACEPOINTS.values()
                        for tp in pair}
    assert a.notes == []
    a.detach_module()
    assert bpf.live == set()


def test_a_module_without_its_tracepoints_is_timed_by_kprobes_and_says_so() -> None:
    """Half a pair never stays attached: the start is detached again when the end fails."""
    bpf = FakeBPF(missing={"nlperf_process_end"})
    a = attaching(bpf)
    a.attach_module()
    assert a.attach_kinds == {"nlperf_input": "raw_tracepoint",
                              "nlperf_process": "kprobe/kretprobe"}
    assert bpf.live == {("raw_tracepoint", "nlperf_datagram_start"),
                        ("raw_tracepoint", "nlperf_datagram_end"),
                        ("kprobe", "nlperf_process"), ("kretprobe", "nlperf_process")}
    assert a.notes == ["nlperf_process: the module's tracepoints did not attach (Failed to "
                       "attach BPF to raw tracepoint nlperf_process_end); kprobes used"]
    a.detach_module()
    assert bpf.live == set()


def test_the_fallback_can_be_asked_for() -> None:
    bpf = FakeBPF(missing=set())
    a = attaching(bpf, module_tracepoints=False)
    a.attach_module()
    assert set(a.attach_kinds.values()) == {"kprobe/kretprobe"}
    assert {kind for kind, _ in bpf.live} == {"kprobe", "kretprobe"}
