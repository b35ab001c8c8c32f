"""Keep the lab VM on a leash: it dies with the nlperf process that started it.

The VM's processes (vng, virtme-run, qemu) run in a process group of their own so a timeout
or Ctrl-C can kill them together. That same separation means nothing kills them when nlperf
itself is killed outright (SIGKILL, the OOM killer, a cancelled CI job): qemu went on writing
into the run directory for minutes (seen). This wrapper is the group's leader: it starts the
VM command as its child, watches the pid of the nlperf process that started it and, once that
process is gone, kills the whole group; it also marks the run's summary as interrupted, since
the driver that would have finalised it is dead.

    python -m nlperf.targets.leash --parent PID [--summary FILE] -- CMD...

Exit status: the command's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

POLL_S = 0.2
GRACE_S = 2.0
ORPHANED_ERROR = "the nlperf driver was killed; the lab VM was stopped with it"


def wrap(argv: list[str], parent: int, summary: Path | None = None) -> list[str]:
    """The argv that runs ``argv`` on a leash held by ``parent``."""
    out = [sys.executable, "-m", "nlperf.targets.leash", "--parent", str(parent)]
    if summary is not None:
        out += ["--summary", str(summary)]
    return [*out, "--", *argv]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _orphaned(parent: int) -> bool:
    # Reparenting (to init or a subreaper) is the first sign; a pid that no longer exists the
    # second (the parent may be a thread-group leader that died before we looked).
    return os.getppid() != parent or not _alive(parent)


def mark_interrupted(summary: Path) -> None:
    """Set a still-running summary to interrupted, atomically; leave a finished one alone."""
    try:
        data = json.loads(summary.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(data, dict) or data.get("status") != "running":
        return
    data["status"] = "interrupted"
    data["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    data["error"] = ORPHANED_ERROR
    tmp = summary.with_name(f".{summary.name}.leash")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, summary)


def _kill_group() -> None:
    pgid = os.getpgrp()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)  # ignored by ourselves, below
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.killpg(pgid, signal.SIGKILL)  # ourselves included


def _watch(parent: int, child: subprocess.Popen[bytes], summary: Path | None) -> None:
    # returncode, not poll(): the main thread is the one waiting for the child.
    while child.returncode is None:
        if _orphaned(parent):
            if summary is not None:
                with contextlib.suppress(OSError):
                    mark_interrupted(summary)
            _kill_group()
        time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nlperf-leash")
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--summary", type=Path)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command")
    # The group is killed with SIGTERM first: the leash itself must outlive it to follow up
    # with SIGKILL, and Ctrl-C in the terminal is the parent's business, not ours.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(cmd, preexec_fn=_default_signals)
    threading.Thread(target=_watch, args=(args.parent, child, args.summary),
                     daemon=True).start()
    return child.wait()


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
