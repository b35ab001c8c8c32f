"""``nlperf run`` end to end through the lab VM, as a user runs it (one boot per test).

Skipped only where the lab VM's pieces are absent (no qemu, virtme-ng or lab kernel), and
never under CI (tests/lab.py); `make test` provides them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from nlperf import results
from nlperf.targets import vm
from tests.lab import require_lab_vm, sigint_restored

ROOT = Path(__file__).resolve().parent.parent
NLPERF = str(Path(sys.executable).parent / "nlperf")


@pytest.fixture(autouse=True)
def _lab_vm() -> None:
    require_lab_vm()


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NLPERF, "run", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _qemu_running(run_dir: Path) -> bool:
    """A qemu of this run (its --rwdir names the run directory) is still alive."""
    return subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{run_dir}"],
                          capture_output=True).returncode == 0


def _pct(probed: float, control: float) -> float:
    """What the probes cost, in percent of the probes-off control (positive: more)."""
    return round((probed - control) / control * 100.0, 2)


def _mean_p50(multicast: dict[str, Any]) -> float:
    p50s = [r["latency_us"]["p50"] for r in multicast["receivers"]
            if r["latency_us"]["p50"] is not None]
    return sum(p50s) / len(p50s)


def test_run_through_the_vm_gives_trustworthy_results(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run(str(ROOT / "tests/data/e2e.yaml"), "--target", "vm", "--out", str(out),
                "--verbose")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(out)
    summary = json.loads((out / "summary.json").read_text())
    assert results.validation_errors(summary) == []
    _check_phases(summary, proc.stderr)
    assert (summary["status"], summary["target"], summary["accel"]) == ("complete", "vm", "tcg")
    assert summary["clocksource"] == "tsc"
    env = json.loads((out / "env.json").read_text())
    assert env["target"] == "vm" and env["kernel"] == summary["kernel"]
    # 4 cases × 2 repetitions, each again as the probes-off control run. The cases take
    # turns by load group (a mode's two traffics share a load): the group's probed runs,
    # then its control runs, or the other way round, alternating from group to group and
    # round to round (nlperf/design.py)
    progress = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert len(progress) == 16
    order = [(c, r, control) for r in range(2) for g in range(2)
             for control in ((False, True) if (r + g) % 2 == 0 else (True, False))
             for c in (2 * g, 2 * g + 1)]
    assert [(p["case"], p["rep"], p["control"]) for p in progress] == order
    assert [p["done"] for p in progress] == list(range(1, 17))
    assert all(p["total"] == 16 and p["elapsed_s"] > 0 for p in progress)
    assert summary["order"] == {"kind": "round-robin"}
    assert env["probes"]["attach"]["netlink_unicast"].startswith(("fentry", "kprobe"))
    assert (out / "report.md").exists() and (out / "report.html").exists()
    # the hand-off: one file in, one file back, merged by the outer run
    (handoff,) = out.glob(".handoff-*.json")
    (inner,) = out.glob(".inner-*.json")
    assert json.loads(handoff.read_text())["cases"] == [c["id"] for c in summary["cases"]]
    inner_result = json.loads(inner.read_text())
    assert inner_result["status"] == "complete"
    assert inner_result["cases"] == summary["cases"] and inner_result["env"] == env
    cases = {c["id"]: c for c in summary["cases"]}
    assert set(cases) == {f"mode={m},traffic={t}" for m in ("callback", "kthread")
                          for t in ("unicast", "multicast")}
    for ci, case in enumerate(summary["cases"]):
        assert [r["run_index"] for r in case["repetitions"]] == [
            order.index((ci, r, False)) for r in range(2)]
        assert [r["run_index"] for r in case["control"]["repetitions"]] == [
            order.index((ci, r, True)) for r in range(2)]
    # samples.parquet holds the samples behind every percentile of every repetition
    frame = pd.read_parquet(out / "samples.parquet")
    assert list(frame.columns) == ["case", "repetition", "control", "source", "rtt_ns",
                                   "user_to_kernel_ns", "queue_ns", "processing_ns",
                                   "kernel_to_user_ns", "latency_ns"]
    assert str(frame["rtt_ns"].dtype) == str(frame["latency_ns"].dtype) == "Int64"
    counts = frame.groupby(["case", "repetition", "control", "source"]).size().to_dict()
    expected: dict[tuple[str, int, bool, str], int] = {}
    for case in summary["cases"]:
        for control, reps in ((False, case["repetitions"]),
                              (True, case["control"]["repetitions"])):
            for rep in reps:
                key = (case["id"], rep["index"], control)
                if "unicast" in rep:
                    expected[(*key, "unicast")] = rep["unicast"]["rtt_us"]["count"]
                for r in rep.get("multicast", {}).get("receivers", []):
                    if r["latency_us"]["count"]:
                        expected[(*key, r["id"])] = r["latency_us"]["count"]
    assert counts == expected
    unicast = frame[frame["source"] == "unicast"]
    assert unicast["latency_ns"].isna().all() and unicast["queue_ns"].notna().all()
    assert not list(out.glob(".inner-samples-*"))  # merged, then removed
    for mode in ("callback", "kthread"):
        u = cases[f"mode={mode},traffic=unicast"]["unicast"]
        assert u["sent"] == u["received"] == 600 and u["errors"] == 0
        assert u["rtt_us"]["count"] == 600
        assert u["rtt_us"]["p50"] >= u["processing_us"]["p50"] > 0
        assert "multicast" not in cases[f"mode={mode},traffic=unicast"]
        for rep in cases[f"mode={mode},traffic=unicast"]["repetitions"]:
            calls = rep["probes"]["netlink_unicast"]["by_direction"]
            # batch 2: one datagram to the kernel per two messages, one reply per message
            assert calls["to_kernel"]["calls"] == rep["unicast"]["sent"] // 2
            assert calls["kernel_to_user"]["calls"] == rep["unicast"]["received"]
            # the module's probes saw every datagram, in repetition 1 too: it ran on a
            # kept load, after its control run, with the probes attached to it again
            assert rep["probes"]["module"]["nlperf_input"]["count"] == calls["to_kernel"][
                "calls"]
        # and the case pools them: counts summed, latencies from the pooled histograms
        case = cases[f"mode={mode},traffic=unicast"]
        pooled = case["probes"]["netlink_unicast"]["by_direction"]["to_kernel"]
        assert pooled["calls"] == 300
        assert pooled["latency_ns"]["count"] == sum(
            r["probes"]["netlink_unicast"]["by_direction"]["to_kernel"]["latency_ns"]["count"]
            for r in case["repetitions"])
        assert case["probes"]["netlink_unicast"]["by_direction"]["kernel_to_user"][
            "calls"] == 600
        for case in cases.values():
            control = case["control"]
            assert len(control["repetitions"]) == 2
            assert all("probes" not in r for r in control["repetitions"])
            assert case["probes"]["attach"]
        # the observer effect is the probed pass against the control pass, recomputed here
        probed = cases[f"mode={mode},traffic=unicast"]
        u, c = probed["unicast"], probed["control"]["unicast"]
        assert probed["probes"]["overhead"] == {
            "throughput_pct": _pct(u["throughput_per_s"], c["throughput_per_s"]),
            "p50_pct": _pct(u["rtt_us"]["p50"], c["rtt_us"]["p50"])}
        m = cases[f"mode={mode},traffic=multicast"]
        assert m["module"]["mode"] == mode
        for rep in m["repetitions"]:
            for r in rep["multicast"]["receivers"]:
                assert r["received"] + r["lost"] == r["sent"]
                assert r["lost"] == r["sk_drops"], r
        slow = [r for r in m["multicast"]["receivers"] if r["groups"] == [1, 2]]
        fast = [r for r in m["multicast"]["receivers"] if r["groups"] == [2]]
        assert all(r["sk_drops"] > 0 for r in slow), "the overrun must show drops"
        assert all(r["enobufs"] < r["sk_drops"] for r in slow)
        assert fast[0]["lost"] == 0 and fast[0]["received"] == 2 * 401
        # the send spacing: group 2's lossless receiver got all 400 sends, 399 pairs each
        # repetition; the slow receivers alone hear group 1, and lose pairs; the case pools
        for passed in (m, m["control"]):
            for rep in passed["repetitions"]:
                by_group = rep["multicast"]["send_spacing_by_group"]
                assert by_group["2"]["count"] == 399
                assert by_group["1"]["count"] <= 399
            pooled = passed["multicast"]
            assert pooled["send_spacing_by_group"]["2"]["count"] == 2 * 399
            assert pooled["send_spacing"]["count"] == sum(
                rep["multicast"]["send_spacing"]["count"] for rep in passed["repetitions"])
        assert m["probes"]["overhead"] == {"multicast_latency_p50_pct": _pct(
            _mean_p50(m["multicast"]), _mean_p50(m["control"]["multicast"]))}
    assert not _qemu_running(out)


def _check_phases(summary: dict[str, Any], stderr: str) -> None:
    """Where the time went: every phase recorded, the repetitions' summed into the run's."""
    spent = summary["phases_s"]
    assert list(spent) == ["module_build", "vm_boot", "setup", "bpf_compile", "bpf_attach",
                           "load", "start", "warmup", "measure", "read", "unload", "teardown",
                           "report", "other", "total"]
    # they add up: other is what no phase names
    assert sum(v for k, v in spent.items() if k != "total") == pytest.approx(spent["total"],
                                                                             abs=0.01)
    reps = [r for c in summary["cases"]
            for r in c["repetitions"] + c["control"]["repetitions"]]
    for name in ("load", "start", "warmup", "measure", "read", "unload"):
        assert spent[name] == pytest.approx(sum(r["phases_s"][name] for r in reps), abs=0.01)
    for r in reps:
        assert list(r["phases_s"]) == ["load", "start", "warmup", "measure", "read", "unload"]
        # the measure phase is the measured window and the collection after it
        assert r["phases_s"]["measure"] >= r["duration_s"] - 0.001
    # a module already built for this kernel takes no time to build
    assert all(v > 0 for k, v in spent.items() if k not in ("other", "module_build"))
    assert spent["other"] >= 0 and spent["module_build"] >= 0
    said = stderr[stderr.index("where the time went:"):].splitlines()[1:]
    assert [line.split()[1] for line in said] == list(spent)


def test_vm_timeout_keeps_partial_results_and_leaves_nothing_running(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run(str(ROOT / "scenarios/smoke.yaml"), "--target", "vm", "--out", str(out),
                "--timeout", "8")
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln or "failed" in ln]
    assert lines and "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "8 s" in summary["error"]
    assert results.validation_errors(summary) == []
    assert (out / "vm-console.log").exists()
    assert not _qemu_running(out)


def test_ctrl_c_stops_cleanly_with_status_interrupted(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([NLPERF, "run", str(ROOT / "scenarios/smoke.yaml"), "--target", "vm",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_restored)
    deadline = time.monotonic() + 120
    while not (out / "vm-console.log").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # the VM is booting
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert results.validation_errors(summary) == []
    assert not _qemu_running(out)


def test_ctrl_c_after_some_repetitions_keeps_them(tmp_path: Path) -> None:
    """The repetitions that finished in the VM survive, merged into the outer summary."""
    scen = tmp_path / "many.yaml"
    scen.write_text("name: many\nrepetitions: 20\nwarmup: {messages: 10}\n"
                    "unicast: {count: 500}\nprobes: {enabled: false}\n")
    out = tmp_path / "run"
    proc = subprocess.Popen([NLPERF, "run", str(scen), "--target", "vm", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_restored)
    progress = out / "progress.jsonl"
    deadline = time.monotonic() + 600
    while not (progress.exists() and progress.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None, "no repetition finished"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert results.validation_errors(summary) == []
    assert (summary["status"], summary["error"]) == ("interrupted", "interrupted by the user")
    (case,) = summary["cases"]
    assert 1 <= len(case["repetitions"]) < 20
    assert case["status"] == "failed"  # never finished: the guest was killed mid-case
    assert all(r["unicast"]["sent"] == 500 for r in case["repetitions"])  # each one whole
    assert not _qemu_running(out)
    # stopping is prompt: no report rendered after the signal, the command to get one is named
    assert not (out / "report.md").exists() and not (out / "report.html").exists()
    assert f"nlperf report {out}" in stderr.strip().splitlines()[-1]
    made = subprocess.run([NLPERF, "report", str(out)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert (out / "report.md").exists() and (out / "report.html").exists()


def test_a_kernel_matrix_boots_each_kernel_and_judges_on_within_boot_ratios(
        tmp_path: Path) -> None:
    releases = {prefix: [k.release for k in vm.lab_kernels() if vm.names_release(prefix, k.release)]
                for prefix in ("6.1", "6.12")}
    if any(len(found) != 1 for found in releases.values()):
        pytest.skip(f"needs one 6.1 and one 6.12 lab kernel, found {releases}")
    out = tmp_path / "run"
    proc = _run(str(ROOT / "tests/data/kernels-e2e.yaml"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert results.validation_errors(summary) == []
    assert [c["id"] for c in summary["cases"]] == [
        "kernel=6.1,mode=callback", "kernel=6.1,mode=kthread",
        "kernel=6.12,mode=callback", "kernel=6.12,mode=kthread"]
    assert all(len(c["repetitions"]) == 2 for c in summary["cases"])
    env = json.loads((out / "env.json").read_text())
    boots = [env, *env["more"]]  # one group per boot, each on the kernel its prefix names
    assert [(g["kernel"], sorted(g["module_params"])) for g in boots] == [
        (releases["6.1"][0], ["kernel=6.1,mode=callback", "kernel=6.1,mode=kthread"]),
        (releases["6.12"][0], ["kernel=6.12,mode=callback", "kernel=6.12,mode=kthread"])]
    report = (out / "report.md").read_text()
    assert (f"Kernels compared: 6.1 = {releases['6.1'][0]}; 6.12 = {releases['6.12'][0]}"
            in report)
    assert "| kthread ÷ callback, 6.12 vs 6.1 | round trip p50 |" in report
    compared = subprocess.run([NLPERF, "compare", str(out), "--along", "kernel", "--format",
                               "json"], capture_output=True, text=True, timeout=120)
    assert compared.returncode == 0, compared.stderr
    within = json.loads(compared.stdout)["within_boot"]
    (shift,) = within["comparisons"]
    rtt = next(m for m in shift["metrics"] if m["metric"] == "rtt_p50_us")
    assert rtt["unit"] == "ratio" and rtt["n_a"] == rtt["n_b"] == 2
    assert all(w["paired"] for w in rtt["within"].values())  # inside each boot: by rounds
    for side, kernel in (("estimate_a", "6.1"), ("estimate_b", "6.12")):  # the boots' ratios
        assert rtt[side] == pytest.approx(rtt["within"][kernel]["ratio"])
# --- a dump scenario (#11) ---

DUMP_SCENARIO = ROOT / "tests/data/dump-e2e.yaml"
DUMP_REPS, DUMPS, DUMP_RECV_SIZE = 2, 3, 4096  # as tests/data/dump-e2e.yaml says


def check_dump_run(run_dir: Path) -> None:
    """What the tiny dump scenario must give: every dump interrupted once and retried once."""
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert [c["id"] for c in summary["cases"]] == ["objects=300", "objects=1000"]
    for case, n in zip(summary["cases"], (300, 1000), strict=True):
        dumps = DUMP_REPS * DUMPS
        attempts = dumps * 2
        for block in (case["dump"], case["control"]["dump"]):
            assert (block["dumps"], block["attempts"], block["interrupted"],
                    block["retries"]) == (dumps, attempts, dumps, dumps)
            assert block["objects_read"] == attempts * n
            assert block["bytes"] == attempts * (n * 80 + 20)  # objects, then NLMSG_DONE
            # no datagram is longer than the 4096-byte recv; the kernel fills them to about
            # a page (47 to 51 messages here: its first one before any recv is smaller)
            assert block["bytes"] <= block["recvs"] * DUMP_RECV_SIZE
            assert block["recvs"] >= attempts * -(-(n + 1) // (DUMP_RECV_SIZE // 80))
            assert block["duration_ns"]["count"] == dumps
            assert block["objects_per_s"] > 0
        module = case["module"]
        assert (module["received"], module["processed"], module["replied"]) == (
            attempts, attempts, attempts)
    assert "## Dumps" in (run_dir / "report.md").read_text()


def test_a_tiny_dump_run_through_the_vm(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run(str(DUMP_SCENARIO), "--target", "vm", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_dump_run(out)

