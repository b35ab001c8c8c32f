"""Fixtures for tests that need the module: they run inside the lab VM (``make test-vm``)."""

from __future__ import annotations

import platform
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nlperf import kmod, wire
from nlperf.targets.vm import in_lab_vm

PROTO = wire.PROTO_DEFAULT


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Only the throwaway lab VM may get the module: plain `pytest` as root on a workstation
    # must never load it into the host kernel, whatever that kernel can do.
    if not in_lab_vm():
        skip = pytest.mark.skip(reason="loads the module: runs only inside the lab VM "
                                       "(`make test-vm`)")
        for item in items:
            item.add_marker(skip)


def dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def ko() -> Path:
    return kmod.build(platform.release())


class Loaded:
    """The module loaded with given parameters; unloaded (never forced) afterwards."""

    def __init__(self, ko: Path) -> None:
        self.ko = ko

    def __call__(self, **params: object) -> None:
        kmod.unload()
        kmod.load(self.ko, kmod.validate_params({k: v for k, v in params.items()}))  # type: ignore[arg-type]


# Lab sockets pin the module: every socket a test opens is closed before the unload, also
# when the test failed half-way and its frame (kept by the traceback) still refers to them.
_OPEN: list[socket.socket] = []


def track(s: socket.socket) -> socket.socket:
    _OPEN.append(s)
    return s


# What a sound module never makes the kernel say. "soft lockup" is also a "BUG:" line today;
# named on its own so that a change of wording cannot hide it.
BAD_DMESG = ("WARNING:", "BUG:", "Oops", "general protection", "refcount_t", "soft lockup",
             "hung_task", "blocked for more than")


@pytest.fixture
def module(ko: Path) -> Iterator[Loaded]:
    before = dmesg()
    yield Loaded(ko)
    while _OPEN:
        _OPEN.pop().close()
    kmod.unload()
    new = dmesg()[len(before):]
    for bad in BAD_DMESG:
        assert bad not in new, f"dmesg shows {bad}:\n{new[-3000:]}"


def unloads_within(seconds: float) -> None:
    """rmmod succeeds, and within ``seconds``, once the lab's sockets are closed: nothing the
    module was doing (a full queue of slow work, a running generator) may hold it."""
    t0 = time.monotonic()
    kmod.unload(timeout=seconds)
    assert not kmod.is_loaded()
    assert time.monotonic() - t0 < seconds


def client(rcvbuf: int | None = None) -> socket.socket:
    s = track(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, PROTO))
    s.bind((0, 0))
    s.settimeout(5)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)
    return s


def parse_msgs(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """The messages of one datagram as (type, flags, seq, payload)."""
    out: list[tuple[int, int, int, bytes]] = []
    off = 0
    while off + wire.NLMSG_HDRLEN <= len(data):
        length, mtype, flags, seq, _ = wire.NLMSGHDR.unpack_from(data, off)
        out.append((mtype, flags, seq, data[off + wire.NLMSG_HDRLEN:off + length]))
        off += wire.pad4(length)
    return out


def recv_msgs(s: socket.socket, n: int) -> list[tuple[int, int, int, bytes]]:
    """n messages as (type, flags, seq, payload); fails on a timeout."""
    out: list[tuple[int, int, int, bytes]] = []
    while len(out) < n:
        out += parse_msgs(s.recv(1 << 17))
    return out


def error_of(payload: bytes) -> int:
    return -wire.NLMSGERR.unpack_from(payload)[0]
