"""Run directories are never reused; summaries are validated against the contract and written
atomically; a summary assembled by the real metric functions satisfies the contract; the
schema is generated from the models; a summary written by earlier code still loads."""

from __future__ import annotations

import copy
import datetime as real_dt
import json
import math
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nlperf import design, metrics, models, results, samples, schema, wire
from nlperf.errors import EXIT_BAD_INPUT, BadInput, RunFailed
from nlperf.measure import RepResult, pool_case
from nlperf.models import Status
from nlperf.samples import StampLog
from nlperf.scenario import AutoRepetitions, expand
from nlperf.workloads.multicast import ReceiverResult
from nlperf.workloads.unicast import SenderResult

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "results" / "schema.json"
# summary.json of tests/data/e2e.yaml (first two cases) as written by commit c7cf7ae, before the
# typed models: real probes, module and multicast blocks from a lab VM run
SUMMARY_C7CF7AE = ROOT / "tests" / "data" / "summary-c7cf7ae.json"


# --- run directories ---------------------------------------------------------------------------


class _FrozenDatetime(real_dt.datetime):
    @classmethod
    def now(cls, tz: real_dt.tzinfo | None = None) -> _FrozenDatetime:
        return cls(2026, 1, 2, 3, 4, 5, tzinfo=tz)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call sees the same second, so the -N suffix must do the disambiguation."""
    fake = types.SimpleNamespace(datetime=_FrozenDatetime, UTC=real_dt.UTC)
    monkeypatch.setattr(results, "dt", fake)


def test_run_dirs_in_the_same_second_are_distinct(tmp_path: Path, frozen_clock: None) -> None:
    made = [results.create_run_dir("My Scenario!", base=tmp_path) for _ in range(3)]
    assert [p.name for p in made] == ["my-scenario-20260102-030405",
                                      "my-scenario-20260102-030405-1",
                                      "my-scenario-20260102-030405-2"]
    assert all(p.is_dir() and p.parent == tmp_path for p in made)


def test_run_dir_never_reuses_existing(tmp_path: Path, frozen_clock: None) -> None:
    first = results.create_run_dir("s", base=tmp_path)
    (first / "summary.json").write_text("{}")
    second = results.create_run_dir("s", base=tmp_path)
    assert second != first
    assert (first / "summary.json").read_text() == "{}"
    assert not any(second.iterdir())


def test_run_dir_real_clock_distinct(tmp_path: Path) -> None:
    a = results.create_run_dir("smoke", base=tmp_path / "nested")
    b = results.create_run_dir("smoke", base=tmp_path / "nested")
    assert a != b and a.is_dir() and b.is_dir()
    assert a.name.startswith("smoke-") and b.name.startswith("smoke-")


def test_explicit_out_is_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "run"
    assert results.create_run_dir("s", out=out, base=tmp_path / "unused") == out
    assert out.is_dir()
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("as_file", [False, True])
def test_explicit_existing_out_is_refused(tmp_path: Path, as_file: bool) -> None:
    out = tmp_path / "run"
    if as_file:
        out.write_text("precious")
    else:
        out.mkdir()
        (out / "precious").write_text("keep")
    with pytest.raises(BadInput) as info:
        results.create_run_dir("s", out=out, base=tmp_path)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert str(out) in str(info.value) and "\n" not in str(info.value)
    if as_file:
        assert out.read_text() == "precious"
    else:
        assert [p.name for p in out.iterdir()] == ["precious"]


def test_out_below_a_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput) as info:
        results.create_run_dir("s", out=tmp_path / "file" / "run", base=tmp_path)
    assert str(tmp_path / "file" / "run") in str(info.value)
    assert (tmp_path / "file").read_text() == "x"


# --- a realistic summary, built by the real functions --------------------------------------------

STATS_HEAD_VALUES = {"version": wire.WIRE_VERSION, "size": wire.STATS_SIZE, "mode": 0,
                     "proto": 31, "queue_len": 1024, "received": 0, "wq_name": b""}


def module_stats(received: int, sent_by_group: dict[int, int]) -> dict[str, Any]:
    """Decode a stats reply the way the lab does (measure._measure: ctl.stats().as_dict())."""
    values = []
    for name in wire.STATS_FIELDS:
        if name in ("received", "processed", "replied"):
            values.append(received)
        else:
            values.append(STATS_HEAD_VALUES.get(name, 0))
    buf = bytearray(wire.STATS_HEAD.pack(*values))
    for g in range(1, wire.MAX_GROUPS + 1):
        n = sent_by_group.get(g, 0)
        buf += wire.GROUP_STATS.pack(0, n, n, 0, 0, 0)
    return wire.Stats.unpack(bytes(buf)).as_dict()


def sender_result(n: int, seed: int) -> SenderResult:
    rng = np.random.default_rng(seed)
    log = StampLog(capacity=n // 2, seed=seed)  # past capacity: the reservoir kicks in
    t = 0
    for _ in range(n):
        off = log.slot()
        gaps = rng.integers(500, 20_000, size=4)
        row = np.cumsum(np.concatenate([[t], gaps]))
        if off is not None:
            log.buf[off:off + 40] = row.astype(np.int64).tobytes()
        t = int(row[-1]) + 100
    return SenderResult(sent=n, received=n, elapsed_ns=t, records=log.array(),
                        ctx={"voluntary": 3, "involuntary": 1})


def receiver_result(rid: str, groups: list[int], received: int) -> ReceiverResult:
    recs = np.zeros((received, 5), dtype=np.int64)
    recs[:, 3] = np.arange(received) * 1000
    recs[:, 4] = recs[:, 3] + 5000 + np.arange(received) % 7
    return ReceiverResult(id=rid, groups=groups, received=received, enobufs=1, sk_drops=3,
                          seq_gaps=3, records=recs)


def realistic_summary() -> models.Summary:
    raw = {"name": "realistic", "repetitions": 2, "unicast": {"count": 400},
           "multicast": {"source": "relay", "count": 100, "groups": [1, 2],
                         "receivers": [{"count": 2, "groups": [1, 2]}, {"groups": [2]}]},
           "matrix": {"module.mode": ["callback", "kthread"]}}
    _, cases = expand(raw, "realistic")
    summary = results.new_summary("realistic", "vm", "tcg", "6.1.0-56-amd64", "tsc")
    for case in cases:
        reps = []
        for r in range(case.scenario.repetitions):
            senders = [sender_result(400, seed=r)]
            recvs = [receiver_result("r0.0", [1, 2], 200), receiver_result("r0.1", [1, 2], 197),
                     receiver_result("r1.0", [2], 101)]
            sent_by_group = {1: 101, 2: 101}
            block = models.Repetition(
                index=r, duration_s=0.25,
                unicast=metrics.unicast_block(senders, timed=True),
                multicast=metrics.multicast_block("relay", sent_by_group, recvs),
                module=models.Module.model_validate(module_stats(400, sent_by_group)),
                sched=models.Sched(senders=models.CtxSwitches.model_validate(senders[0].ctx)))
            rep = RepResult(block, unicast_records=senders[0].records,
                            receiver_latency={x.id: x.records[:, 4] - x.records[:, 3]
                                              for x in recvs if x.records is not None})
            reps.append(rep)
        entry = models.Case(id=case.id, params=case.params, status=Status.complete,
                            repetitions=[x.block for x in reps])
        entry.take(pool_case(case, reps))
        summary.cases.append(entry)
    summary.status = Status.complete
    summary.finished = results.now_iso()
    return summary


def test_realistic_summary_validates() -> None:
    summary = realistic_summary()
    assert results.validation_errors(summary) == []
    # and survives the JSON round trip unchanged, through the models too
    doc = json.loads(json.dumps(summary.document()))
    assert results.validation_errors(doc) == []
    assert models.Summary.model_validate(doc).document() == doc
    case = summary.cases[0]
    assert case.unicast is not None and case.unicast.sent == 800  # two repetitions pooled
    assert case.module is not None and case.module.received == 800
    assert case.multicast is not None
    r00 = case.multicast.receivers[0]
    assert (r00.sent, r00.received, r00.lost) == (404, 400, 4)
    r10 = case.multicast.receivers[2]
    assert (r10.sent, r10.received, r10.lost) == (202, 202, 0)
    # the repetition blocks are the ones the lab writes, and only those
    assert list(doc["cases"][0]["repetitions"][0]) == ["index", "duration_s", "unicast",
                                                       "multicast", "module", "sched"]
    assert list(doc["cases"][0]) == ["id", "params", "status", "repetitions", "unicast",
                                     "multicast", "module"]


def test_realistic_summary_against_schema_file_directly() -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(realistic_summary().document(), schema)


def test_the_run_design_keys_are_in_the_contract() -> None:
    """Order and seed, each repetition's run index, repetitions: auto's verdict, pooled probes."""
    import jsonschema

    summary = realistic_summary()
    summary.order = models.RunOrder(kind="random", seed=7)
    for case in summary.cases:
        for i, rep in enumerate(case.repetitions):
            rep.run_index = 2 * i + (case.id == "mode=kthread")
        case.repetitions_auto = design.auto_verdict(case.repetitions,
                                                    AutoRepetitions(min=2, target_ci_pct=1))
        case.probes = models.CaseProbes(attach={"netlink_unicast": "fentry/fexit"},
                                        netlink_overrun=models.PooledTotal(total=3))
    doc = json.loads(json.dumps(summary.document()))
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert models.Summary.model_validate(doc).document() == doc
    assert doc["order"] == {"kind": "random", "seed": 7}
    kthread = doc["cases"][1]
    assert [r["run_index"] for r in kthread["repetitions"]] == [1, 3]
    # two repetitions: the geometric mean's t-interval with one degree of freedom reaches
    # exp(t(1, 0.975) · |ln(b / a)| / 2) - 1 above the estimate (the larger side);
    # the receivers got identical records each time, the senders did not
    def reach(a: float, b: float) -> float:
        return round(100 * (math.exp(12.706205 * abs(math.log(b / a)) / 2) - 1), 2)

    def per_rep(block: str, key: str) -> list[float]:
        return [r["unicast"][block][key] if key else r["unicast"][block]
                for r in kthread["repetitions"]]

    assert kthread["repetitions_auto"] == {
        "target_ci_pct": 1.0, "met": False, "rounds": 2,
        "achieved_ci_pct": {"unicast.rtt_us.p50": reach(*per_rep("rtt_us", "p50")),
                            "unicast.rtt_us.p99": reach(*per_rep("rtt_us", "p99")),
                            "unicast.throughput_per_s": reach(*per_rep("throughput_per_s", "")),
                            "multicast.receivers[r0.0].latency_us.p50": 0.0,
                            "multicast.receivers[r0.1].latency_us.p50": 0.0,
                            "multicast.receivers[r1.0].latency_us.p50": 0.0}}
    assert reach(*per_rep("rtt_us", "p50")) > 10  # 1 % apart: two repetitions prove little
    assert list(kthread)[:6] == ["id", "params", "status", "repetitions", "repetitions_auto",
                                 "unicast"]
    assert kthread["probes"] == {"attach": {"netlink_unicast": "fentry/fexit"},
                                 "netlink_overrun": {"total": 3}}
    broken = copy.deepcopy(doc)
    broken["cases"][0]["probes"]["netlink_overrun"]["by_socket"] = {}  # closed at case level
    assert results.validation_errors(broken)


# --- validation and writing ----------------------------------------------------------------------


def minimal_summary() -> dict[str, Any]:
    """The document of the smallest valid summary (contract violations are made on it)."""
    s = results.new_summary("t", "host", "none", "6.1.0", None).document()
    s["cases"].append({"id": "default", "params": {}, "repetitions": [{"index": 0}]})
    return s


def _set(path: str, value: Any) -> Any:
    def mutate(s: dict[str, Any]) -> None:
        parts = path.split("/")
        node: Any = s
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return mutate


_DELETE = object()

VIOLATIONS = {
    "schema-version": _set("schema_version", 2),
    "status": _set("status", "done"),
    "target": _set("target", "laptop"),
    "accel": _set("accel", "hvf"),
    "missing-cases": _set("cases", _DELETE),
    "missing-started": _set("started", _DELETE),
    "extra-top-key": _set("extras", 1),
    "case-id-uppercase": _set("cases/0/id", "Default"),
    "case-extra-key": _set("cases/0/notes", "x"),
    "case-missing-repetitions": _set("cases/0/repetitions", _DELETE),
    "repetition-negative-index": _set("cases/0/repetitions/0/index", -1),
    "repetition-extra-key": _set("cases/0/repetitions/0/color", "red"),
    "unicast-missing-rtt": _set("cases/0/unicast", {"sent": 1, "received": 1, "errors": 0,
                                                    "throughput_per_s": 1.0}),
    "latency-extra-key": _set("cases/0/unicast", {
        "sent": 1, "received": 1, "errors": 0, "throughput_per_s": 1.0,
        "rtt_us": {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None,
                   "p999": None, "max": None, "p95": 1.0}}),
    "block-null": _set("cases/0/unicast", None),
    "repetition-module-not-object": _set("cases/0/repetitions/0/module", [1]),
    "receiver-group-33": _set("cases/0/multicast", {"sent_by_group": {}, "receivers": [
        {"id": "r", "groups": [33], "sent": 0, "received": 0, "lost": 0, "enobufs": 0,
         "sk_drops": None, "latency_us": {"count": 0, "mean": None, "p50": None, "p90": None,
                                          "p99": None, "p999": None, "max": None}}]}),
}


def test_minimal_summary_is_valid() -> None:
    assert results.validation_errors(minimal_summary()) == []


@pytest.mark.parametrize("mutate", list(VIOLATIONS.values()), ids=list(VIOLATIONS))
def test_write_summary_refuses_contract_violations(tmp_path: Path, mutate: Any) -> None:
    good = minimal_summary()
    results.write_summary(tmp_path, good)
    before = (tmp_path / results.SUMMARY).read_bytes()
    broken = copy.deepcopy(good)
    mutate(broken)
    assert results.validation_errors(broken)
    with pytest.raises(RunFailed) as info:
        results.write_summary(tmp_path, broken)
    assert "schema" in str(info.value) and "\n" not in str(info.value)
    # the last good summary is still there, untouched
    assert (tmp_path / results.SUMMARY).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [results.SUMMARY]


def test_write_summary_round_trips(tmp_path: Path) -> None:
    summary = realistic_summary()
    results.write_summary(tmp_path, summary)
    assert results.read_json(tmp_path / results.SUMMARY) == summary.document()
    assert results.read_summary(tmp_path) == summary
    assert [p.name for p in tmp_path.iterdir()] == [results.SUMMARY]  # no temp file left


def test_write_is_atomic_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new summary appears by rename: at the moment of the swap the old file is whole."""
    first = minimal_summary()
    results.write_summary(tmp_path, first)
    target = tmp_path / results.SUMMARY
    seen: list[tuple[Any, Any]] = []
    real_replace = results.os.replace

    def spy(src: Any, dst: Any) -> None:
        src, dst = Path(src), Path(dst)
        assert src.parent == dst.parent  # same filesystem: rename is atomic
        seen.append((json.loads(dst.read_text()), json.loads(src.read_text())))
        real_replace(src, dst)

    monkeypatch.setattr(results.os, "replace", spy)
    second = copy.deepcopy(first)
    second["status"] = "complete"
    results.write_summary(tmp_path, second)
    assert seen == [(first, second)]
    assert json.loads(target.read_text()) == second


