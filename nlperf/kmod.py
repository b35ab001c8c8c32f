"""Building, loading and unloading the companion module (kmod/).

Debian 6.1's Kbuild writes objects inside ``M=``, so the sources are copied to
build/kmod/<release>/ and built there: the tree stays clean and each kernel gets its own build.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from nlperf import wire
from nlperf.errors import BadInput, RunFailed
from nlperf.paths import KMOD_SRC, kmod_build_dir

MODULE = "nlperf"
SYSFS = Path("/sys/module") / MODULE

@dataclass(frozen=True)
class Param:
    """One module parameter of kmod/nlperf.c: its default and the values it accepts.

    The module checks its parameters at load; this is the same check in user space, so a bad
    value is refused with a clear message instead of a bare insmod EINVAL. The scenario's
    ``module`` section takes its bounds from here, and a test compares these with the
    module_param declarations and bounds in nlperf.c.
    """

    kind: type[int] | type[bool] | type[str]
    default: int | bool | str
    lo: int = 0
    hi: int = 0
    choices: tuple[str, ...] = ()
    unit: str = "an integer"

    @property
    def expected(self) -> str:
        if self.choices:
            return f"{', '.join(self.choices[:-1])} or {self.choices[-1]}"
        if self.kind is bool:
            return "0 or 1"
        return f"{self.unit} {self.lo}..{self.hi}"


PARAMS: dict[str, Param] = {
    "mode": Param(str, "callback", choices=tuple(wire.MODES)),
    "proto": Param(int, wire.PROTO_DEFAULT, 16, 31),
    "queue_len": Param(int, 1024, 1, 1 << 20),
    "queue_bytes": Param(int, 16 << 20, 64 << 10, 1 << 30, unit="bytes"),
    "work_ns": Param(int, 0, 0, 1_000_000_000, unit="nanoseconds"),
    "work_sleep_us": Param(int, 0, 0, 1_000_000, unit="microseconds"),
    "allow_unpriv": Param(bool, False, 0, 1),
}


def validate_params(params: dict[str, str | int | bool]) -> dict[str, str]:
    """Module parameters as insmod arguments; BadInput names each wrong one."""
    out: dict[str, str] = {}
    for name, raw in params.items():
        if name not in PARAMS:
            raise BadInput(f"unknown module parameter {name!r}",
                           hint=f"known: {', '.join(PARAMS)}")
        param = PARAMS[name]
        if isinstance(raw, bool):
            raw = int(raw)
        if param.choices:
            if str(raw) not in param.choices:
                raise BadInput(f"module parameter {name}={raw!r}: expected {param.expected}")
            out[name] = str(raw)
            continue
        try:
            value = int(str(raw), 0)
        except ValueError:
            raise BadInput(f"module parameter {name}={raw!r}: expected {param.expected}"
                           ) from None
        if not param.lo <= value <= param.hi:
            raise BadInput(f"module parameter {name}={value}: expected {param.expected}")
        out[name] = str(value)
    return out


def parse_kv(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise BadInput(f"--param {p!r}: expected KEY=VALUE")
        out[key] = value
    return out


def build(release: str, build_dir: Path | None = None, log: Path | None = None) -> Path:
    """Build nlperf.ko for ``release``; returns its path. Output goes to ``log`` if given."""
    kdir = Path("/lib/modules") / release / "build"
    if not kdir.is_dir():
        raise RunFailed(f"no kernel headers for {release} ({kdir} missing)",
                        hint="make setup installs linux-headers-amd64")
    out = build_dir or kmod_build_dir(release)
    ko = out / f"{MODULE}.ko"
    if _up_to_date(ko):
        return ko
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(KMOD_SRC, out, ignore=shutil.ignore_patterns("*.o", "*.ko", "*.mod*",
                                                                 ".*.cmd", "Module.symvers",
                                                                 "modules.order"))
    argv = ["make", "-C", str(kdir), f"M={out}", "modules"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
        output, failed = proc.stdout + proc.stderr, proc.returncode != 0
    except OSError as e:  # no make on PATH: the same one line, and a log that says so
        output, failed = f"error: cannot run {shlex.join(argv)}: {e.strerror}\n", True
    if log is not None:
        log.write_text(output)
    if failed or not ko.exists():
        # the compiler's first error, not make's closing "Error 2"
        lines = output.splitlines()
        first = next((ln for ln in lines if "error:" in ln.lower()),
                     next((ln for ln in lines if "error" in ln.lower()), "make failed"))
        raise RunFailed(f"module build for {release} failed: {first.strip()}",
                        hint=f"full log: {log}" if log else None)
    return ko


def _up_to_date(ko: Path) -> bool:
    """A build newer than every source needs no rebuild (and the VM guest cannot write)."""
    if not ko.exists():
        return False
    newest = max(p.stat().st_mtime for p in KMOD_SRC.rglob("*") if p.is_file())
    return ko.stat().st_mtime > newest


def ko_path(release: str) -> Path:
    return kmod_build_dir(release) / f"{MODULE}.ko"


def is_loaded() -> bool:
    return SYSFS.exists()


def loaded_params() -> dict[str, str]:
    params = SYSFS / "parameters"
    if not params.is_dir():
        return {}
    return {p.name: p.read_text().strip() for p in sorted(params.iterdir())}


def load(ko: Path, params: dict[str, str]) -> None:
    if is_loaded():
        raise RunFailed("the nlperf module is already loaded", hint="nlperf kmod unload")
    if not ko.exists():
        raise RunFailed(f"{ko} does not exist", hint="nlperf kmod build")
    args = ["insmod", str(ko), *(f"{k}={v}" for k, v in params.items())]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "insmod failed"
        raise RunFailed(f"loading the module failed: {why}", hint="dmesg names the parameter")


def unload(timeout: float = 10.0) -> None:
    """rmmod, retrying while the last lab sockets close (they pin the module). Never -f."""
    if not is_loaded():
        return
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(["rmmod", MODULE], capture_output=True, text=True)
        if proc.returncode == 0 or not is_loaded():
            return
        if time.monotonic() > deadline:
            raise RunFailed(f"unloading the module failed: {proc.stderr.strip()}",
                            hint="a process still holds a lab socket open")
        time.sleep(0.1)
