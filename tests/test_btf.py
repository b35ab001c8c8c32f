"""BTF parsing on fabricated blobs (both byte orders, malformed ones) and on this kernel's."""

from __future__ import annotations

import struct

import pytest

from nlperf import btf


class BtfBuilder:
    """A minimal BTF blob writer, independent of the parser's trailer table."""

    def __init__(self, order: str = "<") -> None:
        self.order = order
        self.types = b""
        self.strings = b"\0"
        self.count = 0

    def name(self, s: str) -> int:
        off = len(self.strings)
        self.strings += s.encode() + b"\0"
        return off

    def add(self, kind: int, name: str = "", vlen: int = 0, size: int = 0,
            trailer: bytes = b"") -> int:
        name_off = self.name(name) if name else 0
        self.types += struct.pack(self.order + "III", name_off, (kind << 24) | vlen, size)
        self.types += trailer
        self.count += 1
        return self.count

    def blob(self) -> bytes:
        hdr = struct.pack(self.order + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types),
                          len(self.types), len(self.strings))
        return hdr + self.types + self.strings


def synthetic_btf(order: str = "<") -> tuple[bytes, int]:
    b = BtfBuilder(order)
    o = order
    i32 = b.add(1, "int", size=4, trailer=struct.pack(o + "I", 32))
    b.add(2, size=i32)  # PTR
    b.add(3, trailer=struct.pack(o + "III", i32, i32, 4))  # ARRAY
    b.add(4, "sk_buff", vlen=2, size=8, trailer=struct.pack(o + "6I", 0, i32, 0, 0, i32, 32))
    b.add(6, "e", vlen=2, size=4, trailer=struct.pack(o + "4I", 0, 1, 0, 2))  # ENUM
    proto = b.add(13, vlen=2, size=i32, trailer=struct.pack(o + "4I", 0, i32, 0, i32))
    b.add(14, "netlink_unicast", size=i32, trailer=struct.pack(o + "I", 0))  # a VAR, not a FUNC
    b.add(12, "netlink_unicast_foo", size=proto)  # a longer name must not match
    b.add(15, ".data", vlen=1, size=8, trailer=struct.pack(o + "3I", 7, 0, 4))  # DATASEC
    b.add(17, "tag", size=i32, trailer=struct.pack(o + "i", -1))  # DECL_TAG
    b.add(19, "e64", vlen=1, size=8, trailer=struct.pack(o + "3I", 0, 1, 2))  # ENUM64
    b.add(16, "double", size=8)  # FLOAT
    want = b.add(12, "netlink_unicast", size=proto)
    b.add(12, "after", size=proto)
    return b.blob(), want


@pytest.mark.parametrize("order", ["<", ">"])
def test_btf_find_func_synthetic(order: str) -> None:
    blob, want = synthetic_btf(order)
    assert want == 13
    assert btf.btf_find_func(blob, "netlink_unicast") == want
    assert btf.btf_find_func(blob, "after") == want + 1
    assert btf.btf_find_func(blob, "netlink_unicast_foo") == 8
    assert btf.btf_find_func(blob, "sk_buff") is None  # a STRUCT, not a FUNC
    assert btf.btf_find_func(blob, "missing") is None


def test_btf_find_func_malformed() -> None:
    blob, _ = synthetic_btf()
    with pytest.raises(ValueError, match="not BTF"):
        btf.btf_find_func(b"\0" * 32, "x")
    with pytest.raises(ValueError, match="too short"):
        btf.btf_find_func(blob[:10], "x")
    with pytest.raises(ValueError, match="past the end"):
        btf.btf_find_func(blob[:-5], "x")
    b = BtfBuilder()
    b.add(30, "future")
    with pytest.raises(ValueError, match="unknown kind 30"):
        btf.btf_find_func(b.blob(), "x")


@pytest.mark.skipif(not btf.VMLINUX_BTF.exists(), reason="kernel has no BTF")
def test_btf_find_func_real_vmlinux() -> None:
    data = btf.VMLINUX_BTF.read_bytes()
    func_id = btf.btf_find_func(data, "netlink_unicast")
    assert func_id is not None and func_id > 0
    assert btf.btf_find_func(data, "nlperf_no_such_function") is None
