"""The raw bpf(2) / perf_event_open(2) trials: attribute layout, failures before any syscall."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nlperf import bpfsys
from tests.test_btf import synthetic_btf


def test_linux_version_code() -> None:
    assert bpfsys.linux_version_code("6.1.0-56-amd64") == 0x060100
    assert bpfsys.linux_version_code("6.18.44-fc-v657") == (6 << 16) + (18 << 8) + 44
    assert bpfsys.linux_version_code("4.19.300") == (4 << 16) + (19 << 8) + 255
    assert bpfsys.linux_version_code("5.4") == 0x050400
    assert bpfsys.linux_version_code("weird") == 0


def test_prog_load_attr_layout() -> None:
    import ctypes

    insns = ctypes.create_string_buffer(bpfsys.TRIVIAL_PROG, 16)
    lic = ctypes.create_string_buffer(b"GPL")
    attr = bpfsys.prog_load_attr(26, insns, lic, kern_version=0x060100, expected_attach_type=24,
                              attach_btf_id=96758)
    raw = attr.raw
    assert len(raw) == 144
    assert struct.unpack_from("=II", raw, 0) == (26, 2)
    assert struct.unpack_from("=QQ", raw, 8) == (ctypes.addressof(insns), ctypes.addressof(lic))
    assert struct.unpack_from("=I", raw, 40)[0] == 0x060100
    assert struct.unpack_from("=I", raw, 68)[0] == 24
    assert struct.unpack_from("=I", raw, 108)[0] == 96758
    assert struct.unpack_from("=IIQ", raw, 24) == (0, 0, 0)  # no log unless asked


def test_probe_kprobe_without_pmu(tmp_path: Path) -> None:
    with pytest.raises(bpfsys.ProbeError, match="kprobe PMU missing"):
        bpfsys.probe_kprobe("netlink_unicast", pmu_type=tmp_path / "type")


def test_probe_fentry_without_btf(tmp_path: Path) -> None:
    with pytest.raises(bpfsys.ProbeError, match=r"no .*vmlinux"):
        bpfsys.probe_fentry("netlink_unicast", btf=tmp_path / "vmlinux")
    blob, _ = synthetic_btf()
    (tmp_path / "btf").write_bytes(blob)
    with pytest.raises(bpfsys.ProbeError, match="not a FUNC"):
        bpfsys.probe_fentry("nlperf_nothing", btf=tmp_path / "btf")
