"""SIGINT and SIGTERM at random points of a host-target run: nothing of the lab may outlive it.

Inside the lab VM (``make test-vm``), ``nlperf run --target host`` runs a small probed scenario
and is stopped by a signal aimed, from a seeded random choice, at one of its phases: the probe
compile, a repetition's warm-up or measurement, or the gap between two repetitions (aimed by
watching the module and progress.jsonl; the assertions hold wherever it lands). Afterwards:
exit 130 (SIGINT) or 143 (SIGTERM), a valid summary marked interrupted that keeps the finished
repetitions, and no BPF program, kprobe, module or process of the run left.

`make test` runs three trials (SIGINT, SIGTERM, one during the compile) aimed at the first
module load, on the newest lab kernel;
``NLPERF_SOAK=1`` (`make soak`, every kernel) runs
ten. ``NLPERF_SEED`` picks other points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from nlperf import results
from tests.lab import sigint_restored
from tests.vm.conftest import dmesg
from tests.vm.test_probes import bpf_prog_count, our_kprobes

NLPERF = str(Path(sys.executable).parent / "nlperf")
KPROBE_EVENTS = Path("/sys/kernel/tracing/kprobe_events")
MODULE_DIR = Path("/sys/module/nlperf")
SEED = int(os.environ.get("NLPERF_SEED", "14"))
SOAK = os.environ.get("NLPERF_SOAK") == "1"

# Two repetitions and their probes-off controls: four module loads. One second of warm-up and
# two of measurement make each phase long enough to aim at under emulation.
REPETITIONS = 2
RUNS = 2 * REPETITIONS
SCENARIO = f"""\
name: interrupts
repetitions: {REPETITIONS}
warmup: {{seconds: 1}}
module: {{mode: kthread}}
unicast: {{message_size: 64, window: 4, duration: 2}}
probes: {{enabled: true, control: true}}
"""
IN_RUN = ("warmup", "measure", "between")
WAIT_S = 300.0  # the compile alone takes up to ~45 s under TCG; a signal waits for it to end


@dataclass(frozen=True)
class Trial:
    signum: signal.Signals
    aim: str  # compile | warmup | measure | between
    run: int  # which of the RUNS module loads (warmup, measure) or finished runs (between)
    offset_s: float  # how long after the aim point

    @property
    def id(self) -> str:
        return f"{self.signum.name.lower()}-{self.aim}-{self.run}"


def trials(seed: int, soak: bool) -> list[Trial]:
    rng = random.Random(seed)

    def pick(signum: signal.Signals, aim: str) -> Trial:
        # make test aims at the first runs (each trial costs up to 2.5 min under TCG when it
        # waits for the last ones); the soak aims anywhere
        runs = RUNS if soak else 1
        run = {"compile": 0, "between": rng.randrange(1, max(runs, 2))}.get(aim,
                                                                           rng.randrange(runs))
        offset = {"compile": rng.uniform(0.0, 2.0), "warmup": rng.uniform(0.1, 0.9),
                  "measure": rng.uniform(1.8, 2.8), "between": 0.0}[aim]
        return Trial(signum, aim, run, round(offset, 2))

    sigs = (signal.SIGINT, signal.SIGTERM)
    if soak:
        return [pick(rng.choice(sigs), rng.choice(("compile", *IN_RUN))) for _ in range(10)]
    return [pick(signal.SIGINT, rng.choice(IN_RUN)), pick(signal.SIGTERM, rng.choice(IN_RUN)),
            pick(rng.choice(sigs), "compile")]


TRIALS = trials(SEED, SOAK)


def _kprobe_events() -> list[str]:
    try:
        return KPROBE_EVENTS.read_text().splitlines()
    except OSError:
        return []


def _progress_lines(out: Path) -> int:
    try:
        return len((out / results.PROGRESS).read_text().splitlines())
    except FileNotFoundError:
        return 0


def _session_members(sid: int) -> list[str]:
    got = subprocess.run(["pgrep", "-a", "-s", str(sid)], capture_output=True, text=True)
    return got.stdout.splitlines()


def _module_listed() -> bool:
    return any(ln.split()[0] == "nlperf" for ln in Path("/proc/modules").read_text().splitlines())


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen[str], what: str,
              within: float = WAIT_S, poll: float = 0.01) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {within:.0f} s"
        time.sleep(poll)


def _settle(cond: Callable[[], bool], within: float = 10.0) -> bool:
    """True once cond holds; programs and reaped processes go away asynchronously."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _aim(trial: Trial, proc: subprocess.Popen[str], out: Path) -> str:
    """Wait for the trial's point of the run; returns what was seen when the signal went."""
    if trial.aim == "compile":
        # summary.json exists before the module build and the probe compile; the first load
        # follows the compile
        _wait_for(lambda: (out / results.SUMMARY).exists(), proc, "a run directory")
    elif trial.aim == "between":
        _wait_for(lambda: _progress_lines(out) >= trial.run, proc, f"run {trial.run} finishing")
    else:
        _wait_for(lambda: _progress_lines(out) >= trial.run and MODULE_DIR.exists(), proc,
                  f"module load {trial.run}")
    time.sleep(trial.offset_s)
    return (f"{_progress_lines(out)} runs done, module "
            f"{'loaded' if MODULE_DIR.exists() else 'not loaded'}")


