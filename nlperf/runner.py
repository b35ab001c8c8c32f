"""``nlperf run``: scenario → run directory → target (host or lab VM) → summary.

The outer run owns the run directory: it alone writes summary.json, env.json and
probe-histograms.json (results.RunFiles) and decides the run's final status. Cases are
grouped by where they run — this host, or the lab VM with a given kernel (``target`` and
``kernel`` may be matrix keys: one VM boot per kernel). A host group runs in this process. For
a VM group the outer builds the module for the guest kernel, writes one hand-off file and
boots the VM (nlperf/handoff.py); the inner ``nlperf run --internal-handoff FILE`` there runs
the cases into its own result file and appends progress lines to progress.jsonl. The outer
tails progress.jsonl for its progress bar and merges the inner's result on every new line and
once more when the VM stops.
"""

from __future__ import annotations

import platform
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nlperf import capabilities, handoff, kmod, results, scenario, signals
from nlperf.cases import OnRepetition, run_cases, runs_per_case
from nlperf.errors import EXIT_INTERRUPTED, NlperfError
from nlperf.measure import clocksource, env_facts
from nlperf.models import GroupResult, Progress, Status
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
    # set only for the inner run in the lab VM: the outer run's hand-off file
    internal_handoff: Path | None = None


@dataclass
class RunOutcome:
    run_dir: Path
    status: Status
    exit_code: int


@dataclass
class Group:
    """Cases that run in one place: natively here, or in one VM boot of one kernel."""

    target: str                      # host | vm
    kernel: vm.LabKernel | None
    cases: list[scenario.Case]


Say = Callable[[str], None]
Bar = Any


@dataclass
class RunState:
    """How a run, or one group of its cases, ended: the first thing that stopped it wins."""

    status: Status = Status.complete
    error: str | None = None

    def stop(self, status: Status, error: str | None) -> None:
        if self.status is Status.complete:
            self.status, self.error = status, error


@contextmanager
def settles(state: RunState) -> Iterator[RunState]:
    """The one place an exception becomes a run status.

    Ctrl-C: interrupted; an nlperf error (the user's to fix, or a failed run): failed. Anything
    else is a bug and goes on up (the CLI prints it as one line).
    """
    try:
        yield state
    except KeyboardInterrupt as e:
        why = (f"stopped by {e.args[0]}" if isinstance(e, signals.Terminated)
               else "interrupted by the user")
        state.stop(Status.interrupted, why)
    except NlperfError as e:
        state.stop(Status.failed, str(e))


def _exit_for(status: Status) -> int:
    return {Status.complete: 0, Status.interrupted: signals.exit_status()}.get(status, 1)


def run(req: RunRequest, say: Say, progress_factory: Callable[[int], Bar] | None = None
        ) -> RunOutcome:
    _, _, raw = scenario.load(req.scenario_path)
    if req.internal_handoff is not None:
        return run_inner(req.internal_handoff, raw, str(req.scenario_path))
    resolved = scenario.with_overrides(raw, target=req.target, kernel=req.kernel)
    if not req.probes:
        resolved.setdefault("probes", {})["enabled"] = False
    base, cases = scenario.expand(resolved, str(req.scenario_path))
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
    files = results.RunFiles(run_dir, summary)
    bar = progress_factory(sum(runs_per_case(c) for c in cases)) if progress_factory else None
    state = RunState()
    try:
        with settles(state):
            for slot, group in enumerate(groups):
                run_group = _run_native if group.target == "host" else _run_in_vm
                ended = run_group(req, files, slot, group, say, bar)
                state.stop(ended.status, ended.error)
                if state.status is not Status.complete:
                    break
    finally:
        if bar is not None:
            bar.close()
    files.finish(state.status, state.error)
    return RunOutcome(run_dir, state.status, _exit_for(state.status))


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


def _execute(cases: list[scenario.Case], ko: Path, result: GroupResult,
             on_repetition: OnRepetition) -> RunState:
    """Run ``cases`` here into ``result``; the module is unloaded whatever happens."""
    state = RunState()
    try:
        with settles(state):
            run_cases(cases, ko, result, on_repetition)
    finally:
        with settles(state):
            kmod.unload()
        result.status = state.status
        if state.error:
            result.error = state.error
    return state


