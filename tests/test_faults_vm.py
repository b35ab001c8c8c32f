"""The driver killed or stopped mid-run: nothing of the lab may outlive it (one VM boot each)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlperf import results
from nlperf.targets import leash
from tests.lab import require_lab_vm

ROOT = Path(__file__).resolve().parent.parent
NLPERF = str(Path(sys.executable).parent / "nlperf")


@pytest.fixture(autouse=True)
def _lab_vm() -> None:
    require_lab_vm()


def _qemu_running(run_dir: Path) -> bool:
    return subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{run_dir}"],
                          capture_output=True).returncode == 0


def _start_and_wait_for_qemu(out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([NLPERF, "run", str(ROOT / "scenarios/smoke.yaml"), "--target", "vm",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _qemu_running(out):
        assert time.monotonic() < deadline, "qemu never started"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(2)  # the guest is booting
    return proc


def _wait_no_qemu(out: Path, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _qemu_running(out):
            return True
        time.sleep(0.2)
    return False


def test_sigkill_of_the_driver_takes_the_vm_with_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start_and_wait_for_qemu(out)
    proc.kill()
    proc.communicate()
    assert _wait_no_qemu(out, within=10), "qemu outlived the killed driver"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["error"] == leash.ORPHANED_ERROR
    assert results.validation_errors(summary) == []


def test_sigterm_stops_cleanly_with_status_interrupted(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start_and_wait_for_qemu(out)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert results.validation_errors(summary) == []
    assert not _qemu_running(out)
