"""What this machine can do, found by trying: host target, lab VM, or neither.

Feature flags lie here (BCC's ``support_kfunc()`` says True on a kernel that refuses every fentry
load with EPERM), so the probe checks load a trivial BPF program through the raw ``bpf(2)``
syscall (:mod:`nlperf.bpfsys`) and attach it to ``netlink_unicast``, the function the lab traces.
Every ``check_*`` returns a :class:`Check` and never raises; only :func:`pick_target` raises,
because it answers a user's request.

The same code runs inside the lab VM guest, so nothing here may assume the host's PATH, kernel or
mounts.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nlperf.bpfsys import ProbeError, errname, probe_fentry, probe_kprobe
from nlperf.btf import VMLINUX_BTF, vmlinux_func_id
from nlperf.errors import BadInput, RunFailed
from nlperf.targets.vm import SETUP_HINT, kvm_usable, lab_kernels

PROBE_FUNC = "netlink_unicast"
TRACEFS = Path("/sys/kernel/tracing")
VM_HINT = "use --target vm"
TARGETS = ("auto", "host", "vm")

# What the host target needs, in the order the reason line names them. kprobes and fentry are
# alternatives: the probes fall back from one to the other.
HOST_NEEDS = ("root", "module loading", "kernel headers", "BCC", "tracefs")
PROBE_CHECKS = ("kprobes", "fentry")
VM_NEEDS = ("qemu", "virtme-ng", "lab kernels")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None


# --- checks --------------------------------------------------------------------------------------


def _never_raises(name: str) -> Callable[[Callable[[], Check]], Callable[[], Check]]:
    """A check that crashes still yields a Check, so one bug cannot hide the others."""
    def wrap(fn: Callable[[], Check]) -> Callable[[], Check]:
        @functools.wraps(fn)
        def run() -> Check:
            try:
                return fn()
            except Exception as e:
                return Check(name, False, f"check crashed: {e!r}", "report this as an nlperf bug")
        return run
    return wrap


def _ok(name: str, detail: str) -> Check:
    return Check(name, True, detail, None)


@_never_raises("root")
def check_root() -> Check:
    uid = os.geteuid()
    if uid == 0:
        return _ok("root", "running as root")
    return Check("root", False, f"running as uid {uid}", "run as root (sudo), or use --target vm")


def _check_module_loading(proc_modules: Path, disabled: Path) -> Check:
    name = "module loading"
    if not proc_modules.exists():
        return Check(name, False, f"no {proc_modules}: kernel built without CONFIG_MODULES",
                     VM_HINT)
    try:
        value = disabled.read_text().strip()
    except OSError as e:
        return Check(name, False, f"cannot read {disabled}: {e.strerror}", VM_HINT)
    if value != "0":
        return Check(name, False, f"{disabled} is {value}: loading locked until reboot", VM_HINT)
    return _ok(name, f"{proc_modules} present, modules_disabled 0")


@_never_raises("module loading")
def check_module_loading() -> Check:
    return _check_module_loading(Path("/proc/modules"), Path("/proc/sys/kernel/modules_disabled"))


def _probe_check(name: str, probe: Callable[[], str], fix: str) -> Check:
    try:
        return _ok(name, probe())
    except ProbeError as e:
        return Check(name, False, str(e), fix)


@_never_raises("kprobes")
def check_kprobes() -> Check:
    return _probe_check("kprobes", functools.partial(probe_kprobe, PROBE_FUNC),
                        "needs root and a kernel with CONFIG_KPROBES; or use --target vm")


@_never_raises("fentry")
def check_fentry() -> Check:
    return _probe_check("fentry", functools.partial(probe_fentry, PROBE_FUNC),
                        "needs root, BTF and CONFIG_FUNCTION_TRACER; the probes fall back to "
                        "kprobes, or use --target vm")


def _tracefs_mounted(mounts: Path = Path("/proc/mounts"), where: Path = TRACEFS) -> bool:
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return False
    return any(f[1:3] == [str(where), "tracefs"] for f in (ln.split() for ln in lines))


def _mount_tracefs(where: Path) -> str | None:
    """Mount tracefs; None on success, else the error. libc, not mount(8): the guest's PATH."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", str(where).encode(), b"tracefs", ctypes.c_ulong(0), None) == 0:
        return None
    return errname(ctypes.get_errno())