def test_failed_serialisation_leaves_old_summary(tmp_path: Path) -> None:
    first = minimal_summary()
    results.write_summary(tmp_path, first)
    bad = copy.deepcopy(first)
    bad["cases"][0]["params"] = {"x": {1, 2}}  # valid per schema, not JSON-serialisable
    with pytest.raises(TypeError):
        results.write_summary(tmp_path, bad)
    assert json.loads((tmp_path / results.SUMMARY).read_text()) == first


def test_read_json_errors_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        results.read_json(tmp_path / "missing.json")
    p = tmp_path / "torn.json"
    p.write_text('{"a": 1,\n')
    with pytest.raises(BadInput, match="line 2"):
        results.read_json(p)


def test_append_progress_is_jsonl(tmp_path: Path) -> None:
    for i in range(3):
        results.append_progress(tmp_path, models.Progress(
            case=0, cases=1, id="default", rep=i, control=False, done=i + 1, total=3,
            time=f"2026-01-02T03:04:0{i}.250+00:00", elapsed_s=1.5 * i))
    lines = [json.loads(x) for x in (tmp_path / results.PROGRESS).read_text().splitlines()]
    assert [x["done"] for x in lines] == [1, 2, 3]
    assert lines[2] == {"case": 0, "cases": 1, "id": "default", "rep": 2, "control": False,
                        "done": 3, "total": 3, "time": "2026-01-02T03:04:02.250+00:00",
                        "elapsed_s": 3.0}


