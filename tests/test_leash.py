"""The leash: the lab VM's process group dies with the nlperf process that started it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nlperf.targets import leash

# A stand-in for nlperf's outer run: starts the leashed "VM" (a shell with a grandchild, in a
# group of its own as vng is) and prints the group id, then waits to be killed.
PARENT = """
import os, subprocess, sys
from nlperf.targets import leash
argv = leash.wrap(["sh", "-c", "sleep 300 & sleep 300"], os.getpid(), {summary!r})
p = subprocess.Popen(argv, start_new_session=True)
print(p.pid, flush=True)
p.wait()
"""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pgid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return True
        time.sleep(0.05)
    return False


def _start(summary: Path | None) -> tuple[subprocess.Popen[str], int]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(
        summary=str(summary) if summary else None)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pgid = int(parent.stdout.readline())
    # the grandchild sleeps exist once the shell ran; give it a moment to fork them
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        members = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
        if len(members.stdout.split()) >= 3:  # leash, sh, sleep (the shell may exec one)
            break
        time.sleep(0.05)
    return parent, pgid


def test_sigkill_of_the_parent_kills_the_whole_group(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"status": "running", "cases": []}))
    parent, pgid = _start(summary)
    assert _group_alive(pgid)
    parent.kill()
    parent.wait()
    assert _wait_gone(pgid, within=5.0), subprocess.run(
        ["ps", "-o", "pid,pgid,cmd", "-g", str(pgid)], capture_output=True, text=True).stdout
    data = json.loads(summary.read_text())
    assert data["status"] == "interrupted"
    assert data["error"] == leash.ORPHANED_ERROR
    assert data["cases"] == []


def test_a_living_parent_keeps_the_group(tmp_path: Path) -> None:
    parent, pgid = _start(None)
    try:
        time.sleep(3 * leash.POLL_S)
        assert _group_alive(pgid)
    finally:
        os.killpg(pgid, signal.SIGKILL)
        parent.kill()
        parent.wait()


def test_finished_summary_is_left_alone(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"status": "complete"}))
    leash.mark_interrupted(summary)
    assert json.loads(summary.read_text()) == {"status": "complete"}


def test_exit_status_is_the_commands() -> None:
    argv = leash.wrap(["sh", "-c", "exit 7"], os.getpid())
    assert subprocess.run(argv).returncode == 7
