"""Grouping cases by where they run (one VM boot per kernel, flags winning over the matrix);
the run status; the case loop; the host→VM hand-off, without a VM."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import yaml

from nlperf import capabilities, kmod, metrics, models, results, runner, samples, scenario
from nlperf import cases as cases_mod
from nlperf.errors import EXIT_INTERRUPTED, BadInput, NlperfError, RunFailed
from nlperf.measure import MODULE_COUNTERS, RepResult
from nlperf.models import Status
from nlperf.targets import vm
from nlperf.workloads.unicast import SenderResult

KERNELS = {r: vm.LabKernel(r, Path(f"/boot/vmlinuz-{r}"), Path(f"/lib/modules/{r}"))
           for r in ("6.1.0-56-amd64", "6.12.9-amd64")}


@pytest.fixture(autouse=True)
def fake_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    def pick_target(requested: str, checks: object = None) -> tuple[str, str]:
        return ("vm" if requested in ("auto", "vm") else "host"), f"picked for {requested}"

    def pick_lab_kernel(release: str | None = None) -> vm.LabKernel:
        if release is None:
            return KERNELS["6.12.9-amd64"]
        if release not in KERNELS:
            raise BadInput(f"no lab kernel {release}")
        return KERNELS[release]

    monkeypatch.setattr(capabilities, "pick_target", pick_target)
    monkeypatch.setattr(vm, "pick_lab_kernel", pick_lab_kernel)


def _cases(matrix: dict[str, list[object]]) -> list[scenario.Case]:
    return scenario.expand({"name": "p", "unicast": {"count": 10}, "matrix": matrix})[1]


def test_one_group_per_kernel_in_matrix_order() -> None:
    cases = _cases({"kernel": ["6.1.0-56-amd64", "6.12.9-amd64"],
                    "module.mode": ["callback", "kthread"]})
    said: list[str] = []
    groups = runner.plan(cases, runner.RunRequest(Path("x.yaml")), said.append)
    assert [(g.target, g.kernel.release if g.kernel else None, [c.id for c in g.cases])
            for g in groups] == [
        ("vm", "6.1.0-56-amd64", ["kernel=6.1.0-56-amd64,mode=callback",
                                  "kernel=6.1.0-56-amd64,mode=kthread"]),
        ("vm", "6.12.9-amd64", ["kernel=6.12.9-amd64,mode=callback",
                                "kernel=6.12.9-amd64,mode=kthread"]),
    ]
    assert said == ["picked for auto"]


def test_command_line_kernel_and_target_win_over_the_matrix() -> None:
    cases = _cases({"kernel": ["6.1.0-56-amd64", "6.12.9-amd64"]})
    groups = runner.plan(cases, runner.RunRequest(Path("x.yaml"), kernel="6.1.0-56-amd64"),
                         lambda _m: None)
    assert len(groups) == 1 and len(groups[0].cases) == 2
    groups = runner.plan(_cases({"target": ["vm", "host"]}),
                         runner.RunRequest(Path("x.yaml"), target="host"), lambda _m: None)
    assert [g.target for g in groups] == ["host"]


def test_mixed_targets_make_separate_groups() -> None:
    groups = runner.plan(_cases({"target": ["vm", "host"]}), runner.RunRequest(Path("x.yaml")),
                         lambda _m: None)
    assert [(g.target, len(g.cases)) for g in groups] == [("vm", 1), ("host", 1)]


def test_unknown_kernel_in_the_matrix_is_refused_before_anything_runs() -> None:
    with pytest.raises(BadInput, match=r"no lab kernel 5\.10"):
        runner.plan(_cases({"kernel": ["6.1.0-56-amd64", "5.10"]}),
                    runner.RunRequest(Path("x.yaml")), lambda _m: None)


def test_two_kernel_values_naming_one_lab_kernel_are_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def by_prefix(release: str | None = None) -> vm.LabKernel:
        (named,) = [k for r, k in KERNELS.items() if vm.names_release(release or "6.12", r)]
        return named

    monkeypatch.setattr(vm, "pick_lab_kernel", by_prefix)
    groups = runner.plan(_cases({"kernel": ["6.1", "6.12"]}), runner.RunRequest(Path("x.yaml")),
                         lambda _m: None)
    assert [(g.kernel.release if g.kernel else None, [c.id for c in g.cases])
            for g in groups] == [("6.1.0-56-amd64", ["kernel=6.1"]),
                                 ("6.12.9-amd64", ["kernel=6.12"])]
    with pytest.raises(BadInput) as same:
        runner.plan(_cases({"kernel": ["6.1", "6.12", "6.1.0-56-amd64"]}),
                    runner.RunRequest(Path("x.yaml")), lambda _m: None)
    assert same.value.message == ("kernel values '6.1' and '6.1.0-56-amd64' name the same lab "
                                  "kernel 6.1.0-56-amd64")
    # --kernel wins over the matrix: every case in its one boot, as asked
    (one,) = runner.plan(_cases({"kernel": ["6.1", "6.1.0-56-amd64"]}),
                         runner.RunRequest(Path("x.yaml"), kernel="6.12"), lambda _m: None)
    assert one.kernel is not None and one.kernel.release == "6.12.9-amd64"


# --- the run status: one context manager -------------------------------------------------------


def test_settles_turns_exceptions_into_a_status_and_the_first_stop_wins() -> None:
    state = runner.RunState()
    with runner.settles(state):
        pass
    assert (state.status, state.error) == (Status.complete, None)
    with runner.settles(state):
        raise KeyboardInterrupt
    assert (state.status, state.error) == (Status.interrupted, "interrupted by the user")
    with runner.settles(state):  # e.g. unloading the module fails afterwards
        raise RunFailed("rmmod: module in use")
    assert (state.status, state.error) == (Status.interrupted, "interrupted by the user")
    failed = runner.RunState()
    with runner.settles(failed):
        raise BadInput("no lab kernel 5.10")
    assert (failed.status, failed.error) == (Status.failed, "no lab kernel 5.10")
    with pytest.raises(ZeroDivisionError), runner.settles(runner.RunState()):
        _ = 1 / 0  # a bug is not a status: it goes up


# --- one loop for the probed and the control pass; the order of a boot's runs ------------------


class FakeProbes:
    attach_kinds: ClassVar[dict[str, str]] = {"netlink_unicast": "fentry/fexit"}
    compile_s, attach_s = 9.5, 0.75

    def __init__(self) -> None:
        self.attached = True  # a session attaches its core probes when it is made

    def suspend(self) -> None:
        self.attached = False

    def resume(self) -> None:
        self.attached = True

    def close(self) -> None:
        pass


def _rep(case: scenario.Case, index: int, probed: bool, rtt_ns: int) -> RepResult:
    records = np.array([[0, 10, 20, 30, rtt_ns]] * 4, dtype=np.int64)
    block = models.Repetition(
        index=index, duration_s=0.5,
        unicast=metrics.unicast_block([SenderResult(sent=4, received=4, elapsed_ns=10**6,
                                                    records=records)], timed=True),
        module=models.Module.model_validate({"mode": "callback", "queue_hwm": index,
                                             **{k: 4 for k in MODULE_COUNTERS}}),
        sched=models.Sched())
    if probed:
        block.probes = models.Probes.model_validate(
            {"attach": dict(FakeProbes.attach_kinds), "timing": True,
             "netlink_overrun": {"total": index + 1, "by_socket": {"7": index + 1}}})
    return RepResult(block, unicast_records=records,
                     probe_histograms=_histograms(index) if probed else None)


def _histograms(index: int) -> dict[str, object]:
    """probe-histograms.json rows of one repetition: one offcpu sample of 1000 + index ns."""
    return {"linear_step_ns": 1000, "rows": {"offcpu/lab": {
        "count": 1, "sum_ns": 1000 + index, "max_ns": 1000 + index, "log2": [[512, 1024, 1]],
        "linear": [0, 1, 0]}}}


Rtt = Callable[[scenario.Case, int, bool], int]


def _steady(case: scenario.Case, index: int, probed: bool) -> int:
    return 2000 if probed else 1000


@dataclass
class Loop:
    group: models.GroupResult
    lines: list[models.Progress]
    tables: list[object]
    raised: BaseException | None
    attached: list[bool]  # per run: whether any probe session was attached while it ran

    def runs(self) -> list[tuple[str, int, bool]]:
        return [(p.id, p.rep, p.control) for p in self.lines]


def _loop(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None,
          fail_with: BaseException | None = None, rtt: Rtt = _steady,
          **scenario_keys: object) -> Loop:
    """Two cases × 2 repetitions, probed and control, with a fake repetition (unless told)."""
    calls: list[int] = []

    def run_repetition(case: scenario.Case, index: int, ko: Path, timeout: float,
                       probes: FakeProbes | None = None,
                       quiet: Sequence[FakeProbes] = ()) -> RepResult:
        calls.append(index)
        for other in quiet:  # as measure.run_repetition does
            other.suspend()
        if probes is not None:
            probes.resume()
        loop.attached.append(any(ps.attached for ps in made))
        if fail_at is not None and len(calls) == fail_at:
            assert fail_with is not None
            raise fail_with
        return _rep(case, index, probes is not None, rtt(case, index, probes is not None))

    made: list[FakeProbes] = []

    def probe_session(case: scenario.Case, sessions: dict[object, FakeProbes]) -> FakeProbes | None:
        if not case.scenario.probes.enabled:
            return None
        if not sessions:
            made.append(FakeProbes())
            sessions[(31, (), True)] = made[-1]
        return sessions[(31, (), True)]

    monkeypatch.setattr(cases_mod, "run_repetition", run_repetition)
    monkeypatch.setattr(cases_mod, "_probe_session", probe_session)
    raw = {"name": "p", "repetitions": 2, "unicast": {"count": 4},
           "probes": {"enabled": True, "control": True},
           "matrix": {"module.mode": ["callback", "kthread"]}} | scenario_keys
    cases = scenario.expand(raw)[1]
    group = models.GroupResult(status=Status.running, env=_env(cases), cases=[],
                               probe_histograms={})
    loop = Loop(group, [], [], None, [])

    def on_repetition(line: models.Progress, table: object) -> None:
        loop.lines.append(line)
        loop.tables.append(table)

    try:
        cases_mod.run_cases(cases, Path("nlperf.ko"), group, on_repetition)
    except BaseException as e:
        loop.raised = e
    return loop


def _env(cases: list[scenario.Case]) -> models.Env:
    return models.Env(kernel="6.1.0-56-amd64", target="vm", accel="tcg", clocksource="tsc",
                      cpus=2, nlperf_version="0.1.0", python="3.11.2", module_params={},
                      probes=models.EnvProbes(attach={}))


CB, KT = "mode=callback", "mode=kthread"


def test_cases_take_turns_and_a_cases_pair_alternates_which_pass_goes_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loop = _loop(monkeypatch)
    assert loop.raised is None
    # callback and kthread never share a load: each is a load group of its own, and the
    # groups alternate which pass goes first, from one to the next and round to round
    # (nlperf/design.py)
    assert [(p.case, p.id, p.rep, p.control, p.done, p.total) for p in loop.lines] == [
        (0, CB, 0, False, 1, 8), (0, CB, 0, True, 2, 8),
        (1, KT, 0, True, 3, 8), (1, KT, 0, False, 4, 8),
        (0, CB, 1, True, 5, 8), (0, CB, 1, False, 6, 8),
        (1, KT, 1, False, 7, 8), (1, KT, 1, True, 8, 8)]
    # the control runs are probes-off: no probe session is attached while they run
    assert loop.attached == [not p.control for p in loop.lines]
    # every repetition knows its place in the boot's order (drift can be analysed, and
    # which pass went first read)
    first, second = loop.group.cases
    assert first.control is not None and second.control is not None
    assert [r.run_index for r in first.repetitions] == [0, 5]
    assert [r.run_index for r in first.control.repetitions] == [1, 4]
    assert [r.run_index for r in second.repetitions] == [3, 6]
    assert [r.run_index for r in second.control.repetitions] == [2, 7]
    assert [r.index for r in second.control.repetitions] == [0, 1]
    # a case keeps today's shape
    case = first
    doc = case.document()
    assert list(doc) == ["id", "params", "status", "repetitions", "unicast", "module",
                         "probes", "control"]
    assert list(doc["repetitions"][1]) == ["index", "run_index", "duration_s", "unicast",
                                           "module", "sched", "probes"]
    assert case.status is Status.complete and len(case.repetitions) == 2
    assert case.unicast is not None and case.unicast.sent == 8
    assert case.module is not None and case.module.queue_hwm == 1  # max, counters summed
    assert case.module.model_extra is not None and case.module.received == 8
    assert len(case.control.repetitions) == 2
    assert all(r.probes is None for r in case.control.repetitions)
    assert case.control.unicast is not None and case.control.unicast.rtt_us.p50 == 1.0
    # the probe counters pooled over the probed repetitions (1 + 2 overruns)
    assert case.probes is not None and case.probes.document() == {
        "attach": {"netlink_unicast": "fentry/fexit"},
        "overhead": {"throughput_pct": 0.0, "p50_pct": 100.0},
        "netlink_overrun": {"total": 3}}
    assert loop.group.probe_histograms == {c: [_histograms(0), _histograms(1)]
                                           for c in (CB, KT)}
    assert loop.group.env.probes.attach == {"netlink_unicast": "fentry/fexit"}
    # the one probe session's compile and attach, once for the group (not per repetition)
    spent = loop.group.document()["phases_s"]
    assert spent.pop("teardown") >= 0  # the probes closed, the module unloaded
    assert spent == {"bpf_compile": 9.5, "bpf_attach": 0.75}
    # progress lines carry the time and the seconds since the run started
    assert all(p.time.endswith("+00:00") and p.elapsed_s >= 0 for p in loop.lines)
    assert [p.elapsed_s for p in loop.lines] == sorted(p.elapsed_s for p in loop.lines)
    # and each repetition hands over its samples: 4 round trips each
    assert [t.num_rows for t in loop.tables] == [4] * 8  # type: ignore[attr-defined]
    assert [t.to_pydict()["control"] for t in loop.tables] == [  # type: ignore[attr-defined]
        [p.control] * 4 for p in loop.lines]


def test_order_sequential_keeps_the_old_order(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = _loop(monkeypatch, order="sequential")
    assert [(p.id, p.rep, p.control, p.done, p.total) for p in loop.lines] == [
        (CB, 0, False, 1, 8), (CB, 1, False, 2, 8), (CB, 0, True, 3, 8), (CB, 1, True, 4, 8),
        (KT, 0, False, 5, 8), (KT, 1, False, 6, 8), (KT, 0, True, 7, 8), (KT, 1, True, 8, 8)]
    assert [r.run_index for r in loop.group.cases[1].repetitions] == [4, 5]


def test_order_random_is_a_seeded_shuffle_of_each_round(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    three = {"module.mode": ["callback", "kthread", "workqueue"]}
    WQ = "mode=workqueue"
    loop = _loop(monkeypatch, order="random", seed=7, repetitions=3, matrix=three,
                 probes={"enabled": False})
    # random.Random(7): each round a fresh permutation of the three cases
    assert loop.runs() == [(WQ, 0, False), (CB, 0, False), (KT, 0, False),
                           (WQ, 1, False), (CB, 1, False), (KT, 1, False),
                           (KT, 2, False), (WQ, 2, False), (CB, 2, False)]
    again = _loop(monkeypatch, order="random", seed=7, repetitions=3, matrix=three,
                  probes={"enabled": False})
    assert again.runs() == loop.runs()
    other = _loop(monkeypatch, order="random", seed=8, repetitions=3, matrix=three,
                  probes={"enabled": False})
    assert other.runs() != loop.runs()
    # the summary lists cases in plan order whatever order they started in
    assert [c.id for c in loop.group.cases] == [CB, KT, WQ]
    with_control = _loop(monkeypatch, order="random", seed=1, repetitions=1)
    # kthread (the boot's second load group) goes control-first in round 0, wherever the
    # shuffle puts it
    assert with_control.runs() == [(KT, 0, True), (KT, 0, False), (CB, 0, False),
                                   (CB, 0, True)]


def _noisy_kthread(case: scenario.Case, index: int, probed: bool) -> int:
    """callback: the same round trip every repetition; kthread: ±50 % from one to the next."""
    if case.scenario.module.mode == "callback":
        return 10_000
    return 10_000 + (5_000 if index % 2 else -5_000) + 100 * index


def test_repetitions_auto_adds_rounds_until_the_ci_target_or_max(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rule = {"min": 3, "max": 5, "target_ci_pct": 5}
    loop = _loop(monkeypatch, rtt=_noisy_kthread, repetitions=rule, probes={"enabled": False})
    assert loop.raised is None
    # three rounds of both cases, then kthread alone: the total grows one run per added round
    assert [(p.id, p.rep, p.done, p.total) for p in loop.lines] == [
        (CB, 0, 1, 6), (KT, 0, 2, 6), (CB, 1, 3, 6), (KT, 1, 4, 6), (CB, 2, 5, 6),
        (KT, 2, 6, 6), (KT, 3, 7, 7), (KT, 4, 8, 8)]
    quiet, noisy = loop.group.cases
    assert quiet.repetitions_auto is not None and quiet.repetitions_auto.document() == {
        "target_ci_pct": 5.0, "met": True, "rounds": 3,
        "achieved_ci_pct": {"unicast.rtt_us.p50": 0.0, "unicast.rtt_us.p99": 0.0,
                            "unicast.throughput_per_s": 0.0}}
    assert noisy.repetitions_auto is not None
    assert (noisy.repetitions_auto.met, noisy.repetitions_auto.rounds) == (False, 5)
    achieved = noisy.repetitions_auto.achieved_ci_pct
    assert achieved["unicast.throughput_per_s"] == 0.0
    assert achieved["unicast.rtt_us.p50"] is not None and achieved["unicast.rtt_us.p50"] > 5
    assert len(noisy.repetitions) == 5 and noisy.status is Status.complete
    assert quiet.status is Status.complete


def test_repetitions_auto_control_follows_and_counts_in_the_total(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rule = {"min": 2, "max": 3, "target_ci_pct": 5}
    loop = _loop(monkeypatch, rtt=_noisy_kthread, repetitions=rule)
    # a control run that goes first is followed by its probed partner (the probed pass
    # decided before the round), and kthread's third round runs control first again
    assert [(p.id, p.rep, p.control, p.total) for p in loop.lines] == [
        (CB, 0, False, 8), (CB, 0, True, 8), (KT, 0, True, 8), (KT, 0, False, 8),
        (CB, 1, True, 8), (CB, 1, False, 8), (KT, 1, False, 8), (KT, 1, True, 8),
        (KT, 2, True, 10), (KT, 2, False, 10)]
    quiet, noisy = loop.group.cases
    assert noisy.control is not None and len(noisy.control.repetitions) == 3
    assert noisy.repetitions_auto is not None and noisy.repetitions_auto.rounds == 3
    assert quiet.control is not None and len(quiet.control.repetitions) == 2
    assert len(quiet.repetitions) == 2
    assert quiet.status is noisy.status is Status.complete


def _rising(case: scenario.Case, index: int, probed: bool) -> int:
    """Repetition r's round trip: probed 2000 + 2000 r ns, control 1000 + 2000 r ns."""
    return (2000 if probed else 1000) + 2000 * index


