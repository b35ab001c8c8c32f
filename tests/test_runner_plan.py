"""Grouping cases by where they run (one VM boot per kernel, flags winning over the matrix);
the run status; the case loop; the host→VM hand-off, without a VM."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from nlperf import capabilities, kmod, metrics, models, results, runner, scenario
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


# --- one loop for the probed and the control pass ------------------------------------------------


class FakeProbes:
    attach_kinds: ClassVar[dict[str, str]] = {"netlink_unicast": "fentry/fexit"}

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
        block.probes = models.Probes(attach=dict(FakeProbes.attach_kinds), timing=True)
    return RepResult(block, unicast_records=records,
                     probe_histograms={"rows": {"x": [index]}} if probed else None)


def _loop(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None,
          fail_with: BaseException | None = None
          ) -> tuple[models.GroupResult, list[models.Progress], BaseException | None]:
    """Two cases × 2 repetitions, probed then control, with a fake repetition."""
    calls: list[int] = []

    def run_repetition(case: scenario.Case, index: int, ko: Path, timeout: float,
                       probes: object = None) -> RepResult:
        calls.append(index)
        if fail_at is not None and len(calls) == fail_at:
            assert fail_with is not None
            raise fail_with
        return _rep(case, index, probes is not None, 2000 if probes is not None else 1000)

    monkeypatch.setattr(cases_mod, "run_repetition", run_repetition)
    monkeypatch.setattr(cases_mod, "_probe_session", lambda case, sessions: sessions.setdefault(
        (31, (), True), FakeProbes()) if case.scenario.probes.enabled else None)  # type: ignore
    cases = scenario.expand({"name": "p", "repetitions": 2, "unicast": {"count": 4},
                             "probes": {"enabled": True, "control": True},
                             "matrix": {"module.mode": ["callback", "kthread"]}})[1]
    group = models.GroupResult(status=Status.running, env=_env(cases), cases=[],
                               probe_histograms={})
    lines: list[models.Progress] = []
    raised = None
    try:
        cases_mod.run_cases(cases, Path("nlperf.ko"), group, lines.append)
    except BaseException as e:
        raised = e
    return group, lines, raised


def _env(cases: list[scenario.Case]) -> models.Env:
    return models.Env(kernel="6.1.0-56-amd64", target="vm", accel="tcg", clocksource="tsc",
                      cpus=2, nlperf_version="0.1.0", python="3.11.2", module_params={},
                      probes=models.EnvProbes(attach={}))


def test_probed_and_control_passes_share_one_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    group, lines, raised = _loop(monkeypatch)
    assert raised is None
    assert [(p.case, p.id, p.rep, p.control, p.done, p.total) for p in lines] == [
        (0, "mode=callback", 0, False, 1, 8), (0, "mode=callback", 1, False, 2, 8),
        (0, "mode=callback", 0, True, 3, 8), (0, "mode=callback", 1, True, 4, 8),
        (1, "mode=kthread", 0, False, 5, 8), (1, "mode=kthread", 1, False, 6, 8),
        (1, "mode=kthread", 0, True, 7, 8), (1, "mode=kthread", 1, True, 8, 8)]
    case = group.cases[0]
    doc = case.document()
    assert list(doc) == ["id", "params", "status", "repetitions", "unicast", "module",
                         "probes", "control"]
    assert case.status is Status.complete and len(case.repetitions) == 2
    assert case.unicast is not None and case.unicast.sent == 8
    assert case.module is not None and case.module.queue_hwm == 1  # max, counters summed
    assert case.module.model_extra is not None and case.module.received == 8
    assert case.control is not None and len(case.control.repetitions) == 2
    assert all(r.probes is None for r in case.control.repetitions)
    assert case.control.unicast is not None and case.control.unicast.rtt_us.p50 == 1.0
    assert case.probes is not None and case.probes.document() == {
        "attach": {"netlink_unicast": "fentry/fexit"},
        "overhead": {"throughput_pct": 0.0, "p50_pct": 100.0}}
    assert group.probe_histograms == {c: [{"rows": {"x": [0]}}, {"rows": {"x": [1]}}]
                                      for c in ("mode=callback", "mode=kthread")}
    assert group.env.probes.attach == {"netlink_unicast": "fentry/fexit"}


def test_a_pass_that_stops_keeps_and_pools_what_finished(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    # the 4th repetition is the second one of the first case's control pass
    group, lines, raised = _loop(monkeypatch, fail_at=4,
                                 fail_with=RunFailed("sender 0 failed: EPERM"))
    assert isinstance(raised, RunFailed) and len(lines) == 3
    (case,) = group.cases
    assert (case.status, case.error) == (Status.failed, "sender 0 failed: EPERM")
    assert case.unicast is not None and case.unicast.sent == 8
    assert case.control is not None and len(case.control.repetitions) == 1
    assert case.control.unicast is not None and case.control.unicast.sent == 4
    assert case.probes is not None and case.probes.overhead is None

    group, lines, raised = _loop(monkeypatch, fail_at=2, fail_with=KeyboardInterrupt())
    assert isinstance(raised, KeyboardInterrupt) and len(lines) == 1
    (case,) = group.cases
    assert case.status is Status.interrupted and case.error is None
    assert len(case.repetitions) == 1 and case.unicast is not None and case.unicast.sent == 4
    assert case.control is None and case.probes is None


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

    def run_cases(self, cases: list[scenario.Case], ko: Path, group: models.GroupResult,
                  on_repetition: Callable[[models.Progress], None],
                  case_timeout: float = 600.0) -> None:
        assert ko == self.run_dir.parent / "build" / "nlperf.ko"
        for i, case in enumerate(cases):
            entry = models.Case(id=case.id, params=case.params, status=Status.failed,
                                repetitions=[models.Repetition(index=0)])
            group.cases.append(entry)
            if self.inner_fails:
                entry.error = self.inner_fails
                raise RunFailed(self.inner_fails)
            on_repetition(models.Progress(case=i, cases=len(cases), id=case.id, rep=0,
                                          control=False, done=i + 1, total=len(cases)))
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


def _vm_run(tmp_path: Path) -> runner.RunOutcome:
    scen = tmp_path / "s.yaml"
    scen.write_text("name: s\nunicast: {count: 10}\nprobes: {enabled: false}\n"
                    "matrix: {module.mode: [callback, kthread, workqueue]}\n")
    return runner.run(runner.RunRequest(scen, target="vm", out=tmp_path / "run"),
                      lambda _m: None)


def test_the_outer_hands_off_one_file_and_alone_writes_the_summary(
        tmp_path: Path, lab: FakeLab) -> None:
    outcome = _vm_run(tmp_path)
    run_dir = lab.run_dir
    assert (outcome.status, outcome.exit_code) == (Status.complete, 0)
    release = "6.12.9-amd64"
    handoff_file = run_dir / f".handoff-{release}.json"
    (argv,) = lab.commands
    assert argv[1:] == ["run", str(run_dir / "scenario.yaml"), "--internal-handoff",
                        str(handoff_file)]
    assert json.loads(handoff_file.read_text()) == {
        "run_dir": str(run_dir), "ko": str(tmp_path / "build" / "nlperf.ko"), "target": "vm",
        "accel": "tcg", "cases": ["mode=callback", "mode=kthread", "mode=workqueue"],
        "result": f".inner-{release}.json"}
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
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([
        f".handoff-{release}.json", f".inner-{release}.json", "env.json", "progress.jsonl",
        "scenario.yaml", "summary.json"])


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


def test_the_inner_runs_error_becomes_the_runs_error(tmp_path: Path, lab: FakeLab) -> None:
    lab.inner_fails = "sender 0 failed: PermissionError: [Errno 1]"
    outcome = _vm_run(tmp_path)
    assert (outcome.status, outcome.exit_code) == (Status.failed, 1)
    summary = json.loads((lab.run_dir / "summary.json").read_text())
    assert summary["error"] == lab.inner_fails
    assert [(c["id"], c["status"], c["error"]) for c in summary["cases"]] == [
        ("mode=callback", "failed", lab.inner_fails)]


def test_a_handoff_naming_unknown_cases_is_refused(tmp_path: Path) -> None:
    scen = tmp_path / "s.yaml"
    scen.write_text("name: s\nunicast: {count: 10}\n")
    h = tmp_path / ".handoff-x.json"
    h.write_text(json.dumps({"run_dir": str(tmp_path), "ko": "k.ko", "target": "vm",
                             "accel": "tcg", "cases": ["mode=nope"],
                             "result": ".inner-x.json"}))
    with pytest.raises(NlperfError, match="mode=nope"):
        runner.run(runner.RunRequest(scen, internal_handoff=h), lambda _m: None)
    h.write_text('{"run_dir": 1}')
    with pytest.raises(BadInput, match="not a hand-off file"):
        runner.run(runner.RunRequest(scen, internal_handoff=h), lambda _m: None)