@_never_raises("tracefs")
def check_tracefs() -> Check:
    name, fix = "tracefs", f"mount -t tracefs nodev {TRACEFS} (as root)"
    events = TRACEFS / "events" / "sched"
    how = "mounted"
    if not events.is_dir() and not _tracefs_mounted():
        if os.geteuid() != 0:
            return Check(name, False, f"{TRACEFS} not mounted and not root to mount it", fix)
        if not TRACEFS.is_dir():
            return Check(name, False, f"no {TRACEFS}: kernel built without CONFIG_TRACING?",
                         VM_HINT)
        err = _mount_tracefs(TRACEFS)
        if err:
            return Check(name, False, f"mount tracefs at {TRACEFS} failed: {err}", fix)
        how = "mounted by this check"
    if not events.is_dir():
        return Check(name, False, f"tracefs at {TRACEFS} has no events/sched", VM_HINT)
    return _ok(name, f"{TRACEFS} {how}, events/sched present")


@_never_raises("BTF")
def check_btf() -> Check:
    fix = "needs a kernel with CONFIG_DEBUG_INFO_BTF; the probes fall back to kprobes"
    try:
        btf_id = vmlinux_func_id(VMLINUX_BTF, PROBE_FUNC)
    except OSError as e:
        return Check("BTF", False, f"no {VMLINUX_BTF}: {e.strerror}", fix)
    except ValueError as e:
        return Check("BTF", False, f"{VMLINUX_BTF} unreadable: {e}", fix)
    if btf_id is None:
        return Check("BTF", False, f"{VMLINUX_BTF} has no FUNC {PROBE_FUNC}", fix)
    return _ok("BTF", f"{VMLINUX_BTF}: {PROBE_FUNC} is FUNC id {btf_id}")


@_never_raises("kernel headers")
def check_headers() -> Check:
    release = os.uname().release
    build = Path("/lib/modules") / release / "build"
    if build.is_dir():
        return _ok("kernel headers", f"{build} present")
    return Check("kernel headers", False, f"no {build}",
                 f"install linux-headers-{release}, or use --target vm")


@_never_raises("BCC")
def check_bcc() -> Check:
    try:
        import bcc  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except Exception as e:  # libbcc load failures surface as OSError, not only ImportError
        return Check("BCC", False, f"import bcc fails in {sys.executable}: {e}",
                     "run through the project venv made by `make setup` (/usr/bin/python3 -m "
                     "venv --system-site-packages): python3-bpfcc serves only /usr/bin/python3")
    version = getattr(bcc, "__version__", "?")
    return _ok("BCC", f"bcc {version} imports in {sys.executable}")


def find_tool(name: str) -> Path | None:
    """``name`` on PATH, else next to this interpreter: the venv's bin is off PATH in the guest."""
    found = shutil.which(name)
    if found:
        return Path(found)
    # Not resolved: the venv's python is a symlink to /usr/bin, and the tools live in the venv.
    beside = Path(sys.executable).parent / name
    return beside if os.access(beside, os.X_OK) else None


@_never_raises("qemu")
def check_qemu() -> Check:
    path = find_tool("qemu-system-x86_64")
    if path:
        return _ok("qemu", f"qemu-system-x86_64 at {path}")
    return Check("qemu", False, "qemu-system-x86_64 not found",
                 "make setup installs qemu-system-x86")


@_never_raises("virtme-ng")
def check_vng() -> Check:
    tools = {t: find_tool(t) for t in ("vng", "virtme-run")}
    missing = [t for t, p in tools.items() if p is None]
    if missing:
        return Check("virtme-ng", False, f"not found on PATH or beside {sys.executable}: "
                     f"{', '.join(missing)}", "make setup installs virtme-ng into the project venv")
    return _ok("virtme-ng", ", ".join(f"{t} at {p}" for t, p in tools.items()))


