"""BTF, the kernel's own type information: find a function's type id and struct member offsets.

Read straight from the raw blob (``/sys/kernel/btf/vmlinux``), with no libbpf or bpftool: the
fentry capability trial needs the FUNC id of the function it attaches to, and the probes need
member offsets of kernel structs without including kernel headers.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F
BTF_KIND_FUNC = 12
# Bytes that follow the 12-byte struct btf_type, per kind: (fixed, per vlen entry), linux/btf.h.
_BTF_TRAILER: dict[int, tuple[int, int]] = {
    0: (0, 0), 1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0),
    8: (0, 0), 9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0),
    15: (0, 12), 16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12),
}


def _btf_sections(data: bytes) -> tuple[str, int, int, int]:
    """Byte order, type section bounds and string section start of a raw BTF blob."""
    if len(data) < 24:
        raise ValueError(f"BTF blob too short ({len(data)} bytes)")
    for order in "<>":
        if struct.unpack_from(order + "H", data, 0)[0] == BTF_MAGIC:
            break
    else:
        raise ValueError(f"not BTF: magic {data[:2].hex()}")
    _magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        order + "HBBIIIII", data, 0)
    types_start, types_end = hdr_len + type_off, hdr_len + type_off + type_len
    strs_start = hdr_len + str_off
    if types_end > len(data) or strs_start + str_len > len(data):
        raise ValueError("BTF header points past the end of the blob")
    return order, types_start, types_end, strs_start


def btf_find_func(data: bytes, name: str) -> int | None:
    """Type id of the BTF FUNC called ``name`` in a raw BTF blob, or None if it has none.

    Raises ValueError when the blob is not BTF or is cut short: the caller reports that as
    "BTF unreadable", which is a different fix from "function not in BTF".
    """
    order, types_start, types_end, strs_start = _btf_sections(data)
    wanted = name.encode() + b"\0"
    btf_type = struct.Struct(order + "III")
    pos, type_id = types_start, 0
    while pos < types_end:
        if pos + 12 > types_end:
            raise ValueError(f"BTF type {type_id + 1} cut short")
        name_off, info, _size = btf_type.unpack_from(data, pos)
        type_id += 1  # id 0 is void and is not stored
        kind = (info >> 24) & 0x1F
        if kind == BTF_KIND_FUNC and data.startswith(wanted, strs_start + name_off):
            return type_id
        try:
            fixed, per = _BTF_TRAILER[kind]
        except KeyError:
            raise ValueError(f"BTF type {type_id} has unknown kind {kind}") from None
        pos += 12 + fixed + per * (info & 0xFFFF)
    return None


BTF_KIND_STRUCT, BTF_KIND_UNION = 4, 5


def btf_member_offsets(data: bytes, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Byte offsets of ``(struct, member)`` pairs in a raw BTF blob, in one pass over the types.

    Members of anonymous struct/union members are found too (their offsets add up), as the C
    compiler sees them. Pairs not found are absent from the result; bitfield members are refused
    (they have no byte offset). Raises ValueError when the blob is not BTF, like btf_find_func.
    """
    order, types_start, types_end, strs = _btf_sections(data)
    names = {s.encode() for s, _ in wanted}
    btf_type = struct.Struct(order + "III")
    member = struct.Struct(order + "III")
    pos_of: list[int] = [0]  # type id -> position; id 0 is void
    found: dict[str, int] = {}  # struct name -> type id (the first complete one)
    pos = types_start
    while pos < types_end:
        if pos + 12 > types_end:
            raise ValueError(f"BTF type {len(pos_of)} cut short")
        name_off, info, _size = btf_type.unpack_from(data, pos)
        pos_of.append(pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind in (BTF_KIND_STRUCT, BTF_KIND_UNION) and name_off and vlen:
            end = data.find(b"\0", strs + name_off)
            name = data[strs + name_off:end]
            if name in names and name.decode() not in found:
                found[name.decode()] = len(pos_of) - 1
        try:
            fixed, per = _BTF_TRAILER[kind]
        except KeyError:
            raise ValueError(f"BTF type {len(pos_of) - 1} has unknown kind {kind}") from None
        pos += 12 + fixed + per * vlen

    def search(type_id: int, target: bytes, depth: int = 0) -> int | None:
        p = pos_of[type_id]
        _n, info, _s = btf_type.unpack_from(data, p)
        kind_flag = info >> 31
        for i in range(info & 0xFFFF):
            m_name, m_type, m_off = member.unpack_from(data, p + 12 + 12 * i)
            bits, bitfield = (m_off & 0xFFFFFF, m_off >> 24) if kind_flag else (m_off, 0)
            if m_name == 0 and depth < 8:
                # anonymous struct/union: look inside it (its type may sit behind modifiers)
                t = m_type
                while t and (btf_type.unpack_from(data, pos_of[t])[1] >> 24) & 0x1F in (
                        8, 9, 10, 11, 18):  # typedef, volatile, const, restrict, type_tag
                    t = btf_type.unpack_from(data, pos_of[t])[2]
                if t and (btf_type.unpack_from(data, pos_of[t])[1] >> 24) & 0x1F in (
                        BTF_KIND_STRUCT, BTF_KIND_UNION):
                    inner = search(t, target, depth + 1)
                    if inner is not None:
                        return bits // 8 + inner
                continue
            if data.startswith(target + b"\0", strs + m_name):
                if bitfield or bits % 8:
                    return None
                return bits // 8
        return None

    out: dict[tuple[str, str], int] = {}
    for s, m in wanted:
        if s in found:
            off = search(found[s], m.encode())
            if off is not None:
                out[(s, m)] = off
    return out


@functools.cache
def vmlinux_member_offsets(wanted: tuple[tuple[str, str], ...],
                           path: Path = VMLINUX_BTF) -> dict[tuple[str, str], int]:
    """btf_member_offsets on the running kernel's BTF; OSError/ValueError pass through."""
    return btf_member_offsets(path.read_bytes(), list(wanted))



@functools.cache
def vmlinux_func_id(path: Path, name: str) -> int | None:
    """btf_find_func on a BTF file; OSError/ValueError pass through.

    Cached: the 5 MB parse is visible under TCG, and the BTF and fentry checks both need it.
    """
    return btf_find_func(path.read_bytes(), name)
