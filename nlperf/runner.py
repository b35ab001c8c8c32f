"""``nlperf run``: scenario → run directory → target (host or lab VM) → summary.

The outer run owns the run directory: it alone writes summary.json, env.json and
probe-histograms.json (results.RunFiles) and decides the run's final status. Cases are
grouped by where they run — this host, or the lab VM with a given kernel (``target`` and
``kernel`` may be matrix keys: one VM boot per kernel). A host group runs in this process. For
a VM group the outer builds the module for the guest kernel, writes one hand-off file and
boots the VM (nlperf/handoff.py); the inner ``nlperf run --internal-handoff FILE`` there runs
the cases into its own result file and sample parts and appends progress lines to
progress.jsonl. The outer tails progress.jsonl for its progress bar and merges the inner's
result on every new line and once more when the VM stops; when the run ends it merges every
group's sample parts into samples.parquet.
"""

from __future__ import annotations

import datetime as dt
import platform
import secrets
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nlperf import capabilities, handoff, kmod, results, samples, scenario, signals
from nlperf.cases import OnRepetition, run_cases, runs_per_case
from nlperf.errors import EXIT_INTERRUPTED, BadInput, NlperfError
from nlperf.measure import clocksource, env_facts
from nlperf.models import GroupResult, Progress, RunOrder, Status
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
HOST_SAMPLES = ".host-samples"  # a host group's sample parts (this process writes them)


class BarFeed:
    """Progress lines → the bar: one step per line; the total follows each group's own total,
    which grows when ``repetitions: auto`` adds a round (so tqdm's ETA stays honest)."""

    def __init__(self, bar: Bar, totals: dict[int, int]) -> None:
        self.bar, self.totals = bar, dict(totals)

    def line(self, slot: int, line: Progress) -> None:
        if self.bar is None:
            return
        grown = line.total - self.totals.get(slot, 0)
        if grown:
            self.totals[slot] = line.total
            self.bar.total += grown
        self.bar.update(1)


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
    if base.order == "random" and base.seed is None:
        # drawn here, written into the scenario copy the inner run reads, recorded in the summary
        resolved["seed"] = secrets.randbits(32)
        base, cases = scenario.expand(resolved, str(req.scenario_path))
    groups = plan(cases, req, say)
    run_dir = results.create_run_dir(base.name, req.out)
    (run_dir / results.SCENARIO_COPY).write_text(yaml.safe_dump(resolved, sort_keys=False))
    started = dt.datetime.now(dt.UTC)
    first = groups[0]
    if first.target == "vm":
        assert first.kernel is not None
        summary = results.new_summary(base.name, "vm", vm.accel(), first.kernel.release, None)
    else:
        summary = results.new_summary(base.name, "host", vm.running_under(),
                                      platform.release(), clocksource())
    summary.order = RunOrder(kind=base.order)
    if base.seed is not None:
        summary.order.seed = base.seed
    files = results.RunFiles(run_dir, summary)
    totals = {slot: sum(runs_per_case(c) for c in g.cases) for slot, g in enumerate(groups)}
    bar: Bar = None
    state = RunState()
    try:
        with settles(state):
            # settled too: making the bar takes a while (tqdm's import), and a Ctrl-C then
            # must not leave the run directory's summary at "running"
            bar = progress_factory(sum(totals.values())) if progress_factory else None
            feed = BarFeed(bar, totals)
            for slot, group in enumerate(groups):
                run_group = _run_native if group.target == "host" else _run_in_vm
                ended = run_group(req, files, slot, group, say, feed, started)
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
    named_by: dict[str, str | None] = {}  # release → the scenario's value that named it
    for case in cases:
        wanted = req.target or case.scenario.target
        target, why = capabilities.pick_target(wanted)
        if why not in said:
            say(why)
            said.add(why)
        kernel = None
        if target == "vm":
            kernel = vm.pick_lab_kernel(req.kernel or case.scenario.kernel)
            value = case.scenario.kernel
            first = named_by.setdefault(kernel.release, value)
            if req.kernel is None and first != value:
                # one boot would hold both values' cases, each labelled as another kernel
                raise BadInput(f"kernel values {first!r} and {value!r} name the same lab "
                               f"kernel {kernel.release}")
        key = (target, kernel.release if kernel else None)
        groups.setdefault(key, Group(target, kernel, [])).cases.append(case)
    return list(groups.values())


def _execute(cases: list[scenario.Case], ko: Path, result: GroupResult,
             on_repetition: OnRepetition, started: dt.datetime,
             on_change: Callable[[str], None] = lambda _case_id: None) -> RunState:
    """Run ``cases`` here into ``result``; the module is unloaded whatever happens."""
    state = RunState()
    try:
        with settles(state):
            run_cases(cases, ko, result, on_repetition, started=started, on_change=on_change)
    finally:
        with settles(state):
            kmod.unload()
        result.status = state.status
        if state.error:
            result.error = state.error
    return state


