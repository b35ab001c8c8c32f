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
from nlperf.probe_attach import MODULE_TRACEPOINTS
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
