"""Building the probe suite: the ``-D`` defines of bpf/netlink.bpf.c and its compile through BCC.

The C is configured by defines alone: struct field offsets from the kernel's BTF, the kernel
features it may use, the lab's protocol and histogram shape, and the shared tables of
nlperf/probe_table.py. One compile per run (under TCG clang costs seconds to tens of seconds).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nlperf.errors import RunFailed
from nlperf.probe_table import bpf_defines

LIN_STEP_NS = 1000  # linear histogram bucket width
LIN_SLOTS = 200  # linear buckets; one more collects everything above


def cflags(proto: int, offsets: dict[tuple[str, str], int], release: str, *, timing: bool = True,
           by_process: bool | None = None, lin_step_ns: int = LIN_STEP_NS,
           lin_slots: int = LIN_SLOTS) -> list[str]:
    """The -D defines of bpf/netlink.bpf.c; RunFailed names a field BTF did not give."""
    need = [("sock", "sk_protocol"), ("sock", "sk_socket"), ("socket_alloc", "vfs_inode"),
            ("inode", "i_ino"), ("netlink_sock", "flags"), ("task_struct", "pid"),
            ("work_struct", "func")]
    missing = [f"{s}.{m}" for s, m in need if (s, m) not in offsets]
    state = offsets.get(("task_struct", "__state"), offsets.get(("task_struct", "state")))
    m = re.match(r"(\d+)\.(\d+)", release)
    version = (int(m[1]), int(m[2])) if m else (0, 0)
    switch_state_arg = version >= (5, 18)
    task_storage = version >= (5, 12)  # task local storage for kprobes and fentry
    if not switch_state_arg and state is None:
        missing.append("task_struct.__state")
    if missing:
        raise RunFailed(f"probes: kernel BTF lacks {', '.join(missing)} (needed as byte offsets)")
    sock_ino = offsets[("socket_alloc", "vfs_inode")] + offsets[("inode", "i_ino")]
    return [f"-DPROTO={proto}",
            f"-DOFF_SK_PROTOCOL={offsets[('sock', 'sk_protocol')]}",
            f"-DOFF_SK_SOCKET={offsets[('sock', 'sk_socket')]}",
            f"-DOFF_SOCKET_INO={sock_ino}",
            f"-DOFF_NLK_FLAGS={offsets[('netlink_sock', 'flags')]}",
            f"-DOFF_TASK_PID={offsets[('task_struct', 'pid')]}",
            f"-DOFF_WORK_FUNC={offsets[('work_struct', 'func')]}",
            f"-DOFF_TASK_STATE={state or 0}",
            f"-DSWITCH_STATE_ARG={int(switch_state_arg)}",
            f"-DTIMING={int(timing)}",
            f"-DLIN_STEP_NS={lin_step_ns}ULL",
            f"-DLIN_SLOTS={lin_slots}",
            f"-DBY_PROCESS={int(timing if by_process is None else by_process)}",
            f"-DTASK_STORAGE={int(task_storage)}",
            *bpf_defines()]


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send fd 2 to a file: libbcc prints clang's diagnostics there, not in the exception."""
    saved = os.dup(2)
    try:
        with open(path, "wb") as f:
            os.dup2(f.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no diagnostics"


def import_bcc() -> Any:
    """The bcc module (Debian's python3-bpfcc, through the venv's system site-packages)."""
    try:
        import bcc  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except Exception as e:
        raise RunFailed(f"probes need BCC: import bcc fails: {e}",
                        hint="use the project venv, or --no-probes") from None
    return bcc


def compile_bpf(bcc: Any, src: Path, flags: list[str]) -> Any:
    """The BPF object, not attached; RunFailed with clang's first error."""

    class _NoAutoload(bcc.BPF):  # type: ignore[misc, name-defined]
        # Autoload would attach every kfunc__ variant and fail on kernels refusing fentry.
        def _trace_autoload(self) -> None:
            pass

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "bcc-stderr"
        try:
            with _stderr_to(log):
                return _NoAutoload(src_file=str(src).encode(), cflags=flags)
        except Exception as e:
            diag = log.read_text(errors="replace") if log.exists() else ""
            raise RunFailed(f"probes: BPF compile failed: {_first_error(diag) or e}",
                            hint="--no-probes runs without them") from None
