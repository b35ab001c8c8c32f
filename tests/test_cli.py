"""The real ``nlperf`` console script: exit statuses, one-line errors, reports and comparisons.

Nothing here builds or loads the module or boots a VM: every ``run`` is refused before that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from nlperf.errors import EXIT_BAD_INPUT
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


# --- reports and comparisons (their outputs: tests/test_report.py, tests/test_compare.py) -------


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
