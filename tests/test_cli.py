"""The real ``nlperf`` console script: exit statuses, one-line errors, reports and comparisons.

Nothing here builds or loads the module or boots a VM: every ``run`` is refused before that.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from nlperf import metrics, results
from nlperf.errors import EXIT_BAD_INPUT
from nlperf.models import Case, Latency, Repetition, Status, Unicast
from tests.lab import require_lab_vm

NLPERF = Path(sys.executable).parent / "nlperf"
if not NLPERF.exists():  # pytest run from another interpreter: the project's venv
    NLPERF = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "nlperf"


def nlperf(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NLPERF_DEBUG"}
    return subprocess.run([str(NLPERF), *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=env)


def run_many(calls: dict[str, tuple[list[str | Path], Path | None]]
             ) -> dict[str, subprocess.CompletedProcess[str]]:
    """Several invocations at once: each is mostly interpreter start-up."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {name: pool.submit(nlperf, *argv, cwd=cwd)
                   for name, (argv, cwd) in calls.items()}
        return {name: f.result() for name, f in futures.items()}


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# --- run refuses bad input before anything happens ------------------------------------------------

BROKEN = {
    "yaml-syntax": "name: s\nunicast: {count: 1\n",
    "unknown-key": "name: s\nunicast: {count: 1}\nrepetitons: 3\n",
    "bad-mode": "name: s\nmodule: {mode: foo}\nunicast: {count: 1}\n",
    "count-and-duration": "name: s\nunicast: {count: 1, duration: 1}\n",
    "unknown-matrix-key": "name: s\nunicast: {count: 1}\nmatrix: {unicast.nope: [1]}\n",
    "missing-file": None,
    "directory": None,
}


@dataclass
class BrokenRun:
    dir: Path
    scenario: Path
    out: Path
    proc: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def broken_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BrokenRun]:
    """``nlperf run`` on each broken scenario, the processes started side by side."""
    setups = {}
    for name, text in BROKEN.items():
        d = tmp_path_factory.mktemp(name)
        scen = d / "broken.yaml"
        if text is not None:
            scen.write_text(text)
        elif name == "directory":
            scen.mkdir()
        setups[name] = (d, scen, d / "out")
    procs = run_many({name: (["run", scen, "--out", out], d)
                      for name, (d, scen, out) in setups.items()})
    return {name: BrokenRun(*setups[name], procs[name]) for name in setups}


@pytest.mark.parametrize("name", list(BROKEN))
def test_run_broken_scenario(broken_runs: dict[str, BrokenRun], name: str) -> None:
    r = broken_runs[name]
    p = r.proc
    assert p.returncode == EXIT_BAD_INPUT, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert str(r.scenario) in lines[0]
    assert "Traceback" not in p.stderr + p.stdout
    assert p.stdout == ""
    assert not r.out.exists()
    # nothing else appeared either (no run directory, no build log)
    assert [x.name for x in r.dir.iterdir()] == (["broken.yaml"] if BROKEN[name] or
                                                 name == "directory" else [])


def test_run_existing_out_is_untouched(tmp_path: Path) -> None:
    scen = tmp_path / "ok.yaml"
    scen.write_text("name: ok\nunicast: {count: 10}\nprobes: {enabled: false}\n")
    out = tmp_path / "previous-run"
    out.mkdir()
    (out / "summary.json").write_text('{"old": true}\n')
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(out)
    require_lab_vm()  # the target is planned (not booted) before the run directory is made
    p = nlperf("run", scen, "--target", "vm", "--out", out)
    assert p.returncode == EXIT_BAD_INPUT, p.stderr
    assert "already exists" in p.stderr and str(out) in p.stderr
    assert "Traceback" not in p.stderr
    assert snapshot(out) == before
    assert sorted(x.name for x in out.iterdir()) == ["sub", "summary.json"]


def test_run_bad_target_option(tmp_path: Path) -> None:
    scen = tmp_path / "ok.yaml"
    scen.write_text("name: ok\nunicast: {count: 10}\n")
    p = nlperf("run", scen, "--target", "cloud", "--out", tmp_path / "out")
    assert p.returncode == EXIT_BAD_INPUT
    assert "cloud" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


# --- kmod parameters are checked before anything is built -------------------------------------