@pytest.mark.parametrize("trial", TRIALS, ids=[t.id for t in TRIALS])
def test_a_signal_at_any_point_stops_the_run_cleanly(trial: Trial, tmp_path: Path) -> None:
    assert not _module_listed(), "the module was loaded before the trial"
    progs, kprobes, events = bpf_prog_count(), our_kprobes(), _kprobe_events()
    log_before = dmesg()
    scenario = tmp_path / "interrupts.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "run"
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen([NLPERF, "run", str(scenario), "--target", "host", "--out",
                                 str(out)], stdout=stdout, stderr=stderr, text=True,
                                start_new_session=True, preexec_fn=sigint_restored)
        try:
            seen = _aim(trial, proc, out)
            if trial.signum == signal.SIGINT:
                os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole group
            else:
                os.kill(proc.pid, signal.SIGTERM)  # kill, timeout, a CI runner: the driver
            rc = proc.wait(WAIT_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    err = (tmp_path / "stderr").read_text()
    where = f"signal sent with {seen}; stderr:\n{err[-3000:]}"
    assert rc == 128 + trial.signum, where
    assert "Traceback" not in err and "internal error" not in err, where
    assert (tmp_path / "stdout").read_text().strip() == str(out)
    # stopped means stopped: no report rendered after the signal (minutes under emulation)
    assert not (out / "report.md").exists(), where
    assert f"nlperf report {out}" in err.strip().splitlines()[-1], where

    summary = json.loads((out / results.SUMMARY).read_text())
    assert results.validation_errors(summary) == [], where
    why = "interrupted by the user" if trial.signum == signal.SIGINT else "stopped by SIGTERM"
    assert (summary["status"], summary["error"]) == ("interrupted", why), where
    # every finished repetition is kept: published before its progress line is appended
    kept = sum(len(c["repetitions"]) + len(c.get("control", {}).get("repetitions", []))
               for c in summary["cases"])
    lines = _progress_lines(out)
    assert lines <= kept <= lines + 1, where
    assert all(not p.name.endswith(".tmp") for p in out.iterdir()), sorted(os.listdir(out))

    # nothing of the lab outlives the run
    assert _settle(lambda: not _session_members(proc.pid)), _session_members(proc.pid)
    assert not _module_listed() and not MODULE_DIR.exists(), where
    assert _settle(lambda: bpf_prog_count() == progs), (bpf_prog_count(), progs, where)
    assert our_kprobes() == kprobes and _kprobe_events() == events, where
    new_log = dmesg()[len(log_before):]
    for bad in ("WARNING:", "BUG:", "Oops", "refcount_t"):
        assert bad not in new_log, new_log[-3000:]

