"""The Python wire mirror agrees with kmod/nlperf_uapi.h, byte for byte."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from nlperf import kmod, wire

KMOD = Path(__file__).resolve().parent.parent / "kmod"
UAPI = KMOD / "nlperf_uapi.h"

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