KMOD_BAD = {"queue_len=0": "queue_len", "proto=32": "proto", "noequals": "noequals"}


@pytest.fixture(scope="module")
def kmod_runs() -> dict[str, subprocess.CompletedProcess[str]]:
    calls: dict[str, tuple[list[str | Path], Path | None]] = {
        param: (["kmod", "load", "--param", param], None) for param in KMOD_BAD}
    calls["--mode bogus"] = (["kmod", "load", "--mode", "bogus"], None)
    return run_many(calls)


def test_kmod_load_bad_mode(kmod_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    p = kmod_runs["--mode bogus"]
    assert p.returncode == EXIT_BAD_INPUT
    assert "bogus" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("param", list(KMOD_BAD))
def test_kmod_load_bad_param(kmod_runs: dict[str, subprocess.CompletedProcess[str]],
                             param: str) -> None:
    p = kmod_runs[param]
    assert p.returncode == EXIT_BAD_INPUT, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and KMOD_BAD[param] in lines[0], p.stderr
    assert "Traceback" not in p.stderr


# --- reports and comparisons from a fabricated run ----------------------------------------------


def latency(values: list[int]) -> Latency:
    from nlperf.samples import latency_block

    return latency_block(values, 1000.0)


def make_run(parent: Path, name: str, rtt_ns: list[int], *, with_multicast: bool = False
             ) -> Path:
    run_dir = results.create_run_dir(name, out=parent / name)
    summary = results.new_summary(name, "vm", "tcg", "6.1.0-56-amd64", "tsc")
    for cid, scale in (("mode=callback", 1), ("mode=kthread", 3)):
        u = Unicast(sent=len(rtt_ns), received=len(rtt_ns), errors=0, timeouts=0,
                    throughput_per_s=1000.0, elapsed_s=len(rtt_ns) / 1000,
                    rtt_us=latency([x * scale for x in rtt_ns]),
                    queue_us=latency([x // 10 for x in rtt_ns]),
                    processing_us=latency([x // 5 for x in rtt_ns]))
        case = Case(id=cid, params={"module.mode": cid.split("=")[1]}, status=Status.complete,
                    repetitions=[Repetition(index=0, unicast=u)], unicast=u)
        if with_multicast:
            from types import SimpleNamespace

            import numpy as np

            recs = np.zeros((3, 5), dtype=np.int64)
            recs[:, 4] = [4000, 5000, 6000]
            r = SimpleNamespace(id="r0.0", groups=[1], received=90, enobufs=1, sk_drops=10,
                                seq_gaps=10, records=recs)
            case.multicast = metrics.multicast_block("generator", {1: 100}, [r])
        summary.cases.append(case)
    summary.status = Status.complete
    summary.finished = results.now_iso()
    results.write_summary(run_dir, summary)
    return run_dir


def test_report_writes_md_and_html(tmp_path: Path) -> None:
    run = make_run(tmp_path, "alpha", [10_000, 20_000, 30_000], with_multicast=True)
    summary_before = (run / "summary.json").read_bytes()
    p = nlperf("report", run)
    assert p.returncode == 0, p.stderr
    md, html = run / "report.md", run / "report.html"
    assert p.stdout.strip() == str(md)
    text = md.read_text()
    assert "alpha" in text and "mode=callback" in text and "mode=kthread" in text
    assert "TCG" in text  # the emulation caveat for accel tcg
    # rtt p50 of the cases: 20 µs and 60 µs
    assert "| 20.0 |" in text and "| 60.0 |" in text
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "<table" in page and "mode=kthread" in page
    assert (run / "summary.json").read_bytes() == summary_before  # reports never change results


def test_compare_csv_and_json(tmp_path: Path) -> None:
    a = make_run(tmp_path, "alpha", [10_000, 20_000, 30_000])
    b = make_run(tmp_path, "beta", [1_000, 2_000, 3_000], with_multicast=True)
    procs = run_many({"csv": (["compare", a, b, "--format", "csv"], None),
                      "json": (["compare", a, b, "--format", "json"], None),
                      "md": (["compare", a], None)})
    p = procs["csv"]
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(io.StringIO(p.stdout))
    assert list(df["run"]) == ["alpha", "alpha", "beta", "beta"]
    assert list(df["case"]) == ["mode=callback", "mode=kthread"] * 2
    assert list(df["rtt_p50_us"]) == [20.0, 60.0, 2.0, 6.0]
    assert list(df["sent"]) == [3, 3, 3, 3]
    assert df.loc[df["run"] == "beta", "mc_lost"].tolist() == [10, 10]
    assert df.loc[df["run"] == "alpha", "mc_lost"].isna().all()

    p = procs["json"]
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert len(rows) == 4
    assert {(r["run"], r["case"]) for r in rows} == {
        (run, case) for run in ("alpha", "beta") for case in ("mode=callback", "mode=kthread")}
    beta_cb = next(r for r in rows if r["run"] == "beta" and r["case"] == "mode=callback")
    assert beta_cb["rtt_p50_us"] == 2.0 and beta_cb["mc_sent"] == 100
    assert beta_cb["mc_received"] == 90 and beta_cb["mc_sk_drops"] == 10

    p = procs["md"]
    assert p.returncode == 0
    assert p.stdout.splitlines()[0].startswith("| run | case |")


# what `nlperf compare --format csv` printed at c7cf7ae for tests/data/summary-c7cf7ae.json
COMPARE_C7CF7AE = """\
run,case,status,sent,received,errors,throughput_per_s,rtt_p50_us,rtt_p99_us,queue_p50_us,\
processing_p50_us,mc_sent,mc_received,mc_lost,mc_sk_drops,mc_latency_p50_us,probe_tput_pct,\
probe_p50_pct,probe_mc_p50_pct
old,"mode=callback,traffic=unicast",complete,600,600,0,10953.7,255.72,1483.926,14.161,1.943,,,,,,\
-54.28,114.96,
old,"mode=callback,traffic=multicast",complete,,,,,,,,,4010,961,3049,3049,20749.539,,,-22.48
"""


def test_compare_a_run_written_by_earlier_code(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    fixture = Path(__file__).resolve().parent / "data" / "summary-c7cf7ae.json"
    (old / "summary.json").write_text(fixture.read_text())
    p = nlperf("compare", old, "--format", "csv")
    assert p.returncode == 0, p.stderr
    assert p.stdout == COMPARE_C7CF7AE


def test_compare_refuses_non_run_dirs(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "summary.json").write_text("{")
    invalid = tmp_path / "invalid"
    invalid.mkdir()
    (invalid / "summary.json").write_text('{"schema_version": 1}')
    procs = run_many({"empty": (["compare", empty], None),
                      "torn": (["report", torn], None),
                      "invalid": (["compare", invalid, "--format", "csv"], None)})
    for name, p in procs.items():
        assert p.returncode == EXIT_BAD_INPUT, (name, p.stderr)
        assert len(p.stderr.splitlines()) == 1, (name, p.stderr)
        assert "Traceback" not in p.stderr and p.stdout == ""
    assert str(empty) in procs["empty"].stderr
    assert "summary" in procs["invalid"].stderr
    assert not (torn / "report.md").exists()


# --- doctor and help -----------------------------------------------------------------------------


def test_doctor_json() -> None:
    p = nlperf("doctor", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["target"] in ("host", "vm", "none")
    assert isinstance(data["why"], str) and data["why"]
    checks = data["checks"]
    assert isinstance(checks, list) and checks
    for c in checks:
        assert isinstance(c["name"], str) and isinstance(c["ok"], bool)
        assert "detail" in c
    names = [c["name"] for c in checks]
    assert len(set(names)) == len(names)
    root = next((c for c in checks if c["name"] == "root"), None)
    if root is not None:
        assert root["ok"] == (os.geteuid() == 0)


def test_help_lists_commands() -> None:
    p = nlperf("--help")
    assert p.returncode == 0
    listed = set()
    in_commands = False
    for line in p.stdout.splitlines():
        if line.startswith("Commands:"):
            in_commands = True
        elif in_commands and line.startswith("  "):
            listed.add(line.split()[0])
    assert {"run", "doctor", "vm", "kmod", "report", "compare"} <= listed


def test_unknown_command_is_usage_error() -> None:
    p = nlperf("frobnicate")
    assert p.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in p.stderr
