"""The lab VM: Debian's distro kernel under QEMU, driven by virtme-ng.

The guest sees the host's root file system read-only (writes go to throwaway overlays), so it
runs this very checkout and venv; only the ``--rwdir`` directories persist. vng runs in its own
process group because a SIGTERM to vng alone leaves qemu running: on timeout or Ctrl-C the
whole group is killed, and nothing is left behind.

Which kernels the lab can boot (an image with its build directory, for the module) and whether
KVM may be used are decided here too; ``python -m nlperf.targets.vm --lab-kernels`` lists the
kernels for the Makefile.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nlperf.errors import BadInput, RunFailed
from nlperf.targets import leash

VM_MEMORY = "2G"
VM_CPUS = 2
# Without tsc=reliable the guest falls back to hpet and every timestamp costs ~1.6 µs.
# GUEST_MARKER is how code (tests/vm) knows it runs in the throwaway lab VM and may load the
# module: no workstation's kernel command line carries it, whatever the environment says.
GUEST_MARKER = "nlperf_lab_vm=1"
KERNEL_CMDLINE = ("tsc=reliable", GUEST_MARKER)

SETUP_HINT = "make setup installs linux-image-amd64 and linux-headers-amd64"


# --- lab kernels ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabKernel:
    release: str
    vmlinuz: Path
    build_dir: Path


def version_key(release: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders 6.10 after 6.9 and -56 after -9.

    Numbers and text are tagged so a tuple never compares an int with a str.
    """
    return tuple((0, int(p)) if p.isdigit() else (1, p)
                 for p in re.split(r"(\d+)", release) if p)


def lab_kernels(boot: Path = Path("/boot"),
                modules: Path = Path("/lib/modules")) -> list[LabKernel]:
    """Kernels the VM can boot and the module can be built against, newest first."""
    found = []
    with contextlib.suppress(OSError):
        for vmlinuz in boot.glob("vmlinuz-*"):
            release = vmlinuz.name.removeprefix("vmlinuz-")
            build = modules / release / "build"
            # A kernel without its build dir is useless: the lab module is built in the VM run.
            if vmlinuz.is_file() and build.is_dir():
                found.append(LabKernel(release, vmlinuz, build))
    return sorted(found, key=lambda k: version_key(k.release), reverse=True)


RELEASE_SEPARATORS = ".-+~"


def names_release(wanted: str, release: str) -> bool:
    """Whether ``wanted`` names ``release``: the release itself, or a version prefix of it that
    ends where the release has a separator (``.``, ``-``, ``+``, ``~``). So "6.1" names
    6.1.0-56-amd64 and never 6.12.117+deb12-amd64: Debian updates move the rest of the string,
    and a scenario that says "6.1" keeps meaning the 6.1 series."""
    if release == wanted:
        return True
    return (bool(wanted) and release.startswith(wanted)
            and release[len(wanted)] in RELEASE_SEPARATORS)


def pick_lab_kernel(release: str | None = None, boot: Path = Path("/boot"),
                    modules: Path = Path("/lib/modules")) -> LabKernel:
    """The newest lab kernel, or the one ``release`` names (names_release): a full release or
    a version prefix matching exactly one lab kernel; none or several is bad input."""
    kernels = lab_kernels(boot, modules)
    if not kernels:
        raise RunFailed(f"no lab kernel: no {boot}/vmlinuz-<release> with a matching "
                        f"{modules}/<release>/build", hint=SETUP_HINT)
    if release is None:
        return kernels[0]
    exact = [k for k in kernels if k.release == release]
    named = exact or [k for k in kernels if names_release(release, k.release)]
    if len(named) == 1:
        return named[0]
    available = ", ".join(k.release for k in kernels)
    if named:
        raise BadInput(f"kernel {release!r} matches {len(named)} lab kernels "
                       f"({', '.join(k.release for k in named)}): give a longer prefix or "
                       "the full release")
    headerless = sorted(p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*")
                        if names_release(release, p.name.removeprefix("vmlinuz-")))
    if headerless:
        missing = headerless[0]
        raise BadInput(f"kernel {missing} has no {modules}/{missing}/build; "
                       f"available: {available}", hint=f"install linux-headers-{missing}")
    raise BadInput(f"unknown kernel {release!r}; available: {available}")


# --- KVM -----------------------------------------------------------------------------------------


