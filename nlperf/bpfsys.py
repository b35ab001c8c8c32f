"""The raw ``bpf(2)`` and ``perf_event_open(2)`` syscalls behind the probe capability trials.

Feature flags lie (BCC's ``support_kfunc()`` says True on a kernel that refuses every fentry
load with EPERM), so the trials load a trivial BPF program and attach it, through libc's
``syscall()``: no compiler, BCC or libbpf is involved, and each failure names its step.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from nlperf.btf import VMLINUX_BTF, vmlinux_func_id

KPROBE_PMU_TYPE = Path("/sys/bus/event_source/devices/kprobe/type")

# (bpf, perf_event_open) syscall numbers; the lab VM is x86_64, the rest is for users' boxes.
_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}
BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_FENTRY = 24
BPF_ATTR_SIZE = 144  # sizeof(union bpf_attr) in 6.x uapi; the kernel accepts zeroed tails
PERF_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_SET_BPF = 0x40042408
# r0 = 0; exit: the smallest program every verifier accepts.
TRIVIAL_PROG = bytes.fromhex("b700000000000000" "9500000000000000")


class ProbeError(Exception):
    """One probe step failed; ``str()`` is the detail line of the Check."""

    def __init__(self, detail: str, err: int = 0) -> None:
        super().__init__(detail)
        self.errno = err


def linux_version_code(release: str) -> int:
    """LINUX_VERSION_CODE for a uname release such as ``6.1.0-56-amd64``."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        return 0
    major, minor, patch = (int(g or 0) for g in m.groups())
    # The kernel clamps the sublevel to 255 the same way (KERNEL_VERSION in version.h).
    return (major << 16) + (minor << 8) + min(patch, 255)


def errname(err: int) -> str:
    """``EPERM (Operation not permitted)``: the name and the text of an errno value."""
    return f"{errno.errorcode.get(err, str(err))} ({os.strerror(err)})"


class Syscalls:
    """The three syscalls the probes need, through libc so no compiler or BCC is involved."""

    def __init__(self) -> None:
        nums = _SYSCALLS.get(platform.machine())
        if nums is None:
            raise ProbeError(f"no bpf syscall numbers for {platform.machine()}")
        self.nr_bpf, self.nr_perf = nums
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._ioctl = libc.ioctl
        self._ioctl.restype = ctypes.c_int

    def _call(self, step: str, *args: int) -> int:
        # Every argument as c_long: syscall() is variadic, and a 32-bit int leaves the upper half
        # of the register undefined.
        ret = self._syscall(*(ctypes.c_long(a) for a in args))
        if ret < 0:
            err = ctypes.get_errno()
            raise ProbeError(f"{step} failed: {errname(err)}", err)
        return int(ret)

    def bpf(self, step: str, cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
        return self._call(step, self.nr_bpf, cmd, ctypes.addressof(attr), len(attr))

    def perf_event_open(self, step: str, attr: ctypes.Array[ctypes.c_char]) -> int:
        # pid -1, cpu 0: one CPU is enough to prove the attach; all CPUs would need one fd each.
        return self._call(step, self.nr_perf, ctypes.addressof(attr), -1, 0, -1,
                          PERF_FLAG_FD_CLOEXEC)

    def ioctl(self, step: str, fd: int, request: int, arg: int) -> None:
        if self._ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_long(arg)) < 0:
            err = ctypes.get_errno()
            raise ProbeError(f"{step} failed: {errname(err)}", err)


@contextlib.contextmanager
def _fds() -> Iterator[list[int]]:
    opened: list[int] = []
    try:
        yield opened
    finally:
        for fd in reversed(opened):
            with contextlib.suppress(OSError):
                os.close(fd)


def prog_load_attr(prog_type: int, insns: ctypes.Array[ctypes.c_char],
                   license_: ctypes.Array[ctypes.c_char], *, kern_version: int = 0,
                   expected_attach_type: int = 0, attach_btf_id: int = 0,
                   log: ctypes.Array[ctypes.c_char] | None = None) -> ctypes.Array[ctypes.c_char]:
    """``union bpf_attr`` for BPF_PROG_LOAD; offsets checked against linux/bpf.h (6.1 and 6.18)."""
    attr = ctypes.create_string_buffer(BPF_ATTR_SIZE)
    struct.pack_into("=IIQQ", attr, 0, prog_type, len(insns) // 8, ctypes.addressof(insns),
                     ctypes.addressof(license_))
    if log is not None:
        struct.pack_into("=IIQ", attr, 24, 1, len(log), ctypes.addressof(log))
    struct.pack_into("=I", attr, 40, kern_version)
    struct.pack_into("=I", attr, 68, expected_attach_type)
    struct.pack_into("=I", attr, 108, attach_btf_id)
    return attr