def _run_native(req: RunRequest, files: results.RunFiles, slot: int, group: Group, say: Say,
                feed: BarFeed, started: dt.datetime) -> RunState:
    t0 = time.monotonic()
    ko = kmod.build(platform.release(), log=files.run_dir / "kmod-build.log")
    files.add_phase("module_build", time.monotonic() - t0)
    env = env_facts("host", vm.running_under(), group.cases)
    result = GroupResult(status=Status.running, env=env, cases=[], probe_histograms={})
    parts = files.run_dir / HOST_SAMPLES
    files.add_samples(slot, parts)

    def on_repetition(line: Progress, table: Any) -> None:
        samples.write_part(parts, line.done - 1, table)  # done - 1: the run's index in the boot
        files.publish(slot, result)
        results.append_progress(files.run_dir, line)
        feed.line(slot, line)

    try:
        return _execute(group.cases, ko, result, on_repetition, started,
                        lambda _case_id: files.publish(slot, result))
    finally:
        files.publish(slot, result)


def run_inner(handoff_file: Path, raw: dict[str, Any], source: str) -> RunOutcome:
    """Inside the VM: run the handed-over cases into the inner result file, nothing else."""
    t0 = time.monotonic()
    h = handoff.read_handoff(handoff_file)
    _, cases = scenario.expand(raw, source)
    wanted = set(h.cases)
    cases = [c for c in cases if c.id in wanted]
    if len(cases) != len(wanted):
        raise NlperfError(f"internal: cases {sorted(wanted)} not all in the scenario")
    samples.arrow_without_pandas()  # the guest never reads samples with pandas
    out = handoff.ResultWriter(h.run_dir / h.result)
    result = GroupResult(status=Status.running, env=env_facts(h.target, h.accel, cases),
                         cases=[], probe_histograms={})
    out.write(result)
    result.phases_s = {"setup": round(time.monotonic() - t0, 3)}

    def on_repetition(line: Progress, table: Any) -> None:
        # the samples, then the result naming their repetition, then the line the outer acts on
        samples.write_part(h.run_dir / h.samples, line.done - 1, table)
        out.write(result, changed=line.id)
        results.append_progress(h.run_dir, line)

    try:
        state = _execute(cases, h.ko, result, on_repetition,
                         dt.datetime.fromisoformat(h.started),
                         lambda case_id: out.write(result, changed=case_id))
    finally:
        result.phases_s = {**result.phases_s, "inner_run": round(time.monotonic() - t0, 3)}
        out.write(result)
    return RunOutcome(h.run_dir, state.status, _exit_for(state.status))


def _run_in_vm(req: RunRequest, files: results.RunFiles, slot: int, group: Group, say: Say,
               feed: BarFeed, started: dt.datetime) -> RunState:
    kernel = group.kernel
    assert kernel is not None
    run_dir = files.run_dir
    accel = vm.accel()
    say(f"building the module for {kernel.release}")
    t0 = time.monotonic()
    ko = kmod.build(kernel.release, log=run_dir / "kmod-build.log")
    files.add_phase("module_build", time.monotonic() - t0)
    handoff_file, result_file = handoff.write_handoff(run_dir, kernel.release, ko, "vm", accel,
                                                      [c.id for c in group.cases],
                                                      started.isoformat())
    files.add_samples(slot, run_dir / handoff.samples_name(kernel.release))
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
    tail = _ProgressTail(run_dir / results.PROGRESS, lambda line: feed.line(slot, line), merge)
    state = RunState()
    rc: int | None = None
    t0 = time.monotonic()
    with settles(state):
        try:
            rc = vm.boot(kernel, shlex.join(inner), rwdirs=[run_dir], timeout=req.timeout,
                         console=console, on_tick=tail.poll)
        finally:
            files.add_phase("vm", time.monotonic() - t0)
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
    """Follows progress.jsonl written by the inner run: feeds the bar, merges its result.

    Only whole lines count (one may be half-written when polled); lines already there when
    the tail starts belong to earlier groups. The result is merged at most every
    ``MERGE_EVERY_S``: each merge validates and rewrites the run's files on the host, whose
    two cores are the lab VM's two vCPUs (the caller merges once more when the VM stops).
    """

    MERGE_EVERY_S = 5.0

    def __init__(self, path: Path, on_line: Callable[[Progress], None],
                 on_new: Callable[[], object]) -> None:
        self.path, self.on_line, self.on_new = path, on_line, on_new
        self.seen = len(self._lines())
        self._merged = -self.MERGE_EVERY_S

    def _lines(self) -> list[str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return text.splitlines()[:text.count("\n")]

    def poll(self) -> None:
        lines = self._lines()
        new = lines[self.seen:]
        if not new:
            return
        self.seen = len(lines)
        for raw in new:
            try:
                self.on_line(Progress.model_validate_json(raw))
            except ValueError:  # not a line of ours: count nothing, keep going
                continue
        if time.monotonic() - self._merged >= self.MERGE_EVERY_S:
            self._merged = time.monotonic()
            self.on_new()