def cpu_virt_flags(cpuinfo: str) -> set[str]:
    """vmx/svm among the CPU flags: without them a nested host's KVM hangs the guest."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(f for f in value.split() if f in ("vmx", "svm"))
    return flags


def kvm_usable(dev: Path = Path("/dev/kvm"), cpuinfo: Path = Path("/proc/cpuinfo"),
               env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Whether the VM may use KVM, and why. NLPERF_ACCEL=kvm|tcg overrides detection."""
    accel = (os.environ if env is None else env).get("NLPERF_ACCEL", "").strip().lower()
    if accel == "kvm":
        return True, "KVM forced by NLPERF_ACCEL=kvm"
    if accel == "tcg":
        return False, "TCG forced by NLPERF_ACCEL=tcg"
    note = f" (NLPERF_ACCEL={accel!r} ignored: use kvm or tcg)" if accel else ""
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, f"TCG: {dev} does not open read-write ({e.strerror}){note}"
    os.close(fd)
    try:
        flags = cpu_virt_flags(cpuinfo.read_text())
    except OSError as e:
        return False, f"TCG: cannot read {cpuinfo} ({e.strerror}){note}"
    if not flags:
        # Seen on nested PVM hosts: /dev/kvm opens, but a guest started with it never boots.
        return False, f"TCG: {dev} opens but {cpuinfo} flags have no vmx/svm{note}"
    return True, f"KVM: {dev} opens read-write and the CPU has {'/'.join(sorted(flags))}{note}"


def in_lab_vm(cmdline: Path = Path("/proc/cmdline")) -> bool:
    try:
        return GUEST_MARKER in cmdline.read_text().split()
    except OSError:
        return False


# --- booting -------------------------------------------------------------------------------------


def venv_bin() -> Path:
    return Path(sys.executable).parent