@_never_raises("KVM")
def check_kvm() -> Check:
    ok, reason = kvm_usable()
    if ok:
        return _ok("KVM", reason)
    return Check("KVM", False, reason, "the VM runs under TCG (slower); NLPERF_ACCEL=kvm forces "
                 "KVM where it is known to work")


@_never_raises("lab kernels")
def check_lab_kernels() -> Check:
    kernels = lab_kernels()
    if not kernels:
        return Check("lab kernels", False,
                     "no /boot/vmlinuz-<release> with /lib/modules/<release>/build", SETUP_HINT)
    return _ok("lab kernels", ", ".join(k.release for k in kernels))


ALL_CHECKS: tuple[Callable[[], Check], ...] = (
    check_root, check_module_loading, check_kprobes, check_fentry, check_tracefs, check_btf,
    check_headers, check_bcc, check_qemu, check_vng, check_kvm, check_lab_kernels,
)


def run_checks() -> list[Check]:
    return [check() for check in ALL_CHECKS]


# --- target choice -------------------------------------------------------------------------------


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _ok_named(by: dict[str, Check], name: str) -> bool:
    c = by.get(name)
    return c is not None and c.ok


def host_capable(checks: list[Check]) -> tuple[bool, str]:
    """Whether the lab can run on this host, and a one-line reason naming what is missing."""
    by = _by_name(checks)
    probes = [n for n in PROBE_CHECKS if _ok_named(by, n)]
    missing = [n for n in HOST_NEEDS if not _ok_named(by, n)]
    if not probes:
        missing.append(" or ".join(PROBE_CHECKS))
    if missing:
        return False, f"host lacks {', '.join(_host_order(missing))}"
    return True, f"host has {', '.join(HOST_NEEDS)}; probes: {', '.join(probes)}"


def _host_order(names: list[str]) -> list[str]:
    # Kernel features first: they are the ones no package install can fix.
    order = ["module loading", "kprobes or fentry", "kernel headers", "tracefs", "BCC", "root"]
    return sorted(names, key=order.index)


def _vm_missing(by: dict[str, Check]) -> list[Check]:
    return [by.get(n) or Check(n, False, "not checked", None) for n in VM_NEEDS
            if not _ok_named(by, n)]


def _vm_reason(by: dict[str, Check]) -> str:
    kernel = by["lab kernels"].detail.split(",")[0]
    kvm = by.get("KVM")
    return f"lab kernel {kernel}, " + (kvm.detail if kvm else "accelerator not checked")


def _vm_failed(by: dict[str, Check], prefix: str) -> RunFailed:
    bad = _vm_missing(by)
    fixes = "; ".join(dict.fromkeys(c.fix for c in bad if c.fix))
    return RunFailed(f"{prefix}vm target not possible: "
                     + ", ".join(f"{c.name}: {c.detail}" for c in bad), hint=fixes or None)


def pick_target(requested: str, checks: list[Check] | None = None) -> tuple[str, str]:
    """Resolve ``--target auto|host|vm`` to host or vm, with a reason line for the run record."""
    if requested not in TARGETS:
        raise BadInput(f"unknown target {requested!r}; choose one of {', '.join(TARGETS)}")
    if checks is None:
        checks = run_checks()
    by = _by_name(checks)
    capable, why = host_capable(checks)
    if requested == "host":
        if not capable:
            raise RunFailed(f"host target not possible: {why}", hint=VM_HINT)
        return "host", f"host requested: {why}"
    if requested == "auto" and capable:
        return "host", f"auto picked host: {why}"
    if _vm_missing(by):
        prefix = f"{why}; " if requested == "auto" else ""
        raise _vm_failed(by, prefix)
    if requested == "auto":
        return "vm", f"auto picked vm: {why}; {_vm_reason(by)}"
    return "vm", f"vm requested: {_vm_reason(by)}"