def test_the_observer_effect_pairs_the_repetitions_both_passes_have(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loop = _loop(monkeypatch, rtt=_rising)
    # pooled p50s: probed 3 µs (2 and 4), control 2 µs (1 and 3); round 1 ended on its
    # probed run, so the overhead includes it
    for case in loop.group.cases:
        assert case.probes is not None and case.probes.document()["overhead"] == {
            "throughput_pct": 0.0, "p50_pct": 50.0}
    # stopped mid-round 1, after callback's control repetition 1 and before its probed one:
    # repetition 0 of each pass (2 µs against 1 µs), not the control's 2 µs pooled over both
    loop = _loop(monkeypatch, rtt=_rising, fail_at=6, fail_with=KeyboardInterrupt())
    assert isinstance(loop.raised, KeyboardInterrupt) and len(loop.lines) == 5
    first = loop.group.cases[0]
    assert first.status is Status.interrupted
    assert first.control is not None and len(first.control.repetitions) == 2
    assert len(first.repetitions) == 1
    assert first.probes is not None and first.probes.document()["overhead"] == {
        "throughput_pct": 0.0, "p50_pct": 100.0}


def test_a_pass_that_stops_keeps_and_pools_what_finished(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    # the 4th run is kthread's first probed repetition, after its first control one
    loop = _loop(monkeypatch, fail_at=4, fail_with=RunFailed("sender 0 failed: EPERM"))
    assert isinstance(loop.raised, RunFailed) and len(loop.lines) == 3
    first, second = loop.group.cases
    assert (second.status, second.error) == (Status.failed, "sender 0 failed: EPERM")
    assert second.control is not None and len(second.control.repetitions) == 1
    assert second.control.unicast is not None and second.control.unicast.sent == 4
    assert second.unicast is None and second.repetitions == []
    assert second.probes is None
    # the case that took its turn before keeps its pair, and says why it did not finish
    assert (first.status, first.error) == (
        Status.failed, "not finished: the run stopped when mode=kthread failed")
    assert first.control is not None and len(first.control.repetitions) == 1
    assert first.probes is not None and first.probes.overhead is not None

    loop = _loop(monkeypatch, fail_at=2, fail_with=KeyboardInterrupt())
    assert isinstance(loop.raised, KeyboardInterrupt) and len(loop.lines) == 1
    (case,) = loop.group.cases
    assert case.status is Status.interrupted and case.error is None
    assert len(case.repetitions) == 1 and case.unicast is not None and case.unicast.sent == 4
    assert case.control is None and case.probes is not None and case.probes.overhead is None


# --- the host→VM hand-off, with the VM played by the inner run in this process -------------------


class VMStopped(BaseException):
    """The guest vanished (timeout, Ctrl-C on the host): the inner run gets no say."""


@dataclass
class FakeLab:
    run_dir: Path
    stop_after: int | None = None    # repetitions before the VM goes away
    stop_with: BaseException | None = None
    inner_fails: str | None = None   # the inner run's cases fail with this error
    commands: list[list[str]] = field(default_factory=list)
    seen_by_outer: list[int] = field(default_factory=list)  # cases in summary.json per tick
    on_tick: Callable[[], None] | None = None
    seeds: list[int | None] = field(default_factory=list)  # the inner run's scenario seed
    started: list[str] = field(default_factory=list)  # the run start the inner was handed

    def run_cases(self, cases: list[scenario.Case], ko: Path, group: models.GroupResult,
                  on_repetition: cases_mod.OnRepetition, case_timeout: float = 600.0, *,
                  started: dt.datetime | None = None,
                  on_change: cases_mod.OnChange | None = None) -> None:
        assert ko == self.run_dir.parent / "build" / "nlperf.ko"
        assert started is not None
        self.started.append(started.isoformat())
        self.seeds.append(cases[0].scenario.seed)
        for i, case in enumerate(cases):
            entry = models.Case(id=case.id, params=case.params, status=Status.failed,
                                repetitions=[models.Repetition(index=0, run_index=i)])
            group.cases.append(entry)
            if self.inner_fails:
                entry.error = self.inner_fails
                raise RunFailed(self.inner_fails)
            # case i sends i + 1 round trips of (i + 1) µs
            records = np.array([[0, 10, 20, 30, 1000 * (i + 1)]] * (i + 1), dtype=np.int64)
            on_repetition(models.Progress(case=i, cases=len(cases), id=case.id, rep=0,
                                          control=False, done=i + 1, total=len(cases),
                                          time=results.now_iso(), elapsed_s=0.5 * i),
                          samples.sample_table(case.id, 0, False, records, True, {}))
            assert self.on_tick is not None
            self.on_tick()  # the outer polls while the guest runs
            self.seen_by_outer.append(len(json.loads(
                (self.run_dir / "summary.json").read_text())["cases"]))
            if self.stop_after == i + 1:
                raise VMStopped
            entry.status = Status.complete

    def boot(self, kernel: vm.LabKernel, cmd: str, *, rwdirs: list[Path],
             timeout: float, console: Path | None = None,
             on_tick: Callable[[], None] | None = None) -> int:
        assert rwdirs == [self.run_dir] and console == self.run_dir / "vm-console.log"
        argv = shlex.split(cmd)
        self.commands.append(argv)
        self.on_tick = on_tick
        try:
            outcome = runner.run(runner.RunRequest(Path(argv[2]),
                                                   internal_handoff=Path(argv[4])),
                                 lambda _m: None)
        except VMStopped:
            assert self.stop_with is not None
            raise self.stop_with from None
        return outcome.exit_code


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLab:
    fake = FakeLab(tmp_path / "run")
    ko = tmp_path / "build" / "nlperf.ko"
    monkeypatch.setattr(kmod, "build", lambda release, log=None: ko)
    monkeypatch.setattr(kmod, "unload", lambda: None)
    monkeypatch.setattr(vm, "accel", lambda: "tcg")
    monkeypatch.setattr(vm, "boot", fake.boot)
    monkeypatch.setattr(runner, "run_cases", fake.run_cases)
    return fake


def _vm_run(tmp_path: Path, more: str = "") -> runner.RunOutcome:
    scen = tmp_path / "s.yaml"
    scen.write_text("name: s\nunicast: {count: 10}\nprobes: {enabled: false}\n"
                    "matrix: {module.mode: [callback, kthread, workqueue]}\n" + more)
    return runner.run(runner.RunRequest(scen, target="vm", out=tmp_path / "run"),
                      lambda _m: None)


def test_the_outer_hands_off_one_file_and_alone_writes_the_summary(
        tmp_path: Path, lab: FakeLab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner._ProgressTail, "MERGE_EVERY_S", 0.0)  # merge on every line
    outcome = _vm_run(tmp_path)
    run_dir = lab.run_dir
    assert (outcome.status, outcome.exit_code) == (Status.complete, 0)
    release = "6.12.9-amd64"
    handoff_file = run_dir / f".handoff-{release}.json"
    (argv,) = lab.commands
    assert argv[1:] == ["run", str(run_dir / "scenario.yaml"), "--internal-handoff",
                        str(handoff_file)]
    handed = json.loads(handoff_file.read_text())
    assert handed == {
        "run_dir": str(run_dir), "ko": str(tmp_path / "build" / "nlperf.ko"), "target": "vm",
        "accel": "tcg", "cases": ["mode=callback", "mode=kthread", "mode=workqueue"],
        "result": f".inner-{release}.json", "samples": f".inner-samples-{release}",
        "started": lab.started[0]}
    assert dt.datetime.fromisoformat(handed["started"]).tzinfo is not None
    inner = json.loads((run_dir / f".inner-{release}.json").read_text())
    assert inner["status"] == "complete" and len(inner["cases"]) == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert results.validation_errors(summary) == []
    assert (summary["status"], summary["target"], summary["accel"]) == ("complete", "vm", "tcg")
    assert summary["cases"] == inner["cases"]
    assert summary["clocksource"] == inner["env"]["clocksource"]
    assert lab.seen_by_outer == [1, 2, 3]  # the outer's summary follows every progress line
    env = json.loads((run_dir / "env.json").read_text())
    assert env == inner["env"] and env["target"] == "vm"
    assert len((run_dir / "progress.jsonl").read_text().splitlines()) == 3
    assert summary["order"] == {"kind": "round-robin"} and lab.seeds == [None]
    # the samples came back through the hand-off; the outer alone wrote samples.parquet
    frame = pd.read_parquet(run_dir / "samples.parquet")
    assert frame.groupby("case")["rtt_ns"].agg(["count", "max"]).to_dict() == {
        "count": {"mode=callback": 1, "mode=kthread": 2, "mode=workqueue": 3},
        "max": {"mode=callback": 1000, "mode=kthread": 2000, "mode=workqueue": 3000}}
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([
        f".handoff-{release}.json", f".inner-{release}.json", "env.json", "progress.jsonl",
        "samples.parquet", "scenario.yaml", "summary.json"])


@pytest.mark.parametrize(("stop_with", "status", "exit_code", "error"), [
    (RunFailed("the lab VM did not finish within 8 s"), Status.failed, 1,
     "the lab VM did not finish within 8 s"),
    (KeyboardInterrupt(), Status.interrupted, EXIT_INTERRUPTED, "interrupted by the user"),
])
def test_a_vm_that_goes_away_keeps_the_repetitions_that_finished(
        tmp_path: Path, lab: FakeLab, stop_with: BaseException, status: Status,
        exit_code: int, error: str) -> None:
    lab.stop_after, lab.stop_with = 2, stop_with
    outcome = _vm_run(tmp_path)
    assert (outcome.status, outcome.exit_code) == (status, exit_code)
    summary = json.loads((lab.run_dir / "summary.json").read_text())
    assert results.validation_errors(summary) == []
    assert (summary["status"], summary["error"]) == (status.value, error)
    assert [(c["id"], c["status"]) for c in summary["cases"]] == [
        ("mode=callback", "complete"), ("mode=kthread", "failed")]
    assert len(summary["cases"][1]["repetitions"]) == 1
    # the samples of what finished are kept too
    frame = pd.read_parquet(lab.run_dir / "samples.parquet")
    assert frame["case"].value_counts().to_dict() == {"mode=callback": 1, "mode=kthread": 2}


def test_order_random_draws_one_seed_the_inner_run_uses_and_the_summary_records(
        tmp_path: Path, lab: FakeLab) -> None:
    outcome = _vm_run(tmp_path, "order: random\n")
    assert outcome.status is Status.complete
    summary = json.loads((lab.run_dir / "summary.json").read_text())
    seed = summary["order"]["seed"]
    assert summary["order"] == {"kind": "random", "seed": seed} and isinstance(seed, int)
    assert lab.seeds == [seed]
    copy = yaml.safe_load((lab.run_dir / "scenario.yaml").read_text())
    assert (copy["order"], copy["seed"]) == ("random", seed)


def test_a_given_seed_is_kept(tmp_path: Path, lab: FakeLab) -> None:
    _vm_run(tmp_path, "order: random\nseed: 1234\n")
    summary = json.loads((lab.run_dir / "summary.json").read_text())
    assert summary["order"] == {"kind": "random", "seed": 1234} and lab.seeds == [1234]


def test_the_inner_runs_error_becomes_the_runs_error(tmp_path: Path, lab: FakeLab) -> None:
    lab.inner_fails = "sender 0 failed: PermissionError: [Errno 1]"
    outcome = _vm_run(tmp_path)
    assert (outcome.status, outcome.exit_code) == (Status.failed, 1)
    summary = json.loads((lab.run_dir / "summary.json").read_text())
    assert summary["error"] == lab.inner_fails
    assert [(c["id"], c["status"], c["error"]) for c in summary["cases"]] == [
        ("mode=callback", "failed", lab.inner_fails)]
    assert len(pd.read_parquet(lab.run_dir / "samples.parquet")) == 0  # loads all the same


def test_a_handoff_naming_unknown_cases_is_refused(tmp_path: Path) -> None:
    scen = tmp_path / "s.yaml"
    scen.write_text("name: s\nunicast: {count: 10}\n")
    h = tmp_path / ".handoff-x.json"
    h.write_text(json.dumps({"run_dir": str(tmp_path), "ko": "k.ko", "target": "vm",
                             "accel": "tcg", "cases": ["mode=nope"],
                             "result": ".inner-x.json", "samples": ".inner-samples-x",
                             "started": "2026-01-02T03:04:05+00:00"}))
    with pytest.raises(NlperfError, match="mode=nope"):
        runner.run(runner.RunRequest(scen, internal_handoff=h), lambda _m: None)
    h.write_text('{"run_dir": 1}')
    with pytest.raises(BadInput, match="not a hand-off file"):
        runner.run(runner.RunRequest(scen, internal_handoff=h), lambda _m: None)


# --- the progress bar: whole lines only, a total that grows with added rounds -------------------


@dataclass
class FakeBar:
    total: int
    n: int = 0

    def update(self, k: int) -> None:
        self.n += k


def _progress(done: int, total: int) -> str:
    return models.Progress(case=0, cases=1, id="default", rep=done - 1, control=False,
                           done=done, total=total, time="2026-01-02T03:04:05.000+00:00",
                           elapsed_s=float(done)).model_dump_json() + "\n"


def test_the_bar_follows_whole_progress_lines_and_grows_with_added_rounds(tmp_path: Path
                                                                          ) -> None:
    bar = FakeBar(total=10)
    feed = runner.BarFeed(bar, {0: 6, 1: 4})  # two groups; the second runs in the VM
    path = tmp_path / "progress.jsonl"
    path.write_text(_progress(6, 6))  # the first group's last line, there before the tail
    merged: list[int] = []
    tail = runner._ProgressTail(path, lambda line: feed.line(1, line),
                                lambda: merged.append(len(merged)))
    tail.MERGE_EVERY_S = 0.0  # merge on every new line (the throttle: the next test)
    tail.poll()
    assert (bar.n, bar.total, merged) == (0, 10, [])
    half = _progress(2, 5)
    with open(path, "a") as f:
        f.write(_progress(1, 4) + half[:20])  # one line and the start of the next
    tail.poll()
    assert (bar.n, bar.total, merged) == (1, 10, [0])
    with open(path, "a") as f:
        f.write(half[20:])  # repetitions: auto added a round: the group's total is now 5
    tail.poll()
    tail.poll()
    assert (bar.n, bar.total, merged) == (2, 11, [0, 1])


def test_the_outer_merges_the_inner_result_at_most_every_few_seconds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each merge validates and rewrites the run's files on the host, whose cores run the VM."""
    clock = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    path = tmp_path / "progress.jsonl"
    path.write_text("")
    lines: list[int] = []
    merged: list[float] = []
    tail = runner._ProgressTail(path, lambda line: lines.append(line.done),
                                lambda: merged.append(clock[0]))
    for done in range(1, 8):
        with open(path, "a") as f:
            f.write(_progress(done, 7))
        tail.poll()
        clock[0] += 2.0
    assert lines == list(range(1, 8))  # the bar sees every line
    assert merged == [1000.0, 1006.0, 1012.0]  # the result: the first, then every >= 5 s


@pytest.mark.parametrize(("order", "loads"), [
    # round r of each (mode, work) pair: probed + control of both traffics share one load
    ("round-robin", 3 * 2 * 3),
    # a case's probed repetitions, then its control ones, back to back: one load per run
    ("sequential", 3 * 2 * 2 * 3 * 2),
])
def test_a_boot_keeps_the_module_loaded_only_within_a_repetition_of_equal_parameters(
        monkeypatch: pytest.MonkeyPatch, order: str, loads: int) -> None:
    """The headline's 72 runs take 18 loads; no two repetitions of a case share one."""
    from nlperf import measure

    loaded: list[tuple[dict[str, str], int]] = []  # (params, repetition) of every insmod
    state = {"loaded": False}
    monkeypatch.setattr(kmod, "is_loaded", lambda: state["loaded"])
    monkeypatch.setattr(kmod, "unload", lambda: state.update(loaded=False))

    def load(ko: Path, params: dict[str, str]) -> None:
        assert not state["loaded"], "insmod over a loaded module"
        state["loaded"] = True
        loaded.append((params, len(loaded)))

    monkeypatch.setattr(kmod, "load", load)
    monkeypatch.setattr(measure, "_idle", lambda proto, wait_s: True)
    shared: dict[tuple[str, int], set[int]] = {}  # (case, rep) -> the loads it ran on

    session = FakeProbes()
    detaches: list[int] = []  # the runs before which the probes were detached (~1 s each)

    def run_repetition(case: scenario.Case, index: int, slot: measure.ModuleSlot,
                       timeout: float, probes: FakeProbes | None = None,
                       quiet: Sequence[FakeProbes] = ()) -> RepResult:
        if session.attached and session in quiet:
            detaches.append(len(shared))
        for other in quiet:
            other.suspend()
        if probes is not None:
            probes.resume()
        slot.take(measure.module_params(case.scenario), index)
        shared.setdefault((case.id, index), set()).add(len(loaded))
        return _rep(case, index, probes is not None, 10_000.0)

    monkeypatch.setattr(cases_mod, "run_repetition", run_repetition)
    monkeypatch.setattr(cases_mod, "pool_case", lambda case, reps: models.Blocks())
    monkeypatch.setattr(cases_mod, "observer_effect", lambda entry, control: None)
    monkeypatch.setattr(cases_mod, "_probe_session", lambda case, sessions: sessions.setdefault(
        (31, (), True), session) if case.scenario.probes.enabled else None)  # type: ignore
    raw = {"name": "p", "repetitions": 3, "order": order, "unicast": {"count": 4},
           "multicast": {"receivers": [{"groups": [1]}], "count": 4},
           "probes": {"enabled": True, "control": True},
           "matrix": {"module.mode": ["callback", "kthread", "workqueue"],
                      "module.work_ns": [0, 20000], "traffic": ["unicast", "multicast"]}}
    cases = scenario.expand(raw)[1]
    group = models.GroupResult(status=Status.running, env=_env(cases), cases=[],
                               probe_histograms={})
    cases_mod.run_cases(cases, Path("nlperf.ko"), group, lambda line, table: None)
    assert len(loaded) == loads
    assert not state["loaded"], "the boot ends with the module unloaded"
    # round-robin: each repetition's probed and control runs share one load; any order: no
    # load serves two repetitions of one case
    assert all(len(v) == (1 if order == "round-robin" else 2) for v in shared.values())
    by_case: dict[str, list[int]] = {}
    for (cid, _), v in shared.items():
        by_case.setdefault(cid, []).extend(v)
    assert all(len(set(v)) == len(v) for v in by_case.values())
    # a control run has no probe attached, and detaching them costs: round-robin does it
    # within each of the 6 load groups only when its passes change over, 3 per round, and
    # once more where round 1 starts control-first after round 0 ended probed (10 of 36
    # control runs); sequential after each case's probed repetitions (12)
    assert len(detaches) == (10 if order == "round-robin" else 12)


def test_the_inner_result_writer_writes_the_whole_document_reserializing_only_what_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nlperf import handoff

    group = _loop(monkeypatch).group
    group.probe_histograms = {c.id: [{"rows": [1, 2]}] for c in group.cases}
    path = tmp_path / "inner.json"
    writer = handoff.ResultWriter(path)
    writer.write(group)
    assert json.loads(path.read_text()) == group.document()
    first = group.cases[0]
    first.error = "changed"
    group.probe_histograms[first.id].append({"rows": [3]})
    group.status = Status.failed
    writer.write(group, changed=first.id)
    assert json.loads(path.read_text()) == group.document()
    # the cache is why it is cheap: a case not named as changed is not serialized again
    group.cases[1].error = "not told"
    writer.write(group, changed=first.id)
    assert "not told" not in path.read_text()
    writer.write(group)
    assert json.loads(path.read_text()) == group.document()
