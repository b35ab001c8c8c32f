"""``nlperf run`` of a tiny dump scenario (tests/data/dump-e2e.yaml) through the lab VM: one
boot. The dump reader's counts are exact whatever the emulation's speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.lab import require_lab_vm

ROOT = Path(__file__).resolve().parent.parent
NLPERF = str(Path(sys.executable).parent / "nlperf")
SCENARIO = ROOT / "tests/data/dump-e2e.yaml"
REPS, DUMPS, RECV_SIZE = 2, 3, 4096


def check_dump_run(run_dir: Path) -> None:
    """What the tiny dump scenario must give: every dump interrupted once and retried once."""
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert [c["id"] for c in summary["cases"]] == ["objects=300", "objects=1000"]
    for case, n in zip(summary["cases"], (300, 1000), strict=True):
        attempts = REPS * DUMPS * 2
        for block in (case["dump"], case["control"]["dump"]):
            assert (block["dumps"], block["attempts"], block["interrupted"],
                    block["retries"]) == (REPS * DUMPS, attempts, REPS * DUMPS, REPS * DUMPS)
            assert block["objects_read"] == attempts * n
            assert block["bytes"] == attempts * (n * 80 + 20)  # objects, then NLMSG_DONE
            # no datagram is longer than the 4096-byte recv; the kernel fills them to about
            # a page (47 to 51 messages here: its first one before any recv is smaller)
            assert block["bytes"] <= block["recvs"] * RECV_SIZE
            assert block["recvs"] >= attempts * -(-(n + 1) // (RECV_SIZE // 80))
            assert block["duration_ns"]["count"] == REPS * DUMPS
            assert block["objects_per_s"] > 0
        module = case["module"]
        assert (module["received"], module["processed"], module["replied"]) == (
            attempts, attempts, attempts)
    assert "## Dumps" in (run_dir / "report.md").read_text()


def test_a_tiny_dump_run_through_the_vm(tmp_path: Path) -> None:
    require_lab_vm()
    out = tmp_path / "run"
    proc = subprocess.run([NLPERF, "run", str(SCENARIO), "--target", "vm", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_dump_run(out)