def _load(sys_: Syscalls, step: str, prog_type: int, **kw: int) -> int:
    insns = ctypes.create_string_buffer(TRIVIAL_PROG, len(TRIVIAL_PROG))
    lic = ctypes.create_string_buffer(b"GPL")
    try:
        return sys_.bpf(step, BPF_PROG_LOAD, prog_load_attr(prog_type, insns, lic, **kw))
    except ProbeError as e:
        if e.errno not in (errno.EINVAL, errno.EACCES):
            raise
        # Load again with the verifier log: its last line says why, EINVAL alone does not.
        log = ctypes.create_string_buffer(65536)
        with contextlib.suppress(ProbeError):
            fd = sys_.bpf(step, BPF_PROG_LOAD, prog_load_attr(prog_type, insns, lic, log=log, **kw))
            os.close(fd)
        # The log ends with statistics ("processed 0 insns ..."); the reason comes before them.
        lines = [ln for ln in log.value.decode(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith(("processed ", "verification time"))]
        raise ProbeError(f"{e}: {lines[-1]}" if lines else str(e), e.errno) from None


def probe_kprobe(func: str, pmu_type: Path = KPROBE_PMU_TYPE) -> str:
    """Load a kprobe program and attach it to ``func``; the detail line on success.

    Raises ProbeError naming the step that failed. Meant for ordinary functions such as
    netlink_unicast: a probe on something every path calls (seen: migrate_disable,
    __rcu_read_lock) wedged the TCG guest.
    """
    try:
        pmu = int(pmu_type.read_text())
    except (OSError, ValueError):
        raise ProbeError("kprobe PMU missing: CONFIG_KPROBES off") from None
    sys_ = Syscalls()
    with _fds() as fds:
        fds.append(_load(sys_, "BPF_PROG_LOAD (kprobe)", BPF_PROG_TYPE_KPROBE,
                         kern_version=linux_version_code(os.uname().release)))
        name = ctypes.create_string_buffer(func.encode())
        attr = ctypes.create_string_buffer(PERF_ATTR_SIZE)
        # type, size, config 0 (entry probe), sample_period 1, then config1 = kprobe_func.
        struct.pack_into("=IIQQ", attr, 0, pmu, PERF_ATTR_SIZE, 0, 1)
        struct.pack_into("=Q", attr, 56, ctypes.addressof(name))
        fds.append(sys_.perf_event_open(f"perf_event_open(kprobe {func})", attr))
        sys_.ioctl("PERF_EVENT_IOC_SET_BPF", fds[1], PERF_EVENT_IOC_SET_BPF, fds[0])
    return f"kprobe program attached to {func}"


def probe_fentry(func: str, btf: Path = VMLINUX_BTF) -> str:
    """Load an fentry program for ``func`` and attach it; the detail line on success.

    Raises ProbeError naming the step that failed.
    """
    try:
        btf_id = vmlinux_func_id(btf, func)
    except OSError as e:
        raise ProbeError(f"no {btf}: {e.strerror} (CONFIG_DEBUG_INFO_BTF off?)") from None
    except ValueError as e:
        raise ProbeError(f"{btf} unreadable: {e}") from None
    if btf_id is None:
        raise ProbeError(f"{func} is not a FUNC in {btf}")
    sys_ = Syscalls()
    with _fds() as fds:
        fds.append(_load(sys_, f"BPF_PROG_LOAD (fentry, btf id {btf_id})", BPF_PROG_TYPE_TRACING,
                         expected_attach_type=BPF_TRACE_FENTRY, attach_btf_id=btf_id))
        attr = ctypes.create_string_buffer(BPF_ATTR_SIZE)
        # name 0: a tracing program attaches to the target it was loaded for.
        struct.pack_into("=QI", attr, 0, 0, fds[0])
        fds.append(sys_.bpf("BPF_RAW_TRACEPOINT_OPEN (fentry attach)", BPF_RAW_TRACEPOINT_OPEN,
                            attr))
    return f"fentry program attached to {func} (btf id {btf_id})"
