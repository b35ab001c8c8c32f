"""``nlperf run``: scenario → run directory → target (host or lab VM) → summary.

The outer run owns the run directory and its final status. Cases are grouped by where they
run — this host, or the lab VM with a given kernel (``target`` and ``kernel`` may be matrix
keys: one VM boot per kernel). For a VM group it builds the module for the guest kernel, boots
the VM and starts an inner ``nlperf run --target host`` there; internal flags hand over the
run directory, the module path and the cases to run. The inner run appends its cases to the
shared summary.json and progress lines to progress.jsonl, which the outer tails for its
progress bar; then the outer finalises the summary.
"""

from __future__ import annotations

import json
import platform
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nlperf import capabilities, kmod, results, scenario, signals
from nlperf.errors import EXIT_INTERRUPTED, NlperfError
from nlperf.measure import clocksource, env_facts, module_params, run_cases, runs_per_case
from nlperf.targets import vm

DEFAULT_TIMEOUT = 3600.0
CASE_SEP = ";"  # case ids contain commas, never semicolons (results/schema.json)


@dataclass
class RunRequest:
    scenario_path: Path
    target: str | None = None
    kernel: str | None = None
    out: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    probes: bool = True
    # internal hand-off from the outer run on the host to the inner run in the VM
    internal_run_dir: Path | None = None
    internal_ko: Path | None = None
    internal_target: str | None = None
    internal_accel: str | None = None
    internal_cases: str | None = None


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    exit_code: int


@dataclass
class Group:
    """Cases that run in one place: natively here, or in one VM boot of one kernel."""

    target: str                      # host | vm
    kernel: vm.LabKernel | None
    cases: list[scenario.Case]


Say = Callable[[str], None]
Bar = Any


def _exit_for(status: str) -> int:
    return {"complete": 0, "interrupted": signals.exit_status()}.get(status, 1)


def _finish(run_dir: Path, summary: dict[str, Any], status: str, error: str | None) -> None:
    summary["status"] = status
    summary["finished"] = results.now_iso()
    if error:
        summary["error"] = error
    results.write_summary(run_dir, summary)


def run(req: RunRequest, say: Say, progress_factory: Callable[[int], Bar] | None = None
        ) -> RunOutcome:
    _, _, raw = scenario.load(req.scenario_path)
    resolved = scenario.with_overrides(raw, target=req.target, kernel=req.kernel)
    if not req.probes:
        resolved.setdefault("probes", {})["enabled"] = False
    base, cases = scenario.expand(resolved, str(req.scenario_path))
    if req.internal_run_dir is not None:
        return _run_inner(req, cases)
    groups = plan(cases, req, say)
    run_dir = results.create_run_dir(base.name, req.out)
    (run_dir / results.SCENARIO_COPY).write_text(yaml.safe_dump(resolved, sort_keys=False))
    first = groups[0]
    if first.target == "vm":
        assert first.kernel is not None
        summary = results.new_summary(base.name, "vm", vm.accel(), first.kernel.release, None)
    else:
        summary = results.new_summary(base.name, "host", vm.running_under(),
                                      platform.release(), clocksource())
    results.write_summary(run_dir, summary)
    bar = progress_factory(sum(runs_per_case(c) for c in cases)) if progress_factory else None
    status, error = "complete", None
    try:
        for group in groups:
            if group.target == "host":
                status, error = _run_native(run_dir, summary, group, bar)
            else:
                summary, status, error = _run_in_vm(req, run_dir, summary, group, say, bar)
            if status != "complete":
                break
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user"
    except NlperfError as e:
        status, error = "failed", str(e)
    finally:
        if bar is not None:
            bar.close()
    _finish(run_dir, summary, status, error or summary.get("error"))
    return RunOutcome(run_dir, status, _exit_for(status))


def plan(cases: list[scenario.Case], req: RunRequest, say: Say) -> list[Group]:
    """Group cases by where they run; every target and kernel is checked before anything runs.

    Command-line flags win over the scenario, matrix values included.
    """
    groups: dict[tuple[str, str | None], Group] = {}
    said: set[str] = set()
    for case in cases:
        wanted = req.target or case.scenario.target
        target, why = capabilities.pick_target(wanted)
        if why not in said:
            say(why)
            said.add(why)
        kernel = None
        if target == "vm":
            kernel = vm.pick_lab_kernel(req.kernel or case.scenario.kernel)
        key = (target, kernel.release if kernel else None)
        groups.setdefault(key, Group(target, kernel, [])).cases.append(case)
    return list(groups.values())


def _tick(bar: Bar) -> Callable[[dict[str, Any]], None] | None:
    return (lambda _rec: bar.update(1)) if bar is not None else None


def _run_native(run_dir: Path, summary: dict[str, Any], group: Group,
                bar: Bar) -> tuple[str, str | None]:
    release = platform.release()
    ko = kmod.build(release, log=run_dir / "kmod-build.log")
    return _execute(run_dir, summary, group.cases, ko, "host", vm.running_under(), _tick(bar))