def find_vng() -> str:
    for candidate in (venv_bin() / "vng", shutil.which("vng")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise RunFailed("virtme-ng (vng) is not installed", hint="make setup")


def accel() -> str:
    return "kvm" if kvm_usable()[0] else "tcg"


def running_under() -> str:
    """The accelerator this process runs under: the lab VM's, or ``none`` on a native host.

    Inside the guest, QEMU's emulated CPU advertises svm, so the guest cannot tell TCG from
    KVM itself; the host says which in the environment it hands over.
    """
    return os.environ.get(GUEST_ACCEL_ENV, "none")


GUEST_ACCEL_ENV = "NLPERF_VM_ACCEL"


@dataclass(frozen=True)
class Markers:
    """Files the guest writes into a --rwdir: the command started, and its exit status.

    virtme-ng returns its special 255 both when the guest powered off before the status
    crossed its serial port (seen under emulation, with every result written) and when the
    guest kernel died before running anything (seen: 6.12 under TCG, an int3 Oops while
    patching text at boot). The markers tell the two apart.
    """

    started: Path
    status: Path

    @classmethod
    def new(cls, rwdir: Path) -> Markers:
        token = uuid.uuid4().hex
        return cls(rwdir / f".vm-started-{token}", rwdir / f".vm-exit-{token}")

    def clear(self) -> None:
        for p in (self.started, self.status):
            p.unlink(missing_ok=True)


def forwarded_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The host's NLPERF_* settings (NLPERF_DEBUG, NLPERF_SOAK, ...), for the guest.

    The guest starts with a fresh environment: without these, ``NLPERF_SOAK=1 make test-vm``
    would not reach the tests it is meant for.
    """
    env = os.environ if env is None else env
    return {k: v for k, v in sorted(env.items())
            if k.startswith("NLPERF_") and k != GUEST_ACCEL_ENV}


def guest_script(cmd: str, cwd: Path, accel_used: str, markers: Markers) -> str:
    """The guest resets PATH and the environment: put the venv and NLPERF_* back first."""
    settings = "".join(f"{k}={shlex.quote(v)} " for k, v in forwarded_env().items())
    return (f"touch {shlex.quote(str(markers.started))}; "
            f"export PATH={shlex.quote(str(venv_bin()))}:$PATH {settings}"
            f"{GUEST_ACCEL_ENV}={shlex.quote(accel_used)}; "
            f"mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing "
            f"2>/dev/null; cd {shlex.quote(str(cwd))} && {cmd}; rc=$?; "
            f"echo $rc > {shlex.quote(str(markers.status))}; sync; exit $rc")


def vng_argv(kernel: LabKernel, exec_cmd: str, rwdirs: list[Path], use_kvm: bool,
             verbose: bool = False) -> list[str]:
    # --force-9p: 9p works wherever qemu does; virtiofs needs a virtiofsd that can start,
    # and where it cannot (seen on these machines) vng falls back to 9p after two 3.1 s
    # back-off waits per boot
    argv = [find_vng(), "--run", str(kernel.vmlinuz), "--memory", VM_MEMORY,
            "--cpus", str(VM_CPUS), "--force-9p"]
    for option in KERNEL_CMDLINE:
        argv += ["--append", option]
    if verbose:
        argv.append("--verbose")  # the guest kernel's console too, not only the command's
    if not use_kvm:
        argv.append("--disable-kvm")
    for d in rwdirs:
        argv += ["--rwdir", str(d)]
    return [*argv, "--exec", exec_cmd]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Terminate vng, then kill whatever of its group (qemu) is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _copy(src: IO[bytes], dst: IO[bytes]) -> None:
    for chunk in iter(lambda: src.read1(65536), b""):  # type: ignore[attr-defined]
        dst.write(chunk)
        dst.flush()


VNG_LOST_STATUS = 255
BOOT_ATTEMPTS = 3


def boot(kernel: LabKernel, cmd: str, *, rwdirs: list[Path], timeout: float,
         console: Path | None = None, cwd: Path | None = None,
         on_tick: Callable[[], None] | None = None) -> int:
    """Boot the lab VM, run ``cmd`` as root in ``cwd``, return its exit status.

    The console (kernel log mixed with the command's output) goes to ``console`` when given,
    else to this terminal. A guest that died before starting the command is booted again
    (up to BOOT_ATTEMPTS in all): nothing of the command has run, so nothing is repeated.
    """
    if shutil.which("qemu-system-x86_64") is None:
        raise RunFailed("qemu-system-x86_64 is not installed", hint="make setup")
    deadline = time.monotonic() + timeout
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        markers = Markers.new(rwdirs[0])
        try:
            rc = _boot_once(kernel, cmd, rwdirs, deadline, timeout, console, cwd, on_tick,
                            markers)
            started = markers.started.exists()
            if rc != VNG_LOST_STATUS or started:
                return _guest_status(rc, markers.status)
        finally:
            markers.clear()
        sys.stderr.write(f"nlperf: the lab VM died before running the command "
                         f"(attempt {attempt} of {BOOT_ATTEMPTS}); booting again\n")
    raise RunFailed(f"the lab VM ({kernel.release}) died during boot {BOOT_ATTEMPTS} times",
                    hint="see the console log; try another --kernel")


def _guest_status(rc: int, status_file: Path) -> int:
    """vng's exit status, or the one the guest wrote when vng could not fetch it."""
    try:
        written = status_file.read_text().strip()
    except OSError:
        return rc
    return int(written) if rc == VNG_LOST_STATUS and written.isdigit() else rc


def _boot_once(kernel: LabKernel, cmd: str, rwdirs: list[Path], deadline: float,
               timeout: float, console: Path | None, cwd: Path | None,
               on_tick: Callable[[], None] | None, markers: Markers) -> int:
    used = accel()
    script = guest_script(cmd, cwd or Path.cwd(), used, markers)
    argv = vng_argv(kernel, script, rwdirs, used == "kvm", verbose=console is not None)
    # The leash kills the VM's group should this process die without doing it (SIGKILL).
    argv = leash.wrap(argv, os.getpid(), rwdirs[0] / "summary.json")
    env = dict(os.environ, PATH=f"{venv_bin()}:{os.environ.get('PATH', '')}")
    # vng may reopen its standard output (truncating a file that was ours), so it always
    # writes to a pipe that this process copies to the console log or to our stdout.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=cwd)
    assert proc.stdout is not None
    out = open(console, "ab") if console else sys.stdout.buffer  # noqa: SIM115 - closed below
    copier = threading.Thread(target=_copy, args=(proc.stdout, out), daemon=True)
    copier.start()
    try:
        while True:
            try:
                return proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
            if on_tick:
                on_tick()
            if time.monotonic() > deadline:
                raise RunFailed(f"the lab VM did not finish within {timeout:.0f} s",
                                hint="raise --timeout; the VM runs emulated")
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        copier.join(5)
        if console:
            out.close()
        else:
            out.flush()


if __name__ == "__main__":  # `python -m nlperf.targets.vm --lab-kernels`, for the Makefile
    if sys.argv[1:] != ["--lab-kernels"]:
        sys.exit("usage: python -m nlperf.targets.vm --lab-kernels")
    print(" ".join(k.release for k in lab_kernels()))
