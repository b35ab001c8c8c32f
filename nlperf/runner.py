"""``nlperf run``: scenario → run directory → target (host or lab VM) → summary.

The outer run owns the run directory and its final status. With target ``vm`` it builds the
module for the guest kernel, boots the lab VM and starts an inner ``nlperf run --target host``
there (internal flags hand over the run directory and module path); the inner run writes
per-case results and progress lines into the shared run directory, which the outer tails for
its progress bar and then finalises.
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

from nlperf import capabilities, kmod, results, scenario
from nlperf.errors import EXIT_INTERRUPTED, NlperfError
from nlperf.measure import clocksource, env_facts, module_params, run_cases
from nlperf.targets import vm

DEFAULT_TIMEOUT = 3600.0


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


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    exit_code: int


Say = Callable[[str], None]


def _finish(run_dir: Path, summary: dict[str, Any], status: str, error: str | None) -> None:
    summary["status"] = status
    summary["finished"] = results.now_iso()
    if error:
        summary["error"] = error
    results.write_summary(run_dir, summary)


def _exit_for(status: str) -> int:
    return {"complete": 0, "interrupted": EXIT_INTERRUPTED}.get(status, 1)


def run(req: RunRequest, say: Say, progress_factory: Callable[[int], Any] | None = None
        ) -> RunOutcome:
    base, cases, raw = scenario.load(req.scenario_path)
    resolved = scenario.with_overrides(raw, target=req.target, kernel=req.kernel)
    if not req.probes:
        resolved.setdefault("probes", {})["enabled"] = False
    base, cases = scenario.expand(resolved, str(req.scenario_path))
    if req.internal_run_dir is not None:
        return _run_inner(req, base.name, cases, say)
    target, why = capabilities.pick_target(base.target)
    say(why)
    total = sum(c.scenario.repetitions for c in cases)
    if target == "host":
        return _run_native(req, base.name, cases, resolved, say, progress_factory, total)
    return _run_in_vm(req, base, resolved, say, progress_factory, total)


def _prepare_run_dir(req: RunRequest, name: str, resolved: dict[str, Any]) -> Path:
    run_dir = results.create_run_dir(name, req.out)
    (run_dir / results.SCENARIO_COPY).write_text(yaml.safe_dump(resolved, sort_keys=False))
    return run_dir


def _run_native(req: RunRequest, name: str, cases: list[scenario.Case],
                resolved: dict[str, Any], say: Say, progress_factory: Callable[[int], Any] | None,
                total: int) -> RunOutcome:
    run_dir = _prepare_run_dir(req, name, resolved)
    release = platform.release()
    summary = results.new_summary(name, "host", vm.running_under(), release, clocksource())
    results.write_summary(run_dir, summary)
    try:
        ko = kmod.build(release, log=run_dir / "kmod-build.log")
    except NlperfError as e:
        _finish(run_dir, summary, "failed", str(e))
        raise
    bar = progress_factory(total) if progress_factory else None
    return _execute(run_dir, summary, cases, ko, "host", vm.running_under(),
                    (lambda rec: bar.update(1)) if bar else None, bar)


def _run_inner(req: RunRequest, name: str, cases: list[scenario.Case], say: Say) -> RunOutcome:
    assert req.internal_run_dir is not None and req.internal_ko is not None
    run_dir = req.internal_run_dir
    target = req.internal_target or "host"
    accel = req.internal_accel or "none"
    summary = results.new_summary(name, target, accel, platform.release(), clocksource())
    prev = run_dir / results.SUMMARY
    if prev.exists():
        summary["started"] = results.read_json(prev).get("started", summary["started"])
    return _execute(run_dir, summary, cases, req.internal_ko, target, accel, None, None)


def _execute(run_dir: Path, summary: dict[str, Any], cases: list[scenario.Case], ko: Path,
             target: str, accel: str, progress: Callable[[dict[str, Any]], None] | None,
             bar: Any) -> RunOutcome:
    env = env_facts(target, accel)
    env["module_params"] = {c.id: module_params(c.scenario) for c in cases}
    env["probes"] = {"attach": {}, "note": "probe suite not attached in this version"}
    results.write_json(run_dir / results.ENV, env)
    results.write_summary(run_dir, summary)
    status, error = "complete", None
    try:
        run_cases(cases, run_dir, summary, ko, progress)
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user"
    except NlperfError as e:
        status, error = "failed", str(e)
    finally:
        if bar is not None:
            bar.close()
        try:
            kmod.unload()
        except NlperfError as e:
            error = error or str(e)
            status = "failed"
    _finish(run_dir, summary, status, error)
    return RunOutcome(run_dir, status, _exit_for(status))


def _run_in_vm(req: RunRequest, base: scenario.Scenario, resolved: dict[str, Any], say: Say,
               progress_factory: Callable[[int], Any] | None, total: int) -> RunOutcome:
    kernel = capabilities.pick_lab_kernel(req.kernel or base.kernel)
    accel = vm.accel()
    run_dir = _prepare_run_dir(req, base.name, resolved)
    summary = results.new_summary(base.name, "vm", accel, kernel.release, None)
    results.write_summary(run_dir, summary)
    try:
        say(f"building the module for {kernel.release}")
        ko = kmod.build(kernel.release, log=run_dir / "kmod-build.log")
    except NlperfError as e:
        _finish(run_dir, summary, "failed", str(e))
        raise
    inner = [str(vm.venv_bin() / "nlperf"), "run", str(run_dir / results.SCENARIO_COPY),
             "--target", "host", "--no-report", "--internal-run-dir", str(run_dir),
             "--internal-ko", str(ko), "--internal-target", "vm", "--internal-accel", accel]
    if not req.probes:
        inner.append("--no-probes")
    say(f"booting the lab VM ({kernel.release}, {accel}); console: "
        f"{run_dir / results.CONSOLE_LOG}")
    bar = progress_factory(total) if progress_factory else None
    tail = _ProgressTail(run_dir / results.PROGRESS, bar)
    rc: int | None = None
    error: str | None = None
    status = "failed"
    try:
        rc = vm.boot(kernel, shlex.join(inner), rwdirs=[run_dir], timeout=req.timeout,
                     console=run_dir / results.CONSOLE_LOG, on_tick=tail.poll)
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user"
    except NlperfError as e:
        error = str(e)
    finally:
        tail.poll()
        if bar is not None:
            bar.close()
    inner_summary = _read_inner(run_dir)
    if inner_summary is not None:
        summary = inner_summary
    if rc is not None:
        status = summary.get("status", "failed")
        if status == "running":
            status = "failed"
            error = (f"the run inside the VM stopped (exit {rc}) before finishing; "
                     f"see {run_dir / results.CONSOLE_LOG}")
    summary["target"], summary["accel"] = "vm", accel
    _finish(run_dir, summary, status, error or summary.get("error"))
    return RunOutcome(run_dir, status, _exit_for(status))


def _read_inner(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / results.SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class _ProgressTail:
    """Follows progress.jsonl written by the inner run and advances the bar."""

    def __init__(self, path: Path, bar: Any) -> None:
        self.path, self.bar, self.seen = path, bar, 0

    def poll(self) -> None:
        if self.bar is None or not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        new = len(lines) - self.seen
        if new > 0:
            self.bar.update(new)
            self.seen = len(lines)