def _run_inner(req: RunRequest, cases: list[scenario.Case]) -> RunOutcome:
    """Inside the VM: continue the summary the outer run started, for the cases handed over."""
    assert req.internal_run_dir is not None and req.internal_ko is not None
    run_dir = req.internal_run_dir
    if req.internal_cases:
        ids = req.internal_cases
        if ids.startswith("@"):
            ids = Path(ids[1:]).read_text().strip()
        wanted = set(ids.split(CASE_SEP))
        cases = [c for c in cases if c.id in wanted]
        if len(cases) != len(wanted):
            raise NlperfError(f"internal: cases {sorted(wanted)} not all in the scenario")
    summary = results.read_json(run_dir / results.SUMMARY)
    summary["kernel"] = summary.get("kernel") or platform.release()
    summary["clocksource"] = summary.get("clocksource") or clocksource()
    target, accel = req.internal_target or "host", req.internal_accel or "none"
    status, error = _execute(run_dir, summary, cases, req.internal_ko, target, accel, None)
    if error:
        summary["error"] = error
    results.write_summary(run_dir, summary)
    return RunOutcome(run_dir, status, _exit_for(status))


def _write_env(run_dir: Path, cases: list[scenario.Case], target: str, accel: str) -> None:
    """env.json describes the first place the run executed; later groups are appended."""
    env = env_facts(target, accel)
    env["module_params"] = {c.id: module_params(c.scenario) for c in cases}
    env["probes"] = {"attach": {}}  # filled in once probes are attached (measure.py)
    path = run_dir / results.ENV
    if path.exists():
        first = results.read_json(path)
        first.setdefault("more", []).append(env)
        env = first
    results.write_json(path, env)


def _execute(run_dir: Path, summary: dict[str, Any], cases: list[scenario.Case], ko: Path,
             target: str, accel: str, progress: Callable[[dict[str, Any]], None] | None
             ) -> tuple[str, str | None]:
    _write_env(run_dir, cases, target, accel)
    status, error = "complete", None
    try:
        run_cases(cases, run_dir, summary, ko, progress)
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user"
    except NlperfError as e:
        status, error = "failed", str(e)
    finally:
        try:
            kmod.unload()
        except NlperfError as e:
            status, error = "failed", error or str(e)
    return status, error


def _run_in_vm(req: RunRequest, run_dir: Path, summary: dict[str, Any], group: Group,
               say: Say, bar: Bar) -> tuple[dict[str, Any], str, str | None]:
    kernel = group.kernel
    assert kernel is not None
    accel = vm.accel()
    say(f"building the module for {kernel.release}")
    ko = kmod.build(kernel.release, log=run_dir / "kmod-build.log")
    # the case list goes in a file: the guest command travels on the kernel command line,
    # which is limited to 2048 bytes
    cases_file = run_dir / f".cases-{kernel.release}"
    cases_file.write_text(CASE_SEP.join(c.id for c in group.cases))
    inner = [str(vm.venv_bin() / "nlperf"), "run", str(run_dir / results.SCENARIO_COPY),
             "--target", "host", "--no-report", "--internal-run-dir", str(run_dir),
             "--internal-ko", str(ko), "--internal-target", "vm", "--internal-accel", accel,
             "--internal-cases", f"@{cases_file}"]
    if not req.probes:
        inner.append("--no-probes")
    console = run_dir / results.CONSOLE_LOG
    say(f"booting the lab VM ({kernel.release}, {accel}); console: {console}")
    tail = _ProgressTail(run_dir / results.PROGRESS, bar)
    before = len(summary["cases"])
    rc: int | None = None
    error: str | None = None
    status = "failed"
    try:
        rc = vm.boot(kernel, shlex.join(inner), rwdirs=[run_dir], timeout=req.timeout,
                     console=console, on_tick=tail.poll)
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user"
    except NlperfError as e:
        error = str(e)
    finally:
        tail.poll()
    inner_summary = _read_summary(run_dir)
    if inner_summary is not None:
        summary = inner_summary
    if rc is not None:
        ran = summary["cases"][before:]
        done = len(ran) == len(group.cases) and all(c.get("status") == "complete"
                                                    for c in ran)
        if rc == 0 and done:
            status = "complete"
        else:
            status = "interrupted" if rc == EXIT_INTERRUPTED else "failed"
            error = summary.get("error") or (
                f"the run inside the VM stopped (exit {rc}) before finishing; see {console}")
    summary["target"], summary["accel"] = "vm", accel
    return summary, status, error


def _read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / results.SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class _ProgressTail:
    """Follows progress.jsonl written by the inner run and advances the bar."""

    def __init__(self, path: Path, bar: Bar) -> None:
        self.path, self.bar = path, bar
        self.seen = len(path.read_text().splitlines()) if path.exists() else 0

    def poll(self) -> None:
        if self.bar is None or not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        new = len(lines) - self.seen
        if new > 0:
            self.bar.update(new)
            self.seen = len(lines)
