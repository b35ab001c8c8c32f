"""The host→VM hand-off (docs/ARCHITECTURE.md): one file in, one file back.

The outer run writes ``.handoff-<release>.json`` (models.Handoff: run directory, module, target,
accelerator, case ids) and starts ``nlperf run RUN_DIR/scenario.yaml --internal-handoff FILE``
in the guest; the file travels instead of the command line because the guest command is
limited to the 2048-byte kernel command line. The inner run is the only writer of
``.inner-<release>.json`` (models.GroupResult: its env facts, its cases, probe histograms,
status), rewritten atomically after every repetition so that a timeout or Ctrl-C keeps what
finished, and of ``.inner-samples-<release>/`` (one samples part per repetition). The outer
merges them into the files it alone writes (results.RunFiles).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nlperf import results
from nlperf.errors import BadInput, RunFailed
from nlperf.models import Accel, GroupResult, Handoff, Target

HANDOFF_FLAG = "--internal-handoff"


def handoff_path(run_dir: Path, release: str) -> Path:
    return run_dir / f".handoff-{release}.json"


def result_name(release: str) -> str:
    return f".inner-{release}.json"


def samples_name(release: str) -> str:
    return f".inner-samples-{release}"


def write_handoff(run_dir: Path, release: str, ko: Path, target: Target, accel: Accel,
                  case_ids: list[str], started: str) -> tuple[Path, Path]:
    """The hand-off file, and the path of the result file the inner run will write."""
    handoff = Handoff(run_dir=run_dir, ko=ko, target=target, accel=accel, cases=case_ids,
                      result=result_name(release), samples=samples_name(release),
                      started=started)
    path = handoff_path(run_dir, release)
    results.write_json(path, handoff)
    return path, run_dir / handoff.result


def read_handoff(path: Path) -> Handoff:
    try:
        return Handoff.model_validate(results.read_json(path))
    except ValidationError as e:
        raise BadInput(f"{path}: not a hand-off file: {e.errors()[0]['msg']}") from None


def inner_command(nlperf: Path, scenario_copy: Path, handoff: Path) -> list[str]:
    return [str(nlperf), "run", str(scenario_copy), HANDOFF_FLAG, str(handoff)]


class ResultWriter:
    """Rewrites the inner result file after every repetition, serializing again only the case
    that changed: the whole document grows to ~0.5 MB in the headline scenario, and
    serializing all of it 72 times cost ~10 s of the lab VM's emulated CPU. The file is the
    GroupResult's document as compact JSON (a test holds them equal)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cases: dict[str, str] = {}  # case id -> its JSON
        self._histograms: dict[str, str] = {}

    def write(self, group: GroupResult, changed: str | None = None) -> None:
        """``changed``: the one case that changed since the last write (None: any may have)."""
        if changed is None:
            self._cases.clear()
            self._histograms.clear()
        else:
            self._cases.pop(changed, None)
            self._histograms.pop(changed, None)
        head = group.model_dump(mode="json", exclude_unset=True,
                                exclude={"cases", "probe_histograms"})
        parts = [f"{_dumps(k)}:{_dumps(v)}" for k, v in head.items()]
        cases = ",".join(self._cached(self._cases, c.id, c.document) for c in group.cases)
        histograms = ",".join(
            f"{_dumps(cid)}:{self._cached(self._histograms, cid, lambda h=h: h)}"
            for cid, h in group.probe_histograms.items())
        parts += [f'"cases":[{cases}]', f'"probe_histograms":{{{histograms}}}']
        results.write_atomic(self.path, ("{" + ",".join(parts) + "}\n").encode())

    @staticmethod
    def _cached(cache: dict[str, str], key: str, doc: Callable[[], Any]) -> str:
        if key not in cache:
            cache[key] = _dumps(doc())
        return cache[key]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def read_result(path: Path, *, final: bool = False) -> GroupResult | None:
    """What the inner run has written so far; None before it wrote anything.

    While the guest runs, an unreadable file is skipped (the next repetition rewrites it);
    once it has stopped, the file is what the inner run left, and unreadable is an error.
    """
    try:
        return GroupResult.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        if final:
            raise RunFailed(f"{path}: the run inside the VM left an unreadable result: "
                            f"{_first_line(e)}") from None
        return None


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
