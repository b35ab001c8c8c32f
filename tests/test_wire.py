"""The Python wire mirror agrees with kmod/nlperf_uapi.h, byte for byte."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from nlperf import wire

UAPI = Path(__file__).resolve().parent.parent / "kmod" / "nlperf_uapi.h"

STRUCTS = {
    "nlperf_stamp": (wire.STAMP, wire.STAMP_FIELDS),
    "nlperf_relay_req": (wire.RELAY_REQ, wire.RELAY_REQ_FIELDS),
    "nlperf_gen_req": (wire.GEN_REQ, wire.GEN_REQ_FIELDS),
    "nlperf_group_stats": (wire.GROUP_STATS, wire.GROUP_STATS_FIELDS),
    "nlperf_stats": (wire.STATS_HEAD, wire.STATS_FIELDS),
}


def python_offsets(st: struct.Struct, names: tuple[str, ...]) -> dict[str, int]:
    """Offsets of each field of a packed ("=") struct format, by declaration order."""
    codes = re.findall(r"(\d*)([a-zA-Z?])", st.format.lstrip("=<>!@"))
    assert len(codes) == len(names), f"{st.format} has {len(codes)} fields, names {len(names)}"
    offsets, pos = {}, 0
    for (count, code), name in zip(codes, names, strict=True):
        offsets[name] = pos
        pos += struct.calcsize("=" + count + code)
    return offsets


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    src = ['#include <stdio.h>', '#include <stddef.h>', f'#include "{UAPI}"', "int main(void) {"]
    for name, (_, fields) in STRUCTS.items():
        src.append(f'printf("{name} %zu\\n", sizeof(struct {name}));')
        for f in fields:
            src.append(f'printf("{name}.{f} %zu\\n", offsetof(struct {name}, {f}));')
    consts = ["NLPERF_WIRE_VERSION", "NLPERF_PROTO_DEFAULT", "NLPERF_MAX_GROUPS",
              "NLPERF_STAMP_F_END", "NLPERF_MSG_ECHO", "NLPERF_MSG_TIMED_ECHO",
              "NLPERF_MSG_SINK", "NLPERF_MSG_RELAY", "NLPERF_MSG_GEN_START",
              "NLPERF_MSG_GEN_STOP", "NLPERF_MSG_STATS_GET", "NLPERF_MSG_STATS_RESET",
              "NLPERF_MSG_MCAST_DATA", "NLPERF_MODE_CALLBACK", "NLPERF_MODE_KTHREAD",
              "NLPERF_MODE_WORKQUEUE", "NLPERF_ALLOC_KERNEL", "NLPERF_ALLOC_ATOMIC"]
    for c in consts:
        src.append(f'printf("{c} %ld\\n", (long){c});')
    src.append("return 0; }")
    d = tmp_path_factory.mktemp("layout")
    (d / "layout.c").write_text("\n".join(src))
    subprocess.run(["cc", "-Wall", "-Werror", "-o", str(d / "layout"), str(d / "layout.c")],
                   check=True)
    out = subprocess.run([str(d / "layout")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("name", STRUCTS)
def test_struct_layout_matches_header(c_layout: dict[str, int], name: str) -> None:
    st, fields = STRUCTS[name]
    expected_size = wire.STATS_SIZE if name == "nlperf_stats" else st.size
    assert c_layout[name] == expected_size
    for field, off in python_offsets(st, fields).items():
        assert c_layout[f"{name}.{field}"] == off, f"{name}.{field}"


def test_constants_match_header(c_layout: dict[str, int]) -> None:
    pairs = {
        "NLPERF_WIRE_VERSION": wire.WIRE_VERSION, "NLPERF_PROTO_DEFAULT": wire.PROTO_DEFAULT,
        "NLPERF_MAX_GROUPS": wire.MAX_GROUPS, "NLPERF_STAMP_F_END": wire.STAMP_F_END,
        "NLPERF_MSG_ECHO": wire.MSG_ECHO, "NLPERF_MSG_TIMED_ECHO": wire.MSG_TIMED_ECHO,
        "NLPERF_MSG_SINK": wire.MSG_SINK, "NLPERF_MSG_RELAY": wire.MSG_RELAY,
        "NLPERF_MSG_GEN_START": wire.MSG_GEN_START, "NLPERF_MSG_GEN_STOP": wire.MSG_GEN_STOP,
        "NLPERF_MSG_STATS_GET": wire.MSG_STATS_GET,
        "NLPERF_MSG_STATS_RESET": wire.MSG_STATS_RESET,
        "NLPERF_MSG_MCAST_DATA": wire.MSG_MCAST_DATA,
        "NLPERF_MODE_CALLBACK": wire.MODE_CALLBACK, "NLPERF_MODE_KTHREAD": wire.MODE_KTHREAD,
        "NLPERF_MODE_WORKQUEUE": wire.MODE_WORKQUEUE,
        "NLPERF_ALLOC_KERNEL": wire.ALLOC_KERNEL, "NLPERF_ALLOC_ATOMIC": wire.ALLOC_ATOMIC,
    }
    for name, value in pairs.items():
        assert c_layout[name] == value, name


def test_stats_roundtrip_decodes_groups_and_name() -> None:
    head = wire.STATS_HEAD.pack(wire.WIRE_VERSION, wire.STATS_SIZE, wire.MODE_WORKQUEUE, 31,
                                0, 0, 1024, 3, 7, 10, 9, 8, 1, 0, 0, 0, 0, 0, 2, 3, 0,
                                b"nlperf_wq")
    groups = bytearray(wire.MAX_GROUPS * wire.GROUP_STATS.size)
    wire.GROUP_STATS.pack_into(groups, 2 * wire.GROUP_STATS.size, 5, 0, 4, 1, 0, 0)
    stats = wire.Stats.unpack(head + bytes(groups))
    assert stats.fields["mode"] == "workqueue"
    assert stats.fields["wq_name"] == "nlperf_wq"
    assert stats.fields["skbs_held"] == 3
    assert stats.groups == {3: {"relay_sent": 5, "gen_sent": 0, "bcast_ok": 4, "bcast_esrch": 1,
                                "bcast_enobufs": 0, "bcast_other": 0}}


def test_stats_with_wrong_size_is_refused() -> None:
    head = wire.STATS_HEAD.pack(wire.WIRE_VERSION, 99, 0, 31, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                0, 0, 0, 0, 0, 0, b"")
    with pytest.raises(ValueError, match="size 99"):
        wire.Stats.unpack(head + bytes(wire.MAX_GROUPS * wire.GROUP_STATS.size))


def test_nlmsg_pads_to_four_bytes_and_groups_mask() -> None:
    msg = wire.nlmsg(wire.MSG_ECHO, b"abcde", seq=7)
    assert len(msg) == 24
    assert wire.NLMSGHDR.unpack_from(msg) == (21, wire.MSG_ECHO, wire.NLM_F_REQUEST, 7, 0)
    assert wire.groups_mask([1, 3, 32]) == 0x80000005
    with pytest.raises(ValueError):
        wire.groups_mask([0])
