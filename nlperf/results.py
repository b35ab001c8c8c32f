"""The run directory and the results contract (nlperf/models.py → results/schema.json).

A run directory is created once and never reused; every JSON file is written atomically so an
interrupted run leaves the last complete summary, not a torn one. ``RunFiles`` is the one
writer of summary.json, env.json, probe-histograms.json and samples.parquet: the outer
``nlperf run``.

``python -m nlperf.results --schema`` prints the schema generated from the models; the
checked-in results/schema.json must equal it (tests/test_results.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

from nlperf import __version__, phases, samples
from nlperf.errors import BadInput, RunFailed
from nlperf.models import (
    Accel,
    GroupResult,
    Model,
    Progress,
    Status,
    Summary,
    Target,
)
from nlperf.paths import RESULTS_DIR
from nlperf.schema import summary_schema

SUMMARY = "summary.json"
ENV = "env.json"
PROGRESS = "progress.jsonl"
PROBE_HISTOGRAMS = "probe-histograms.json"  # {case id: [per probed repetition]}
SAMPLES = samples.SAMPLES  # per-message samples (results/README.md has the columns)
SCENARIO_COPY = "scenario.yaml"
CONSOLE_LOG = "vm-console.log"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-") or "run"


def create_run_dir(scenario_name: str, out: Path | None = None,
                   base: Path = RESULTS_DIR) -> Path:
    """A fresh directory: ``out`` exactly (refused if it exists) or a timestamped one in ``base``.

    ``mkdir`` without ``exist_ok`` is the arbiter, so two runs started in the same second
    cannot share a directory: the loser takes the next ``-N`` suffix.
    """
    if out is not None:
        try:
            out.mkdir(parents=True)
        except FileExistsError:
            raise BadInput(f"{out} already exists",
                           hint="results are never overwritten: choose another --out") from None
        except OSError as e:
            raise BadInput(f"cannot create {out}: {e.strerror}") from None
        return out
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{_slug(scenario_name)}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for n in range(1000):
        candidate = base / (stem if n == 0 else f"{stem}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RunFailed(f"cannot create a run directory under {base}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync, rename, fsync the directory: a reader (or a crash) sees the old file or
    the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    if isinstance(data, Model):
        data = data.document()
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def new_summary(scenario: str, target: Target, accel: Accel, kernel: str | None,
                clocksource: str | None) -> Summary:
    return Summary(schema_version=1, scenario=scenario, status=Status.running, target=target,
                   accel=accel, kernel=kernel, clocksource=clocksource, nlperf_version=__version__,
                   started=now_iso(), finished=None, cases=[])


@cache
def _validator() -> Any:
    # imported here: only the host validates, and the lab VM's inner run imports this module
    import jsonschema

    schema = summary_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validation_errors(summary: Summary | dict[str, Any]) -> list[str]:
    """Every way ``summary`` breaks the contract, as 'path: message' lines."""
    doc = summary.document() if isinstance(summary, Summary) else summary
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in errors]


def write_summary(run_dir: Path, summary: Summary | dict[str, Any]) -> None:
    """Validate, then write: a summary that breaks the contract is a bug, never a result."""
    doc = summary.document() if isinstance(summary, Summary) else summary
    problems = validation_errors(doc)
    if problems:
        raise RunFailed(f"summary breaks results/schema.json: {problems[0]}")
    write_json(run_dir / SUMMARY, doc)


def read_summary(run_dir: Path) -> Summary:
    """A run directory's summary, checked against the contract (bad input otherwise)."""
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir}: not a run directory")
    path = run_dir / SUMMARY
    doc = read_json(path)
    problems = validation_errors(doc)
    if problems:
        raise BadInput(f"{path}: not a valid summary: {problems[0]}")
    return Summary.model_validate(doc)


def append_progress(run_dir: Path, record: Progress) -> None:
    with open(run_dir / PROGRESS, "a") as f:
        f.write(record.model_dump_json() + "\n")
        f.flush()


def run_indices(group: GroupResult) -> set[int]:
    """The boot positions of the repetitions a group's result holds, control runs included."""
    reps = [r for c in group.cases
            for r in (*c.repetitions, *(c.control.repetitions if c.control else ()))]
    return {r.run_index for r in reps if r.run_index is not None}