def test_new_summary_fields() -> None:
    s = results.new_summary("x", "host", "none", None, None)
    assert s.status is Status.running and s.finished is None and s.cases == []
    assert s.document()["finished"] is None  # null, not absent: the contract requires the key
    started = real_dt.datetime.fromisoformat(s.started)
    assert started.tzinfo is not None
    assert abs((real_dt.datetime.now(real_dt.UTC) - started).total_seconds()) < 60


# --- one declaration: the models, the generated schema, summaries from earlier code -------------


def test_schema_file_is_generated_from_the_models() -> None:
    """results/schema.json is `python -m nlperf.results --schema`, never edited by hand."""
    generated = json.dumps(schema.summary_schema(), indent=2) + "\n"
    assert SCHEMA.read_text() == generated
    p = subprocess.run([sys.executable, "-m", "nlperf.results", "--schema"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == generated


def test_schema_is_2020_12_and_keeps_the_contract() -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["schema_version", "scenario", "status", "target", "accel",
                                  "kernel", "clocksource", "nlperf_version", "started",
                                  "finished", "cases"]
    assert schema["properties"]["status"] == {"$ref": "#/$defs/Status"}
    assert schema["$defs"]["Status"]["enum"] == ["running", "complete", "interrupted", "failed"]
    assert schema["$defs"]["Latency"]["required"] == ["count", "mean", "p50", "p90", "p99",
                                                      "p999", "max"]
    # blocks are absent when they do not apply, never null
    assert schema["$defs"]["Case"]["properties"]["unicast"] == {"$ref": "#/$defs/Unicast"}
    # the probes and module blocks keep keys their producers add
    assert schema["$defs"]["Probes"]["additionalProperties"] is True
    assert schema["$defs"]["Module"]["additionalProperties"] is True


def test_summary_written_by_c7cf7ae_still_loads_unchanged(tmp_path: Path) -> None:
    doc = json.loads(SUMMARY_C7CF7AE.read_text())
    assert results.validation_errors(doc) == []
    summary = models.Summary.model_validate(doc)
    assert summary.document() == doc  # every key kept, none added, nulls where they were
    unicast, multicast = summary.cases
    assert unicast.id == "mode=callback,traffic=unicast"
    assert unicast.unicast is not None and unicast.unicast.sent == 600
    assert unicast.control is not None and len(unicast.control.repetitions) == 2
    assert unicast.probes is not None and unicast.probes.overhead is not None
    assert (unicast.probes.overhead.throughput_pct, unicast.probes.overhead.p50_pct) == (
        -54.28, 114.96)
    probes = unicast.repetitions[0].probes
    assert probes is not None and probes.timing is True
    # keys of the probes block that the model does not name are kept as they came
    assert probes.model_extra is not None
    assert probes.model_extra["netlink_unicast"]["by_direction"]["to_kernel"]["calls"] == 150
    assert multicast.multicast is not None and multicast.module is not None
    assert [(r.sent, r.received, r.lost, r.sk_drops) for r in multicast.multicast.receivers] == [
        (1604, 79, 1525, 1525), (1604, 80, 1524, 1524), (802, 802, 0, 0)]
    assert multicast.module.mode == "callback"
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    (run_dir / results.SUMMARY).write_text(SUMMARY_C7CF7AE.read_text())
    assert results.read_summary(run_dir) == summary
    results.write_summary(tmp_path, summary)  # and it is written again as it was
    assert json.loads((tmp_path / results.SUMMARY).read_text()) == doc


# --- the outer run's files: one writer, merging every group ------------------------------------


def _group(kernel: str, clocksource: str | None, case_ids: list[str],
           histograms: dict[str, list[dict[str, Any]]] | None = None) -> models.GroupResult:
    env = models.Env(kernel=kernel, target="vm", accel="tcg", clocksource=clocksource, cpus=2,
                     nlperf_version="0.1.0", python="3.11.2",
                     module_params={c: {"mode": "callback"} for c in case_ids},
                     probes=models.EnvProbes(attach={"netlink_unicast": "fentry/fexit"}))
    cases = [models.Case(id=c, params={}, status=Status.complete,
                         repetitions=[models.Repetition(index=0, run_index=i)])
             for i, c in enumerate(case_ids)]
    return models.GroupResult(status=Status.complete, env=env, cases=cases,
                              probe_histograms=histograms or {})


def test_run_files_merge_groups_in_plan_order(tmp_path: Path) -> None:
    summary = results.new_summary("s", "vm", "tcg", "6.1.0-56-amd64", None)
    files = results.RunFiles(tmp_path, summary)
    assert results.read_json(tmp_path / results.SUMMARY)["cases"] == []
    assert not (tmp_path / results.ENV).exists()
    files.publish(0, _group("6.1.0-56-amd64", "tsc", []))  # the guest started: no case yet
    on_disk = results.read_json(tmp_path / results.SUMMARY)
    assert on_disk["cases"] == [] and on_disk["clocksource"] == "tsc"  # the guest's
    files.publish(0, _group("6.1.0-56-amd64", "tsc", ["kernel=6.1"]))  # replaces, not appends
    files.publish(1, _group("6.12.9-amd64", "hpet", ["kernel=6.12"],
                            {"kernel=6.12": [{"rows": {}}]}))
    on_disk = results.read_json(tmp_path / results.SUMMARY)
    assert [c["id"] for c in on_disk["cases"]] == ["kernel=6.1", "kernel=6.12"]
    assert (on_disk["kernel"], on_disk["clocksource"]) == ("6.1.0-56-amd64", "tsc")
    env = results.read_json(tmp_path / results.ENV)
    assert env["kernel"] == "6.1.0-56-amd64" and env["probes"] == {
        "attach": {"netlink_unicast": "fentry/fexit"}}
    assert [m["kernel"] for m in env["more"]] == ["6.12.9-amd64"]
    assert results.read_json(tmp_path / results.PROBE_HISTOGRAMS) == {
        "kernel=6.12": [{"rows": {}}]}
    files.finish(Status.failed, "the lab VM did not finish within 8 s")
    on_disk = results.read_json(tmp_path / results.SUMMARY)
    assert (on_disk["status"], on_disk["error"]) == ("failed",
                                                     "the lab VM did not finish within 8 s")
    assert on_disk["finished"] is not None
    assert results.validation_errors(on_disk) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        results.ENV, results.PROBE_HISTOGRAMS, results.SAMPLES, results.SUMMARY]
    assert len(pd.read_parquet(tmp_path / results.SAMPLES)) == 0  # no group sent samples


def _part(parts: Path, run_index: int, case: str, rep: int, control: bool,
          rtts: list[int], receivers: dict[str, list[int]] | None = None) -> None:
    records = np.array([[0, 100, 300, 600, rtt] for rtt in rtts], dtype=np.int64)
    samples.write_part(parts, run_index, samples.sample_table(
        case, rep, control, records, True,
        {rid: np.array(v, dtype=np.int64) for rid, v in (receivers or {}).items()}))


def test_samples_of_two_boots_merge_into_one_file_in_plan_order(tmp_path: Path) -> None:
    files = results.RunFiles(tmp_path, results.new_summary("s", "vm", "tcg", None, None))
    boots = {0: tmp_path / ".inner-samples-6.1.0-56-amd64",
             1: tmp_path / ".inner-samples-6.12.9-amd64"}
    for slot, parts in boots.items():
        files.add_samples(slot, parts)
    # boot 1 (6.12): one case, a probed and a control repetition, the second with a receiver
    _part(boots[1], 0, "kernel=6.12", 0, False, [1000, 2000])
    _part(boots[1], 1, "kernel=6.12", 0, True, [900], {"r0.0": [5000, 6000, 7000]})
    g612 = _group("6.12.9-amd64", "tsc", ["kernel=6.12"])
    g612.cases[0].control = models.Control(repetitions=[models.Repetition(index=0,
                                                                          run_index=1)])
    files.publish(1, g612)
    # boot 0 (6.1): one repetition in its result, and a part of a repetition the VM was
    # killed after (not in the result: not in samples.parquet either)
    _part(boots[0], 0, "kernel=6.1", 0, False, [3000])
    _part(boots[0], 1, "kernel=6.1", 1, False, [4000])
    files.publish(0, _group("6.1.0-56-amd64", "tsc", ["kernel=6.1"]))
    files.finish(Status.failed, "the lab VM did not finish within 8 s")
    frame = pd.read_parquet(tmp_path / results.SAMPLES)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "case": str(pd.Series(["x"]).dtype), "repetition": "int64", "control": "bool",
        "source": str(pd.Series(["x"]).dtype), "rtt_ns": "Int64", "user_to_kernel_ns": "Int64",
        "queue_ns": "Int64", "processing_ns": "Int64", "kernel_to_user_ns": "Int64",
        "latency_ns": "Int64"}
    assert list(frame.columns) == list(samples.SAMPLE_COLUMNS)
    rows = frame.astype(object).where(frame.notna(), None).values.tolist()
    stamps = [100, 200, 300]  # user→kernel, queue, processing from the records above
    assert rows == [
        ["kernel=6.1", 0, False, "unicast", 3000, *stamps, 2400, None],
        ["kernel=6.12", 0, False, "unicast", 1000, *stamps, 400, None],
        ["kernel=6.12", 0, False, "unicast", 2000, *stamps, 1400, None],
        ["kernel=6.12", 0, True, "unicast", 900, *stamps, 300, None],
        ["kernel=6.12", 0, True, "r0.0", None, None, None, None, None, 5000],
        ["kernel=6.12", 0, True, "r0.0", None, None, None, None, None, 6000],
        ["kernel=6.12", 0, True, "r0.0", None, None, None, None, None, 7000]]
    assert not any(p.exists() for p in boots.values())  # merged: the parts are gone
