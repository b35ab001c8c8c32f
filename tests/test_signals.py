"""nlperf's signal handling in a real process: the first SIGINT, SIGTERM or SIGHUP stops it,
a second one cannot cut its clean-up short, and an inherited ignored SIGINT stays ignored."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import sigint_restored

# Stands in for a run: waits to be stopped, then cleans up — which takes until the test says
# so on stdin, after it has sent the second signal — and exits as the CLI does.
CHILD = """
import sys
from nlperf import signals
signals.install()
try:
    print("ready", flush=True)
    sys.stdin.readline()  # running
    print("not stopped", flush=True)
except KeyboardInterrupt as e:
    print("stopping", flush=True)
    try:
        sys.stdin.readline()  # cleaning up
        print("cleaned up", flush=True)
    finally:
        sys.exit(signals.exit_status(e))
"""


def _child(ignore_sigint: bool = False) -> subprocess.Popen[str]:
    def preexec() -> None:
        sigint_restored()
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def _expect(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline() == line, proc.stderr.read() if proc.stderr else ""


@pytest.mark.parametrize(("first", "second"), [
    (signal.SIGINT, signal.SIGINT),  # Ctrl-C pressed twice
    (signal.SIGTERM, signal.SIGINT),  # stopped by a runner, then Ctrl-C
    (signal.SIGINT, signal.SIGTERM),
    (signal.SIGHUP, signal.SIGTERM),
], ids=["int-int", "term-int", "int-term", "hup-term"])
def test_a_second_signal_does_not_cut_the_clean_up_short(first: signal.Signals,
                                                         second: signal.Signals) -> None:
    proc = _child()
    proc.send_signal(first)
    _expect(proc, "stopping\n")
    proc.send_signal(second)  # pending before the clean-up reads on
    out, err = proc.communicate("go on\n", timeout=30)
    assert out == "cleaned up\n", err
    assert proc.returncode == 128 + first
    assert "Traceback" not in err


def test_an_inherited_ignored_sigint_stays_ignored_and_sigterm_still_stops() -> None:
    proc = _child(ignore_sigint=True)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    _expect(proc, "stopping\n")
    out, err = proc.communicate("go on\n", timeout=30)
    assert out == "cleaned up\n", err
    assert proc.returncode == 128 + signal.SIGTERM


def test_sigterm_before_the_run_has_started_still_exits_143(tmp_path: Path) -> None:
    """click turns a KeyboardInterrupt that leaves a command into Abort: the status must still
    say which signal it was. Here nlperf is stopped while it waits to read its scenario."""
    fifo = tmp_path / "scenario.yaml"
    os.mkfifo(fifo)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "nlperf"), "run", str(fifo),
                             "--out", str(tmp_path / "run")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_restored)
    deadline = time.monotonic() + 60
    while True:  # a writer can open the FIFO once nlperf has opened it to read
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as e:
            assert e.errno == errno.ENXIO and proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "nlperf never opened its scenario"
            time.sleep(0.01)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "nlperf: interrupted (SIGTERM)"
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_the_run_starts_leaves_no_summary_at_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C as the progress bar is made (importing tqdm takes a while under emulation), after
    the run directory exists: the run is interrupted like any other, its summary final."""
    from nlperf import capabilities, runner
    from nlperf.targets import vm

    kernel = vm.LabKernel("6.1.0-56-amd64", Path("/boot/vmlinuz-x"), Path("/lib/modules/x"))
    monkeypatch.setattr(capabilities, "pick_target", lambda requested, checks=None: (
        "vm", "picked"))
    monkeypatch.setattr(vm, "pick_lab_kernel", lambda release=None: kernel)
    monkeypatch.setattr(vm, "accel", lambda: "tcg")
    monkeypatch.setattr(runner, "_run_in_vm", lambda *a: pytest.fail("the run went on"))

    def bar(total: int) -> None:
        raise KeyboardInterrupt

    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\nunicast: {count: 10}\n")
    out = tmp_path / "run"
    try:
        outcome = runner.run(runner.RunRequest(scenario, out=out), lambda _line: None, bar)
    except KeyboardInterrupt:  # would end the test session, not just this test
        pytest.fail("the interrupt escaped the run, its summary left at "
                    f"{json.loads((out / 'summary.json').read_text())['status']!r}")
    assert (outcome.run_dir, outcome.exit_code) == (out, 128 + signal.SIGINT)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["error"]) == ("interrupted", "interrupted by the user")


def test_ctrl_c_while_workers_start_stays_an_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C between two workers' start(): the one started is killed, the module unloaded,
    and the interrupt stays an interrupt (joining a never-started process raised instead)."""
    import multiprocessing.process

    from nlperf import kmod, measure, scenario

    unloads: list[bool] = []
    monkeypatch.setattr(kmod, "load", lambda ko, params: None)
    monkeypatch.setattr(kmod, "unload", lambda: unloads.append(True))
    monkeypatch.setattr(measure, "_sender_main", lambda *args: time.sleep(60))
    real_start = multiprocessing.process.BaseProcess.start
    started: list[multiprocessing.process.BaseProcess] = []

    def start(self: multiprocessing.process.BaseProcess) -> None:
        if started:
            raise KeyboardInterrupt  # Ctrl-C lands as the second worker is about to start
        started.append(self)
        real_start(self)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    (case,) = scenario.expand({"name": "p", "unicast": {"count": 4, "senders": 2}})[1]
    try:
        measure.run_repetition(case, 0, Path("nlperf.ko"), 60.0)
    except KeyboardInterrupt:
        pass
    except BaseException as e:  # what replaced the interrupt is the finding
        pytest.fail(f"the interrupt became {type(e).__name__}: {e}")
    else:
        pytest.fail("run_repetition returned")
    (worker,) = started
    assert worker.exitcode == -signal.SIGKILL
    assert unloads == [True]