class RunFiles:
    """The outer run's files, and their only writer: summary.json, env.json,
    probe-histograms.json and samples.parquet.

    Each group of cases (run natively, or in one VM boot) reports its latest GroupResult;
    ``publish`` rewrites the three JSON files from the summary's header and every group's
    result. Each group's samples arrive as one part file per repetition in a directory of
    their own (``add_samples``); ``finish`` merges them into samples.parquet.
    """

    def __init__(self, run_dir: Path, summary: Summary) -> None:
        self.run_dir, self.summary = run_dir, summary
        self._groups: dict[int, GroupResult] = {}
        self._samples: dict[int, Path] = {}
        self._phases: dict[str, float] = {}  # what the outer run itself spent (phases.py)
        self._t0 = time.monotonic()
        write_summary(run_dir, summary)

    def add_phase(self, name: str, seconds: float) -> None:
        """The outer run spent ``seconds`` in phase ``name`` (module_build, vm)."""
        phases.add(self._phases, {name: seconds})

    def _sum_phases(self, total: float | None = None) -> None:
        groups = [self._groups[k] for k in sorted(self._groups)]
        reps = [r.phases_s or {} for g in groups for c in g.cases
                for r in c.repetitions + (c.control.repetitions if c.control else [])]
        spent = phases.of_run(self._phases, [g.phases_s for g in groups], reps, total)
        if spent:
            self.summary.phases_s = spent

    def add_samples(self, slot: int, parts_dir: Path) -> None:
        """Group ``slot`` writes its sample parts into ``parts_dir``."""
        self._samples[slot] = parts_dir

    def publish(self, slot: int, group: GroupResult) -> None:
        """Group ``slot`` (its place in the run's plan) has results up to now."""
        self._groups[slot] = group
        groups = [self._groups[k] for k in sorted(self._groups)]
        s = self.summary
        s.cases = [c for g in groups for c in g.cases]
        for g in groups:  # what the outer could not know before a guest reported
            s.kernel = s.kernel or g.env.kernel
            s.clocksource = s.clocksource or g.env.clocksource
        self._sum_phases()
        write_summary(self.run_dir, s)
        env = groups[0].env.model_copy(deep=True)
        if len(groups) > 1:
            env.more = [g.env for g in groups[1:]]
        write_json(self.run_dir / ENV, env)
        histograms = {cid: h for g in groups for cid, h in g.probe_histograms.items()}
        if histograms:
            write_json(self.run_dir / PROBE_HISTOGRAMS, histograms)

    def merge_samples(self) -> int:
        """samples.parquet from every group's parts, in plan order, keeping exactly the
        repetitions summary.json holds; the parts go once merged. Returns the row count."""
        sources = [(self._samples[slot], run_indices(self._groups[slot]))
                   for slot in sorted(self._samples) if slot in self._groups]
        if not self._groups:  # nothing ran (a failed build, no VM boot): no file
            return 0
        rows = samples.merge_parts(sources, self.run_dir / SAMPLES)
        for parts_dir in self._samples.values():
            shutil.rmtree(parts_dir, ignore_errors=True)
        return rows

    def finish(self, status: Status, error: str | None) -> None:
        s = self.summary
        s.status = status
        s.finished = now_iso()
        self._sum_phases(time.monotonic() - self._t0)
        if error:
            s.error = error
        try:
            self.merge_samples()
        except (OSError, ValueError) as e:  # the summary says why; it is still written
            if s.status is Status.complete:
                s.status = Status.failed
            s.error = s.error or f"cannot write {SAMPLES}: {e}"
        write_summary(self.run_dir, s)


def main(argv: list[str]) -> int:
    if argv != ["--schema"]:
        sys.stderr.write("usage: python -m nlperf.results --schema  (prints results/schema.json)\n")
        return 2
    sys.stdout.write(json.dumps(summary_schema(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def record_report_phase(run_dir: Path, seconds: float) -> None:
    """``nlperf run`` wrote the report in ``seconds``: the summary's phases say so (the run's
    own writer, after the run; ``nlperf report`` alone never changes a summary)."""
    s = read_summary(run_dir)
    p = dict(s.phases_s or {})
    total, other = p.pop("total", None), p.pop("other", None)
    p["report"] = round(seconds, 3)
    if other is not None:  # the report adds to the total alone: the remainder stays
        p["other"] = other
    if total is not None:
        p["total"] = round(total + seconds, 3)
    s.phases_s = p
    write_summary(run_dir, s)
