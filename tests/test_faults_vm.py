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


def _start_and_wait_for_the_guest(out: Path) -> subprocess.Popen[str]:
    """A run whose guest has started the inner run (its start marker is in the run dir)."""
    proc = subprocess.Popen([NLPERF, "run", str(ROOT / "scenarios/smoke.yaml"), "--target", "vm",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob(".vm-started-*")):
        assert time.monotonic() < deadline, "the guest never started the inner run"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    assert _qemu_running(out)
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
    proc = _start_and_wait_for_the_guest(out)
    proc.kill()
    proc.communicate()
    assert _wait_no_qemu(out, within=10), "qemu outlived the killed driver"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["error"] == leash.ORPHANED_ERROR
    assert results.validation_errors(summary) == []


def test_sigterm_stops_cleanly_with_status_interrupted(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start_and_wait_for_the_guest(out)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert results.validation_errors(summary) == []
    assert not _qemu_running(out)


def _files(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir())}


def test_a_guest_command_that_never_ends_times_out_and_leaves_nothing(tmp_path: Path) -> None:
    """The guest hangs (an hour of traffic): the timeout stops the VM, the console log stays."""
    scen = tmp_path / "hang.yaml"
    scen.write_text("name: hang\nwarmup: {messages: 10}\nunicast: {duration: 3600}\n"
                    "probes: {enabled: false}\n")
    out = tmp_path / "run"
    proc = subprocess.run([NLPERF, "run", str(scen), "--target", "vm", "--out", str(out),
                           "--timeout", "60"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("nlperf: error: ")]
    assert line == ("nlperf: error: the lab VM did not finish within 60 s (raise --timeout; "
                    f"the VM runs emulated); results {out}")
    summary = json.loads((out / "summary.json").read_text())
    assert results.validation_errors(summary) == []
    assert (summary["status"], summary["cases"]) == ("failed", [])
    # the guest got as far as the command that hung: the inner run's result says so
    (inner,) = out.glob(".inner-*.json")
    assert json.loads(inner.read_text())["status"] == "running"
    console = (out / "vm-console.log").read_text(errors="replace")
    assert "Linux version" in console  # the guest's boot log is kept
    # nothing of the VM is left, and nothing writes into the run directory any more
    left = subprocess.run(["pgrep", "-af", str(out)], capture_output=True, text=True).stdout
    assert left == "", left
    before = _files(out)
    time.sleep(3)
    assert _files(out) == before