def _run_native(req: RunRequest, files: results.RunFiles, slot: int, group: Group, say: Say,
                bar: Bar) -> RunState:
    ko = kmod.build(platform.release(), log=files.run_dir / "kmod-build.log")
    env = env_facts("host", vm.running_under(), group.cases)
    result = GroupResult(status=Status.running, env=env, cases=[], probe_histograms={})

    def on_repetition(line: Progress) -> None:
        files.publish(slot, result)
        results.append_progress(files.run_dir, line)
        if bar is not None:
            bar.update(1)

    try:
        return _execute(group.cases, ko, result, on_repetition)
    finally:
        files.publish(slot, result)


def run_inner(handoff_file: Path, raw: dict[str, Any], source: str) -> RunOutcome:
    """Inside the VM: run the handed-over cases into the inner result file, nothing else."""
    h = handoff.read_handoff(handoff_file)
    _, cases = scenario.expand(raw, source)
    wanted = set(h.cases)
    cases = [c for c in cases if c.id in wanted]
    if len(cases) != len(wanted):
        raise NlperfError(f"internal: cases {sorted(wanted)} not all in the scenario")
    out = h.run_dir / h.result
    result = GroupResult(status=Status.running, env=env_facts(h.target, h.accel, cases),
                         cases=[], probe_histograms={})
    handoff.write_result(out, result)

    def on_repetition(line: Progress) -> None:
        handoff.write_result(out, result)  # before the progress line the outer acts on
        results.append_progress(h.run_dir, line)

    try:
        state = _execute(cases, h.ko, result, on_repetition)
    finally:
        handoff.write_result(out, result)
    return RunOutcome(h.run_dir, state.status, _exit_for(state.status))


def _run_in_vm(req: RunRequest, files: results.RunFiles, slot: int, group: Group, say: Say,
               bar: Bar) -> RunState:
    kernel = group.kernel
    assert kernel is not None
    run_dir = files.run_dir
    accel = vm.accel()
    say(f"building the module for {kernel.release}")
    ko = kmod.build(kernel.release, log=run_dir / "kmod-build.log")
    handoff_file, result_file = handoff.write_handoff(run_dir, kernel.release, ko, "vm", accel,
                                                      [c.id for c in group.cases])
    inner = handoff.inner_command(vm.venv_bin() / "nlperf", run_dir / results.SCENARIO_COPY,
                                  handoff_file)
    console = run_dir / results.CONSOLE_LOG
    files.summary.target, files.summary.accel = "vm", accel

    def merge(final: bool = False) -> GroupResult | None:
        got = handoff.read_result(result_file, final=final)
        if got is not None:
            files.publish(slot, got)
        return got

    say(f"booting the lab VM ({kernel.release}, {accel}); console: {console}")
    tail = _ProgressTail(run_dir / results.PROGRESS, bar, merge)
    state = RunState()
    rc: int | None = None
    with settles(state):
        try:
            rc = vm.boot(kernel, shlex.join(inner), rwdirs=[run_dir], timeout=req.timeout,
                         console=console, on_tick=tail.poll)
        finally:
            tail.poll()
    with settles(state):
        got = merge(final=True)
        if rc is not None:
            ran = got.cases if got is not None else []
            done = len(ran) == len(group.cases) and all(c.status is Status.complete
                                                        for c in ran)
            if rc != 0 or not done:
                inner_error = got.error if got is not None else None
                state.stop(Status.interrupted if rc == EXIT_INTERRUPTED else Status.failed,
                           inner_error or f"the run inside the VM stopped (exit {rc}) before "
                                          f"finishing; see {console}")
    return state


class _ProgressTail:
    """Follows progress.jsonl written by the inner run: advances the bar, merges its result."""

    def __init__(self, path: Path, bar: Bar, on_new: Callable[[], object]) -> None:
        self.path, self.bar, self.on_new = path, bar, on_new
        self.seen = self._count()

    def _count(self) -> int:
        try:
            return len(self.path.read_text().splitlines())
        except FileNotFoundError:
            return 0

    def poll(self) -> None:
        new = self._count() - self.seen
        if new > 0:
            self.seen += new
            if self.bar is not None:
                self.bar.update(new)
            self.on_new()
